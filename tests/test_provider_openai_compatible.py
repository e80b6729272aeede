"""The OpenAI-compatible adapter (Ollama, vLLM, llama.cpp ...) against a local fake server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import aiohttp
import pytest
from fake_openai_server import (
    RATING,
    ErrorCase,
    FakeChatServer,
    image_bytes,
    openai_error,
    xai_error,
)

from kullbatch.errors import (
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Transient,
)
from kullbatch.models import PreparedImage, Prompt, Rating, Usage
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.providers._chat import ErrorInfo, error_info
from kullbatch.providers.base import RATING_SCHEMA
from kullbatch.providers.http import HTTPAnswer
from kullbatch.providers.openai_compatible import (
    BASE_URL_VAR,
    JSON_OBJECT_INSTRUCTIONS,
    OpenAICompatibleProvider,
    create,
)

MODEL = "qwen3-vl:8b"
KEY = "lm-studio-TESTKEY-7f3e9a"
JPEG = image_bytes()
LOCAL = PreparedImage(image_id="img1", filename="a.jpg", data=JPEG)
PROMPT = Prompt(text="Rate this photo.", system="You are a photo editor.")
DATA_URI = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


async def start(aiohttp_server: Any, **options: Any) -> FakeChatServer:
    options.setdefault("api_key", None)
    return await FakeChatServer(prefix="/v1", flavour="ollama", **options).start(aiohttp_server)


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeChatServer:
    """An Ollama-like server: no key, json_schema accepted."""
    return await start(aiohttp_server)


def adapter(
    session: aiohttp.ClientSession, fake: FakeChatServer, key: str | None = None
) -> OpenAICompatibleProvider:
    env = {BASE_URL_VAR: f"{fake.base_url}/v1"}
    if key is not None:
        env["OPENAI_COMPATIBLE_API_KEY"] = key
    return create(
        model=MODEL, session=session, credentials=PROVIDERS["openai-compatible"].credentials(env)
    )


def response_formats(fake: FakeChatServer) -> list[str]:
    return [request.json["response_format"]["type"] for request in fake.requests]


# --- configuration ------------------------------------------------------------------------------


def test_a_missing_base_url_is_fatal_and_names_the_variable() -> None:
    """There is no default host for a local server, even when a key is set."""
    with pytest.raises(FatalJobError, match=BASE_URL_VAR):
        create(
            model=MODEL,
            session=None,
            credentials=PROVIDERS["openai-compatible"].credentials(
                {"OPENAI_COMPATIBLE_API_KEY": KEY}
            ),
        )  # type: ignore[arg-type]


def test_a_blank_base_url_is_as_missing_as_an_absent_one() -> None:
    """`export OPENAI_COMPATIBLE_BASE_URL=` must not produce requests to '/chat/completions'."""
    with pytest.raises(FatalJobError, match=BASE_URL_VAR):
        create(
            model=MODEL,
            session=None,
            credentials=PROVIDERS["openai-compatible"].credentials({BASE_URL_VAR: "  "}),
        )  # type: ignore[arg-type]


async def test_without_a_key_no_authorization_header_is_sent(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """Ollama needs no key; the fake refuses any Authorization header here."""
    answer = await adapter(session, fake).rate(LOCAL, PROMPT)

    assert answer.rating == Rating.model_validate(RATING)
    assert answer.usage == Usage(812, 64)
    assert answer.limits is None
    assert fake.problems == []
    assert "Authorization" not in fake.last.headers


async def test_with_a_key_it_is_sent_as_a_bearer_token(
    session: aiohttp.ClientSession, aiohttp_server: Any
) -> None:
    """A gateway or LM Studio with a key gets the usual bearer header."""
    fake = await start(aiohttp_server, api_key=KEY)

    await adapter(session, fake, key=KEY).rate(LOCAL, PROMPT)

    assert fake.last.headers["Authorization"] == f"Bearer {KEY}"
    assert fake.problems == []


async def test_the_registry_builds_the_adapter_although_the_key_is_optional(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """The registry lets a keyless env through; the adapter needs only the base URL."""
    provider = create_provider(
        PROVIDERS["openai-compatible"],
        MODEL,
        session,
        PROVIDERS["openai-compatible"].credentials({BASE_URL_VAR: f"{fake.base_url}/v1/"}),
    )

    assert isinstance(provider, OpenAICompatibleProvider)
    assert provider.name == "openai-compatible"
    assert (await provider.rate(LOCAL, PROMPT)).rating.starRating == 4
    assert fake.last.path == "/v1/chat/completions"


# --- the request --------------------------------------------------------------------------------


async def test_the_first_request_asks_for_json_schema_with_max_tokens(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """json_schema is tried first; max_tokens is the name every local server knows."""
    await adapter(session, fake).rate(LOCAL, PROMPT)

    body = fake.last.json
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "photo_rating", "strict": True, "schema": RATING_SCHEMA},
    }
    assert body["max_tokens"] > 0
    assert "max_completion_tokens" not in body
    assert body["messages"][0] == {"role": "system", "content": "You are a photo editor."}
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Rate this photo."},
        {"type": "image_url", "image_url": {"url": DATA_URI}},
    ]


async def test_a_url_image_is_downloaded_and_sent_inline(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """Ollama does not fetch URLs, so the adapter does and sends a data URI."""
    fake.images["photo.jpg"] = JPEG
    remote = PreparedImage(
        image_id="r", filename="photo.jpg", url=f"{fake.base_url}/images/photo.jpg"
    )

    await adapter(session, fake).rate(remote, PROMPT)

    assert fake.last.json["messages"][1]["content"][1]["image_url"]["url"] == DATA_URI
    assert fake.problems == []


async def test_a_url_image_that_is_gone_fails_that_image(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """A 404 on download is a permanent error for the image; no chat request is sent."""
    remote = PreparedImage(
        image_id="r", filename="gone.jpg", url=f"{fake.base_url}/images/gone.jpg"
    )

    with pytest.raises(PermanentImageError, match="HTTP 404"):
        await adapter(session, fake).rate(remote, PROMPT)

    assert fake.requests == []


# --- json_schema -> json_object fallback ---------------------------------------------------------


@pytest.mark.parametrize("rejection", [400, 422])
async def test_a_server_rejecting_json_schema_gets_json_object_for_this_and_later_images(
    session: aiohttp.ClientSession, aiohttp_server: Any, rejection: int
) -> None:
    """The same rate() call retries at once; later images skip json_schema for the job."""
    fake = await start(aiohttp_server, reject_json_schema=rejection)
    provider = adapter(session, fake)

    first = await provider.rate(LOCAL, PROMPT)
    second = await provider.rate(LOCAL, PROMPT)

    assert first.rating == second.rating == Rating.model_validate(RATING)
    assert response_formats(fake) == ["json_schema", "json_object", "json_object"]
    assert provider.json_object_only is True
    fallback = fake.requests[1].json
    assert fallback["response_format"] == {"type": "json_object"}
    text = fallback["messages"][1]["content"][0]["text"]
    assert text == f"Rate this photo.\n\n{JSON_OBJECT_INSTRUCTIONS}"
    assert json.dumps(RATING_SCHEMA, separators=(",", ":")) in text
    assert fake.problems == []


async def test_images_in_flight_all_fall_back_and_the_switch_is_logged_once(
    session: aiohttp.ClientSession, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Fired all at once, every image gets its rating; the admin log says it one time."""
    fake = await start(aiohttp_server, reject_json_schema=400)
    provider = adapter(session, fake)

    with caplog.at_level(logging.WARNING, logger="kullbatch.providers.openai_compatible"):
        answers = await asyncio.gather(*(provider.rate(LOCAL, PROMPT) for _ in range(5)))

    assert {answer.rating.starRating for answer in answers} == {4}
    assert response_formats(fake).count("json_object") == 5
    assert len([r for r in caplog.records if "rejected response_format" in r.message]) == 1


async def test_an_error_after_the_fallback_is_classified_as_usual(
    session: aiohttp.ClientSession, aiohttp_server: Any
) -> None:
    """The json_object retry's own failure is raised, not swallowed."""
    fake = await start(aiohttp_server, reject_json_schema=400)
    fake.queue(503, openai_error("model is loading", "api_error"))

    with pytest.raises(Transient, match="openai-compatible HTTP 503 api_error: model is loading"):
        await adapter(session, fake).rate(LOCAL, PROMPT)

    assert response_formats(fake) == ["json_schema", "json_object"]


async def test_a_400_about_the_image_does_not_switch_to_json_object(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """Only a rejection of response_format itself triggers the fallback."""
    provider = adapter(session, fake)
    fake.queue(
        400,
        openai_error("illegal base64 data at input byte 4: invalid image", "invalid_request_error"),
    )

    with pytest.raises(PermanentImageError, match="illegal base64 data"):
        await provider.rate(LOCAL, PROMPT)

    assert provider.json_object_only is False
    assert response_formats(fake) == ["json_schema"]


async def test_a_fenced_json_answer_is_accepted(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """Servers without constrained decoding often wrap JSON in a markdown fence."""
    fake.queue_completion(f"```json\n{json.dumps(RATING)}\n```")

    answer = await adapter(session, fake).rate(LOCAL, PROMPT)

    assert answer.rating == Rating.model_validate(RATING)


async def test_a_prose_answer_is_transient(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """A small local model that ignores the format is retried with a clear message."""
    fake.queue_completion("This is a lovely photo, I'd give it four stars.")

    with pytest.raises(Transient, match="openai-compatible answer is not JSON"):
        await adapter(session, fake).rate(LOCAL, PROMPT)


# --- errors -------------------------------------------------------------------------------------


def case(
    status: int, code: str | None, message: str, kind: type[Exception], **options: Any
) -> ErrorCase:
    return ErrorCase.nested("openai-compatible", status, code, message, kind, **options)


VLLM_400 = {
    "object": "error",
    "message": "The model `llava` does not support image input.",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}
# fmt: off  (tables read best one row per line)
ERRORS = [
    case(
        404,
        None,
        'model "qwen3-vl:8b" not found, try pulling it first',
        FatalJobError,
        type_="api_error",
    ),
    ErrorCase(
        400,
        VLLM_400,
        FatalJobError,
        "openai-compatible HTTP 400 BadRequestError: The model `llava` does not support image input.",
    ),
    ErrorCase(
        400,
        {"error": "image: unknown format"},
        PermanentImageError,
        "openai-compatible HTTP 400: image: unknown format",
    ),
    case(
        401,
        "invalid_api_key",
        "Invalid API key",
        FatalJobError,
        hint="[check OPENAI_COMPATIBLE_API_KEY]",
    ),
    case(
        429,
        None,
        "server busy, please try again. maximum pending requests exceeded",
        RateLimited,
        type_="api_error",
    ),
    case(
        500,
        None,
        "llama runner process has terminated: signal: killed",
        Transient,
        type_="api_error",
    ),
    ErrorCase(
        502,
        "Bad Gateway",
        Transient,
        "openai-compatible HTTP 502: Bad Gateway",
        {"content-type": "text/plain"},
    ),
]
# fmt: on


@pytest.mark.parametrize("case", ERRORS, ids=str)
async def test_local_server_errors_map_onto_the_taxonomy(
    session: aiohttp.ClientSession, fake: FakeChatServer, case: ErrorCase
) -> None:
    """Ollama's and vLLM's error shapes are read; status and body decide the class."""
    fake.queue(case.status, case.body, case.headers)

    with pytest.raises(ProviderError) as caught:
        await adapter(session, fake).rate(LOCAL, PROMPT)

    assert type(caught.value) is case.kind
    assert caught.value.message == case.expected


async def test_the_api_key_never_appears_in_an_error_message(
    session: aiohttp.ClientSession, aiohttp_server: Any
) -> None:
    """An echoed key is scrubbed, even from a plain-text error."""
    fake = await start(aiohttp_server, api_key=KEY)
    fake.queue(500, f"proxy error: upstream rejected token {KEY}", {"content-type": "text/plain"})

    with pytest.raises(Transient) as caught:
        await adapter(session, fake, key=KEY).rate(LOCAL, PROMPT)

    assert KEY not in str(caught.value)
    assert "[redacted]" in caught.value.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            openai_error("bad", "invalid_request_error", "c1", "p1"),
            ErrorInfo("bad", "c1", "invalid_request_error", "p1"),
        ),
        (
            xai_error("Some resource has been exhausted", "slow down"),
            ErrorInfo("slow down", "Some resource has been exhausted"),
        ),
        ({"error": "model not found"}, ErrorInfo("model not found")),
        (
            {"object": "error", "message": "oops", "type": "BadRequestError", "code": 400},
            ErrorInfo("oops", None, "BadRequestError"),
        ),
        (
            {"detail": [{"msg": "Input should be 'text' or 'json_object'"}]},
            ErrorInfo('{"detail": [{"msg": "Input should be \'text\' or \'json_object\'"}]}'),
        ),
        ("<html>Bad Gateway</html>", ErrorInfo("<html>Bad Gateway</html>")),
        ("", ErrorInfo("")),
        ([1, 2], ErrorInfo("[1, 2]")),
    ],
)
def test_error_bodies_of_every_shape_yield_a_message(body: Any, expected: ErrorInfo) -> None:
    """OpenAI nested, xAI flat, Ollama string, vLLM bare, FastAPI detail, HTML, empty."""
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()

    assert error_info(HTTPAnswer(400, {}, raw)) == expected
