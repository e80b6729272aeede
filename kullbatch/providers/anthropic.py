"""Anthropic Messages API adapter: one `POST /v1/messages` per image, no SDK.

What it sends: `x-api-key`, `anthropic-version: 2023-06-01`, a JSON body with `model`,
`max_tokens`, an optional top-level `system`, one user message holding the image block first and
the prompt text second (Anthropic's advice), and `output_config.format` = the rating JSON schema
(constrained decoding on models that support it). The answer is re-validated anyway.

How errors are classified (body first, then status):
- `authentication_error` 401, `permission_error` 403, `billing_error` 402, `not_found_error`
  404 (unknown model) -> FatalJobError; a key problem names ANTHROPIC_API_KEY.
- `invalid_request_error` 400: a spend or usage limit or a low credit balance -> FatalJobError;
  a problem with the image (size, format, media type, URL) -> PermanentImageError; anything else
  is about the request we build for every image (an unknown parameter, a schema the model does
  not support, a missing header), so every image would fail the same way -> FatalJobError.
- `request_too_large` 413 -> PermanentImageError.
- `rate_limit_error` 429 and `overloaded_error` 529 -> RateLimited (retry-after as the hint).
- `api_error` 500, `timeout_error` 504, 503 from the load balancer, 408/409 -> Transient.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ValidationError

from kullbatch.errors import (
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Refused,
    Transient,
)
from kullbatch.media.images import fit_image
from kullbatch.models import Answer, PreparedImage, Prompt, RateLimits, Usage
from kullbatch.providers.base import RATING_SCHEMA, Capabilities, WireRequest, parse_rating
from kullbatch.providers.compare import (
    COMPARE_SCHEMA,
    Verdict,
    compare_prompt,
    frame_label,
    image_limit,
    parse_comparison,
)
from kullbatch.providers.download import inline_url_image
from kullbatch.providers.http import (
    HTTPAnswer,
    about_the_key,
    answer_error,
    retry_after_hint,
    scrub,
    seconds_until,
    send,
    status_kind,
)
from kullbatch.providers.registry import PROVIDERS, key_hint

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    import aiohttp

    from kullbatch.providers.base import Credentials

NAME = "anthropic"
DEFAULT_BASE_URL = PROVIDERS[NAME].default_base_url
API_VERSION = "2023-06-01"
PATH = "/v1/messages"  # relative to the host, as ANTHROPIC_BASE_URL is
# A rating is a few hundred tokens; 1024 leaves room for a long description without paying for
# a runaway answer.
MAX_TOKENS = 1024
# The API's per-image limit, counted on the decoded image bytes ("image exceeds 5 MB maximum:
# N bytes > 5242880 bytes").
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_KEY_TYPES = frozenset({"authentication_error", "permission_error"})  # hint when about the key
# the other error types whose kind does not depend on the message
_KINDS: dict[str, type[ProviderError]] = {
    "permission_error": FatalJobError,
    "overloaded_error": RateLimited,
    "rate_limit_error": RateLimited,
    "billing_error": FatalJobError,
    "not_found_error": FatalJobError,
    "request_too_large": PermanentImageError,
    "api_error": Transient,
    "timeout_error": Transient,
    "conflict_error": Transient,
}
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
    message = f"{label}: {detail}{where}" if detail else label
    kind, message = _by_type(answer.status, error_type, detail, message)
    refused = kind is FatalJobError and _about_the_key(answer.status, error_type, detail)
    return answer_error(
        kind,
        scrub(message, api_key),
        answer,
        retry_after=retry_after_hint(answer.headers, now),
        limits=parse_limits(answer.headers, now),
        env_var=PROVIDERS[NAME].key_vars if refused else (),
    )


def _about_the_key(status: int, error_type: str | None, detail: str) -> bool:
    """An answer about the key (a 401, an authentication error, words about the key)."""
    return error_type == "authentication_error" or (
        error_type in _KEY_TYPES | {None} and about_the_key(status, detail)
    )


def _by_type(
    status: int, error_type: str | None, detail: str, message: str
) -> tuple[type[ProviderError], str]:
    """The kind of error, and the message with what the user should do about it."""
    if status == _STATUS_OVERLOADED:
        return RateLimited, message
    if _about_the_key(status, error_type, detail):
        return FatalJobError, f"{message} {key_hint(NAME)}"
    if error_type == "invalid_request_error":
        return _invalid_request(detail, message)
    return _KINDS.get(error_type or "") or status_kind(status), message


def _invalid_request(detail: str, message: str) -> tuple[type[ProviderError], str]:
    """A 400 is fatal unless it is about this image: the same request goes out 10,000 times."""
    if _SPEND_LIMIT.search(detail):
        return FatalJobError, f"{message} [spend limit or credit: the job stops]"
    if _ABOUT_IMAGE.search(detail):
        return PermanentImageError, message
    return FatalJobError, f"{message} [every image would fail the same way: the job stops]"


# --- 2xx -> Answer --------------------------------------------------------------------------


def parse_answer(answer: HTTPAnswer, now: datetime | None = None) -> Answer:
    """A Message -> Answer; truncated, refused or off-schema answers are worth another try."""
    limits = parse_limits(answer.headers, now)
    try:
        return _answer(answer.body, limits)
    except ProviderError as error:
        raise error.with_limits(limits) from error


def _answer(body: bytes, limits: RateLimits | None) -> Answer:
    text, usage = message_text(body)
    return Answer(parse_rating(text, source=NAME), usage, limits)


def message_text(body: bytes) -> tuple[str, Usage]:
    """The text of a finished Message and its usage; truncated or refused -> the error."""
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
        raise Refused(f"{NAME} model refused to rate the image (stop_reason refusal)")
    text = next((block.text for block in message.content if block.type == "text"), None)
    if text is None:
        kinds = ", ".join(block.type for block in message.content) or "nothing"
        raise Transient(f"{NAME} answer has no text block (content: {kinds})")
    return text, usage


def compare_body(model: str, frames: Sequence[PreparedImage]) -> dict[str, Any]:
    """A Messages API body for a burst: each frame's label then its image, the question last
    (Anthropic's advice for several images), the comparison schema as output format."""
    content: list[dict[str, Any]] = []
    for number, frame in enumerate(frames, start=1):
        content.append({"type": "text", "text": frame_label(number)})
        content.append({"type": "image", "source": image_source(frame)})
    content.append({"type": "text", "text": compare_prompt(len(frames))})
    return {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": content}],
        "output_config": {"format": {"type": "json_schema", "schema": COMPARE_SCHEMA}},
    }


def parse_verdict(answer: HTTPAnswer, frames: int, api_key: str | None = None) -> Verdict:
    """A Message -> Verdict; an error answer -> the classified error, key scrubbed."""
    if not answer.ok:
        raise classify_error(answer, api_key)
    limits = parse_limits(answer.headers)
    try:
        text, usage = message_text(answer.body)
        return Verdict(parse_comparison(text, frames, source=NAME), usage, limits)
    except ProviderError as error:
        raise error.with_limits(limits) from error


# --- the adapter ----------------------------------------------------------------------------


class AnthropicProvider:
    """Rates one image per Messages API call."""

    name = NAME
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(
        self,
        *,
        model: str,
        session: aiohttp.ClientSession,
        credentials: Credentials,
        max_image_bytes: int = MAX_IMAGE_BYTES,
    ) -> None:
        self.model = model
        self.max_image_bytes = max_image_bytes
        self.base_url = credentials.base_url.rstrip("/")
        self._session = session
        self._api_key = credentials.key
        self._auth = credentials.headers  # x-api-key

    @property
    def _url(self) -> str:
        return self.base_url + PATH

    def build_request(self, image: PreparedImage, prompt: Prompt) -> WireRequest:
        """The Messages request for a ready image (a URL or accepted bytes); no I/O, no key."""
        headers = {"anthropic-version": API_VERSION, "accept": "application/json"}
        return WireRequest(PATH, headers, request_body(self.model, image_source(image), prompt))

    def parse_answer(self, answer: HTTPAnswer) -> Answer:
        """A 2xx Message -> Answer; any other answer -> the classified error, key scrubbed."""
        if not answer.ok:
            raise classify_error(answer, self._api_key)
        return parse_answer(answer)  # the module-level 2xx parser

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        """URL images go as URLs; one Anthropic finds too big is fetched, shrunk and inlined."""
        if image.url is not None:
            try:
                return await self._exchange(image, prompt)
            except PermanentImageError as error:
                if not _IMAGE_TOO_LARGE.search(error.message):
                    raise
            image = await inline_url_image(self._session, image)
        return await self._exchange(await self.ready(image), prompt)

    async def ready(self, image: PreparedImage) -> PreparedImage:
        """Bytes Anthropic accepts, under its 5 MB per-image limit; URLs pass as URLs."""
        return await fit_image(
            image,
            max_bytes=self.max_image_bytes,
            media_types=MEDIA_TYPES,
            why=f"{NAME} accepts at most 5 MB per image",
        )

    @property
    def max_images(self) -> int:
        return image_limit(NAME)

    async def compare(self, frames: Sequence[PreparedImage]) -> Verdict:
        """A burst's frames in one Messages request, each under the 5 MB per-image limit."""
        ready = [await self.ready(frame) for frame in frames]
        headers = {"anthropic-version": API_VERSION, "accept": "application/json"}
        request = WireRequest(PATH, headers, compare_body(self.model, ready))
        answer = await send(self._session, self.base_url, request, self._auth)
        return parse_verdict(answer, len(ready), self._api_key)

    async def _exchange(self, image: PreparedImage, prompt: Prompt) -> Answer:
        request = self.build_request(image, prompt)
        answer = await send(self._session, self.base_url, request, self._auth)
        return self.parse_answer(answer)


def create(
    *, model: str, session: aiohttp.ClientSession, credentials: Credentials
) -> AnthropicProvider:
    """Build the adapter from the job's credentials (`PROVIDERS[NAME].credentials(env)`)."""
    return AnthropicProvider(model=model, session=session, credentials=credentials)
