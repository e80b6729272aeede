"""Run any aiohttp `web.Application` on 127.0.0.1 in a background thread with its own loop.

The CLI calls `asyncio.run` itself, so a fake provider cannot live in the test's event loop (and
pytest-aiohttp's `aiohttp_server` fixture needs one): the fake gets a thread and a loop here.

    with AppThread(fake.app()) as server:
        env["OPENAI_BASE_URL"] = f"{server.url}/v1"
        ...

`stop()` closes the listening socket, gives in-flight handlers `shutdown_timeout` seconds,
cancels whatever is still pending on the server's loop, and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Self

from aiohttp import web

if TYPE_CHECKING:
    from types import TracebackType


class AppThread:
    """One application, one thread, one event loop, one free port."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        shutdown_timeout: float = 0.25,
        handler_cancellation: bool = True,
        start_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = 0
        self._shutdown_timeout = shutdown_timeout
        self._handler_cancellation = handler_cancellation
        self._start_timeout = start_timeout
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="AppThread", daemon=True)
        self._stopped = False

    @property
    def url(self) -> str:
        """The server's root, e.g. `http://127.0.0.1:54321` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    # -- lifecycle, from the test's thread ---------------------------------------------------

    def start(self) -> Self:
        """Serve in the background; returns once the port is bound (or raises why it is not)."""
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise TimeoutError(f"the app did not start within {self._start_timeout} s")
        if self._failed is not None:
            self._thread.join(self._start_timeout)
            raise RuntimeError("the app failed to start") from self._failed
        return self

    def stop(self) -> None:
        """Stop accepting, cancel pending handlers, close the loop; safe to call twice."""
        if self._stopped or not self._thread.is_alive():
            self._stopped = True
            return
        self._stopped = True
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(self._shutdown_timeout + 10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inside the server's thread ----------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._listen())
        except BaseException as exc:  # reported to start(), which raises it in the test
            self._failed = exc
            self._ready.set()
            self._close_loop()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._close_loop()

    async def _listen(self) -> None:
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            shutdown_timeout=self._shutdown_timeout,
            handler_cancellation=self._handler_cancellation,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _close_loop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()
