"""A chat-completions server on 127.0.0.1 in a background thread, for tests that run
kullbatch as a real subprocess (the CLI's exit codes, Ctrl-C, cancel, kill -9)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from tests.fakes import rating_for


class ThreadedChatServer:
    """Answers OpenAI chat completions; `delay(url)` says how long to sit on each image."""

    def __init__(self, delay: Callable[[str], float]) -> None:
        self.delay = delay
        self.requests: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        url = next(
            part["image_url"]["url"]
            for part in body["messages"][-1]["content"]
            if part["type"] == "image_url"
        )
        self.requests[url] += 1
        await asyncio.sleep(self.delay(url))
        image_id = url.rsplit("/", 1)[-1].removesuffix(".jpg")
        content = rating_for(image_id).model_dump_json()
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }
        )

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

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
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def chat_server(delay: Callable[[str], float] = lambda url: 0.0) -> Iterator[ThreadedChatServer]:
    server = ThreadedChatServer(delay)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def url_manifest(path, base: str, count: int) -> None:
    """A JSON manifest of `count` URL images img0…imgN served (notionally) by `base`."""
    images = [
        {"id": f"img{i}", "filename": f"img{i}.jpg", "url": f"{base}/photos/img{i}.jpg"}
        for i in range(count)
    ]
    path.write_text(json.dumps({"shootId": "cli-test", "images": images}))
