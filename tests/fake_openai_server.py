"""A fake chat-completions server for the OpenAI, xAI, Groq and OpenAI-compatible adapters.

It listens on 127.0.0.1, checks each request the way the real API does (method, path, bearer
key, JSON body, the image part, `response_format`; OpenAI's published request schema; Groq's
4 MB base64 cap; xAI's JPEG/PNG rule) and answers with the real response shape. Tests queue
scripted answers (the providers' real error bodies with their headers) and read back every
request it received. It also serves images under /images/ for adapters that download URLs.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from PIL import Image

from tests import fake_usage
from tests.fake_compare import COMPARE_SCHEMA, COMPARE_SCHEMA_NAME, decode_data_uri, verdict_text

SCHEMA_PATH = Path(__file__).parent / "data" / "openai-chat-request.schema.json"
INVALID = "invalid_request_error"
XAI_INVALID = "Client specified an invalid argument"
# The flex tiers' refusals (statuses and codes as documented; the message texts are the fake's).
FLEX_FULL_OPENAI = "Resource Unavailable: flex processing has no capacity right now; retry later."
FLEX_FULL_GROQ = "Flex tier capacity exceeded. Please retry with backoff."
GROQ_SERVICE_TIERS = {"auto", "on_demand", "flex", "performance"}

RATING = {
    "starRating": 4,
    "colorLabel": "green",
    "title": "Bride laughing at the window",
    "description": "Soft window light on the bride mid-laugh; sharp eyes, clean background.",
    "tags": ["wedding", "portrait", "window light"],
    "issues": ["tilted"],
    "score": 72,
}

# Rate-limit headers as OpenAI sends them (resets are Go durations).
OPENAI_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-tokens": "1998500",
    "x-ratelimit-reset-tokens": "6m0s",
}
# Groq's: the requests pair is per day (RPD), the tokens pair per minute (TPM).
GROQ_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "1000",
    "x-ratelimit-remaining-requests": "999",
    "x-ratelimit-reset-requests": "1m26.4s",
    "x-ratelimit-limit-tokens": "30000",
    "x-ratelimit-remaining-tokens": "28400",
    "x-ratelimit-reset-tokens": "3.2s",
}
# What each flavour adds to a success: headers, and fields beside OpenAI's common core.
_SUCCESS_HEADERS = {
    "openai": {"x-request-id": "req_123", **OPENAI_LIMIT_HEADERS},
    "groq": {"x-groq-region": "us-east-1", **GROQ_LIMIT_HEADERS},
    "xai": {},
    "ollama": {},
}
_USAGE_EXTRAS: dict[str, dict[str, Any]] = {
    "openai": {
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
    "groq": {"queue_time": 0.02, "prompt_time": 0.05, "completion_time": 0.1, "total_time": 0.15},
}
_BODY_EXTRAS: dict[str, dict[str, Any]] = {
    "openai": {"service_tier": "default"},
    "groq": {"x_groq": {"id": "req_01k0abcdef"}},
}


@functools.cache
def request_validator() -> Draft202012Validator:
    """OpenAI's own CreateChatCompletionRequest schema (copied into tests/data)."""
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


@functools.cache
def known_models() -> frozenset[str]:
    """The chat model ids OpenAI's published schema lists (ModelIdsShared's enum)."""
    shared = request_validator().schema["components"]["schemas"]["ModelIdsShared"]
    return frozenset(name for choice in shared["anyOf"] for name in choice.get("enum", ()))


def request_problem(payload: Any) -> str | None:
    """What the fake refuses in a chat request, as fast mode checks it; None if it is fine.

    OpenAI's request schema, the parts of our request the API relies on, and an inline image
    that is base64 of the image type its data URI names. (The model is checked apart: OpenAI
    answers an unknown model with 404 `model_not_found`, see `model_problem`.)
    """
    if not isinstance(payload, dict):
        return "body is not a JSON object"
    errors = sorted(request_validator().iter_errors(payload), key=str)
    if errors:
        return f"not a CreateChatCompletionRequest: {errors[0].message[:300]}"
    problem = _shape_problem(payload)
    if problem:
        return problem
    for url in image_urls(payload):
        if url.startswith("data:") and (problem := data_uri_problem(url)):
            return problem
    return None


def model_problem(model: str) -> str | None:
    """OpenAI's message for a model that does not exist; None if the schema lists it."""
    if model in known_models():
        return None
    return f"The model `{model}` does not exist or you do not have access to it."


def data_uri_problem(url: str) -> str | None:
    """A data URI whose base64 does not decode to the image type it names."""
    header, _, encoded = url.partition(",")
    media_type = header.removeprefix("data:").removesuffix(";base64")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "image data URI is not valid base64"
    try:
        with Image.open(io.BytesIO(data)) as opened:
            actual = Image.MIME[opened.format or ""]
    except (OSError, KeyError):
        return "image data URI does not hold an image"
    if actual != media_type:
        return f"data URI says {media_type} but holds {actual}"
    return None


def openai_error(
    message: str, type_: str = INVALID, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's (and Groq's, Ollama's) error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def xai_error(code: str, message: str) -> dict[str, Any]:
    """xAI's flat error body: a gRPC status text and the message."""
    return {"code": code, "error": message}


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


@dataclass(frozen=True)
class ErrorCase:
    """One row of an error-mapping table: what the server answers, what the adapter raises."""

    status: int
    body: Any
    kind: type[Exception]
    expected: str  # the whole raised message
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:  # the test id
        return f"{self.status}-{self.kind.__name__}-{self.expected.split(': ', 1)[-1][:30]}"

    @classmethod
    def nested(
        cls,
        provider: str,
        status: int,
        code: str | None,
        message: str,
        kind: type[Exception],
        *,
        type_: str = INVALID,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        hint: str = "",
    ) -> ErrorCase:
        """An OpenAI-shaped error; the adapter's message is "<provider> HTTP <status> <label>: ...",
        then the hint naming the key's variable where the error is about the key."""
        body = openai_error(message, type_, code, param)
        expected = f"{provider} HTTP {status} {code or type_}: {message}" + (
            f" {hint}" if hint else ""
        )
        return cls(status, body, kind, expected, headers or {})


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    json: Any


class FakeChatServer:
    """Configurable per provider: path prefix, expected key (None = must not be sent), checks."""

    def __init__(
        self,
        *,
        prefix: str = "/v1",
        api_key: str | None = "sk-test-key",
        flavour: str = "openai",
        required_headers: dict[str, str] | None = None,
        max_base64_request: int | None = None,
        reject_json_schema: int | None = None,
    ) -> None:
        assert flavour in _SUCCESS_HEADERS
        self.prefix = prefix
        self.api_key = api_key
        self.flavour = flavour
        self.required_headers = required_headers or {}
        self.max_base64_request = max_base64_request
        self.reject_json_schema = reject_json_schema  # 400 or 422, like vLLM / FastAPI servers
        self.images: dict[str, bytes] = {}
        self.requests: list[Received] = []
        self.problems: list[str] = []
        self.script: deque[tuple[int, Any, dict[str, str]]] = deque()
        self.base_url = ""
        self.count_usage = False  # usage counted from the photo, as OpenAI does (fake_usage)
        self.usage: tuple[int, int] | None = None  # (prompt, completion) tokens of each answer
        self.flex_refuse = 0.0  # share of flex requests the flex tier turns away, spread evenly
        self.tiers: list[str | None] = []  # service_tier of each request that passed the checks
        self._flex_seen = 0
        self.comparisons: list[list[bytes]] = []  # the frames of each comparison answered

    def app(self) -> web.Application:
        """The fake's routes, for a server started by the test (`start`, or a virtual loop's)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(f"{self.prefix}/chat/completions", self._chat)
        app.router.add_get("/images/{name}", self._image)
        return app

    async def start(self, aiohttp_server: Any) -> FakeChatServer:
        server = await aiohttp_server(self.app(), host="127.0.0.1")
        self.base_url = str(server.make_url("")).rstrip("/")
        return self

    def queue(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """The next request gets this answer: a dict is sent as JSON, str/bytes as they are."""
        self.script.append((status, body, headers or {}))

    def queue_completion(self, content: str | None = None, **options: Any) -> None:
        self.queue(200, self.completion(content, **options))

    @property
    def last(self) -> Received:
        return self.requests[-1]

    def completion(
        self,
        content: str | None = None,
        *,
        finish_reason: str = "stop",
        refusal: str | None = None,
        model: str = "test-model",
    ) -> dict[str, Any]:
        """A chat.completion in the provider's real shape (content defaults to RATING)."""
        if content is None and refusal is None:
            content = json.dumps(RATING)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.flavour == "openai":
            message |= {"refusal": refusal, "annotations": []}
        usage = {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        return {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1756000000,
            "model": model,
            "choices": [choice],
            "usage": usage | _USAGE_EXTRAS.get(self.flavour, {}),
            "system_fingerprint": "fp_44709d6fcb",
            **_BODY_EXTRAS.get(self.flavour, {}),
        }

    def _error(self, status: int, message: str, code: str | None = None) -> web.Response:
        if self.flavour == "xai":
            return web.json_response(xai_error(XAI_INVALID, message), status=status)
        return web.json_response(openai_error(message, INVALID, code), status=status)

    def _problem(self, text: str) -> web.Response:
        """A request the real API would refuse: remember it and answer like the API would."""
        self.problems.append(text)
        return self._error(400, f"fake server: {text}")

    def _unauthorized(self) -> web.Response:
        if self.flavour == "xai":  # xAI answers a wrong key with 400
            return self._error(400, "Incorrect API key provided: wr***ng.")
        return self._error(401, "Incorrect API key provided: wr***ng.", "invalid_api_key")

    async def _image(self, request: web.Request) -> web.Response:
        data = self.images.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="image/jpeg")

    async def _chat(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        headers = dict(request.headers)
        self.requests.append(Received(request.method, request.path, headers, raw, payload))
        refusal = self._check_headers(request) or self._check_body(payload, raw)
        if refusal is not None:
            return refusal
        if self.reject_json_schema and payload["response_format"]["type"] == "json_schema":
            return self._schema_rejection()
        tier = payload.get("service_tier")
        self.tiers.append(tier)
        if tier == "flex" and (full := self._flex_full()) is not None:
            return full
        if self.script:
            return self._scripted()
        if is_comparison(payload):
            return self._comparison(payload)
        completion = self.completion(model=payload["model"])
        if self.flavour == "openai" and tier is not None:
            completion["service_tier"] = "flex" if tier == "flex" else "default"
        if self.usage is not None:
            prompt_tokens, answer_tokens = self.usage
            completion["usage"] |= {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": answer_tokens,
                "total_tokens": prompt_tokens + answer_tokens,
            }
        if self.count_usage:
            answer = completion["choices"][0]["message"]["content"]
            prompt, answer_tokens = fake_usage.openai_usage(payload, answer)
            completion["usage"] |= {
                "prompt_tokens": prompt,
                "completion_tokens": answer_tokens,
                "total_tokens": prompt + answer_tokens,
            }
        return web.json_response(completion, headers=_SUCCESS_HEADERS[self.flavour])

    def _scripted(self) -> web.Response:
        """The next scripted answer, as the test queued it."""
        status, body, headers = self.script.popleft()
        if isinstance(body, dict):
            return web.json_response(body, status=status, headers=headers)
        return web.Response(body=body, status=status, headers=headers)

    def _comparison(self, payload: dict[str, Any]) -> web.Response:
        """A burst comparison answered from the frames' pixels (the sharpest), not their order."""
        frames = [decode_data_uri(url) for url in image_urls(payload)]
        self.comparisons.append(frames)
        answer = verdict_text(frames)
        completion = self.completion(answer, model=payload["model"])
        if self.count_usage:
            prompt, answer_tokens = fake_usage.openai_usage(payload, answer)
            completion["usage"] |= {"prompt_tokens": prompt, "completion_tokens": answer_tokens}
        return web.json_response(completion, headers=_SUCCESS_HEADERS[self.flavour])

    def _flex_full(self) -> web.Response | None:
        """`flex_refuse` of the flex requests turned away, as each API does when its flex tier
        is full: OpenAI 429 "Resource Unavailable", Groq 498 `capacity_exceeded`."""
        seen, self._flex_seen = self._flex_seen, self._flex_seen + 1
        if int((seen + 1) * self.flex_refuse) == int(seen * self.flex_refuse):
            return None
        if self.flavour == "groq":
            body = openai_error(FLEX_FULL_GROQ, "capacity_exceeded", "capacity_exceeded")
            return web.json_response(body, status=498)
        body = openai_error(FLEX_FULL_OPENAI, "resource_unavailable", "resource_unavailable")
        return web.json_response(body, status=429)

    def _check_headers(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization")
        if self.api_key is None and auth is not None:
            return self._problem("an Authorization header was sent although no key is configured")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return self._unauthorized()
        for name, value in self.required_headers.items():
            if (actual := request.headers.get(name)) != value:
                return self._problem(f"header {name} is {actual!r}, expected {value!r}")
        if request.content_type != "application/json":
            return self._problem(f"content type {request.content_type}")
        return None

    def _check_body(self, payload: Any, raw: bytes) -> web.Response | None:
        if not isinstance(payload, dict):
            return self._problem("body is not a JSON object")
        errors = sorted(request_validator().iter_errors(payload), key=str)
        if errors:
            return self._problem(f"not a CreateChatCompletionRequest: {errors[0].message[:300]}")
        problem = _shape_problem(payload)
        if problem:
            return self._problem(problem)
        return self._check_tier(payload) or self._check_images(payload, raw)

    def _check_tier(self, payload: dict[str, Any]) -> web.Response | None:
        tier = payload.get("service_tier")
        if self.flavour == "groq" and tier is not None and tier not in GROQ_SERVICE_TIERS:
            return self._problem(f"service_tier must be one of {sorted(GROQ_SERVICE_TIERS)}")
        if self.flavour in {"xai", "ollama"} and tier is not None:
            return self._problem(f"{self.flavour} takes no service_tier")
        return None

    def _check_images(self, payload: dict[str, Any], raw: bytes) -> web.Response | None:
        urls = image_urls(payload)
        limit = IMAGE_LIMITS.get(self.flavour)
        if limit is not None and len(urls) > limit:  # Groq's answer to a sixth image
            message = f"Too many images provided. This model supports up to {limit} images"
            return self._error(400, message)
        for url in urls:
            if url.startswith("data:") and (refusal := self._check_data_uri(url, raw)):
                return refusal
        return None

    def _check_data_uri(self, url: str, raw: bytes) -> web.Response | None:
        header, _, encoded = url.partition(",")
        media_type = header.removeprefix("data:").removesuffix(";base64")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return self._problem("image data URI is not valid base64")
        if self.max_base64_request is not None and len(raw) > self.max_base64_request:
            return self._error(413, "Request Entity Too Large", "request_too_large")
        if self.flavour == "xai" and media_type not in {"image/jpeg", "image/png"}:
            return self._error(400, f"Unsupported image format {media_type}: use JPEG or PNG")
        try:
            with Image.open(io.BytesIO(data)) as opened:
                actual = Image.MIME[opened.format or ""]
        except (OSError, KeyError):
            return self._problem("image data URI does not hold an image")
        if actual != media_type:
            return self._problem(f"data URI says {media_type} but holds {actual}")
        return None

    def _schema_rejection(self) -> web.Response:
        if self.reject_json_schema == 422:  # FastAPI/pydantic request validation
            loc = ["body", "response_format", "type"]
            detail = [{"type": "literal_error", "loc": loc, "msg": "Input should be 'json_object'"}]
            return web.json_response({"detail": detail}, status=422)
        return self._error(400, "invalid response_format type: json_schema is not supported")


_PART_TYPES = ("text", "image_url")


def _shape_problem(payload: dict[str, Any]) -> str | None:
    """The parts of our request every chat-completions server relies on, beyond the schema."""
    messages = payload["messages"]
    content = messages[-1].get("content")
    if messages[-1]["role"] != "user" or not isinstance(content, list):
        return "the last message must be the user's, with a list of parts"
    problem = _parts_problem(payload, content)
    if problem:
        return problem
    response_format = payload.get("response_format", {})
    if response_format.get("type") not in {"json_schema", "json_object"}:
        return "response_format must ask for JSON"
    if response_format["type"] == "json_object" and "json" not in json.dumps(messages).lower():
        return "'messages' must contain the word 'json' to use response_format json_object"
    if response_format["type"] == "json_schema" and response_format["json_schema"].get("strict"):
        return _strict_schema_problem(response_format["json_schema"]["schema"])
    return None


def _strict_schema_problem(schema: dict[str, Any]) -> str | None:
    """OpenAI's strict mode: every property required, no additional properties."""
    if set(schema.get("required", [])) != set(schema.get("properties", {})):
        return "strict json_schema: every property must be listed in 'required'"
    if schema.get("additionalProperties") is not False:
        return "strict json_schema: additionalProperties must be false"
    return None


# Images one request may carry, where the provider says so (Groq: five).
IMAGE_LIMITS = {"groq": 5}


def image_urls(payload: dict[str, Any]) -> list[str]:
    """Every image part's URL in the last message, in order."""
    content = payload["messages"][-1]["content"]
    return [part["image_url"]["url"] for part in content if part.get("type") == "image_url"]


def is_comparison(payload: dict[str, Any]) -> bool:
    return len(image_urls(payload)) > 1


def _comparison_problem(payload: dict[str, Any], content: list[dict[str, Any]]) -> str | None:
    """A multi-image message as the APIs take it: text and image_url parts only, each image
    part an object with a URL, and kullbatch's comparison schema (or json_object) asked for."""
    for index, part in enumerate(content):
        if part.get("type") not in _PART_TYPES:
            return f"messages[-1].content[{index}]: unknown part type {part.get('type')!r}"
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            return f"messages[-1].content[{index}].text must be a string"
        image = part.get("image_url")
        if part["type"] == "image_url" and not (isinstance(image, dict) and image.get("url")):
            return f"messages[-1].content[{index}].image_url must be an object with a url"
    response_format = payload.get("response_format", {})
    if response_format.get("type") == "json_schema":
        wanted = response_format["json_schema"]
        if wanted.get("name") != COMPARE_SCHEMA_NAME or wanted.get("schema") != COMPARE_SCHEMA:
            return "a comparison must ask for the burst_comparison schema"
    return None


def _parts_problem(payload: dict[str, Any], content: list[dict[str, Any]]) -> str | None:
    """A rating's [text, image_url], or a burst comparison's several images."""
    types = tuple(part.get("type") for part in content)
    if types.count("image_url") > 1:
        return _comparison_problem(payload, content)
    if types != _PART_TYPES:
        return "user content must be [text part, image_url part]"
    return None
