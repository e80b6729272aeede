"""The one boundary between aiohttp and the taxonomy, and the parsers for servers' retry hints.

Adapters build a `WireRequest` and call `send`; transport failures come back as `Transient`,
HTTP answers come back as `HTTPAnswer` whatever their status, and the adapter's `parse_answer`
classifies non-2xx with its own body rules before falling back to `status_kind`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, BinaryIO

import aiohttp

from kullbatch.errors import (
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Retryable,
    Transient,
)
from kullbatch.providers.templates import EncodedBody, encode

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from kullbatch.models import RateLimits

# Long enough for a slow vision model on a big image, short enough that a hung socket is retried.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=600, sock_connect=30)
# A flex request may queue for minutes: OpenAI and Google advise 15 minutes for an answer.
FLEX_TIMEOUT = aiohttp.ClientTimeout(total=900, sock_connect=30)


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One request exactly as fast mode sends it, without the key: what economy mode batches.

    `path` is relative to the adapter's base URL (`Credentials.base_url`: its base-URL
    variable's value, or the default, as the provider's own SDK reads it):
    - openai, grok, openai-compatible: the base includes `/v1` (https://api.openai.com/v1), so
      `path` is `/chat/completions`; OpenAI's batch line `url` is `openai.batch_url(request)`;
    - groq: the base is the host (https://api.groq.com), `path` `/openai/v1/chat/completions`;
    - anthropic: the host, `path` `/v1/messages`;
    - gemini: the host, `path` `/v1beta/models/<model>:generateContent`.
    `headers` are what the request needs besides the key (a version, `accept`); `body` is the
    JSON document.
    """

    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HTTPAnswer:
    """A provider's answer: status, lower-cased headers, raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (HTML error pages, proxies)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def text(self, limit: int = 300) -> str:
        return self.body[:limit].decode("utf-8", errors="replace").strip()

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300  # noqa: PLR2004


async def send(
    session: aiohttp.ClientSession,
    base_url: str,
    request: WireRequest,
    auth: Mapping[str, str],
    timeout: aiohttp.ClientTimeout = REQUEST_TIMEOUT,
) -> HTTPAnswer:
    """POST a built request to `base_url` + its path, with the key's header(s) added here only."""
    url = base_url.rstrip("/") + request.path
    headers = {**request.headers, **auth}
    return await post_json(session, url, headers=headers, payload=request.body, timeout=timeout)


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    payload: Any,
    timeout: aiohttp.ClientTimeout = REQUEST_TIMEOUT,
) -> HTTPAnswer:
    """POST a JSON body; every transport failure becomes Transient (retried, never fatal)."""
    body = payload.encoded if isinstance(payload, EncodedBody) else encode(payload)
    send_headers = {"content-type": "application/json", **headers}
    return await request(session, "POST", url, headers=send_headers, data=body, timeout=timeout)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    data: bytes | aiohttp.FormData | BinaryIO | None = None,
    timeout: aiohttp.ClientTimeout = REQUEST_TIMEOUT,
    max_bytes: int | None = None,
) -> HTTPAnswer:
    """Any request, with transport errors mapped onto Transient.

    `data` may be an open file (streamed, as a batch file of hundreds of megabytes should be)
    or a form. With `max_bytes`, a longer body is abandoned as soon as it passes the limit.
    """
    try:
        async with session.request(
            method, url, headers=dict(headers), data=data, timeout=timeout
        ) as response:
            raw = await (response.read() if max_bytes is None else _bounded(response, max_bytes))
            lowered = {key.lower(): value for key, value in response.headers.items()}
            return HTTPAnswer(response.status, lowered, raw)
    except TimeoutError as exc:
        raise Transient(f"request timed out after {timeout.total or 0:.0f} s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise Transient(f"cannot connect to {exc.host}:{exc.port}: {exc.os_error}") from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise Transient("server closed the connection before answering") from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
        raise Transient(f"connection dropped: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise Transient(f"HTTP client error: {type(exc).__name__}: {exc}") from exc


async def _bounded(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if (response.content_length or 0) > max_bytes:
        raise PermanentImageError(
            f"{response.url} is {response.content_length} bytes, over the {max_bytes}-byte limit"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise PermanentImageError(f"{response.url} is over the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def status_kind(status: int) -> type[ProviderError]:
    """Status-only classification, after an adapter has checked its body-specific traps."""
    if status == 429:  # noqa: PLR2004
        return RateLimited
    if status in {408, 409} or status >= 500:  # noqa: PLR2004
        return Transient
    if status in {401, 402, 403, 404}:
        return FatalJobError
    if status in {400, 413, 415, 422}:
        return PermanentImageError
    return Transient


def answer_error(
    kind: type[ProviderError],
    message: str,
    answer: HTTPAnswer,
    *,
    retry_after: float | None = None,
    limits: RateLimits | None = None,
    env_var: Sequence[str] = (),
) -> ProviderError:
    """An error of `kind` carrying the answer's status and headers, built whole.

    The retry hint is kept only on the kinds that are retried: on the others it means nothing.
    `env_var` (the variables holding a key the answer refused) is kept on a FatalJobError.
    """
    if issubclass(kind, FatalJobError):
        return kind(
            message, env_var=env_var, status=answer.status, headers=answer.headers, limits=limits
        )
    return kind(
        message,
        status=answer.status,
        headers=answer.headers,
        retry_after=retry_after if issubclass(kind, Retryable) else None,
        limits=limits,
    )


_KEY_WORDS = re.compile(r"api[ _-]?key|authenticat|unauthori|credential", re.IGNORECASE)


def about_the_key(status: int, text: str) -> bool:
    """A 401, or an error whose words are about the key (xAI answers a wrong key with a 400)."""
    return status == 401 or bool(_KEY_WORDS.search(text))  # noqa: PLR2004


def retry_after_hint(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@lru_cache(maxsize=4096)  # every answer carries a few; the same values come again and again
def parse_go_duration(value: str) -> float | None:
    """`6m0s`, `1.5s`, `12ms` (OpenAI/Groq x-ratelimit-reset-*) -> seconds; None if not one."""
    text = value.strip()
    if not text:
        return None
    parts = _GO_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        try:
            return max(0.0, float(text))
        except ValueError:
            return None
    return sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


def seconds_until(value: str, now: datetime | None = None) -> float | None:
    """An RFC 3339 time (Anthropic's `*-reset` headers) -> seconds from now, never negative."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def scrub(message: str, *secrets: str | None) -> str:
    """Remove API keys from a provider's message before it reaches logs, DB or the screen."""
    for secret in secrets:
        if secret and len(secret) >= 4:  # noqa: PLR2004
            message = message.replace(secret, "[redacted]")
    return message
