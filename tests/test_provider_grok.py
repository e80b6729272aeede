"""The xAI Grok adapter against a local fake of xAI's OpenAI-compatible Chat Completions API."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from fake_openai_server import (
    RATING,
    XAI_INVALID,
    ErrorCase,
    FakeChatServer,
    image_bytes,
    request_validator,
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
from kullbatch.providers import PROVIDERS, create_provider, resolve
from kullbatch.providers.base import RATING_SCHEMA
from kullbatch.providers.grok import GrokProvider, create

KEY = "xai-TESTKEYq9w8e7r6t5y4u3i2o1p0"
MODEL = "grok-4-1-fast-non-reasoning"
JPEG = image_bytes()
LOCAL = PreparedImage(image_id="img1", filename="a.jpg", data=JPEG)
PROMPT = Prompt(text="Rate this photo.", system="You are a photo editor.")
INVALID = XAI_INVALID


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeChatServer:
    return await FakeChatServer(prefix="/v1", api_key=KEY, flavour="xai").start(aiohttp_server)


def adapter(session: aiohttp.ClientSession, fake: FakeChatServer) -> GrokProvider:
    env = {"XAI_API_KEY": KEY, "XAI_BASE_URL": f"{fake.base_url}/v1"}
    return create(model=MODEL, session=session, credentials=PROVIDERS["grok"].credentials(env))


def sent_image(fake: FakeChatServer) -> dict[str, str]:
    image: dict[str, str] = fake.last.json["messages"][-1]["content"][1]["image_url"]
    return image


async def test_the_request_is_openais_chat_shape_with_strict_json_schema(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """xAI takes OpenAI's body: it validates against CreateChatCompletionRequest."""
    answer = await adapter(session, fake).rate(LOCAL, PROMPT)

    assert answer.rating == Rating.model_validate(RATING)
    assert answer.usage == Usage(812, 64)
    assert answer.limits is None  # xAI documents no rate-limit headers
    assert fake.problems == []
    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    request_validator().validate(sent.json)
    assert sent.json["model"] == MODEL
    assert sent.json["messages"][0] == {"role": "system", "content": "You are a photo editor."}
    assert sent.json["response_format"]["json_schema"] == {
        "name": "photo_rating",
        "strict": True,
        "schema": RATING_SCHEMA,
    }
    assert sent.json["max_completion_tokens"] > 0
    assert sent_image(fake)["detail"] == "high"
    assert sent_image(fake)["url"] == "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()


async def test_a_url_image_is_passed_as_the_url(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """xAI fetches image URLs itself."""
    remote = PreparedImage(image_id="r", filename="r.jpg", url="https://photos.example.com/r.jpg")

    await adapter(session, fake).rate(remote, PROMPT)

    assert sent_image(fake) == {"url": "https://photos.example.com/r.jpg", "detail": "high"}


async def test_png_bytes_are_sent_as_png(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """PNG is one of the two formats xAI takes, so it is not re-encoded."""
    png = image_bytes("PNG")
    image = PreparedImage(image_id="p", filename="p.png", data=png, media_type="image/png")

    await adapter(session, fake).rate(image, PROMPT)

    assert sent_image(fake)["url"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert fake.problems == []


async def test_webp_bytes_are_converted_to_jpeg_because_xai_takes_only_jpeg_and_png(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """A WebP (e.g. a downloaded one) would be refused by xAI; it goes out as JPEG."""
    webp = PreparedImage(
        image_id="w", filename="w.webp", data=image_bytes("WEBP"), media_type="image/webp"
    )

    await adapter(session, fake).rate(webp, PROMPT)

    url = sent_image(fake)["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1])[:3] == b"\xff\xd8\xff"
    assert fake.problems == []


async def test_bytes_that_are_not_an_image_fail_that_image(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """Undecodable non-JPEG bytes cannot be converted: a permanent error, nothing is sent."""
    broken = PreparedImage(
        image_id="b", filename="b.gif", data=b"GIF89a-broken", media_type="image/gif"
    )

    with pytest.raises(
        PermanentImageError,
        match=r"b\.gif: image cannot be converted to JPEG.*grok accepts JPEG or PNG",
    ):
        await adapter(session, fake).rate(broken, PROMPT)

    assert fake.requests == []


def case(
    status: int, code: str, message: str, kind: type[Exception], hint: str = "", **headers: str
) -> ErrorCase:
    """xAI's flat body; the adapter's message is "grok HTTP <status> <code>: <message>"."""
    body = xai_error(code, message)
    expected = f"grok HTTP {status} {code}: {message}" + (f" {hint}" if hint else "")
    return ErrorCase(status, body, kind, expected, headers)


NO_PERMISSION = "The caller does not have permission to execute the specified operation"
# fmt: off  (tables read best one row per line)
ERRORS = [
    case(
        400,
        INVALID,
        "Incorrect API key provided: xa***op. You can obtain an API key from https://console.x.ai.",
        FatalJobError,
        hint="[check XAI_API_KEY]",
    ),
    case(
        400,
        INVALID,
        "Unsupported content-type encountered when downloading image: image/webp",
        PermanentImageError,
    ),
    case(
        400,
        INVALID,
        "Image file size exceeds the maximum allowed size of 20 MiB",
        PermanentImageError,
    ),
    case(400, INVALID, "Model grok-3-mini does not support image input", FatalJobError),
    case(
        400,
        INVALID,
        "Invalid request content: The response_format json_schema is invalid: 'required' must list every property.",
        FatalJobError,
    ),
    case(
        403,
        NO_PERMISSION,
        "Your newly created team doesn't have any credits yet. You can purchase credits on https://console.x.ai.",
        FatalJobError,
    ),
    case(
        404,
        "Some requested entity was not found",
        "The model grok-9 does not exist or your team does not have access to it.",
        FatalJobError,
    ),
    case(413, INVALID, "Request payload too large", PermanentImageError),
    ErrorCase(
        422,
        "Failed to deserialize the JSON body into the target type: messages[1]",
        PermanentImageError,
        "grok HTTP 422: Failed to deserialize the JSON body into the target type: messages[1]",
        {"content-type": "text/plain"},
    ),
    case(
        429,
        "Some resource has been exhausted",
        "Too many requests: rate limit of 480 requests per minute reached",
        RateLimited,
        **{"retry-after": "4"},
    ),
    case(500, "Internal error", "Internal server error", Transient),
    case(
        503,
        "The service is currently unavailable",
        "Service temporarily unavailable. The model is overloaded.",
        Transient,
    ),
]
# fmt: on


@pytest.mark.parametrize("case", ERRORS, ids=str)
async def test_xai_error_bodies_map_onto_the_taxonomy(
    session: aiohttp.ClientSession, fake: FakeChatServer, case: ErrorCase
) -> None:
    """xAI's flat {code, error} bodies are read; a 400 naming the API key is fatal."""
    fake.queue(case.status, case.body, case.headers)

    with pytest.raises(ProviderError) as caught:
        await adapter(session, fake).rate(LOCAL, PROMPT)

    assert type(caught.value) is case.kind
    assert caught.value.message == case.expected


async def test_a_rate_limit_carries_the_retry_after_hint(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """xAI's retry-after reaches the retry schedule."""
    fake.queue(
        429,
        xai_error("Some resource has been exhausted", "Too many requests"),
        {"retry-after": "4"},
    )

    with pytest.raises(RateLimited) as caught:
        await adapter(session, fake).rate(LOCAL, PROMPT)

    assert caught.value.retry_after == 4.0
    assert caught.value.limits is None


async def test_a_wrong_key_answered_with_400_stops_the_job(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """The fake refuses a wrong key the way xAI does (400, flat body): fatal, not a bad image."""
    env = {"XAI_API_KEY": "xai-wrong-000000", "XAI_BASE_URL": f"{fake.base_url}/v1"}

    with pytest.raises(FatalJobError, match="Incorrect API key"):
        await create(
            model=MODEL, session=session, credentials=PROVIDERS["grok"].credentials(env)
        ).rate(LOCAL, PROMPT)


async def test_the_api_key_never_appears_in_an_error_message(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """An echoed key is scrubbed from the raised message."""
    fake.queue(400, xai_error(INVALID, f"Incorrect API key provided: {KEY}"))

    with pytest.raises(FatalJobError) as caught:
        await adapter(session, fake).rate(LOCAL, PROMPT)

    assert KEY not in str(caught.value)
    assert "Incorrect API key provided: [redacted]" in caught.value.message


async def test_without_a_base_url_the_adapter_calls_api_x_ai(
    session: aiohttp.ClientSession,
) -> None:
    """The documented default endpoint is https://api.x.ai/v1/chat/completions."""
    provider = create(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["grok"].credentials({"XAI_API_KEY": KEY}),
    )
    body = FakeChatServer(flavour="xai").completion()
    with aioresponses() as mocked:
        mocked.post("https://api.x.ai/v1/chat/completions", payload=body)
        answer = await provider.rate(LOCAL, PROMPT)

    assert answer.rating.colorLabel == "green"


def test_a_missing_key_is_fatal_and_names_the_variable() -> None:
    """create() refuses to build an adapter without XAI_API_KEY."""
    with pytest.raises(FatalJobError, match="XAI_API_KEY"):
        create(
            model=MODEL,
            session=None,
            credentials=PROVIDERS["grok"].credentials({"XAI_BASE_URL": "http://127.0.0.1:1/v1"}),
        )  # type: ignore[arg-type]


async def test_the_registry_builds_the_grok_adapter_under_its_alias(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """`--provider xai` resolves to this module with the registry's default model."""
    spec, model = resolve("xai", None)
    env = {"XAI_API_KEY": KEY, "XAI_BASE_URL": f"{fake.base_url}/v1"}
    provider = create_provider(spec, model, session, spec.credentials(env))

    assert spec is PROVIDERS["grok"]
    assert isinstance(provider, GrokProvider)
    assert provider.model == MODEL
    assert (await provider.rate(LOCAL, PROMPT)).rating.starRating == 4
