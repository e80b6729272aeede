"""Anthropic Messages API adapter: one `POST /v1/messages` per image, no SDK.

What it sends: `x-api-key`, `anthropic-version: 2023-06-01`, a JSON body with `model`,
`max_tokens`, an optional top-level `system`, one user message holding the image block first and
the prompt text second (Anthropic's advice), and `output_config.format` = the rating JSON schema
(constrained decoding on models that support it). The answer is re-validated anyway.

How errors are classified (body first, then status):
- `authentication_error` 401, `permission_error` 403, `billing_error` 402, `not_found_error`
  404 (unknown model) -> FatalJobError.
- `invalid_request_error` 400: a spend or usage limit or a low credit balance -> FatalJobError;
  a problem with the image (size, format, media type, URL) -> PermanentImageError; anything else
  is about the request we build for every image (an unknown parameter, a schema the model does
  not support, a missing header), so every image would fail the same way -> FatalJobError.
- `request_too_large` 413 -> PermanentImageError.
- `rate_limit_error` 429 and `overloaded_error` 529 -> RateLimited (retry-after as the hint).
- `api_error` 500, `timeout_error` 504, 503 from the load balancer, 408/409 -> Transient.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from kullbatch.images import fit_within
from kullbatch.models import Answer, PreparedImage, Prompt, RateLimits, Usage
from kullbatch.providers.base import (
    RATING_SCHEMA,
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Transient,
    parse_rating,
)
from kullbatch.providers.download import inline_url_image
from kullbatch.providers.http import (
    HTTPAnswer,
    classify_status,
    post_json,
    retry_after_hint,
    scrub,
    seconds_until,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    import aiohttp

NAME = "anthropic"
DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# A rating is a few hundred tokens; 1024 leaves room for a long description without paying for
# a runaway answer.
MAX_TOKENS = 1024
# The API's per-image limit, counted on the decoded image bytes ("image exceeds 5 MB maximum:
# N bytes > 5242880 bytes").
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_FATAL_TYPES = frozenset(
    {"authentication_error", "permission_error", "billing_error", "not_found_error"}
)
_TRANSIENT_TYPES = frozenset({"api_error", "timeout_error", "conflict_error"})
_SPEND_LIMIT = re.compile(
    r"usage limit|spend(?:ing)? limit|credit balance|purchase credits|billing", re.IGNORECASE
)
_ABOUT_IMAGE = re.compile(r"image|media.?type|\burl\b|download", re.IGNORECASE)
_IMAGE_TOO_LARGE = re.compile(r"image exceeds .*maximum", re.IGNORECASE)
_STATUS_OVERLOADED = 529


# --- the wire format of answers (only the fields we use; the rest is ignored) ---------------


class _Block(BaseModel):
    type: str
    text: str | None = None


class _Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class _Message(BaseModel):
    type: Literal["message"]
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage = _Usage()


class _ErrorDetail(BaseModel):
    type: str
    message: str = ""


class _ErrorBody(BaseModel):
    type: Literal["error"]
    error: _ErrorDetail
    request_id: str | None = None


# --- the wire format of requests ------------------------------------------------------------


def image_source(image: PreparedImage) -> dict[str, Any]:
    """The `source` of an image block: a URL Anthropic fetches, or base64 of our bytes."""
    if image.url is not None:
        return {"type": "url", "url": image.url}
    return {"type": "base64", "media_type": image.media_type, "data": image.base64()}


def request_body(model: str, source: dict[str, Any], prompt: Prompt) -> dict[str, Any]:
    """A Messages API body: image block before the text, the rating schema as output format."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": source},
                    {"type": "text", "text": prompt.text},
                ],
            }
        ],
        "output_config": {"format": {"type": "json_schema", "schema": RATING_SCHEMA}},
    }
    if prompt.system:
        body["system"] = prompt.system
    return body


# --- headers -> hints -----------------------------------------------------------------------


def parse_limits(headers: Mapping[str, str], now: datetime | None = None) -> RateLimits | None:
    """`anthropic-ratelimit-*` headers -> RateLimits; input-token figures when `tokens-*` is absent.

    None when the answer carried no rate-limit headers at all (proxies, test servers).
    """

    def number(name: str) -> int | None:
        value = headers.get(f"anthropic-ratelimit-{name}")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def reset(name: str) -> float | None:
        value = headers.get(f"anthropic-ratelimit-{name}-reset")
        return seconds_until(value, now) if value is not None else None

    has_tokens = any(name.startswith("anthropic-ratelimit-tokens-") for name in headers)
    tokens = "tokens" if has_tokens else "input-tokens"
    limits = RateLimits(
        requests_limit=number("requests-limit"),
        requests_remaining=number("requests-remaining"),
        requests_reset=reset("requests"),
        tokens_limit=number(f"{tokens}-limit"),
        tokens_remaining=number(f"{tokens}-remaining"),
        tokens_reset=reset(tokens),
    )
    return None if limits == RateLimits() else limits


# --- non-2xx -> taxonomy --------------------------------------------------------------------


def classify_error(
    answer: HTTPAnswer, api_key: str | None = None, now: datetime | None = None
) -> ProviderError:
    """Map an error answer onto the taxonomy, on its body first; the key never leaks."""
    retry_after = retry_after_hint(answer.headers, now)
    try:
        parsed: _ErrorBody | None = _ErrorBody.model_validate_json(answer.body)
    except ValidationError:
        parsed = None
    if parsed is None:
        detail, error_type, where = answer.text(), None, ""
    else:
        detail, error_type = parsed.error.message, parsed.error.type
        where = f" (request {parsed.request_id})" if parsed.request_id else ""
    label = f"{NAME} HTTP {answer.status}" + (f" {error_type}" if error_type else "")
    message = scrub(f"{label}: {detail}{where}" if detail else label, api_key)
    error = _by_type(answer.status, error_type, detail, message, retry_after)
    error.limits = parse_limits(answer.headers, now)
    return error


def _by_type(
    status: int, error_type: str | None, detail: str, message: str, retry_after: float | None
) -> ProviderError:
    if status == _STATUS_OVERLOADED or error_type in {"overloaded_error", "rate_limit_error"}:
        return RateLimited(message, retry_after)
    if error_type in _FATAL_TYPES:
        return FatalJobError(message)
    if error_type == "request_too_large":
        return PermanentImageError(message)
    if error_type in _TRANSIENT_TYPES:
        return Transient(message, retry_after)
    if error_type == "invalid_request_error":
        return _invalid_request(detail, message)
    fallback = classify_status(status, detail, retry_after)
    fallback.args = (message,)
    fallback.message = message
    return fallback


def _invalid_request(detail: str, message: str) -> ProviderError:
    """A 400 is fatal unless it is about this image: the same request goes out 10,000 times."""
    if _SPEND_LIMIT.search(detail):
        return FatalJobError(f"{message} [spend limit or credit: the job stops]")
    if _ABOUT_IMAGE.search(detail):
        return PermanentImageError(message)
    return FatalJobError(f"{message} [every image would fail the same way: the job stops]")


# --- 2xx -> Answer --------------------------------------------------------------------------


def parse_answer(answer: HTTPAnswer, now: datetime | None = None) -> Answer:
    """A Message -> Answer; truncated, refused or off-schema answers are worth another try."""
    limits = parse_limits(answer.headers, now)
    try:
        return _answer(answer.body, limits)
    except ProviderError as error:
        error.limits = limits
        raise


def _answer(body: bytes, limits: RateLimits | None) -> Answer:
    try:
        message = _Message.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise Transient(
            f"{NAME} answer is not a Messages API message ({where}: {first['msg']})"
        ) from exc
    usage = Usage(message.usage.input_tokens, message.usage.output_tokens)
    if message.stop_reason == "max_tokens":
        raise Transient(
            f"{NAME} answer was truncated "
            f"(stop_reason max_tokens after {usage.output_tokens} output tokens)"
        )
    if message.stop_reason == "refusal":
        raise Transient(f"{NAME} model refused to rate the image (stop_reason refusal)")
    text = next((block.text for block in message.content if block.type == "text"), None)
    if text is None:
        kinds = ", ".join(block.type for block in message.content) or "nothing"
        raise Transient(f"{NAME} answer has no text block (content: {kinds})")
    return Answer(parse_rating(text, source=NAME), usage, limits)


# --- the adapter ----------------------------------------------------------------------------


class AnthropicProvider:
    """Rates one image per Messages API call."""

    name = NAME

    def __init__(
        self,
        *,
        model: str,
        session: aiohttp.ClientSession,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        max_image_bytes: int = MAX_IMAGE_BYTES,
    ) -> None:
        self.model = model
        self.max_image_bytes = max_image_bytes
        self._session = session
        self._api_key = api_key
        self._url = base_url.rstrip("/") + "/v1/messages"

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        """URL images go as URLs; one Anthropic finds too big is fetched, shrunk and inlined."""
        if image.url is not None:
            try:
                return await self._send(image_source(image), prompt)
            except PermanentImageError as error:
                if not _IMAGE_TOO_LARGE.search(error.message):
                    raise
            image = await inline_url_image(self._session, image)
        inline = await self._fit(image)
        return await self._send(image_source(inline), prompt)

    async def _fit(self, image: PreparedImage) -> PreparedImage:
        """Keep the decoded bytes under the per-image limit, or fail this image clearly."""
        if image.data is None:
            raise PermanentImageError(f"{image.filename}: no image data and no URL to send")
        if image.media_type not in MEDIA_TYPES:
            raise PermanentImageError(
                f"{image.filename}: {image.media_type} is not accepted by {NAME} "
                "(JPEG, PNG, GIF or WebP)"
            )
        if len(image.data) <= self.max_image_bytes:
            return image
        try:
            smaller = await asyncio.to_thread(fit_within, image.data, self.max_image_bytes)
        except PermanentImageError as error:
            raise PermanentImageError(
                f"{image.filename}: {error.message} ({NAME} accepts at most 5 MB per image)"
            ) from error
        return replace(image, data=smaller, media_type="image/jpeg")

    async def _send(self, source: dict[str, Any], prompt: Prompt) -> Answer:
        headers = {
            "x-api-key": self._api_key,
            "anthropic-version": API_VERSION,
            "accept": "application/json",
        }
        payload = request_body(self.model, source, prompt)
        answer = await post_json(self._session, self._url, headers=headers, payload=payload)
        if not 200 <= answer.status < 300:  # noqa: PLR2004
            raise classify_error(answer, self._api_key)
        return parse_answer(answer)


def create(
    *, model: str, session: aiohttp.ClientSession, env: Mapping[str, str]
) -> AnthropicProvider:
    """Build the adapter from the environment the registry passes (never os.environ here)."""
    api_key = env.get("ANTHROPIC_API_KEY", "").strip()
    if not api_key:
        raise FatalJobError(f"{NAME}: set ANTHROPIC_API_KEY in the environment")
    base_url = env.get("ANTHROPIC_BASE_URL", "").strip() or DEFAULT_BASE_URL
    return AnthropicProvider(model=model, session=session, api_key=api_key, base_url=base_url)
