"""A small Chrome DevTools Protocol client: headless Chromium driven over aiohttp's WebSocket.

`launch()` starts Debian's `chromium` headless on a fresh profile with `--remote-debugging-port=0`,
reads the port it chose from `<profile>/DevToolsActivePort`, opens one page and yields a `Page`
to navigate, evaluate JavaScript in and poll. On the way out the browser is asked to close, then
its whole process group is killed and the profile removed, whatever happened in between. Nothing
is downloaded and nothing is written outside the temporary profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Debian's flags for a headless run on a machine with a closed network (see the machine notes):
# no sandbox as root, no background traffic to Google, no first-run or sync.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 30.0  # seconds of real time for Chromium to open its DevTools port
CALL_TIMEOUT = 15.0  # seconds of real time for one protocol call


def find_chromium() -> str | None:
    """Debian's /usr/bin/chromium, else a `chromium` on the PATH, else None."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


class BrowserError(RuntimeError):
    """Chromium did not start, or a protocol call failed or threw in the page."""


class Page:
    """One page target: `call` a protocol method, `evaluate` JavaScript, `wait_for` a condition."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []  # uncaught exceptions and console errors in the page
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or str(details))
            elif (
                data.get("method") == "Runtime.consoleAPICalled"
                and data["params"]["type"] == "error"
            ):
                args = data["params"]["args"]
                self.errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrowserError("the DevTools connection closed"))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one protocol command and return its result (BrowserError on a protocol error)."""
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        await self._ws.send_json({"id": number, "method": method, "params": params})
        answer = await asyncio.wait_for(future, CALL_TIMEOUT)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer["result"]

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of `expression` in the page, awaited if it is a promise."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        """Load `url` and wait until its document has loaded."""
        answer = await self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise BrowserError(f"cannot open {url}: {answer['errorText']}")
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def wait_for(self, expression: str, *, what: str, timeout: float = 20.0) -> Any:
        """Poll `expression` every 50 ms until it is truthy; its value, or AssertionError.

        The cap is real time and generous: a loaded machine slows the test, it does not fail it.
        The error carries the last value, the page's text and any errors the page reported.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(
                    f"waited {timeout:.0f} s for {what}; last value {value!r}; "
                    f"page errors {self.errors}; the page reads:\n{text}"
                )
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process, log: Path) -> int:
    """The port Chromium chose, read from `<profile>/DevToolsActivePort` once it is written."""
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.returncode is not None:
            break
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(active.read_text(encoding="utf-8").splitlines()[0])
        await asyncio.sleep(0.05)
    tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
    raise BrowserError(f"chromium opened no DevTools port (exit {process.returncode}):\n{tail}")


def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill Chromium's own process group (the browser and the children it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def launch(executable: str) -> AsyncIterator[Page]:
    """A headless Chromium with one blank page, closed, killed and its profile removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="kullbatch-chromium-"))
    profile = workdir / "profile"
    log = workdir / "chromium.log"
    process: asyncio.subprocess.Process | None = None
    try:
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                executable,
                *FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # its own process group, killed whole at the end
            )
        port = await _devtools_port(profile, process, log)
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            page_target = next(t for t in targets if t["type"] == "page")
            ws = await session.ws_connect(
                page_target["webSocketDebuggerUrl"],
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=2),
            )
            page = Page(ws)
            try:
                await page.call("Page.enable")
                await page.call("Runtime.enable")
                yield page
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(page.call("Browser.close"), 2)
                await page.close()
    finally:
        if process is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 3)
            _kill(process)
            await process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
