"""The Gemini adapter against a local fake of the Developer API (no internet)."""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from fake_gemini_server import (
    API_KEY_INVALID,
    BAD_MIME_CONFIG,
    CREDIT_EXHAUSTED,
    DEADLINE,
    FREE_TIER_UNAVAILABLE,
    GEMINI_KEY,
    IMAGE_INVALID,
    INTERNAL,
    LOCATION_UNSUPPORTED,
    MODEL,
    NO_IMAGE_INPUT,
    OVERLOADED,
    PAYLOAD_TOO_LARGE,
    RATING,
    SERVICE_DISABLED,
    SYSTEM_NOT_ENABLED,
    TOO_LARGE_HTML,
    UNKNOWN_FIELD,
    FakeGemini,
    Reply,
    consumer_suspended,
    decoded_image,
    generate_content_response,
    google_error,
    image_bytes,
    jpeg_bytes,
    model_not_found,
    quota_exceeded,
)
from PIL import Image

from kullbatch.errors import (
    ContentBlocked,
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Transient,
)
from kullbatch.models import PreparedImage, Prompt
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.providers.gemini import (
    DEFAULT_BASE_URL,
    GeminiProvider,
    create,
    parse_error,
    retry_hint,
)
from kullbatch.run.retry import RetryPolicy

PROMPT = Prompt(text="Rate this wedding photo.", system="You are a strict photo editor.")


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeGemini:
    gemini = FakeGemini()
    server = await aiohttp_server(gemini.app())
    gemini.base_url = str(server.make_url("")).rstrip("/")
    return gemini


def provider_for(fake: FakeGemini, session: aiohttp.ClientSession, **env: str) -> GeminiProvider:
    settings = {"GEMINI_API_KEY": GEMINI_KEY, "GOOGLE_GEMINI_BASE_URL": fake.base_url, **env}
    return create(
        model=MODEL, session=session, credentials=PROVIDERS["gemini"].credentials(settings)
    )


def local_image() -> PreparedImage:
    return PreparedImage(image_id="img1", filename="IMG_0001.jpg", data=jpeg_bytes())


def noisy_jpeg(edge: int = 600) -> bytes:
    noise = random.Random(7).randbytes(edge * edge * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (edge, edge), noise).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# --- the request ----------------------------------------------------------------------------


async def test_a_local_jpeg_is_rated_with_one_well_formed_request(fake, session):
    """The fake finds nothing wrong with path, key header, body, image or schema."""
    answer = await provider_for(fake, session).rate(local_image(), PROMPT)
    assert fake.problems == []
    assert answer.rating.model_dump() == RATING
    assert answer.limits is None
    body = fake.requests[0]
    parts = body["contents"][0]["parts"]
    assert list(parts[0]) == ["inlineData"]
    assert parts[1] == {"text": PROMPT.text}
    assert decoded_image(body) == ("image/jpeg", jpeg_bytes())
    assert body["systemInstruction"] == {"parts": [{"text": PROMPT.system}]}


async def test_the_system_instruction_is_left_out_when_the_prompt_has_none(fake, session):
    """No systemInstruction field is sent without a system prompt (Gemma rejects it)."""
    await provider_for(fake, session).rate(local_image(), Prompt(text="Rate it."))
    assert fake.problems == []
    assert "systemInstruction" not in fake.requests[0]


async def test_the_key_travels_in_the_header_and_never_in_the_url(fake, session):
    """The URL holds the model and the method, and no `?key=`."""
    provider = provider_for(fake, session)
    assert provider.url == f"{fake.base_url}/v1beta/models/{MODEL}:generateContent"
    assert GEMINI_KEY not in provider.url
    await provider.rate(local_image(), PROMPT)
    assert fake.problems == []


async def test_a_model_given_as_a_resource_name_is_not_prefixed_twice(fake, session):
    """`models/gemini-2.5-flash` reaches the same path as `gemini-2.5-flash`."""
    settings = {"GEMINI_API_KEY": GEMINI_KEY, "GOOGLE_GEMINI_BASE_URL": fake.base_url}
    provider = create(
        model=f"models/{MODEL}",
        session=session,
        credentials=PROVIDERS["gemini"].credentials(settings),
    )
    await provider.rate(local_image(), PROMPT)
    assert fake.problems == []


async def test_usage_counts_thinking_tokens_as_output(fake, session):
    """thoughtsTokenCount is billed as output, so it is added to candidatesTokenCount."""
    fake.reply(200, generate_content_response(prompt_tokens=1300, answer_tokens=60, thoughts=400))
    answer = await provider_for(fake, session).rate(local_image(), PROMPT)
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (1300, 460)


async def test_thought_parts_are_skipped_and_text_parts_are_joined(fake, session):
    """Only non-thought text parts make up the JSON answer."""
    text = json.dumps(RATING)
    parts = [
        {"text": "Let me look at the exposure first...", "thought": True},
        {"text": text[:20], "thoughtSignature": "CiQB0e2Kb1"},
        {"text": text[20:]},
    ]
    fake.reply(200, generate_content_response(parts=parts))
    answer = await provider_for(fake, session).rate(local_image(), PROMPT)
    assert answer.rating.title == RATING["title"]


# --- images ---------------------------------------------------------------------------------


async def test_a_url_image_is_downloaded_and_sent_inline(fake, session):
    """Gemini does not fetch URLs: the adapter fetches the image and sends its bytes."""
    photo = jpeg_bytes((80, 60), "navy")
    fake.images["shoot/IMG_0002.jpg"] = (photo, "image/jpeg")
    image = PreparedImage("img2", "IMG_0002.jpg", url=f"{fake.base_url}/images/shoot/IMG_0002.jpg")
    await provider_for(fake, session).rate(image, PROMPT)
    assert fake.image_gets == ["shoot/IMG_0002.jpg"]
    assert fake.problems == []
    assert decoded_image(fake.requests[0]) == ("image/jpeg", photo)


async def test_a_png_url_image_is_sent_as_png(fake, session):
    """PNG is one of Gemini's image types, so its bytes are sent unchanged."""
    png = image_bytes("PNG")
    fake.images["a.png"] = (png, "image/png")
    image = PreparedImage("img3", "a.png", url=f"{fake.base_url}/images/a.png")
    await provider_for(fake, session).rate(image, PROMPT)
    assert decoded_image(fake.requests[0]) == ("image/png", png)


async def test_a_gif_url_image_is_converted_to_jpeg(fake, session):
    """GIF is not among Gemini's image types: its first frame goes as JPEG."""
    fake.images["b.gif"] = (image_bytes("GIF"), "image/gif")
    image = PreparedImage("img4", "b.gif", url=f"{fake.base_url}/images/b.gif")
    await provider_for(fake, session).rate(image, PROMPT)
    assert fake.problems == []
    mime, data = decoded_image(fake.requests[0])
    assert mime == "image/jpeg"
    assert data.startswith(b"\xff\xd8\xff")


async def test_a_broken_gif_fails_only_that_image(fake, session):
    """A GIF that cannot be decoded cannot be converted: PermanentImageError, no request."""
    fake.images["broken.gif"] = (b"GIF89a" + b"\x00" * 20, "image/gif")
    image = PreparedImage("img9", "broken.gif", url=f"{fake.base_url}/images/broken.gif")
    with pytest.raises(PermanentImageError, match="cannot be converted to JPEG"):
        await provider_for(fake, session).rate(image, PROMPT)
    assert fake.requests == []


async def test_a_missing_url_image_fails_only_that_image(fake, session):
    """A 404 from the image host is a PermanentImageError and Gemini is never called."""
    image = PreparedImage("img5", "gone.jpg", url=f"{fake.base_url}/images/gone.jpg")
    with pytest.raises(PermanentImageError, match="HTTP 404"):
        await provider_for(fake, session).rate(image, PROMPT)
    assert fake.requests == []


async def test_an_image_over_the_inline_limit_is_shrunk_to_fit(fake, session):
    """Bytes over max_image_bytes are re-encoded smaller before they are sent."""
    big = noisy_jpeg()
    limit = 150_000
    assert len(big) > limit
    provider = GeminiProvider(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["gemini"].credentials(
            {"GEMINI_API_KEY": GEMINI_KEY, "GEMINI_BASE_URL": fake.base_url}
        ),
        max_image_bytes=limit,
    )
    await provider.rate(PreparedImage("img6", "big.jpg", data=big), PROMPT)
    mime, sent = decoded_image(fake.requests[0])
    assert mime == "image/jpeg"
    assert len(sent) <= limit


async def test_an_image_that_cannot_be_shrunk_enough_fails_with_the_limit_named(fake, session):
    """When even a small thumbnail is too big, the image fails and says why."""
    provider = GeminiProvider(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["gemini"].credentials(
            {"GEMINI_API_KEY": GEMINI_KEY, "GEMINI_BASE_URL": fake.base_url}
        ),
        max_image_bytes=50,
    )
    with pytest.raises(PermanentImageError, match="under 20 MB"):
        await provider.rate(PreparedImage("img7", "big.jpg", data=noisy_jpeg(300)), PROMPT)
    assert fake.requests == []


async def test_an_image_without_data_or_url_fails_permanently(fake, session):
    """Nothing to send is this image's problem, not the job's."""
    with pytest.raises(PermanentImageError, match="no image data"):
        await provider_for(fake, session).rate(PreparedImage("img8", "x.jpg"), PROMPT)


# --- answers that are not ratings -------------------------------------------------------------

ANSWER_CASES = [
    pytest.param(
        generate_content_response(finish_reason="MAX_TOKENS", parts=[], thoughts=8100),
        Transient,
        "truncated (finishReason MAX_TOKENS",
        id="max-tokens-after-thinking",
    ),
    pytest.param(
        generate_content_response(text='{"starRating": 4, "colorLa', finish_reason="MAX_TOKENS"),
        Transient,
        "truncated",
        id="max-tokens-mid-json",
    ),
    pytest.param(
        generate_content_response(finish_reason="SAFETY", parts=[]),
        Transient,
        "finishReason SAFETY",
        id="safety-stop",
    ),
    pytest.param(
        generate_content_response(finish_reason="RECITATION"),
        Transient,
        "finishReason RECITATION",
        id="recitation",
    ),
    pytest.param(
        generate_content_response(
            prompt_feedback={"blockReason": "PROHIBITED_CONTENT", "safetyRatings": []}
        ),
        ContentBlocked,
        "blockReason PROHIBITED_CONTENT",
        id="prompt-blocked",
    ),
    pytest.param(
        {"usageMetadata": {"promptTokenCount": 10}}, Transient, "no candidates", id="no-candidates"
    ),
    pytest.param(
        generate_content_response(parts=[]), Transient, "has no text", id="stop-without-text"
    ),
    pytest.param(
        generate_content_response(text="Four stars, green label."),
        Transient,
        "not JSON",
        id="not-json",
    ),
    pytest.param(
        generate_content_response(text=json.dumps({**RATING, "starRating": 9})),
        Transient,
        "not a valid rating",
        id="off-schema",
    ),
    pytest.param(
        {"candidates": "nope"}, Transient, "not a GenerateContentResponse", id="wrong-shape"
    ),
]


@pytest.mark.parametrize(("body", "error", "fragment"), ANSWER_CASES)
async def test_answers_that_are_not_ratings_are_classified(fake, session, body, error, fragment):
    """Truncated, filtered or off-schema answers are retried; a blocked image is permanent."""
    fake.reply(200, body)
    with pytest.raises(error) as raised:
        await provider_for(fake, session).rate(local_image(), PROMPT)
    assert type(raised.value) is error
    assert fragment in raised.value.message
    assert raised.value.message.startswith("gemini")


async def test_a_success_body_that_is_not_json_is_transient(fake, session):
    """A 200 with an HTML page (a proxy) is worth another try."""
    fake.reply(200, "<html>maintenance</html>")
    with pytest.raises(Transient, match="not a GenerateContentResponse"):
        await provider_for(fake, session).rate(local_image(), PROMPT)


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    error: type[ProviderError]
    fragment: str
    retry_after: float | None = None


def case(
    status: int,
    body: Any,
    expected: Expected,
    *,
    name: str,
    headers: dict[str, str] | None = None,
) -> Any:
    return pytest.param(Reply(status, body, headers or {}), expected, id=name)


BARE_429 = google_error(
    429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."
)
DAILY_429 = quota_exceeded(None, quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier")

ERROR_CASES = [
    case(400, API_KEY_INVALID, Expected(FatalJobError, "API key not valid"), name="bad-key"),
    case(
        400,
        LOCATION_UNSUPPORTED,
        Expected(FatalJobError, "FAILED_PRECONDITION: User location"),
        name="region",
    ),
    case(400, FREE_TIER_UNAVAILABLE, Expected(FatalJobError, "enable billing"), name="billing"),
    case(
        400,
        IMAGE_INVALID,
        Expected(PermanentImageError, "INVALID_ARGUMENT: Unable to process input image"),
        name="bad-image",
    ),
    case(400, PAYLOAD_TOO_LARGE, Expected(PermanentImageError, "payload size"), name="too-big"),
    case(
        400,
        UNKNOWN_FIELD,
        Expected(FatalJobError, "every image would fail"),
        name="unknown-field",
    ),
    case(400, SYSTEM_NOT_ENABLED, Expected(FatalJobError, "Developer instruction"), name="gemma"),
    case(400, NO_IMAGE_INPUT, Expected(FatalJobError, "Image input modality"), name="text-only"),
    case(400, BAD_MIME_CONFIG, Expected(FatalJobError, "response_mime_type"), name="config"),
    case(402, CREDIT_EXHAUSTED, Expected(FatalJobError, "credits"), name="credit"),
    case(403, SERVICE_DISABLED, Expected(FatalJobError, "PERMISSION_DENIED"), name="403"),
    case(404, model_not_found("gemini-9"), Expected(FatalJobError, "unknown model"), name="404"),
    case(
        413,
        TOO_LARGE_HTML,
        Expected(PermanentImageError, "gemini HTTP 413: Error 413 (Request Entity Too Large)"),
        name="413-html",
    ),
    case(
        429,
        quota_exceeded("35s"),
        Expected(RateLimited, "RESOURCE_EXHAUSTED", 35.188),
        name="429",
    ),
    case(
        429,
        quota_exceeded("35s", retry_in="1s"),
        Expected(RateLimited, "You exceeded your current quota", 60.0),
        headers={"retry-after": "60"},
        name="429-header-longer",
    ),
    case(
        429,
        [quota_exceeded("12s", retry_in="2s")],
        Expected(RateLimited, "RESOURCE_EXHAUSTED", 12.0),
        name="429-in-a-list",
    ),
    case(429, DAILY_429, Expected(RateLimited, "daily quota", 35.188), name="429-daily"),
    case(
        429,
        quota_exceeded("7s", quota_value="0"),
        Expected(FatalJobError, "limit 0"),
        name="429-zero-quota",
    ),
    case(429, BARE_429, Expected(RateLimited, "Resource has been exhausted"), name="429-bare"),
    case(
        429,
        "Too Many Requests",
        Expected(RateLimited, "gemini HTTP 429: Too Many Requests", 5.0),
        headers={"retry-after": "5"},
        name="429-text",
    ),
    case(
        499,
        google_error(499, "CANCELLED", "The operation was cancelled."),
        Expected(Transient, "CANCELLED"),
        name="499",
    ),
    case(500, INTERNAL, Expected(Transient, "gemini HTTP 500 INTERNAL"), name="500"),
    case(
        503,
        OVERLOADED,
        Expected(Transient, "overloaded", 7.0),
        headers={"retry-after": "7"},
        name="503",
    ),
    case(504, DEADLINE, Expected(Transient, "DEADLINE_EXCEEDED"), name="504"),
]


@pytest.mark.parametrize(("reply", "expected"), ERROR_CASES)
async def test_error_answers_map_onto_the_taxonomy(fake, session, reply, expected):
    """Status, Google's status name, details and headers pick the class and the hint."""
    fake.replies.append(reply)
    with pytest.raises(ProviderError) as raised:
        await provider_for(fake, session).rate(local_image(), PROMPT)
    assert type(raised.value) is expected.error
    assert expected.fragment in raised.value.message
    assert raised.value.message.startswith(f"gemini HTTP {reply.status}")
    assert getattr(raised.value, "retry_after", None) == expected.retry_after
    assert raised.value.limits is None
    assert GEMINI_KEY not in raised.value.message


ZERO_HINTS = [
    case(429, quota_exceeded("0s", retry_in="0s"), Expected(RateLimited, ""), name="retryDelay-0s"),
    case(503, OVERLOADED, Expected(Transient, ""), headers={"retry-after": "0"}, name="503-zero"),
]


@pytest.mark.parametrize(("reply", "expected"), ZERO_HINTS)
async def test_a_retry_delay_of_0s_still_waits_the_schedules_first_step(
    fake, session, reply, expected
):
    """retryDelay "0s" (or retry-after 0 on a 503) never turns the backoff off: 1 s or 2 s."""
    fake.replies.append(reply)
    with pytest.raises(ProviderError) as raised:
        await provider_for(fake, session).rate(local_image(), PROMPT)
    error = raised.value
    assert type(error) is expected.error and getattr(error, "retry_after", None) == 0.0
    policy = RetryPolicy()
    wait = policy.next_wait(error, 1, started_at=0.0, now=0.0)
    assert wait is not None and wait >= policy.schedule_for(error).initial


async def test_a_wrong_key_stops_the_job(fake, session):
    """The fake answers a key it does not know with API_KEY_INVALID: FatalJobError."""
    provider = provider_for(fake, session, GEMINI_API_KEY="AIzaSy-not-the-right-key")
    with pytest.raises(
        FatalJobError, match=r"API key not valid.*\[check GOOGLE_API_KEY or GEMINI_API_KEY\]$"
    ):
        await provider.rate(local_image(), PROMPT)


async def test_an_unknown_model_stops_the_job(fake, session):
    """The fake answers another model with 404 NOT_FOUND: FatalJobError naming the model."""
    settings = {"GEMINI_API_KEY": GEMINI_KEY, "GOOGLE_GEMINI_BASE_URL": fake.base_url}
    provider = create(
        model="gemini-9-ultra",
        session=session,
        credentials=PROVIDERS["gemini"].credentials(settings),
    )
    with pytest.raises(FatalJobError, match="models/gemini-9-ultra is not found"):
        await provider.rate(local_image(), PROMPT)


async def test_the_api_key_never_appears_in_an_error_message(fake, session):
    """Google echoes the key in CONSUMER_SUSPENDED; the adapter redacts it."""
    fake.reply(403, consumer_suspended(GEMINI_KEY))
    with pytest.raises(FatalJobError) as raised:
        await provider_for(fake, session).rate(local_image(), PROMPT)
    assert GEMINI_KEY not in raised.value.message
    assert GEMINI_KEY not in str(raised.value)
    assert "api_key:[redacted]" in raised.value.message


async def test_a_dropped_connection_is_transient(session):
    """Nothing listening on the base URL is a transport error: retried, never fatal."""
    settings = {"GEMINI_API_KEY": GEMINI_KEY, "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9"}
    provider = create(
        model=MODEL, session=session, credentials=PROVIDERS["gemini"].credentials(settings)
    )
    with pytest.raises(Transient) as raised:
        await provider.rate(local_image(), PROMPT)
    assert GEMINI_KEY not in raised.value.message


# --- hints ----------------------------------------------------------------------------------

HINT_CASES = [
    pytest.param(quota_exceeded("35s", retry_in="35s"), {}, 35.0, id="retry-info"),
    pytest.param(quota_exceeded("1.5s", retry_in="0.2s"), {}, 1.5, id="fractional"),
    pytest.param(quota_exceeded(None, retry_in="7.967587226s"), {}, 7.967587226, id="message"),
    pytest.param(quota_exceeded(None, retry_in="516.63ms"), {}, 0.51663, id="message-ms"),
    pytest.param(quota_exceeded("35s", retry_in="1s"), {"retry-after": "90"}, 90.0, id="header"),
    pytest.param([quota_exceeded("20s", retry_in="1s")], {}, 20.0, id="list-wrapped"),
    pytest.param(INTERNAL, {}, None, id="none"),
    pytest.param(INTERNAL, {"retry-after": "3"}, 3.0, id="header-only"),
    pytest.param("<html>", {"retry-after": "4"}, 4.0, id="not-json"),
]


@pytest.mark.parametrize(("body", "headers", "expected"), HINT_CASES)
def test_retry_hints_take_the_longest_of_retry_info_header_and_message(body, headers, expected):
    """RetryInfo.retryDelay, retry-after and "Please retry in Ns" all count; the longest wins."""
    hint = retry_hint(parse_error(body), headers)
    assert hint == pytest.approx(expected) if expected is not None else hint is None


def test_error_bodies_in_a_one_element_list_are_unwrapped():
    """`[{"error": {...}}]` parses like `{"error": {...}}`; other shapes give None."""
    status = parse_error([API_KEY_INVALID])
    assert status is not None
    assert status.status == "INVALID_ARGUMENT"
    assert status.details[0].reason == "API_KEY_INVALID"
    assert parse_error([API_KEY_INVALID, API_KEY_INVALID]) is None
    assert parse_error({"message": "no"}) is None
    assert parse_error(None) is None


# --- configuration --------------------------------------------------------------------------


def test_google_api_key_wins_when_both_keys_are_set(session):
    """Like python-genai, GOOGLE_API_KEY is used when GEMINI_API_KEY is set too."""
    provider = create(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["gemini"].credentials(
            {"GOOGLE_API_KEY": "google", "GEMINI_API_KEY": "gemini"}
        ),
    )
    assert provider._api_key == "google"


def test_gemini_api_key_is_used_when_google_api_key_is_empty(session):
    """An empty GOOGLE_API_KEY does not hide GEMINI_API_KEY."""
    provider = create(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["gemini"].credentials(
            {"GOOGLE_API_KEY": " ", "GEMINI_API_KEY": "gemini"}
        ),
    )
    assert provider._api_key == "gemini"


def test_a_missing_key_is_fatal_and_names_both_variables(session):
    """Without a key the job cannot start; the message says which variables to set."""
    with pytest.raises(FatalJobError, match="GOOGLE_API_KEY or GEMINI_API_KEY"):
        create(model=MODEL, session=session, credentials=PROVIDERS["gemini"].credentials({}))


@pytest.mark.parametrize(
    ("env", "base"),
    [
        pytest.param({}, DEFAULT_BASE_URL, id="default"),
        pytest.param({"GEMINI_BASE_URL": "http://proxy:8080/"}, "http://proxy:8080", id="gemini"),
        pytest.param(
            {"GOOGLE_GEMINI_BASE_URL": "http://a", "GEMINI_BASE_URL": "http://b"},
            "http://a",
            id="google-gemini-wins",
        ),
    ],
)
def test_the_base_url_comes_from_the_environment(session, env, base):
    """GOOGLE_GEMINI_BASE_URL, else GEMINI_BASE_URL, else Google's host; /v1beta is appended."""
    provider = create(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["gemini"].credentials({"GEMINI_API_KEY": "k", **env}),
    )
    assert provider.url == f"{base}/v1beta/models/{MODEL}:generateContent"


async def test_the_registry_builds_the_gemini_adapter(fake, session):
    """create_provider finds this module and passes the env mapping through."""
    env = {"GOOGLE_API_KEY": GEMINI_KEY, "GEMINI_BASE_URL": fake.base_url}
    provider = create_provider(
        PROVIDERS["gemini"], MODEL, session, PROVIDERS["gemini"].credentials(env)
    )
    assert isinstance(provider, GeminiProvider)
    assert provider.name == "gemini"
    answer = await provider.rate(local_image(), PROMPT)
    assert answer.rating.starRating == RATING["starRating"]
