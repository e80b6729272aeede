"""A local stand-in for the Gemini Developer API and for an image host, for the adapter's tests.

`FakeGemini.app()` serves `POST /v1beta/models/{model}:generateContent`, checking each request the
way Google does (the model in the path, the `x-goog-api-key` header, the camelCase body) plus what
kullbatch promises (no `?key=` in the URL, the rating schema as `responseJsonSchema`, the image as
base64 `inlineData`). Anything wrong is recorded in `problems` and answered with the error Google
would send. Scripted `replies` are answered in order after a request passes the checks; with no
script left, a valid GenerateContentResponse is returned. `GET /images/{name}` serves `images`.

The error bodies are copies of what the API returns (google.rpc.Status in JSON, sometimes wrapped
in a one-element list), from the API docs and from bodies users pasted into GitHub issues.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from kullbatch.providers.base import RATING_SCHEMA
from tests.fake_compare import COMPARE_SCHEMA, verdict_text

GEMINI_KEY = "AIzaSyD-fake-test-key-0123456789abcdef"
MODEL = "gemini-2.5-flash"
# Google's inline limit; the real API counts the whole request
MAX_REQUEST_BYTES = 20 * 1024 * 1024
GEMINI_IMAGE_TYPES = {
    "image/jpeg": b"\xff\xd8\xff",
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/webp": b"RIFF",
}

RATING = {
    "starRating": 4,
    "colorLabel": "green",
    "title": "Bride on the stairs",
    "description": "Sharp, well exposed portrait with soft window light.",
    "tags": ["wedding", "portrait", "window light"],
    "issues": ["noise"],
    "score": 68,
}


def jpeg_bytes(size: tuple[int, int] = (64, 48), color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def image_bytes(kind: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "orange").save(buffer, format=kind)
    return buffer.getvalue()


# --- successful answers -----------------------------------------------------------------------


def generate_content_response(
    text: str | None = None,
    *,
    finish_reason: str | None = "STOP",
    parts: list[dict[str, Any]] | None = None,
    prompt_tokens: int = 1291,
    answer_tokens: int = 58,
    thoughts: int = 0,
    prompt_feedback: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A GenerateContentResponse as the REST API sends it (thoughtsTokenCount only when > 0)."""
    if parts is None:
        parts = [{"text": json.dumps(RATING) if text is None else text}]
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": answer_tokens,
        "totalTokenCount": prompt_tokens + answer_tokens + thoughts,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 33},
            {"modality": "IMAGE", "tokenCount": prompt_tokens - 33},
        ],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    body: dict[str, Any] = {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": MODEL,
        "responseId": "mZ1oaPq3Hd6Ez7IP4_3M8AQ",
    }
    if prompt_feedback is not None:
        body = {"promptFeedback": prompt_feedback, "usageMetadata": usage, "modelVersion": MODEL}
    return body


# --- error bodies -----------------------------------------------------------------------------


def google_error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_info(reason: str, **metadata: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com", **metadata},
    }


def localized(message: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": message,
    }


_KEY_INVALID = "API key not valid. Please pass a valid API key."
API_KEY_INVALID = google_error(
    400, "INVALID_ARGUMENT", _KEY_INVALID, [error_info("API_KEY_INVALID"), localized(_KEY_INVALID)]
)
LOCATION_UNSUPPORTED = google_error(
    400, "FAILED_PRECONDITION", "User location is not supported for the API use."
)
FREE_TIER_UNAVAILABLE = google_error(
    400,
    "FAILED_PRECONDITION",
    "Gemini API free tier is not available in your country. "
    "Please enable billing on your project in Google AI Studio.",
)
IMAGE_INVALID = google_error(
    400,
    "INVALID_ARGUMENT",
    "Unable to process input image. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
)
PAYLOAD_TOO_LARGE = google_error(
    400, "INVALID_ARGUMENT", "Request payload size exceeds the limit: 20971520 bytes."
)
UNKNOWN_FIELD = google_error(
    400,
    "INVALID_ARGUMENT",
    "Invalid JSON payload received. Unknown name \"responseJsonSchema\" at 'generation_config': "
    "Cannot find field.",
    [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                {
                    "field": "generation_config",
                    "description": "Invalid JSON payload received. Unknown name "
                    "\"responseJsonSchema\" at 'generation_config': Cannot find field.",
                }
            ],
        }
    ],
)
SYSTEM_NOT_ENABLED = google_error(
    400, "INVALID_ARGUMENT", "Developer instruction is not enabled for models/gemma-3-27b-it"
)
NO_IMAGE_INPUT = google_error(
    400, "INVALID_ARGUMENT", "Image input modality is not enabled for models/gemma-3-1b-it"
)
BAD_MIME_CONFIG = google_error(
    400,
    "INVALID_ARGUMENT",
    "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are "
    "`text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`.",
)
# The wording of the prepaid-credit error is not confirmed; status and code are (providers.md).
CREDIT_EXHAUSTED = google_error(
    402,
    "RESOURCE_EXHAUSTED",
    "Your prepaid credits are depleted. Please go to AI Studio to add credits.",
)
UNREGISTERED_CALLER = google_error(
    403,
    "PERMISSION_DENIED",
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API.",
)
SERVICE_DISABLED = google_error(
    403,
    "PERMISSION_DENIED",
    "Generative Language API has not been used in project 123456789 before or it is disabled.",
    [error_info("SERVICE_DISABLED", consumer="projects/123456789")],
)
INTERNAL = google_error(
    500,
    "INTERNAL",
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
)
OVERLOADED = google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
DEADLINE = google_error(
    504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
)
TOO_LARGE_HTML = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
    "  <title>Error 413 (Request Entity Too Large)!!1</title>\n"
    "  <style>*{margin:0;padding:0}html,code{font:15px/22px arial,sans-serif}</style>\n"
    "  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>\n"
    "  <p><b>413.</b> <ins>That\u2019s an error.</ins>\n"
    "  <p>Your client issued a request that was too large.\n"
    "  <ins>That\u2019s all we know.</ins>\n"
)


def consumer_suspended(key: str) -> dict[str, Any]:
    """Google echoes the key in this one: the adapter must scrub it."""
    return google_error(
        403,
        "PERMISSION_DENIED",
        f"Permission denied: Consumer 'api_key:{key}' has been suspended.",
        [error_info("CONSUMER_SUSPENDED", consumer=f"api_key:{key}")],
    )


def model_not_found(model: str) -> dict[str, Any]:
    return google_error(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    )


def quota_exceeded(
    retry_delay: str | None = "35s",
    *,
    quota_id: str = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
    quota_value: str | None = "10",
    retry_in: str = "35.188s",
) -> dict[str, Any]:
    """A 429 RESOURCE_EXHAUSTED with QuotaFailure, Help and (usually) RetryInfo details."""
    limit = quota_value if quota_value is not None else "10"
    violation: dict[str, Any] = {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": MODEL},
    }
    if quota_value is not None:
        violation["quotaValue"] = quota_value
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    return google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
        "* Quota exceeded for metric: generativelanguage.googleapis.com/"
        f"generate_content_free_tier_requests, limit: {limit}, model: {MODEL}\n"
        f"Please retry in {retry_in}.",
        details,
    )


# --- the server ---------------------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer: a JSON value (dict or list) or raw text, with headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        if isinstance(self.body, str):
            return web.Response(
                status=self.status,
                text=self.body,
                content_type="text/html",
                headers=self.headers,
            )
        return web.json_response(self.body, status=self.status, headers=self.headers)


@dataclass
class FakeGemini:
    """The fake API's state: what it expects, what it saw, what it will answer."""

    key: str = GEMINI_KEY
    model: str = MODEL
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    images: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    image_gets: list[str] = field(default_factory=list)
    base_url: str = ""
    flex_refuse: float = 0.0  # share of flex requests the flex tier turns away (503 UNAVAILABLE)
    tiers: list[str | None] = field(default_factory=list)  # serviceTier of each request taken
    flex_seen: int = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2 * MAX_REQUEST_BYTES)
        app.router.add_post("/v1beta/models/{model}:generateContent", self.generate)
        app.router.add_get("/images/{name:.+}", self.image)
        return app

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.replies.append(Reply(status, body, headers or {}))

    async def image(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.image_gets.append(name)
        if name not in self.images:
            return web.Response(status=404, text="Not Found")
        data, content_type = self.images[name]
        return web.Response(body=data, content_type=content_type)

    async def generate(self, request: web.Request) -> web.Response:
        if (refusal := self._check_envelope(request)) is not None:
            return refusal.response()
        raw = await request.read()
        if len(raw) > MAX_REQUEST_BYTES:
            return self._refuse("request over 20 MB", Reply(400, PAYLOAD_TOO_LARGE))
        try:
            body = json.loads(raw)
        except ValueError:
            return self._refuse("body is not JSON", Reply(400, UNKNOWN_FIELD))
        problems = check_body(body)
        if problems:
            self.problems += problems
            message = "Invalid JSON payload received. " + "; ".join(problems)
            return web.json_response(google_error(400, "INVALID_ARGUMENT", message), status=400)
        self.requests.append(body)
        return self._answer(body)

    def _answer(self, body: dict[str, Any]) -> web.Response:
        """A request that passed the checks: the flex tier may turn it away, else the script."""
        self.tiers.append(body.get("serviceTier"))
        if body.get("serviceTier") == "flex" and _refused(self):
            return web.json_response(FLEX_UNAVAILABLE, status=503)
        if self.replies:
            return self.replies.pop(0).response()
        return web.json_response(good_answer(body))

    def _refuse(self, problem: str, reply: Reply) -> web.Response:
        self.problems.append(problem)
        return reply.response()

    def _check_envelope(self, request: web.Request) -> Reply | None:
        """Path, query, headers: the answer Google gives when one of them is wrong."""
        model = request.match_info["model"]
        if request.query:
            self.problems.append(f"query string in the URL: {sorted(request.query)}")
            return Reply(400, google_error(400, "INVALID_ARGUMENT", "unexpected query string"))
        if request.content_type != "application/json":
            self.problems.append(f"content-type {request.content_type}")
            return Reply(400, UNKNOWN_FIELD)
        key = request.headers.get("x-goog-api-key")
        if key is None:
            self.problems.append("no x-goog-api-key header")
            return Reply(403, UNREGISTERED_CALLER)
        if key != self.key:
            return Reply(400, API_KEY_INVALID)
        if model != self.model:
            return Reply(404, model_not_found(model))
        return None


def _refused(fake: FakeGemini) -> bool:
    """Whether this flex request is one the tier turns away: `flex_refuse` of them, spread."""
    seen, fake.flex_seen = fake.flex_seen, fake.flex_seen + 1
    return int((seen + 1) * fake.flex_refuse) > int(seen * fake.flex_refuse)


# Gemini's flex tier when it sheds load: a 503 UNAVAILABLE (the same status as an overloaded
# model; the message is the fake's, the exact text is not published).
FLEX_UNAVAILABLE = google_error(
    503, "UNAVAILABLE", "The flex tier is at capacity for this model. Please try again later."
)
# GenerateContentRequest.serviceTier (js-genai `ServiceTier`): anything else is a 400.
SERVICE_TIERS = {"unspecified", "standard", "flex", "priority"}


def check_body(body: Any) -> list[str]:
    """What is wrong with a GenerateContentRequest as kullbatch should send it."""
    if not isinstance(body, dict):
        return ["body is not an object"]
    problems = [f"unexpected field {name}" for name in body if name not in _TOP_LEVEL]
    if "serviceTier" in body and body["serviceTier"] not in SERVICE_TIERS:
        problems.append(f"Invalid value at 'service_tier' ({body['serviceTier']!r})")
    if is_comparison(body):
        problems += _check_comparison(body["contents"])
        problems += _check_config(body.get("generationConfig"), COMPARE_SCHEMA)
    else:
        problems += _check_contents(body.get("contents"))
        problems += _check_config(body.get("generationConfig"))
    system = body.get("systemInstruction")
    if system is not None and not (
        isinstance(system, dict)
        and list(system) == ["parts"]
        and len(system["parts"]) == 1
        and isinstance(system["parts"][0].get("text"), str)
    ):
        problems.append(f"systemInstruction is not {{parts: [{{text}}]}}: {system!r}")
    return problems


_TOP_LEVEL = {"contents", "generationConfig", "systemInstruction", "serviceTier"}


def _check_contents(contents: Any) -> list[str]:
    if not (isinstance(contents, list) and len(contents) == 1 and isinstance(contents[0], dict)):
        return ["contents is not one user turn"]
    turn = contents[0]
    if turn.get("role") != "user" or set(turn) != {"role", "parts"}:
        return [f"contents[0] is not {{role: user, parts}}: {sorted(turn)}"]
    parts = turn["parts"]
    images = [p for p in parts if isinstance(p, dict) and set(p) == {"inlineData"}]
    texts = [p for p in parts if isinstance(p, dict) and set(p) == {"text"}]
    problems = []
    if len(parts) != 2 or len(images) != 1 or len(texts) != 1:
        problems.append("parts are not one inlineData and one text")
    if texts and not (isinstance(texts[0]["text"], str) and texts[0]["text"].strip()):
        problems.append("the text part is empty")
    if images:
        problems += _check_inline(images[0]["inlineData"])
    return problems


def _check_inline(inline: Any) -> list[str]:
    if not isinstance(inline, dict) or set(inline) != {"mimeType", "data"}:
        return [f"inlineData is not {{mimeType, data}}: {inline!r:.80}"]
    magic = GEMINI_IMAGE_TYPES.get(inline["mimeType"])
    if magic is None:
        return [f"Unsupported MIME type: {inline['mimeType']}"]
    try:
        data = base64.b64decode(inline["data"], validate=True)
    except (binascii.Error, TypeError):
        return ["inlineData.data is not base64"]
    if not data.startswith(magic):
        return [f"inlineData.data is not {inline['mimeType']}"]
    return []


def _check_config(config: Any, schema: dict[str, Any] = RATING_SCHEMA) -> list[str]:
    if not isinstance(config, dict):
        return ["generationConfig is missing"]
    problems = []
    if config.get("responseMimeType") != "application/json":
        problems.append("responseMimeType is not application/json")
    if config.get("responseJsonSchema") != schema:
        problems.append("responseJsonSchema is not the schema asked for")
    if "responseSchema" in config:
        problems.append("responseSchema and responseJsonSchema are both set")
    tokens = config.get("maxOutputTokens")
    if not (isinstance(tokens, int) and tokens > 0):
        problems.append("maxOutputTokens is not a positive integer")
    unknown = set(config) - {"responseMimeType", "responseJsonSchema", "maxOutputTokens"}
    problems += [f"unexpected generationConfig field {name}" for name in sorted(unknown)]
    return problems


def decoded_image(body: dict[str, Any]) -> tuple[str, bytes]:
    """The (mimeType, bytes) of the image a recorded request carried."""
    part = next(p for p in body["contents"][0]["parts"] if "inlineData" in p)
    inline = part["inlineData"]
    return inline["mimeType"], base64.b64decode(inline["data"])


MAX_IMAGES = 3600  # Gemini's documented limit of images per request


def inline_parts(body: Any) -> list[dict[str, Any]]:
    """Every inlineData part of the request's one turn, in order."""
    try:
        parts = body["contents"][0]["parts"]
    except (KeyError, IndexError, TypeError):
        return []
    return [p for p in parts if isinstance(p, dict) and "inlineData" in p]


def is_comparison(body: Any) -> bool:
    return len(inline_parts(body)) > 1


def _check_comparison(contents: Any) -> list[str]:
    """One user turn of text and inlineData parts (several images), each as Google takes it."""
    turn = contents[0]
    if len(contents) != 1 or turn.get("role") != "user" or set(turn) != {"role", "parts"}:
        return ["contents is not one user turn"]
    problems = []
    if len(inline_parts({"contents": contents})) > MAX_IMAGES:
        problems.append(f"more than {MAX_IMAGES} images")
    for index, part in enumerate(turn["parts"]):
        if not isinstance(part, dict) or set(part) not in ({"text"}, {"inlineData"}):
            problems.append(f"parts[{index}] is neither {{text}} nor {{inlineData}}")
        elif "text" in part and not (isinstance(part["text"], str) and part["text"].strip()):
            problems.append(f"parts[{index}] has an empty text")
        elif "inlineData" in part:
            problems += _check_inline(part["inlineData"])
    return problems


def good_answer(body: Any) -> dict[str, Any]:
    """A rating, or for a comparison the verdict read from the frames' pixels."""
    if not is_comparison(body):
        return generate_content_response()
    frames = [base64.b64decode(part["inlineData"]["data"]) for part in inline_parts(body)]
    return generate_content_response(verdict_text(frames), prompt_tokens=1300)
