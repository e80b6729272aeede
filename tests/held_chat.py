"""An OpenAI-compatible chat server in a background thread that checks the key and can hold
chosen photos unanswered: for tests and benchmarks that run `kullbatch serve` as a real
process and stop it (SIGKILL, SIGTERM) while requests are in flight.

Photos are URLs ``https://photos.test/<id>.jpg`` (kullbatch passes them through); the server
counts, per photo id, the requests it received and the answers it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from tests.fault_server import completion, expected_rating

PHOTO_BASE = "https://photos.test"


def url_images(ids: list[str]) -> list[dict[str, str]]:
    return [{"id": i, "filename": f"{i}.jpg", "url": f"{PHOTO_BASE}/{i}.jpg"} for i in ids]


class HeldChat:
    """`hold` names photo ids whose requests wait until `release()`; others answer at once."""

    def __init__(self, key: str, hold: set[str] | None = None) -> None:
        self.key = key
        self.hold = set(hold or ())
        self.received: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.refused = 0
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._released: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        with self._lock:
            return Counter(self.received), Counter(self.answered)

    async def _chat(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            with self._lock:
                self.refused += 1
            error = {"message": "Incorrect API key provided", "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        body = await request.json()
        url = next(
            part["image_url"]["url"]
            for part in body["messages"][-1]["content"]
            if part["type"] == "image_url"
        )
        image_id = url.rsplit("/", 1)[-1].removesuffix(".jpg")
        with self._lock:
            self.received[image_id] += 1
        if image_id in self.hold:
            assert self._released is not None
            await self._released.wait()
        content = json.dumps(expected_rating(image_id))
        response = web.json_response(completion(content, body["model"]))
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:  # the client died while this was held: not an answer
            return response
        with self._lock:
            self.answered[image_id] += 1
        return response

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def release(self) -> None:
        """Answer every held request, and every later one at once."""

        def go() -> None:
            self.hold.clear()
            assert self._released is not None
            self._released.set()

        self._loop.call_soon_threadsafe(go)

    async def _shutdown(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def held_chat(key: str, hold: set[str] | None = None) -> Iterator[HeldChat]:
    server = HeldChat(key, hold)
    server.start()
    try:
        yield server
    finally:
        server.release()
        server.stop()
