"""A local stand-in for the Anthropic Messages API.

It checks each request the way the real API does (auth and version headers, body shape, the
image block, the output schema) and answers with the real shapes: a Message on success, the
`{"type":"error","error":{...},"request_id":...}` envelope with the real headers on errors, and
the load balancer's plain-text 503. It also serves photos under /photos/ so that URL images and
the download fallback can be exercised without the internet.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from kullbatch.providers.base import RATING_SCHEMA
from tests import fake_usage
from tests.fake_compare import COMPARE_SCHEMA, verdict_text

KEY = "sk-ant-api03-FAKEfakeFAKEfake0123456789-abcdefAA"
VERSION = "2023-06-01"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
TOP_LEVEL_KEYS = {
    "model", "max_tokens", "messages", "system", "output_config", "metadata", "stop_sequences",
    "stream", "temperature", "top_k", "top_p", "tools", "tool_choice", "thinking",
    "service_tier", "container", "mcp_servers", "context_management",
}  # fmt: skip
MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}

GOOD_RATING: dict[str, Any] = {
    "starRating": 4,
    "colorLabel": "green",
    "title": "Bride laughing at the altar",
    "description": "Sharp, warm candid moment with clean highlights.",
    "tags": ["wedding", "candid", "portrait"],
    "issues": ["eyes-closed"],
    "score": 64,
}


@dataclass
class Reply:
    """One scripted answer: status, body bytes, headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: Any


def request_id() -> str:
    return "req_011C" + secrets.token_hex(10)


def rfc3339(seconds_from_now: float) -> str:
    when = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def limit_headers(
    *, requests_remaining: int = 49, tokens_remaining: int = 38_000, reset_in: float = 30
) -> dict[str, str]:
    """The anthropic-ratelimit-* headers the API sends on every answer, errors included."""
    return {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": str(requests_remaining),
        "anthropic-ratelimit-requests-reset": rfc3339(reset_in),
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": str(tokens_remaining),
        "anthropic-ratelimit-tokens-reset": rfc3339(reset_in),
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-remaining": "29000",
        "anthropic-ratelimit-input-tokens-reset": rfc3339(reset_in),
        "anthropic-ratelimit-output-tokens-limit": "10000",
        "anthropic-ratelimit-output-tokens-remaining": "9000",
        "anthropic-ratelimit-output-tokens-reset": rfc3339(reset_in),
    }


def message_reply(
    text: str | None,
    *,
    stop_reason: str = "end_turn",
    model: str = "claude-haiku-4-5-20251001",
    input_tokens: int = 1612,
    output_tokens: int = 87,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A real Message; `text=None` answers with a tool_use block instead of text."""
    if text is None:
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": "toolu_01" + secrets.token_hex(8),
            "name": "record_rating",
            "input": GOOD_RATING,
        }
    else:
        block = {"type": "text", "text": text}
    message = {
        "id": "msg_01" + secrets.token_hex(11),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }
    all_headers = {"request-id": request_id(), **limit_headers(), **(headers or {})}
    return Reply(200, json.dumps(message).encode(), all_headers)


def rating_reply(rating: dict[str, Any] | None = None, **kwargs: Any) -> Reply:
    return message_reply(json.dumps(rating if rating is not None else GOOD_RATING), **kwargs)


def error_reply(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> Reply:
    """The API's error envelope with its request-id header."""
    rid = request_id()
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": rid}
    return Reply(status, json.dumps(body).encode(), {"request-id": rid, **(headers or {})})


def text_reply(status: int, text: str) -> Reply:
    return Reply(status, text.encode(), {}, content_type="text/plain")


# Real answers seen from the API (messages as users reported them), by a short name.
def real_errors() -> dict[str, Reply]:
    exhausted = limit_headers(requests_remaining=0, reset_in=17)
    return {
        "bad_key": error_reply(401, "authentication_error", "invalid x-api-key"),
        "forbidden": error_reply(
            403, "permission_error", "Your API key does not have permission to use this model."
        ),
        "billing": error_reply(402, "billing_error", "Your organization has a billing issue."),
        "unknown_model": error_reply(404, "not_found_error", "model: claude-nonexistent-9"),
        "spend_limit": error_reply(
            400,
            "invalid_request_error",
            "You have reached your specified API usage limits. "
            "You will regain access on 2026-04-01 at 00:00 UTC.",
        ),
        "workspace_limit": error_reply(
            400,
            "invalid_request_error",
            "You have reached your specified workspace API usage limits. "
            "You will regain access on 2026-04-01 at 00:00 UTC.",
        ),
        "credit": error_reply(
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. "
            "Please go to Plans & Billing to upgrade or purchase credits.",
        ),
        "image_too_big": error_reply(
            400,
            "invalid_request_error",
            "messages.0.content.0.image.source.base64: image exceeds 5 MB maximum: "
            "7061012 bytes > 5242880 bytes",
        ),
        "bad_image": error_reply(400, "invalid_request_error", "Could not process image"),
        "media_type": error_reply(
            400,
            "invalid_request_error",
            "messages.0.content.0.image.source.base64.media_type: Input should be 'image/jpeg', "
            "'image/png', 'image/gif' or 'image/webp'",
        ),
        "unknown_param": error_reply(
            400, "invalid_request_error", "output_config: Extra inputs are not permitted"
        ),
        "missing_version": error_reply(
            400, "invalid_request_error", "anthropic-version: header is required"
        ),
        "too_large": error_reply(
            413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
        ),
        "rate_limited": error_reply(
            429,
            "rate_limit_error",
            "This request would exceed your organization's rate limit of 50 requests per minute. "
            "For details, refer to: https://docs.claude.com/en/api/rate-limits.",
            {"retry-after": "17", **exhausted},
        ),
        "api_error": error_reply(500, "api_error", "Internal server error"),
        "unavailable": text_reply(
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        ),
        "timeout": error_reply(504, "timeout_error", "Request timeout"),
        "overloaded": error_reply(529, "overloaded_error", "Overloaded"),
    }


class FakeAnthropic:
    """The fake API: scripted replies in order, a good rating when the script is empty."""

    def __init__(self, key: str = KEY, max_image_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.key = key
        self.max_image_bytes = max_image_bytes
        self.replies: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.rejections: list[str] = []
        self.photos: dict[str, bytes] = {}
        self.base_url = ""
        self.count_usage = False  # usage counted from the photo, as the API does (fake_usage)
        self.scripted_comparisons = False  # True: comparisons get the script's answers too

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def _good_reply(self, body: Any) -> Reply:
        if not self.count_usage:
            return rating_reply()
        answer = json.dumps(GOOD_RATING)
        input_tokens, output_tokens = fake_usage.anthropic_usage(body, answer)
        return rating_reply(input_tokens=input_tokens, output_tokens=output_tokens)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/photos/{name}", self._photo)
        return app

    async def _photo(self, request: web.Request) -> web.Response:
        data = self.photos.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=data, content_type="image/jpeg")

    async def _messages(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append(Recorded(request.path, headers, body))
        reply = self._check_headers(headers) or self._check_body(body)
        if reply is not None:
            self.rejections.append(reply.body.decode())
        else:
            scripted = bool(self.replies) and (self.scripted_comparisons or not is_comparison(body))
            if scripted:
                reply = self.replies.popleft()
            elif is_comparison(body):
                reply = comparison_reply(body)
            else:
                reply = self.replies.popleft() if self.replies else self._good_reply(body)
        return web.Response(
            status=reply.status,
            body=reply.body,
            headers=reply.headers,
            content_type=reply.content_type,
        )

    def _check_headers(self, headers: dict[str, str]) -> Reply | None:
        if "x-api-key" not in headers:
            return error_reply(401, "authentication_error", "x-api-key header is required")
        if headers["x-api-key"] != self.key:
            return error_reply(401, "authentication_error", "invalid x-api-key")
        if headers.get("anthropic-version") != VERSION:
            return error_reply(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        if not headers.get("content-type", "").startswith("application/json"):
            return error_reply(400, "invalid_request_error", "content-type must be JSON")
        return None

    def _check_body(self, body: Any) -> Reply | None:
        problem = body_problem(body, self.max_image_bytes, self.photos)
        if problem is None:
            return None
        if problem.startswith("model: "):
            return error_reply(404, "not_found_error", problem)
        return error_reply(400, "invalid_request_error", problem)


def body_problem(  # noqa: PLR0911  (a validator stops at the first problem, like the API)
    body: Any, max_image_bytes: int, photos: dict[str, bytes]
) -> str | None:
    """The first thing the real API would reject in this body, in its wording; None if valid."""
    if not isinstance(body, dict):
        return "There was an error parsing the body of your request"
    for key in body:
        if key not in TOP_LEVEL_KEYS:
            return f"{key}: Extra inputs are not permitted"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: Field required"
    if not model.startswith("claude-"):
        return f"model: {model}"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    if "system" in body and not isinstance(body["system"], (str, list)):
        return "system: Input should be a valid string"
    output = body.get("output_config")
    if is_comparison(body):
        if output != {"format": {"type": "json_schema", "schema": COMPARE_SCHEMA}}:
            return f"output_config: expected the comparison json_schema, got {output!r:.120}"
        return comparison_problem(body["messages"], max_image_bytes, photos)
    if output != {"format": {"type": "json_schema", "schema": RATING_SCHEMA}}:
        return f"output_config: expected the rating json_schema format, got {output!r:.120}"
    return messages_problem(body.get("messages"), max_image_bytes, photos)


MAX_IMAGES = 100  # the Messages API's limit per request


def image_blocks(body: Any) -> list[Any]:
    """Every image block of the first message, in order (none when the shape is off)."""
    try:
        content = body["messages"][0]["content"]
    except (KeyError, IndexError, TypeError):
        return []
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict) and block.get("type") == "image"]


def is_comparison(body: Any) -> bool:
    return len(image_blocks(body)) > 1


def comparison_problem(messages: Any, max_image_bytes: int, photos: dict[str, bytes]) -> str | None:
    """One user message of text and image blocks (several images), each block as the API
    takes it, at most MAX_IMAGES images."""
    if not isinstance(messages, list) or len(messages) != 1 or messages[0].get("role") != "user":
        return "messages: expected exactly one user message"
    content = messages[0]["content"]
    if len(image_blocks({"messages": messages})) > MAX_IMAGES:
        return f"messages.0.content: too many images (at most {MAX_IMAGES})"
    for index, block in enumerate(content):
        where = f"messages.0.content.{index}"
        if not isinstance(block, dict) or block.get("type") not in {"text", "image"}:
            return f"{where}: expected a text or image block"
        if block["type"] == "text" and not (isinstance(block.get("text"), str) and block["text"]):
            return f"{where}.text: expected a non-empty string"
        if block["type"] == "image":
            problem = image_problem(block.get("source"), max_image_bytes, photos)
            if problem:
                return problem.replace("messages.0.content.0", where)
    return None


def comparison_reply(body: Any) -> Reply:
    """The verdict a careful model gives: the sharpest frame first (`fake_compare`)."""
    frames = [base64.b64decode(block["source"]["data"]) for block in image_blocks(body)]
    return message_reply(verdict_text(frames), input_tokens=1500 * len(frames), output_tokens=60)


def messages_problem(messages: Any, max_image_bytes: int, photos: dict[str, bytes]) -> str | None:
    """One user message: an image block, then the prompt text (the order Anthropic advises)."""
    if not isinstance(messages, list) or len(messages) != 1:
        return "messages: expected exactly one user message"
    message = messages[0]
    if not isinstance(message, dict) or message.get("role") != "user":
        return "messages.0.role: Input should be 'user'"
    content = message.get("content")
    if not isinstance(content, list) or len(content) != 2:
        return "messages.0.content: expected [image block, text block]"
    image, text = content
    if not isinstance(text, dict) or text.get("type") != "text" or not text.get("text"):
        return "messages.0.content.1: expected a non-empty text block after the image"
    if not isinstance(image, dict) or image.get("type") != "image":
        return "messages.0.content.0: expected the image block first"
    return image_problem(image.get("source"), max_image_bytes, photos)


def image_problem(  # noqa: PLR0911  (a validator stops at the first problem, like the API)
    source: Any, max_image_bytes: int, photos: dict[str, bytes]
) -> str | None:
    where = "messages.0.content.0.image.source"
    if not isinstance(source, dict):
        return f"{where}: Field required"
    if source.get("type") == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return f"{where}.url: Input should be a valid URL"
        if set(source) != {"type", "url"}:
            return f"{where}: Extra inputs are not permitted"
        data = photos.get(url.rsplit("/photos/", 1)[-1]) if "/photos/" in url else None
        return size_problem(f"{where}.url", data, max_image_bytes)
    if source.get("type") != "base64":
        return f"{where}.type: Input tag {source.get('type')!r} does not match 'base64' or 'url'"
    if set(source) != {"type", "media_type", "data"}:
        return f"{where}: expected exactly type, media_type and data"
    media_type = source.get("media_type")
    if media_type not in MEDIA_TYPES:
        return (
            f"{where}.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    raw = source.get("data")
    if not isinstance(raw, str) or raw.startswith("data:"):
        return f"{where}.base64.data: expected base64 without a data: prefix"
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return f"{where}.base64.data: invalid base64 data"
    if not data.startswith(MAGIC[media_type]):
        return (
            f"{where}.base64.data: The image was specified using the {media_type} media type, "
            "but does not appear to be that kind of image"
        )
    return size_problem(f"{where}.base64", data, max_image_bytes)


def size_problem(where: str, data: bytes | None, max_image_bytes: int) -> str | None:
    if data is not None and len(data) > max_image_bytes:
        return f"{where}: image exceeds 5 MB maximum: {len(data)} bytes > {max_image_bytes} bytes"
    return None
