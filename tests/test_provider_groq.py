"""The Groq adapter against a local fake of Groq's OpenAI-compatible API (/openai/v1)."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from fake_openai_server import (
    GROQ_LIMIT_HEADERS,
    INVALID,
    RATING,
    ErrorCase,
    FakeChatServer,
    image_bytes,
    openai_error,
    request_validator,
)
from PIL import Image

from kullbatch.errors import (
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Transient,
)
from kullbatch.models import PreparedImage, Prompt, RateLimits, Rating, Usage
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.providers.base import RATING_SCHEMA
from kullbatch.providers.groq import (
    MAX_BASE64_REQUEST_BYTES,
    GroqProvider,
    create,
    max_raw_bytes,
)

KEY = "gsk_TESTKEYaBcDeFgHiJkLmNoPqRsTuV"
MODEL = "meta-llama/llama-4-scout-17b-16e-instruct"
JPEG = image_bytes()
LOCAL = PreparedImage(image_id="img1", filename="a.jpg", data=JPEG)
PROMPT = Prompt(text="Rate this photo.", system="You are a photo editor.")
# The requests pair is per day on Groq: not a pace, so only the tokens pair is reported.
GROQ_LIMITS = RateLimits(tokens_limit=30000, tokens_remaining=28400, tokens_reset=3.2)


@functools.cache
def noisy_jpeg() -> bytes:
    """About 6 MB of JPEG noise: its base64 alone is far over Groq's 4 MB request cap."""
    side = 1200
    noise = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="JPEG", quality=100, subsampling=0)
    return buffer.getvalue()


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeChatServer:
    server = FakeChatServer(
        prefix="/openai/v1",
        api_key=KEY,
        flavour="groq",
        max_base64_request=MAX_BASE64_REQUEST_BYTES,
    )
    return await server.start(aiohttp_server)


def adapter(session: aiohttp.ClientSession, fake: FakeChatServer) -> GroqProvider:
    env = {"GROQ_API_KEY": KEY, "GROQ_BASE_URL": fake.base_url}
    return create(model=MODEL, session=session, credentials=PROVIDERS["groq"].credentials(env))


def sent_image(fake: FakeChatServer) -> dict[str, str]:
    image: dict[str, str] = fake.last.json["messages"][-1]["content"][1]["image_url"]
    return image


async def test_the_request_goes_to_openai_v1_under_the_host_with_best_effort_json_schema(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """GROQ_BASE_URL is a host; the body is OpenAI's shape with json_schema strict false."""
    answer = await adapter(session, fake).rate(LOCAL, PROMPT)

    assert answer.rating == Rating.model_validate(RATING)
    assert answer.usage == Usage(812, 64)
    assert fake.problems == []
    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/openai/v1/chat/completions")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    request_validator().validate(sent.json)
    assert sent.json["model"] == MODEL
    assert sent.json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "photo_rating", "strict": False, "schema": RATING_SCHEMA},
    }
    assert sent.json["max_completion_tokens"] > 0
    assert sent_image(fake) == {"url": "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()}


async def test_groq_rate_limit_headers_are_reported(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """Groq's tokens-per-minute headers become RateLimits; its per-day requests pair does not."""
    answer = await adapter(session, fake).rate(LOCAL, PROMPT)

    assert answer.limits == GROQ_LIMITS


async def test_a_url_image_is_passed_as_the_url(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """Groq fetches URL images itself (up to 20 MB), so nothing is downloaded or shrunk."""
    remote = PreparedImage(image_id="r", filename="r.jpg", url="https://photos.example.com/r.jpg")

    await adapter(session, fake).rate(remote, PROMPT)

    assert sent_image(fake) == {"url": "https://photos.example.com/r.jpg"}


async def test_a_large_local_image_is_shrunk_until_the_base64_request_fits_4_mb(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """The whole JSON body, base64 included, stays under Groq's cap (the fake answers 413 above it)."""
    big = PreparedImage(image_id="big", filename="big.jpg", data=noisy_jpeg())
    assert len(base64.b64encode(big.data or b"")) > MAX_BASE64_REQUEST_BYTES

    answer = await adapter(session, fake).rate(big, PROMPT)

    assert answer.rating.starRating == 4
    assert fake.problems == []
    assert len(fake.last.raw) <= MAX_BASE64_REQUEST_BYTES
    sent = base64.b64decode(sent_image(fake)["url"].split(",", 1)[1])
    with Image.open(io.BytesIO(sent)) as opened:
        assert opened.format == "JPEG"
        assert max(opened.size) < 1200


async def test_an_image_that_cannot_be_shrunk_fails_with_a_message_naming_the_cap(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """Undecodable bytes over the cap are a permanent error for that image; nothing is sent."""
    junk = PreparedImage(image_id="j", filename="j.jpg", data=b"\xff\xd8\xff" + b"\0" * 3_500_000)

    with pytest.raises(PermanentImageError, match="Groq takes at most 4 MB per request"):
        await adapter(session, fake).rate(junk, PROMPT)

    assert fake.requests == []


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(4, 3), (7, 3), (8, 6), (4_000_000, 3_000_000), (0, 0), (-500, 0)],
)
def test_the_raw_byte_budget_accounts_for_base64_expansion(budget: int, expected: int) -> None:
    """Every 3 bytes become 4 base64 characters."""
    assert max_raw_bytes(budget) == expected
    assert len(base64.b64encode(b"x" * expected)) <= max(budget, 0)


def case(
    status: int, code: str | None, message: str, kind: type[Exception], **options: Any
) -> ErrorCase:
    return ErrorCase.nested("groq", status, code, message, kind, **options)


JSON_FAILED = openai_error(
    "Failed to generate JSON. Please adjust your prompt. See 'failed_generation' for more details.",
    INVALID,
    "json_validate_failed",
)
# fmt: off  (tables read best one row per line)
ERRORS = [
    ErrorCase(
        400,
        JSON_FAILED | {"failed_generation": '{"starRating": "four"}'},
        Transient,
        "groq HTTP 400 json_validate_failed: Failed to generate JSON. Please adjust your prompt. See 'failed_generation' for more details.",
    ),
    case(400, None, "Image resolution exceeds the limit of 33177600 pixels", PermanentImageError),
    case(
        400,
        None,
        "failed to retrieve media: received status code 404 from https://photos.example.com/r.jpg",
        PermanentImageError,
    ),
    case(
        400,
        "model_decommissioned",
        "The model `meta-llama/llama-4-maverick-17b-128e-instruct` has been decommissioned and is no longer supported.",
        FatalJobError,
    ),
    case(
        400, None, "`response_format` json_schema is not supported with this model", FatalJobError
    ),
    case(401, "invalid_api_key", "Invalid API Key", FatalJobError, hint="[check GROQ_API_KEY]"),
    case(403, "permission_denied", "Forbidden", FatalJobError, type_="permissions_error"),
    case(
        404,
        "model_not_found",
        "The model `llama-9-vision` does not exist or you do not have access to it.",
        FatalJobError,
    ),
    case(413, "request_too_large", "Request Entity Too Large", PermanentImageError),
    case(422, None, "Unprocessable Entity", PermanentImageError),
    case(
        429,
        "rate_limit_exceeded",
        "Rate limit reached for model `meta-llama/llama-4-scout-17b-16e-instruct` in organization `org_01` service tier `on_demand` on tokens per minute (TPM): Limit 30000, Used 29000, Requested 2400. Please try again in 2.8s.",
        RateLimited,
        type_="tokens",
        headers={"retry-after": "3", **GROQ_LIMIT_HEADERS},
    ),
    case(
        498,
        "capacity_exceeded",
        "Flex tier capacity exceeded. Please try again later.",
        Transient,
        type_="service_unavailable",
    ),
    case(500, None, "Internal Server Error", Transient, type_="internal_server_error"),
    case(
        503,
        None,
        "Service Unavailable",
        Transient,
        type_="service_unavailable",
        headers={"retry-after": "10"},
    ),
]
# fmt: on


@pytest.mark.parametrize("case", ERRORS, ids=str)
async def test_groq_error_bodies_map_onto_the_taxonomy(
    session: aiohttp.ClientSession, fake: FakeChatServer, case: ErrorCase
) -> None:
    """json_validate_failed is retried; 413 fails the image; the message keeps Groq's words."""
    fake.queue(case.status, case.body, case.headers)

    with pytest.raises(ProviderError) as caught:
        await adapter(session, fake).rate(LOCAL, PROMPT)

    assert type(caught.value) is case.kind
    assert caught.value.message == case.expected


async def test_a_rate_limit_carries_retry_after_and_groqs_limits(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """The 429's retry-after and x-ratelimit-* headers both reach the engine."""
    body = openai_error("Rate limit reached", "tokens", "rate_limit_exceeded")
    fake.queue(429, body, {"retry-after": "3", **GROQ_LIMIT_HEADERS})

    with pytest.raises(RateLimited) as caught:
        await adapter(session, fake).rate(LOCAL, PROMPT)

    assert caught.value.retry_after == 3.0
    assert caught.value.limits == GROQ_LIMITS


async def test_an_off_schema_best_effort_answer_is_transient(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """strict:false lets the model drift; the client-side check catches it."""
    fake.queue_completion(json.dumps({"rating": 4}))

    with pytest.raises(Transient, match="groq answer is not a valid rating"):
        await adapter(session, fake).rate(LOCAL, PROMPT)


async def test_the_api_key_never_appears_in_an_error_message(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """An echoed key is scrubbed from the raised message."""
    fake.queue(
        401, openai_error(f"Invalid API Key {KEY}", "invalid_request_error", "invalid_api_key")
    )

    with pytest.raises(FatalJobError) as caught:
        await adapter(session, fake).rate(LOCAL, PROMPT)

    assert KEY not in str(caught.value)
    assert "[redacted]" in caught.value.message


async def test_a_wrong_key_stops_the_job(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """The fake checks the bearer key; Groq's 401 is fatal."""
    env = {"GROQ_API_KEY": "gsk_wrong_0000", "GROQ_BASE_URL": fake.base_url}

    with pytest.raises(FatalJobError, match="groq HTTP 401"):
        await create(
            model=MODEL, session=session, credentials=PROVIDERS["groq"].credentials(env)
        ).rate(LOCAL, PROMPT)


async def test_without_a_base_url_the_adapter_calls_api_groq_com(
    session: aiohttp.ClientSession,
) -> None:
    """The documented default is https://api.groq.com plus /openai/v1/chat/completions."""
    provider = create(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["groq"].credentials({"GROQ_API_KEY": KEY}),
    )
    body = FakeChatServer(flavour="groq").completion()
    with aioresponses() as mocked:
        mocked.post(
            "https://api.groq.com/openai/v1/chat/completions",
            payload=body,
            headers=GROQ_LIMIT_HEADERS,
        )
        answer = await provider.rate(LOCAL, PROMPT)

    assert answer.limits == GROQ_LIMITS


def test_a_missing_key_is_fatal_and_names_the_variable() -> None:
    """create() refuses to build an adapter without GROQ_API_KEY."""
    with pytest.raises(FatalJobError, match="GROQ_API_KEY"):
        create(model=MODEL, session=None, credentials=PROVIDERS["groq"].credentials({}))  # type: ignore[arg-type]


async def test_the_registry_builds_the_groq_adapter(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """create_provider imports this module and passes the env mapping through."""
    env = {"GROQ_API_KEY": KEY, "GROQ_BASE_URL": fake.base_url + "/"}
    provider = create_provider(
        PROVIDERS["groq"], MODEL, session, PROVIDERS["groq"].credentials(env)
    )

    assert isinstance(provider, GroqProvider)
    assert (await provider.rate(LOCAL, PROMPT)).rating.starRating == 4
