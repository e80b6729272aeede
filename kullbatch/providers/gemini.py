"""Google Gemini Developer API adapter: one `generateContent` call per image, no SDK.

What it sends: `POST {base}/v1beta/models/{model}:generateContent`, the key in `x-goog-api-key`
(never `?key=`, which would leak through logged URLs), a camelCase body: optional
`systemInstruction`, one user turn with the image (`inlineData`) before the prompt text (Google's
advice for one image), and `generationConfig` asking for `application/json` constrained by
`responseJsonSchema` = the rating schema. Gemini does not fetch arbitrary URLs: URL images are
downloaded and sent inline, shrunk so the request stays under 20 MB. Answers are re-validated.

Classification (body first, then status):
- 400 INVALID_ARGUMENT + ErrorInfo API_KEY_INVALID, 400 FAILED_PRECONDITION (billing, region),
  401, 402 (prepaid credit gone), 403, 404 (unknown model) -> FatalJobError; a key problem
  (API_KEY_INVALID, 401, 403) names GOOGLE_API_KEY or GEMINI_API_KEY.
- 400 INVALID_ARGUMENT about what every request carries (unknown field, a generationConfig or a
  feature the model rejects) -> FatalJobError; any other 400 INVALID_ARGUMENT (an image Gemini
  cannot process, payload too large) and 413 -> PermanentImageError.
- 429 RESOURCE_EXHAUSTED -> RateLimited, hint = the longest of RetryInfo.retryDelay, `retry-after`
  and "Please retry in 35.2s"; but a quota whose limit is 0 (the free tier does not cover this
  model) never clears -> FatalJobError. 499, 5xx -> Transient.
- 200 with `promptFeedback.blockReason`: the input (the image) itself is blocked before any
  generation, and will be again -> PermanentImageError.
- 200 with finishReason MAX_TOKENS, SAFETY, RECITATION or any other non-STOP -> Transient. A
  SAFETY stop may repeat for the same image, but it judges generated text, which varies.
Gemini sends no rate-limit headers: `Answer.limits` and errors' `.limits` stay None.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from kullbatch.errors import (
    ContentBlocked,
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Transient,
)
from kullbatch.media.images import fit_image
from kullbatch.models import Answer, PreparedImage, Prompt, Usage
from kullbatch.providers.base import RATING_SCHEMA, Capabilities, WireRequest, parse_rating
from kullbatch.providers.compare import Verdict as BurstVerdict
from kullbatch.providers.compare import image_limit, parse_comparison
from kullbatch.providers.download import inline_url_image
from kullbatch.providers.flex import flex_refusal, timeout_for, with_body_tier
from kullbatch.providers.gemini_compare import compare_request
from kullbatch.providers.http import (
    HTTPAnswer,
    about_the_key,
    answer_error,
    parse_go_duration,
    retry_after_hint,
    scrub,
    send,
    status_kind,
)
from kullbatch.providers.registry import PROVIDERS, key_hint

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import aiohttp

    from kullbatch.providers.base import Credentials

NAME = "gemini"
DEFAULT_BASE_URL = PROVIDERS[NAME].default_base_url
API_VERSION = "v1beta"
# Thinking tokens count against maxOutputTokens on 2.5 and 3.x models: with 1024, a model that
# thinks for a while returns MAX_TOKENS and no text. Only the tokens used are billed.
MAX_OUTPUT_TOKENS = 8192
# Inline requests must stay under 20 MB; base64 adds a third, so 14 MiB of image bytes become
# about 18.7 MiB of JSON, leaving room for the prompt and the schema.
MAX_IMAGE_BYTES = 14 * 1024 * 1024
MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/heic", "image/heif"})

_STATUS_CREDIT = 402
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_FATAL_STATUSES = frozenset({"FAILED_PRECONDITION", "PERMISSION_DENIED", "UNAUTHENTICATED"})
_ZERO_LIMIT = re.compile(r"\blimit: 0(?![\d.])")
_RETRY_IN = re.compile(r"[Pp]lease retry in (\d+(?:\.\d+)?(?:ms|s))")
# 400s about what every request carries (not this image): each image would fail the same way.
_MODEL_REFUSES = re.compile(
    r"is not enabled for models/|not supported (?:by|for) (?:this )?model", re.IGNORECASE
)
_ABOUT_REQUEST = re.compile(
    r"Invalid JSON payload received|generation_?config|response_?(?:json_?)?schema"
    r"|response_?mime_?type|system_?instruction",
    re.IGNORECASE,
)
_ABOUT_IMAGE = re.compile(r"image|inline_?data|base64|payload size", re.IGNORECASE)
_TAGS = re.compile(r"<(style|script)\b.*?</\1>|<[^>]*>", re.IGNORECASE | re.DOTALL)


# --- the wire format (camelCase on the wire, snake_case here; unknown fields ignored) --------


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="ignore")


class _Part(_Wire):
    text: str | None = None
    thought: bool = False


class _Content(_Wire):
    parts: list[_Part] = Field(default_factory=list)


class _Candidate(_Wire):
    content: _Content | None = None
    finish_reason: str | None = None
    finish_message: str | None = None


class _PromptFeedback(_Wire):
    block_reason: str | None = None
    block_reason_message: str | None = None


class _UsageMetadata(_Wire):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0


class _Response(_Wire):
    candidates: list[_Candidate] = Field(default_factory=list)
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _UsageMetadata = Field(default_factory=_UsageMetadata)


class _Violation(_Wire):
    quota_id: str | None = None
    quota_value: str | None = None


class _Detail(_Wire):
    type: str = Field(default="", alias="@type")
    reason: str | None = None
    retry_delay: str | None = None
    violations: list[_Violation] = Field(default_factory=list)


class _Status(_Wire):
    message: str = ""
    status: str = ""
    details: list[_Detail] = Field(default_factory=list)


class _ErrorBody(_Wire):
    error: _Status


def model_path(model: str) -> str:
    """`gemini-2.5-flash` -> `models/gemini-2.5-flash`; full resource names pass unchanged."""
    name = model.strip()
    if not name.startswith(("models/", "tunedModels/")):
        name = f"models/{name}"
    return quote(name, safe="/")


def request_body(image: PreparedImage, prompt: Prompt) -> dict[str, Any]:
    """A GenerateContentRequest: image part before the text, the rating schema as the format."""
    body: dict[str, Any] = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"inlineData": {"mimeType": image.media_type, "data": image.base64()}},
                    {"text": prompt.text},
                ],
            }
        ],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseJsonSchema": RATING_SCHEMA,
            "maxOutputTokens": MAX_OUTPUT_TOKENS,
        },
    }
    if prompt.system:
        body["systemInstruction"] = {"parts": [{"text": prompt.system}]}
    return body


# --- non-2xx -> taxonomy --------------------------------------------------------------------


def parse_error(payload: Any) -> _Status | None:
    """`{"error": {...}}`, or the same wrapped in a one-element list; None for anything else."""
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    try:
        return _ErrorBody.model_validate(payload).error
    except ValidationError:
        return None


def _plain(text: str, limit: int = 300) -> str:
    """A non-JSON body (Google's front-end HTML pages, proxies) as one short line of text."""
    return " ".join(_TAGS.sub(" ", text).split())[:limit]


def retry_hint(status: _Status | None, headers: Mapping[str, str]) -> float | None:
    """The longest of RetryInfo.retryDelay, `retry-after` and "Please retry in Ns"."""
    hints = [retry_after_hint(headers)]
    if status is not None:
        hints += [
            parse_go_duration(detail.retry_delay)
            for detail in status.details
            if detail.type == _RETRY_INFO and detail.retry_delay
        ]
        if match := _RETRY_IN.search(status.message):
            hints.append(parse_go_duration(match.group(1)))
    found = [hint for hint in hints if hint is not None]
    return max(found) if found else None


def classify_error(answer: HTTPAnswer, api_key: str | None = None) -> ProviderError:
    """Map an error answer onto the taxonomy, on its body first; the key never leaks."""
    status = parse_error(answer.json())
    detail = status.message if status else _plain(answer.text(2000))
    code = status.status if status else ""
    label = f"{NAME} HTTP {answer.status}" + (f" {code}" if code else "")
    message = f"{label}: {detail}" if detail else label
    verdict = _by_status(answer.status, status, message) if status is not None else None
    if verdict is not None:
        refused = status is not None and _status_about_the_key(answer.status, status)
    else:
        refused = _fatal_about_the_key(answer.status, message)
    kind, message = verdict or _by_http_status(answer.status, message)
    hint = retry_hint(status, answer.headers)
    key_vars = PROVIDERS[NAME].key_vars if refused else ()
    return answer_error(kind, scrub(message, api_key), answer, retry_after=hint, env_var=key_vars)


Verdict = tuple[type[ProviderError], str]


def _status_about_the_key(http_status: int, status: _Status) -> bool:
    """Google's API_KEY_INVALID, a 401, or words about the key."""
    reasons = {detail.reason for detail in status.details if detail.reason}
    return "API_KEY_INVALID" in reasons or about_the_key(http_status, status.message)


def _fatal_about_the_key(http_status: int, message: str) -> bool:
    """A fatal status whose answer is about the key (a body that is not Google's shape)."""
    return status_kind(http_status) is FatalJobError and about_the_key(http_status, message)


def _by_status(http_status: int, status: _Status, message: str) -> Verdict | None:
    """The traps of providers.md section 0, read from Google's status and details."""
    if _status_about_the_key(http_status, status):
        return FatalJobError, f"{message} {key_hint(NAME)}"
    if status.status in _FATAL_STATUSES or http_status == _STATUS_CREDIT:
        return FatalJobError, message
    if status.status == "NOT_FOUND":
        return FatalJobError, f"{message} [unknown model or method]"
    if status.status == "RESOURCE_EXHAUSTED":
        return _quota(status, message)
    if status.status == "INVALID_ARGUMENT":
        return _invalid_argument(status.message, message)
    return None


def _quota(status: _Status, message: str) -> Verdict:
    """A quota of 0 never clears; a daily quota clears at midnight Pacific; others in seconds."""
    violations = [v for detail in status.details for v in detail.violations]
    if any(v.quota_value == "0" for v in violations) or _ZERO_LIMIT.search(status.message):
        return FatalJobError, (
            f"{message} [this model has no quota on your plan (limit 0): "
            "enable billing or choose another model]"
        )
    if any("PerDay" in (v.quota_id or "") for v in violations):
        message += " [daily quota: it resets at midnight Pacific time]"
    return RateLimited, message


def _invalid_argument(detail: str, message: str) -> Verdict:
    """Fatal when the shared request is wrong, else this image's problem (one image lost)."""
    if _MODEL_REFUSES.search(detail) or (
        _ABOUT_REQUEST.search(detail) and not _ABOUT_IMAGE.search(detail)
    ):
        return FatalJobError, f"{message} [every image would fail the same way: the job stops]"
    return PermanentImageError, message


def _by_http_status(http_status: int, message: str) -> Verdict:
    """The status-only verdict, for bodies that are not Google's error shape."""
    kind = status_kind(http_status)
    if _fatal_about_the_key(http_status, message):
        return kind, f"{message} {key_hint(NAME)}"
    return kind, message


# --- 2xx -> Answer --------------------------------------------------------------------------


def parse_answer(answer: HTTPAnswer) -> Answer:
    """A GenerateContentResponse -> Answer; blocked images are permanent, bad answers retried."""
    text, usage = response_text(answer)
    return Answer(parse_rating(text, source=NAME), usage)


def response_text(answer: HTTPAnswer) -> tuple[str, Usage]:
    """The answer's text and usage; a block or a truncated answer -> the error."""
    try:
        response = _Response.model_validate_json(answer.body)
    except ValidationError as exc:
        raise Transient(
            f"{NAME} answer is not a GenerateContentResponse: {answer.text(120)!r}"
        ) from exc
    meta = response.usage_metadata
    usage = Usage(meta.prompt_token_count, meta.candidates_token_count + meta.thoughts_token_count)
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        why = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
        raise ContentBlocked(
            f"{NAME} blocked the image itself (promptFeedback.blockReason "
            f"{feedback.block_reason}{why}); retrying cannot help"
        )
    if not response.candidates:
        raise Transient(f"{NAME} answer has no candidates")
    return _text(response.candidates[0], meta), usage


def _text(candidate: _Candidate, meta: _UsageMetadata) -> str:
    """The JSON text of a finished candidate: its non-thought text parts, joined."""
    reason = candidate.finish_reason
    if reason == "MAX_TOKENS":
        raise Transient(
            f"{NAME} answer was truncated (finishReason MAX_TOKENS at maxOutputTokens "
            f"{MAX_OUTPUT_TOKENS}: {meta.thoughts_token_count} thinking and "
            f"{meta.candidates_token_count} answer tokens)"
        )
    if reason not in {None, "STOP"}:
        why = f": {candidate.finish_message}" if candidate.finish_message else ""
        raise Transient(f"{NAME} stopped without an answer (finishReason {reason}{why})")
    parts = candidate.content.parts if candidate.content else []
    text = "".join(part.text for part in parts if part.text and not part.thought)
    if not text.strip():
        raise Transient(f"{NAME} answer has no text (finishReason {reason})")
    return text


# --- the adapter ----------------------------------------------------------------------------


class GeminiProvider:
    """Rates one image per generateContent call."""

    name = NAME
    # downloads URL photos (Gemini does not fetch them): the engine bounds how many at once
    capabilities: ClassVar[Capabilities] = Capabilities(inlines_url_images=True)
    service_tier: str | None = None  # "flex": `providers.flex.with_tier` sets it on a copy

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
        self.path = f"/{API_VERSION}/{model_path(model)}:generateContent"
        self._session = session
        self._api_key = credentials.key
        self._auth = credentials.headers  # x-goog-api-key, never ?key= (URLs get logged)

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def build_request(self, image: PreparedImage, prompt: Prompt) -> WireRequest:
        """The generateContent request for inline bytes Gemini accepts; no I/O, no key."""
        headers = {"accept": "application/json"}
        body = with_body_tier(request_body(image, prompt), "serviceTier", self.service_tier)
        return WireRequest(self.path, headers, body)

    def parse_answer(self, answer: HTTPAnswer) -> Answer:
        """A 2xx response -> Answer; any other answer -> the classified error, key scrubbed."""
        if not answer.ok:
            error = classify_error(answer, self._api_key)
            raise flex_refusal(self.service_tier, NAME, answer, error)
        return parse_answer(answer)  # the module-level 2xx parser

    @property
    def max_images(self) -> int:
        return image_limit(NAME)

    async def compare(self, frames: Sequence[PreparedImage]) -> BurstVerdict:
        """A burst's frames inline in one request (`gemini_compare`)."""
        request = await compare_request(
            self.path,
            frames,
            max_image_bytes=self.max_image_bytes,
            media_types=MEDIA_TYPES,
            max_output_tokens=MAX_OUTPUT_TOKENS,
        )
        answer = await send(self._session, self.base_url, request, self._auth)
        if not answer.ok:
            raise classify_error(answer, self._api_key)
        text, usage = response_text(answer)
        return BurstVerdict(parse_comparison(text, len(frames), source=NAME), usage)

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        """Inline the image (downloading URLs, converting, shrinking), send, classify."""
        if image.url is not None:
            image = await inline_url_image(self._session, image)
        ready = await fit_image(
            image,
            max_bytes=self.max_image_bytes,
            media_types=MEDIA_TYPES,
            why=f"{NAME} inline requests must stay under 20 MB",
        )
        request = self.build_request(ready, prompt)
        timeout = timeout_for(self.service_tier)
        answer = await send(self._session, self.base_url, request, self._auth, timeout)
        return self.parse_answer(answer)


def create(
    *, model: str, session: aiohttp.ClientSession, credentials: Credentials
) -> GeminiProvider:
    """Build the adapter from the job's credentials (`PROVIDERS[NAME].credentials(env)`):
    GOOGLE_API_KEY, else GEMINI_API_KEY, as python-genai reads them."""
    return GeminiProvider(model=model, session=session, credentials=credentials)
