"""The OpenAI chat-completions wire format, shared by openai, grok, groq and openai-compatible.

Four providers speak the same dialect, so the request builder, the response parser, the error
classifier and the `x-ratelimit-*` header parser live here once, in `ChatAdapter`; each adapter
module adds only its endpoint, auth, image handling and its own body traps (an `ErrorRule`).

A 400 is not always a bad image. The classifier asks, in order:
1. an image error code (`invalid_image`, `image_parse_error`, `invalid_image_url`, ...)
   -> PermanentImageError: this photo fails, the others go on;
2. a model that cannot see images, an unsupported parameter, a rejected `response_format` or
   a 400 pointing at the model -> FatalJobError: the same request would fail for every photo;
3. a message or `param` that talks about the image -> PermanentImageError;
4. anything else -> FatalJobError. A 400 that names no image is about the request, which is
   identical for every photo: stopping after one answer beats 10,000 failed requests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, TypeAdapter, ValidationError

from kullbatch.errors import (
    ContentBlocked,
    FatalJobError,
    PermanentImageError,
    ProviderError,
    Refused,
    Transient,
)
from kullbatch.models import Answer, Prompt, Usage
from kullbatch.providers.base import (
    RATING_SCHEMA,
    RATING_SCHEMA_NAME,
    Capabilities,
    WireRequest,
    parse_rating,
)
from kullbatch.providers.flex import flex_refusal, timeout_for, with_body_tier
from kullbatch.providers.http import (
    HTTPAnswer,
    about_the_key,
    answer_error,
    retry_after_hint,
    scrub,
    send,
    status_kind,
)
from kullbatch.providers.rate_headers import parse_rate_limits
from kullbatch.providers.registry import PROVIDERS, key_hint
from kullbatch.providers.templates import BodyTemplate

if TYPE_CHECKING:
    import aiohttp

    from kullbatch.models import PreparedImage
    from kullbatch.providers.base import Credentials

# Room for the rating (~200 tokens) plus the hidden reasoning of reasoning models (gpt-5.x,
# grok reasoning variants), which `max_completion_tokens` also counts; only used tokens are billed.
DEFAULT_MAX_TOKENS = 2048

JSON_OBJECT_FORMAT: dict[str, Any] = {"type": "json_object"}


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What an error body said, whatever its shape (OpenAI nested, xAI flat, plain text)."""

    message: str
    code: str | None = None
    type: str | None = None
    param: str | None = None

    @property
    def label(self) -> str | None:
        return self.code or self.type


# An adapter's own body trap: returns the class to raise, or None to use the shared rules.
ErrorRule = Callable[[int, ErrorInfo], type[ProviderError] | None]


@dataclass(frozen=True, slots=True)
class ChatEndpoint:
    """Where and how an adapter talks; `api_key` is kept only to scrub it from messages.

    `base_url` + `path` is the URL; `auth` holds the headers that carry the key (and the
    account's organisation and project), added only when sending, never to a `WireRequest`.
    An adapter's endpoint comes from the job's credentials (`of`).
    """

    provider: str
    base_url: str
    auth: Mapping[str, str] = field(default_factory=dict, repr=False)  # never in a repr or log
    api_key: str | None = field(default=None, repr=False)
    error_rule: ErrorRule | None = None
    # Groq's x-ratelimit-*-requests pair counts requests per day, not per minute: not a pace
    requests_per_day: bool = False
    path: str = "/chat/completions"

    @classmethod
    def of(cls, credentials: Credentials, rule: ErrorRule | None = None, **knobs: Any) -> Self:
        """The endpoint of the job's credentials (`requests_per_day`, `path` among `knobs`)."""
        auth, key = credentials.headers, credentials.key
        return cls(credentials.provider, credentials.base_url, auth, key, rule, **knobs)

    @property
    def url(self) -> str:
        return self.base_url + self.path


@cache  # one object per `strict`, never changed: a job's body template lives while it is the same
def json_schema_format(*, strict: bool) -> dict[str, Any]:
    """`response_format` asking for RATING_SCHEMA; strict means constrained decoding."""
    return {
        "type": "json_schema",
        "json_schema": {"name": RATING_SCHEMA_NAME, "strict": strict, "schema": RATING_SCHEMA},
    }


def build_body(
    *,
    model: str,
    prompt: Prompt,
    image_url: str,
    response_format: Mapping[str, Any],
    detail: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_tokens_field: str = "max_completion_tokens",
) -> dict[str, Any]:
    """One chat request: optional system message, then the prompt text and the image."""
    image: dict[str, str] = {"url": image_url}
    if detail is not None:
        image["detail"] = detail
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    content = [{"type": "text", "text": prompt.text}, {"type": "image_url", "image_url": image}]
    messages.append({"role": "user", "content": content})
    return {
        "model": model,
        "messages": messages,
        "response_format": dict(response_format),
        max_tokens_field: max_tokens,
    }


class ChatAdapter:
    """The shared adapter: build one chat request, send it, parse the answer.

    Subclasses set `name`, `capabilities` and the body's knobs, and make the image ready in
    `rate` where the provider needs it (download, convert, shrink).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    image_detail: ClassVar[str | None] = None
    strict_schema: ClassVar[bool] = True
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    service_tier: str | None = None  # "flex": `providers.flex.with_tier` sets it on a copy
    # the body encoded once, for the prompt, format and tier it was built for
    _template: tuple[Prompt, Mapping[str, Any], str | None, BodyTemplate] | None = None

    def __init__(
        self, *, model: str, session: aiohttp.ClientSession, endpoint: ChatEndpoint
    ) -> None:
        self.model = model
        self._session = session
        self._endpoint = endpoint

    @property
    def base_url(self) -> str:
        """The API root `WireRequest.path` is relative to."""
        return self._endpoint.base_url

    async def ready(self, image: PreparedImage) -> PreparedImage:
        """The image as this provider takes it (economy mode builds requests from it)."""
        return image

    def build_request(self, image: PreparedImage, prompt: Prompt) -> WireRequest:
        """The request for a ready image (a URL, or bytes the provider accepts); no I/O."""
        return self.chat_request(image, prompt, json_schema_format(strict=self.strict_schema))

    def chat_request(
        self, image: PreparedImage, prompt: Prompt, response_format: Mapping[str, Any]
    ) -> WireRequest:
        url = image.url if image.url is not None else image.data_uri()
        tier, cached = self.service_tier, self._template
        if cached is None or cached[:3] != (prompt, response_format, tier):
            build = partial(
                _tiered_body,
                tier,
                model=self.model,
                prompt=prompt,
                response_format=response_format,
                detail=self.image_detail,
                max_tokens_field=self.max_tokens_field,
            )  # encoded once per prompt, format and tier: only the image differs between photos
            cached = self._template = (prompt, response_format, tier, BodyTemplate(build))
        return WireRequest(self._endpoint.path, {}, cached[3].body(url))

    def parse_answer(self, answer: HTTPAnswer) -> Answer:
        """A 2xx completion -> Answer; anything else -> the classified error, key scrubbed."""
        if not answer.ok:
            error = error_for(self._endpoint, answer)
            raise flex_refusal(self.service_tier, self._endpoint.provider, answer, error)
        return parse_completion(self._endpoint.provider, answer, self._endpoint.requests_per_day)

    async def send(self, request: WireRequest) -> HTTPAnswer:
        endpoint, timeout = self._endpoint, timeout_for(self.service_tier)
        return await send(self._session, endpoint.base_url, request, endpoint.auth, timeout)

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        return self.parse_answer(await self.send(self.build_request(image, prompt)))


# --- the answer ---------------------------------------------------------------------------


class _Message(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None


class _Usage(BaseModel):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0


class _Completion(BaseModel):
    choices: list[_Choice]
    usage: _Usage | None = None


def parse_completion(provider: str, answer: HTTPAnswer, requests_per_day: bool = False) -> Answer:
    """A 2xx chat completion -> Answer; anything that is not a usable rating is Transient."""
    limits = parse_rate_limits(answer.headers, requests_per_day)
    try:
        completion = _Completion.model_validate_json(answer.body)
        rating_text = _rating_text(provider, completion)
        rating = parse_rating(_unfence(rating_text), source=provider)
    except ValidationError as exc:
        message = f"{provider} answer is not a chat completion: {_first_problem(exc)}"
        raise answer_error(Transient, message, answer, limits=limits) from exc
    except ProviderError as exc:
        raise exc.with_limits(limits) from exc
    usage = completion.usage or _Usage()
    return Answer(
        rating=rating,
        usage=Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0),
        limits=limits,
    )


def _rating_text(provider: str, completion: _Completion) -> str:
    """The JSON text of the first choice, or Transient saying why there is none."""
    if not completion.choices:
        raise Transient(f"{provider} answer has no choices")
    choice = completion.choices[0]
    if choice.message.refusal:
        raise Refused(f"{provider} refused to rate the image: {choice.message.refusal[:200]}")
    if choice.finish_reason == "length":
        raise Transient(
            f"{provider} answer was truncated at the token limit (finish_reason length)"
        )
    if choice.finish_reason == "content_filter":
        raise Refused(f"{provider} answer was withheld by its content filter")
    if not choice.message.content:
        raise Transient(f"{provider} answer has no content (finish_reason {choice.finish_reason})")
    return choice.message.content


def _unfence(text: str) -> str:
    """Drop a ```json fence that servers without constrained decoding like to add."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3].strip().removeprefix("json")
    return stripped


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


# --- errors -------------------------------------------------------------------------------


class _Detail(BaseModel):
    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _Nested(BaseModel):  # OpenAI, Groq, Ollama: {"error": {"message", "type", "param", "code"}}
    error: _Detail


class _Flat(BaseModel):  # xAI: {"code": "<gRPC status text>", "error": "<message>"}
    error: str
    code: str | int | None = None


_ERROR_BODY: TypeAdapter[_Nested | _Flat | _Detail] = TypeAdapter(_Nested | _Flat | _Detail)


def error_info(answer: HTTPAnswer) -> ErrorInfo:
    """The message, code, type and param of an error body; plain text when it is not JSON."""
    try:
        body = _ERROR_BODY.validate_json(answer.body)
    except ValidationError:
        return ErrorInfo(answer.text())
    if isinstance(body, _Flat):
        return ErrorInfo(body.error, _text(body.code))
    detail = body.error if isinstance(body, _Nested) else body
    if not detail.message:
        return ErrorInfo(answer.text())
    return ErrorInfo(detail.message, _text(detail.code), detail.type, detail.param)


def _text(code: str | int | None) -> str | None:
    # a number here (vLLM, llama.cpp) only repeats the HTTP status: no label worth showing
    return code if isinstance(code, str) else None


def error_for(endpoint: ChatEndpoint, answer: HTTPAnswer) -> ProviderError:
    """A non-2xx answer -> the taxonomy, body first, then the status; key scrubbed; limits set.

    A fatal answer about the key names the variable to set: `[check OPENAI_API_KEY]`.
    """
    info = error_info(answer)
    kind = endpoint.error_rule(answer.status, info) if endpoint.error_rule else None
    kind = kind or shared_rule(answer.status, info) or status_kind(answer.status)
    label = f" {info.label}" if info.label else ""
    text = f"{endpoint.provider} HTTP {answer.status}{label}: {info.message or 'no message'}"
    refused = kind is FatalJobError and about_the_key(answer.status, f"{info.label} {info.message}")
    if refused:
        text = f"{text} {key_hint(endpoint.provider)}"
    return answer_error(
        kind,
        scrub(text, endpoint.api_key),
        answer,
        retry_after=retry_after_hint(answer.headers),
        limits=parse_rate_limits(answer.headers, endpoint.requests_per_day),
        env_var=PROVIDERS[endpoint.provider].key_vars if refused else (),
    )


_IMAGE_CODES = frozenset(
    {
        "invalid_image",
        "image_parse_error",
        "invalid_image_url",
        "invalid_image_format",
        "image_too_large",
        "image_content_policy_violation",
        "invalid_base64",
    }
)
_REQUEST_CODES = frozenset(
    {"unsupported_parameter", "unsupported_value", "model_not_found", "model_decommissioned"}
)
_CANNOT_SEE = re.compile(
    r"only supported by certain models|(does not|doesn't|not) supports? (image|vision)"
    r"|image input (is )?not supported|not a (vision|multimodal) model",
    re.IGNORECASE,
)
_REQUEST_WORDS = re.compile(
    r"response_format|response format|json_schema|max_completion_tokens|max_tokens"
    r"|unsupported parameter|unrecognized request argument",
    re.IGNORECASE,
)
_IMAGE_WORDS = re.compile(r"image|base64|media|picture|pixel", re.IGNORECASE)


def shared_rule(status: int, info: ErrorInfo) -> type[ProviderError] | None:
    """The body traps every chat-completions provider shares; None defers to the status."""
    if status == 429 and info.label == "insufficient_quota":  # noqa: PLR2004
        return FatalJobError  # out of credit: waiting cannot help
    if status == 400:  # noqa: PLR2004
        return bad_request_rule(info)
    return None


def bad_request_rule(info: ErrorInfo) -> type[ProviderError]:
    """A 400: this image (permanent) or the request itself (fatal); see the module docstring."""
    param = info.param or ""
    words = f"{info.message} {param}"
    if info.code == "image_content_policy_violation":
        return ContentBlocked
    if info.code in _IMAGE_CODES:
        return PermanentImageError
    if _CANNOT_SEE.search(words) or info.code in _REQUEST_CODES or param == "model":
        return FatalJobError
    if _REQUEST_WORDS.search(words):
        return FatalJobError
    if _IMAGE_WORDS.search(words):
        return PermanentImageError
    return FatalJobError


def _tiered_body(tier: str | None, **parts: Any) -> dict[str, Any]:
    """`build_body` of `parts`, asking for `tier` (flex) when there is one."""
    return with_body_tier(build_body(**parts), "service_tier", tier)
