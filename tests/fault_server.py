"""A chat-completions server that misbehaves on purpose: latency, 429s, 5xx, drops, garbage.

It speaks OpenAI's `POST /v1/chat/completions` and answers every image with a rating that
depends on that image (its id is in the title, the description and the tags; the stars are a
function of it), so a result stored for the wrong image shows. What it does to each request is
set by a `FaultConfig`:

- latency: every answer except a 429 comes after `latency` +- `latency_jitter` seconds;
- `p429` (OpenAI's rate-limit body, `retry-after-ms` and `retry-after`), `p500`, `p503`,
  `p_drop` (the connection is closed without an answer, or in the middle of one) and
  `p_garbage` (a 200 chat.completion whose content is not a valid rating), drawn per request
  from one seeded RNG;
- `rpm_limit`: a sliding window of `window` seconds that admits `rpm_limit` requests and
  answers the rest with OpenAI's 429 and accurate hints; with a limit, every answer carries
  `x-ratelimit-limit/remaining/reset-requests` (counts per minute, as OpenAI's are: a window
  shorter than 60 s has its counts scaled up; `limit_headers=False` leaves them out, so a
  client can only learn the limit from 429s).

`FaultServer.stats` counts what happened (per outcome, per image, in flight, admission times).

Tests use `FaultServer(config).app()` with pytest-aiohttp's `aiohttp_server`; scripts use
`run_in_thread(config)`; benchmarks that run the CLI start it as a process:

    python -m tests.fault_server --port 0 --latency 1 --p429 0.2 --rpm-limit 500

which prints the port alone on the first line of stdout, serves until SIGINT/SIGTERM, then
prints the stats as one JSON line. `GET /_fault/stats` returns the same JSON while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import random
import re
import resource
import signal
import sys
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kullbatch.models import ISSUES

CHAT_PATH = "/v1/chat/completions"
STATS_PATH = "/_fault/stats"

# What happened to a request, as counted in `FaultStats.outcomes` and `FaultStats.history`.
OK = "ok"
RATE_LIMITED = "429"  # the random p429 fault
WINDOW_LIMITED = "window_429"  # the sliding-window RPM limit
SERVER_ERROR = "500"
UNAVAILABLE = "503"
DROPPED = "drop"
GARBAGE = "garbage"
UNAUTHORIZED = "401"
BAD_REQUEST = "400"

GARBAGE_KINDS = ("truncated_json", "prose", "wrong_schema", "not_a_completion")
DROP_KINDS = ("before_answer", "mid_body")

_COLOURS = ("red", "yellow", "green", "blue", "purple", "none")
_SUBJECTS = ("portrait", "landscape", "street", "wedding", "detail", "group")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """What the server does to each request; probabilities are per request, summed <= 1."""

    latency: float = 0.0  # seconds before an answer (not before a 429)
    latency_jitter: float = 0.0  # +- this much, uniformly, never below zero
    p429: float = 0.0
    retry_after_ms: int | None = 1000  # the hint on a random 429; None sends no hint
    p500: float = 0.0
    p503: float = 0.0
    p_drop: float = 0.0
    p_garbage: float = 0.0
    rpm_limit: int | None = None  # requests admitted per window; None = unlimited
    window: float = 60.0  # seconds; 60 makes rpm_limit a real requests-per-minute limit
    limit_headers: bool = True  # x-ratelimit-* on every answer while rpm_limit is set
    seed: int = 0
    api_key: str = "sk-test"  # the bearer key the server takes; any other gets OpenAI's 401

    def __post_init__(self) -> None:
        faults = (self.p429, self.p500, self.p503, self.p_drop, self.p_garbage)
        if any(p < 0 for p in faults) or sum(faults) > 1 + 1e-9:
            raise ValueError(f"fault probabilities must be >= 0 and sum to <= 1: {faults}")
        if self.latency < 0 or self.latency_jitter < 0:
            raise ValueError("latency and latency_jitter must be >= 0")
        if self.rpm_limit is not None and self.rpm_limit < 1:
            raise ValueError("rpm_limit must be >= 1 (or None for no limit)")
        if self.window <= 0:
            raise ValueError("window must be > 0")


# --- the rating: a function of the image --------------------------------------------------


def image_id_from_url(url: str) -> str:
    """`http://host/photos/img17.jpg` -> `img17`; a data URI -> `sha256-<16 hex>` of its bytes."""
    if url.startswith("data:"):
        _, _, encoded = url.partition(",")
        return image_id_from_bytes(base64.b64decode(encoded))
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem or url


def image_id_from_bytes(data: bytes) -> str:
    return "sha256-" + hashlib.sha256(data).hexdigest()[:16]


def expected_rating(image_id: str) -> dict[str, Any]:
    """The rating the server gives `image_id` (RATING_SCHEMA's wire shape)."""
    crc = zlib.crc32(image_id.encode())
    return {
        "starRating": crc % 5 + 1,
        "colorLabel": _COLOURS[(crc >> 3) % len(_COLOURS)],
        "title": f"Frame {image_id}",
        "description": f"The fault server's verdict on {image_id}.",
        "tags": [image_id, _SUBJECTS[(crc >> 7) % len(_SUBJECTS)]],
        "issues": [ISSUES[(crc >> 11) % len(ISSUES)]] if crc % 5 < 2 else [],
        "score": (crc >> 13) % 100,
    }


# --- OpenAI's wire format -----------------------------------------------------------------


def completion(content: str, model: str, number: int = 0) -> dict[str, Any]:
    """A chat.completion in OpenAI's shape with `content` as the assistant's message."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": [],
    }
    return {
        "id": f"chatcmpl-fault{number:08d}",
        "object": "chat.completion",
        "created": 1756000000,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876},
        "service_tier": "default",
        "system_fingerprint": "fp_fault",
    }


def openai_error(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> bytes:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json.dumps(body).encode()


_ERROR_500 = openai_error(
    "The server had an error while processing your request. Sorry about that!", "server_error"
)
_ERROR_503 = openai_error(
    "The engine is currently overloaded, please try again later.", "server_error"
)
_ERROR_401 = openai_error(
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    "invalid_request_error",
)
_ERROR_401_WRONG = openai_error(
    "Incorrect API key provided: sk-wr***ng. You can find your API key at "
    "https://platform.openai.com/account/api-keys.",
    "invalid_request_error",
    "invalid_api_key",
)


def _garbage_content(kind: str, image_id: str) -> bytes:
    """A 200 that is not a usable rating, in one of four ways."""
    rating = json.dumps(expected_rating(image_id))
    if kind == "truncated_json":
        return json.dumps(completion(rating[: len(rating) // 2], "gpt-fault")).encode()
    if kind == "prose":
        prose = f"What a lovely photo! I would give {image_id} four stars, it is very nice."
        return json.dumps(completion(prose, "gpt-fault")).encode()
    if kind == "wrong_schema":
        wrong = json.dumps({"stars": "four", "label": "greenish", "caption": image_id})
        return json.dumps(completion(wrong, "gpt-fault")).encode()
    return b"<html><body><h1>502 Bad Gateway</h1></body></html>"  # not_a_completion


def go_duration(seconds: float) -> str:
    """Seconds -> a Go duration as OpenAI writes it: `12ms`, `1.5s`, `6m0s`, `1h0m0s`.

    Rounded up to the millisecond, so that a client waiting that long is never early.
    """
    millis = max(0, math.ceil(seconds * 1000 - 1e-6))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# --- the sliding window -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    """The window's verdict on one request, and the numbers for its headers."""

    admitted: bool
    limit: int
    remaining: int  # after this request
    reset: float  # seconds: see SlidingWindow.admit
    retry_after: float  # seconds until a slot frees (0 when one is free)
    used: int

    def headers(self, per_minute: float = 1.0) -> dict[str, str]:
        """OpenAI's request-limit headers; `per_minute` scales a short window's counts.

        OpenAI's limit and remaining count requests per minute, and clients pace to them as
        such: a 20-per-second window says 1200 and 60 times its remaining slots.
        """
        return {
            "x-ratelimit-limit-requests": str(round(self.limit * per_minute)),
            "x-ratelimit-remaining-requests": str(math.floor(self.remaining * per_minute)),
            "x-ratelimit-reset-requests": go_duration(self.reset),
        }


class SlidingWindow:
    """At most `limit` admitted requests in any `window` seconds (a true sliding log)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._admitted: deque[float] = deque()

    def _prune(self, now: float) -> None:
        horizon = now - self.window + 1e-9  # a request exactly `window` old has left
        admitted = self._admitted
        while admitted and admitted[0] <= horizon:
            admitted.popleft()

    def admit(self) -> Admission:
        """Admit a request now, or say how long until it would be.

        `reset` is what `x-ratelimit-reset-requests` says: while slots are left, the time
        until the window is back to its initial state (every admitted request has left it);
        with none left, the time until the next slot frees, which is also `retry_after`.
        """
        now = self._clock()
        self._prune(now)
        admitted = self._admitted
        if len(admitted) >= self.limit:
            wait = admitted[0] + self.window - now
            return Admission(False, self.limit, 0, wait, wait, len(admitted))
        admitted.append(now)
        remaining = self.limit - len(admitted)
        if remaining == 0:
            reset = admitted[0] + self.window - now
        else:
            reset = admitted[-1] + self.window - now
        return Admission(True, self.limit, remaining, reset, 0.0, len(admitted))

    def __len__(self) -> int:
        self._prune(self._clock())
        return len(self._admitted)


# --- the server ---------------------------------------------------------------------------


@dataclass
class FaultStats:
    """Everything the server did, for assertions and benchmark reports."""

    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    garbage_kinds: Counter[str] = field(default_factory=Counter)
    drop_kinds: Counter[str] = field(default_factory=Counter)
    per_image: Counter[str] = field(default_factory=Counter)  # requests per image id
    ok_per_image: Counter[str] = field(default_factory=Counter)  # ratings sent per image id
    history: dict[str, list[str]] = field(default_factory=dict)  # image id -> outcomes in order
    in_flight: int = 0
    max_in_flight: int = 0
    admitted_at: list[float] = field(default_factory=list)  # clock times of admitted requests
    # (arrival time, image id, outcome, retry hint in seconds or None), one per request
    log: list[tuple[float, str, str, float | None]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts (no per-image detail beyond the retry distribution)."""
        return {
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "garbage_kinds": dict(self.garbage_kinds),
            "drop_kinds": dict(self.drop_kinds),
            "images": len(self.per_image),
            "images_rated": len(self.ok_per_image),
            "images_rated_twice": sum(1 for n in self.ok_per_image.values() if n > 1),
            "requests_per_image": dict(Counter(self.per_image.values())),
            "max_in_flight": self.max_in_flight,
            "admitted": len(self.admitted_at),
            "cpu_seconds": round(time.process_time(), 3),
        }


class FaultServer:
    """The handler, its RNG, its window and its counters; `app()` builds the aiohttp app."""

    def __init__(
        self,
        config: FaultConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.config = config or FaultConfig()
        self.clock = clock
        self._sleep = sleep
        self.rng = random.Random(self.config.seed)
        self.stats = FaultStats()
        limit = self.config.rpm_limit
        self.window = None if limit is None else SlidingWindow(limit, self.config.window, clock)
        self._answers: dict[tuple[str, str], bytes] = {}
        self._thresholds = _thresholds(self.config)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(CHAT_PATH, self.handle)
        app.router.add_get(STATS_PATH, self._stats)
        return app

    expected_rating = staticmethod(expected_rating)
    image_id_from_url = staticmethod(image_id_from_url)

    # -- the handler --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            return await self._answer(request)
        finally:
            stats.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            stats.outcomes[UNAUTHORIZED] += 1
            return _json(401, _ERROR_401)
        if auth != f"Bearer {self.config.api_key}":
            stats.outcomes[UNAUTHORIZED] += 1
            return _json(401, _ERROR_401_WRONG)
        raw = await request.read()
        try:
            model, url = _model_and_image_url(raw)
            image_id = image_id_from_url(url)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, StopIteration):
            stats.outcomes[BAD_REQUEST] += 1
            message = "fault server: expected a chat request with an image_url part"
            return _json(400, openai_error(message, "invalid_request_error"))
        stats.per_image[image_id] += 1
        history = stats.history.setdefault(image_id, [])
        headers: dict[str, str] = {}
        if self.window is not None:
            admission = self.window.admit()
            if self.config.limit_headers:
                headers = admission.headers(60.0 / self.config.window)
            if not admission.admitted:
                history.append(WINDOW_LIMITED)
                stats.outcomes[WINDOW_LIMITED] += 1
                response = self._window_429(admission, model, headers)
                wait = int(response.headers["retry-after-ms"]) / 1000
                stats.log.append((self.clock(), image_id, WINDOW_LIMITED, wait))
                return response
        arrived = self.clock()
        stats.admitted_at.append(arrived)
        fault, delay = self._draw()
        if fault != RATE_LIMITED and delay > 0:  # a 429 comes at once, like OpenAI's
            await self._sleep(delay)
        history.append(fault)
        stats.outcomes[fault] += 1
        hint: float | None = None
        if fault == RATE_LIMITED and self.config.retry_after_ms is not None:
            hint = self.config.retry_after_ms / 1000
        stats.log.append((arrived, image_id, fault, hint))
        return await self._reply(fault, request, image_id, model, headers)

    async def _reply(
        self, fault: str, request: web.Request, image_id: str, model: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        if fault == OK:
            self.stats.ok_per_image[image_id] += 1
            return _json(200, self._rating_body(image_id, model), headers)
        if fault == RATE_LIMITED:
            return self._random_429(model, headers)
        if fault == DROPPED:
            return await self._drop(request, image_id)
        if fault == GARBAGE:
            return self._garbage(image_id, headers)
        status, body = (500, _ERROR_500) if fault == SERVER_ERROR else (503, _ERROR_503)
        return _json(status, body, headers)

    def _garbage(self, image_id: str, headers: dict[str, str]) -> web.Response:
        kind = GARBAGE_KINDS[(self.stats.outcomes[GARBAGE] - 1) % len(GARBAGE_KINDS)]
        self.stats.garbage_kinds[kind] += 1
        content_type = "text/html" if kind == "not_a_completion" else "application/json"
        body = _garbage_content(kind, image_id)
        return web.Response(body=body, headers=headers, content_type=content_type)

    def _draw(self) -> tuple[str, float]:
        """The fault and the latency of one admitted request: always two draws, in order."""
        roll = self.rng.random()
        spread = self.rng.uniform(-1.0, 1.0)
        delay = max(0.0, self.config.latency + spread * self.config.latency_jitter)
        for threshold, fault in self._thresholds:
            if roll < threshold:
                return fault, delay
        return OK, delay

    def _rating_body(self, image_id: str, model: str) -> bytes:
        key = (image_id, model)
        body = self._answers.get(key)
        if body is None:
            content = json.dumps(expected_rating(image_id))
            body = json.dumps(completion(content, model, len(self._answers))).encode()
            self._answers[key] = body
        return body

    def _random_429(self, model: str, headers: dict[str, str]) -> web.Response:
        """A 429 as a tokens-per-minute limit sends it, with the configured hint."""
        hint = self.config.retry_after_ms
        again = "a moment" if hint is None else f"{hint}ms"
        message = (
            f"Rate limit reached for {model} in organization org-faultserver on tokens per min "
            f"(TPM): Limit 200000, Used 199321, Requested 876. Please try again in {again}. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        headers = dict(headers)
        if hint is not None:
            headers["retry-after-ms"] = str(hint)
            headers["retry-after"] = str(max(1, math.ceil(hint / 1000)))
        return _json(429, openai_error(message, "tokens", "rate_limit_exceeded"), headers)

    def _window_429(
        self, admission: Admission, model: str, headers: dict[str, str]
    ) -> web.Response:
        """OpenAI's requests-per-minute 429, with the exact wait until a slot frees."""
        wait_ms = max(1, math.ceil(admission.retry_after * 1000 - 1e-6))
        per = "min (RPM)" if self.config.window == 60 else f"{self.config.window:g} s"
        message = (
            f"Rate limit reached for {model} in organization org-faultserver on requests per "
            f"{per}: Limit {admission.limit}, Used {admission.used}, Requested 1. "
            f"Please try again in {go_duration(admission.retry_after)}. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        headers = dict(headers)
        headers["retry-after-ms"] = str(wait_ms)
        headers["retry-after"] = str(max(1, math.ceil(wait_ms / 1000)))
        return _json(429, openai_error(message, "requests", "rate_limit_exceeded"), headers)

    async def _drop(self, request: web.Request, image_id: str) -> web.StreamResponse:
        """Close the connection: before any answer (even kinds) or halfway through the body."""
        kind = DROP_KINDS[(self.stats.outcomes[DROPPED] - 1) % len(DROP_KINDS)]
        self.stats.drop_kinds[kind] += 1
        transport = request.transport
        if kind == "before_answer":
            if transport is not None:
                transport.close()  # the client sees ServerDisconnectedError
            return web.Response()  # never written: the transport is gone
        body = self._rating_body(image_id, "gpt-fault")
        response = web.StreamResponse(headers={"Content-Length": str(len(body))})
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        if transport is not None:
            transport.close()  # buffered half goes out, then FIN: ClientPayloadError
        return response

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.summary())


def _thresholds(config: FaultConfig) -> list[tuple[float, str]]:
    cumulative = 0.0
    thresholds = []
    for probability, fault in (
        (config.p429, RATE_LIMITED),
        (config.p500, SERVER_ERROR),
        (config.p503, UNAVAILABLE),
        (config.p_drop, DROPPED),
        (config.p_garbage, GARBAGE),
    ):
        if probability > 0:
            cumulative += probability
            thresholds.append((cumulative, fault))
    return thresholds


# A fast path for the two fields the server needs: a full json.loads of every request costs
# more than the rest of the handler at 10,000 requests in flight (it feeds the garbage collector).
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]*)"')
_IMAGE_URL = re.compile(rb'"image_url"\s*:\s*\{\s*"url"\s*:\s*"([^"\\]*)"')


def _model_and_image_url(raw: bytes) -> tuple[str, str]:
    """The request's model and the URL of its image part (ValueError & co. when absent)."""
    model, url = _MODEL.search(raw), _IMAGE_URL.search(raw)
    if model is not None and url is not None:
        return model[1].decode(), url[1].decode()
    payload = json.loads(raw)  # escapes or unusual layout: parse it properly
    content = payload["messages"][-1]["content"]
    part = next(p for p in content if p.get("type") == "image_url")
    image_url = part["image_url"]["url"]
    if not isinstance(image_url, str):
        raise TypeError("image_url.url must be a string")
    return str(payload["model"]), image_url


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


# --- running it ---------------------------------------------------------------------------


async def start(
    server: FaultServer, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve `server` on host:port (0 = any free port); returns the runner and the port."""
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=16384)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    return runner, sockets[0].getsockname()[1]


@contextlib.contextmanager
def run_in_thread(
    config: FaultConfig | FaultServer, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Serve on a thread with its own loop; yields the base URL (with `/v1`).

    Pass a `FaultServer` instead of a config to read its `stats` afterwards.
    """
    server = config if isinstance(config, FaultServer) else FaultServer(config)
    loop = asyncio.new_event_loop()
    started: list[tuple[web.AppRunner, int]] = []
    failed: list[BaseException] = []
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            started.append(loop.run_until_complete(start(server, host, port)))
        except BaseException as exc:  # reported to the caller below
            failed.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(started[0][0].cleanup())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=serve, name="fault-server", daemon=True)
    thread.start()
    ready.wait(30)
    if failed:
        raise failed[0]
    try:
        yield f"http://{host}:{started[0][1]}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def _raise_file_limit() -> None:
    """10,000 open sockets need more than the usual soft limit of 1024 descriptors."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, FaultConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fault_server",
        description="An OpenAI chat-completions server that injects faults. Prints its port.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    defaults = FaultConfig()
    for item in dataclasses.fields(FaultConfig):
        flag = "--" + item.name.replace("_", "-")
        default = getattr(defaults, item.name)
        if isinstance(default, bool):
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=default, help=f"default {default}")
            continue
        kind: Callable[[str], Any] = float
        if item.name in {"rpm_limit", "retry_after_ms", "seed"}:
            kind = int
        elif item.name == "api_key":
            kind = str
        parser.add_argument(flag, type=kind, default=default, help=f"default {default}")
    args = parser.parse_args(argv)
    values = {item.name: getattr(args, item.name) for item in dataclasses.fields(FaultConfig)}
    if values["retry_after_ms"] is not None and values["retry_after_ms"] < 0:
        values["retry_after_ms"] = None  # --retry-after-ms -1: random 429s without a hint
    return args, FaultConfig(**values)


async def _serve_forever(server: FaultServer, host: str, port: int) -> None:
    runner, bound = await start(server, host, port)
    print(bound, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args, config = _parse_args(argv)
    _raise_file_limit()
    # 10,000 connections are a big heap: frequent full collections would cost more CPU than
    # the handler. This process only serves, so fewer collections are safe.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    server = FaultServer(config)
    asyncio.run(_serve_forever(server, args.host, args.port))
    print(json.dumps(server.stats.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
