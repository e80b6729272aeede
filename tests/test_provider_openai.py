"""The OpenAI adapter (and the shared chat-completions code) against a local fake of the API."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from fake_openai_server import (
    INVALID,
    OPENAI_LIMIT_HEADERS,
    RATING,
    ErrorCase,
    FakeChatServer,
    image_bytes,
    openai_error,
    request_validator,
)

from kullbatch import models
from kullbatch.errors import (
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Refused,
    Transient,
)
from kullbatch.models import PreparedImage, Prompt, RateLimits, Rating, Usage
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.providers._chat import DEFAULT_MAX_TOKENS, ChatEndpoint
from kullbatch.providers.base import RATING_SCHEMA, parse_rating
from kullbatch.providers.openai import OpenAIProvider, create
from kullbatch.providers.rate_headers import parse_rate_limits
from kullbatch.run.retry import RetryPolicy

KEY = "sk-proj-Kq8TESTKEYxYz0123456789abcdef"
MODEL = "gpt-5.4-mini"
JPEG = image_bytes()
LOCAL = PreparedImage(image_id="img1", filename="a.jpg", data=JPEG)
REMOTE = PreparedImage(image_id="img2", filename="b.jpg", url="https://photos.example.com/b.jpg")
PROMPT = Prompt(text="Rate this photo.", system="You are a photo editor.")
DEFAULT_URL = "https://api.openai.com/v1/chat/completions"
LIMITS = RateLimits(5000, 4999, 0.012, 2000000, 1998500, 360.0)
ANSWERS = FakeChatServer(flavour="openai")  # only used to build answer bodies


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeChatServer:
    headers = {"OpenAI-Organization": "org-kull", "OpenAI-Project": "proj_kull"}
    server = FakeChatServer(prefix="/v1", api_key=KEY, flavour="openai", required_headers=headers)
    return await server.start(aiohttp_server)


def env_for(fake: FakeChatServer) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": f"{fake.base_url}/v1/",
        "OPENAI_ORG_ID": "org-kull",
        "OPENAI_PROJECT_ID": "proj_kull",
    }


def adapter(session: aiohttp.ClientSession, fake: FakeChatServer) -> OpenAIProvider:
    return create(
        model=MODEL, session=session, credentials=PROVIDERS["openai"].credentials(env_for(fake))
    )


async def raised(session: aiohttp.ClientSession, fake: FakeChatServer) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await adapter(session, fake).rate(LOCAL, PROMPT)
    return caught.value


# --- the request ------------------------------------------------------------------------------


async def test_a_local_image_is_sent_as_a_data_url_in_a_request_matching_openais_schema(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """The body validates against CreateChatCompletionRequest and carries the exact fields."""
    answer = await adapter(session, fake).rate(LOCAL, PROMPT)

    assert answer.rating == Rating.model_validate(RATING)
    assert fake.problems == []
    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["OpenAI-Organization"] == "org-kull"
    assert sent.headers["OpenAI-Project"] == "proj_kull"
    body = sent.json
    request_validator().validate(body)
    assert body["model"] == MODEL
    assert body["messages"][0] == {"role": "system", "content": "You are a photo editor."}
    text, image = body["messages"][1]["content"]
    assert text == {"type": "text", "text": "Rate this photo."}
    assert image["type"] == "image_url"
    assert image["image_url"]["detail"] == "auto"
    prefix = "data:image/jpeg;base64,"
    assert image["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image["image_url"]["url"][len(prefix) :]) == JPEG
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "photo_rating", "strict": True, "schema": RATING_SCHEMA},
    }
    assert body["max_completion_tokens"] == DEFAULT_MAX_TOKENS
    assert "max_tokens" not in body


async def test_a_url_image_is_passed_as_the_url_for_openai_to_fetch(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """OpenAI fetches URLs itself, so the URL travels unchanged."""
    await adapter(session, fake).rate(REMOTE, PROMPT)

    image = fake.last.json["messages"][1]["content"][1]
    assert image["image_url"] == {"url": "https://photos.example.com/b.jpg", "detail": "auto"}
    assert fake.problems == []


async def test_without_a_system_prompt_only_the_user_message_is_sent(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """No empty system message is invented."""
    await adapter(session, fake).rate(LOCAL, Prompt(text="Rate it."))

    assert [message["role"] for message in fake.last.json["messages"]] == ["user"]


def test_openais_schema_file_rejects_a_malformed_image_part() -> None:
    """The copied schema really checks image parts (it is not an empty shell)."""
    part = {"type": "image_url", "image_url": {"url": "x", "detail": "max"}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": [part]}]}
    assert list(request_validator().iter_errors(body))


# --- the answer -------------------------------------------------------------------------------


async def test_usage_and_rate_limit_headers_come_back_with_the_rating(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """prompt/completion tokens become Usage; x-ratelimit-* headers become RateLimits."""
    answer = await adapter(session, fake).rate(LOCAL, PROMPT)

    assert answer.usage == Usage(input_tokens=812, output_tokens=64)
    assert answer.limits == LIMITS


# fmt: off  (tables read best one row per line)
UNUSABLE = [
    (
        ANSWERS.completion('{"starRating": 4, "colo', finish_reason="length"),
        "openai answer was truncated at the token limit (finish_reason length)",
    ),
    (
        ANSWERS.completion(refusal="I can't help with that."),
        "openai refused to rate the image: I can't help with that.",
    ),
    (ANSWERS.completion("Four stars: lovely light."), "openai answer is not JSON"),
    (
        ANSWERS.completion(json.dumps(RATING | {"starRating": 7})),
        "openai answer is not a valid rating: starRating",
    ),
    (
        ANSWERS.completion(json.dumps(RATING | {"starRating": True})),
        "openai answer is not a valid rating: starRating",
    ),
    (
        ANSWERS.completion(json.dumps(RATING | {"starRating": "4"})),
        "openai answer is not a valid rating: starRating",
    ),
    (
        ANSWERS.completion(json.dumps(RATING | {"mood": "happy"})),
        "openai answer is not a valid rating: mood",
    ),
    (
        ANSWERS.completion(json.dumps(RATING | {"issues": ["blurry"]})),
        "openai answer is not a valid rating: issues.0",
    ),
    (ANSWERS.completion(""), "openai answer has no content (finish_reason stop)"),
    (
        ANSWERS.completion("", finish_reason="content_filter"),
        "openai answer was withheld by its content filter",
    ),
    (
        {"id": "chatcmpl-1", "object": "chat.completion", "choices": []},
        "openai answer has no choices",
    ),
    (
        {"object": "list", "data": []},
        "openai answer is not a chat completion: choices: Field required",
    ),
    ("<html>OK</html>", "openai answer is not a chat completion"),
]
# fmt: on


@pytest.mark.parametrize("case", UNUSABLE)
async def test_an_unusable_answer_is_transient_and_says_what_was_wrong(
    session: aiohttp.ClientSession, fake: FakeChatServer, case: tuple[Any, str]
) -> None:
    """Truncated, refused, filtered, non-JSON, off-schema or shapeless answers are retried."""
    body, expected = case
    fake.queue(200, body, OPENAI_LIMIT_HEADERS)

    error = await raised(session, fake)

    # a refusal or a content filter is this model's verdict: retried, or with --fallback moved on
    withheld = "refused" in expected or "content filter" in expected
    assert type(error) is (Refused if withheld else Transient)
    assert error.message.startswith(expected), error.message
    assert error.limits == LIMITS


@pytest.mark.parametrize("stars", [True, "4", "1"])
def test_a_boolean_or_a_numeric_string_is_not_a_star_rating(stars: Any) -> None:
    """`starRating: true` is not one star, nor "4" four: the answer is retried like bad JSON."""
    with pytest.raises(Transient, match="openai answer is not a valid rating: starRating"):
        parse_rating(json.dumps(RATING | {"starRating": stars}), source="openai")
    assert parse_rating(json.dumps(RATING | {"starRating": 4}), source="openai").starRating == 4


# --- errors -----------------------------------------------------------------------------------

RATE_HEADERS = {"retry-after-ms": "150", "retry-after": "1", **OPENAI_LIMIT_HEADERS}
HTML_413 = "<html><head><title>413 Request Entity Too Large</title></head></html>"
HTML_502 = "<html><body><h1>502 Bad Gateway</h1></body></html>"
HTML = {"content-type": "text/html"}


def case(
    status: int, code: str | None, message: str, kind: type[Exception], **options: Any
) -> ErrorCase:
    return ErrorCase.nested("openai", status, code, message, kind, **options)


# fmt: off
ERRORS = [
    case(400, "image_parse_error", "You uploaded an unsupported image. Please make sure your image is valid.", PermanentImageError),
    case(400, "invalid_image_url", "Error while downloading https://photos.example.com/b.jpg.", PermanentImageError),
    case(400, "invalid_value", "Invalid 'messages[1].content[1].image_url.url'. Expected a base64-encoded data URL with an image MIME type, but got unsupported MIME type 'image/heic'.", PermanentImageError, param="messages.[1].content.[1].image_url.url"),
    case(400, "content_policy_violation", "Your input image may contain content that is not allowed by our safety system.", PermanentImageError),
    case(400, None, "Invalid content type. image_url is only supported by certain models.", FatalJobError, param="messages.[1].content.[1].type"),
    case(400, "unsupported_parameter", "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.", FatalJobError, param="max_tokens"),
    case(400, None, "Invalid schema for response_format 'photo_rating': In context=(), 'required' is required to be supplied and to be an array including every key in properties. Missing 'tags'.", FatalJobError, param="response_format"),
    case(400, "context_length_exceeded", "This model's maximum context length is 128000 tokens. However, your messages resulted in 131000 tokens.", FatalJobError, param="messages"),
    case(401, "invalid_api_key", "Incorrect API key provided: sk-proj-****cdef. You can find your API key at https://platform.openai.com/account/api-keys.", FatalJobError, hint="[check OPENAI_API_KEY]"),
    case(403, "unsupported_country_region_territory", "Country, region, or territory not supported", FatalJobError, type_="request_forbidden"),
    case(403, "model_not_found", "Project `proj_kull` does not have access to model `gpt-5.4-mini`", FatalJobError),
    case(404, "model_not_found", "The model `gpt-9-vision` does not exist or you do not have access to it.", FatalJobError),
    case(408, None, "Request timed out.", Transient, type_="timeout"),
    case(409, None, "Conflict", Transient, type_="conflict"),
    ErrorCase(413, HTML_413, PermanentImageError, f"openai HTTP 413: {HTML_413}", HTML),
    case(429, "rate_limit_exceeded", "Rate limit reached for gpt-5.4-mini in organization org-kull on tokens per min (TPM): Limit 2000000, Used 1999000, Requested 1500. Please try again in 150ms.", RateLimited, type_="tokens", headers=RATE_HEADERS),
    case(429, "insufficient_quota", "You exceeded your current quota, please check your plan and billing details.", FatalJobError, type_="insufficient_quota"),
    case(500, None, "The server had an error while processing your request. Sorry about that!", Transient, type_="server_error"),
    ErrorCase(502, HTML_502, Transient, f"openai HTTP 502: {HTML_502}", HTML),
    case(503, None, "The engine is currently overloaded, please try again later", Transient, type_="server_error", headers={"retry-after": "7"}),
]
# fmt: on


@pytest.mark.parametrize("case", ERRORS, ids=str)
async def test_error_answers_map_onto_the_taxonomy_with_the_providers_message(
    session: aiohttp.ClientSession, fake: FakeChatServer, case: ErrorCase
) -> None:
    """Status and body decide the class; the message keeps the provider's own words."""
    fake.queue(case.status, case.body, case.headers)

    error = await raised(session, fake)

    assert type(error) is case.kind
    assert error.message == case.expected


# fmt: off
HINTS = [  # status, headers -> retry_after, limits
    (429, RATE_HEADERS, 0.15, LIMITS),
    (429, {"retry-after": "20"}, 20.0, None),
    (429, {"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"}, 0.0, None),
    (429, {}, None, None),
    (503, {"retry-after": "7"}, 7.0, None),
    (500, {"retry-after-ms": "2500"}, 2.5, None),
]
# fmt: on


@pytest.mark.parametrize("hint", HINTS)
async def test_retry_hints_and_limits_travel_with_the_error(
    session: aiohttp.ClientSession, fake: FakeChatServer, hint: tuple[Any, ...]
) -> None:
    """retry-after-ms wins over retry-after, a past date means now; x-ratelimit-* become limits."""
    status, headers, retry_after, limits = hint
    fake.queue(status, openai_error("Slow down", "requests", "rate_limit_exceeded"), headers)

    error = await raised(session, fake)

    assert isinstance(error, RateLimited | Transient)
    assert error.retry_after == retry_after
    assert error.limits == limits


# fmt: off
NOW_OR_EARLIER = [  # hints that would retry at once
    {"retry-after": "0"},
    {"retry-after-ms": "0"},
    {"retry-after": "-5"},
    {"retry-after-ms": "-250"},
    {"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"},
]
ANSWERS_WITH_A_HINT = [
    (429, openai_error("Slow down", "requests", "rate_limit_exceeded")),
    (500, openai_error("The server had an error", "server_error")),
    (503, openai_error("The engine is currently overloaded", "server_error")),
]
# fmt: on


@pytest.mark.parametrize("headers", NOW_OR_EARLIER)
@pytest.mark.parametrize(("status", "body"), ANSWERS_WITH_A_HINT)
async def test_a_hint_of_now_or_earlier_still_waits_the_schedules_first_step(
    session: aiohttp.ClientSession,
    fake: FakeChatServer,
    headers: dict[str, str],
    status: int,
    body: Any,
) -> None:
    """retry-after 0, -5 or a past date never turns the backoff off: 1 s for 429, 2 s for 5xx."""
    fake.queue(status, body, headers)

    error = await raised(session, fake)

    policy = RetryPolicy()
    for retry_number in (1, 2, 5):
        wait = policy.next_wait(error, retry_number, started_at=0.0, now=0.0)
        assert wait is not None and wait >= policy.schedule_for(error).initial


# fmt: off
LIMIT_HEADERS = [
    ({}, None),
    ({"x-request-id": "req_1"}, None),
    (OPENAI_LIMIT_HEADERS, LIMITS),
    ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30.5s"}, RateLimits(tokens_remaining=0, tokens_reset=90.5)),
    ({"x-ratelimit-limit-requests": "many", "x-ratelimit-reset-requests": "soon"}, RateLimits()),
    ({"x-ratelimit-reset-requests": "2", "x-ratelimit-reset-tokens": "1h2m3s"}, RateLimits(requests_reset=2.0, tokens_reset=3723.0)),
]
# fmt: on


@pytest.mark.parametrize(("headers", "expected"), LIMIT_HEADERS)
def test_x_ratelimit_headers_parse_into_rate_limits(
    headers: dict[str, str], expected: RateLimits | None
) -> None:
    """Counts are integers, resets are Go durations; garbage becomes None, not an error."""
    assert parse_rate_limits(headers) == expected


@pytest.mark.parametrize("status", [400, 401, 429, 500])
async def test_the_api_key_never_appears_in_an_error_message(
    session: aiohttp.ClientSession, fake: FakeChatServer, status: int
) -> None:
    """A provider that echoes the key back gets it scrubbed before anyone sees it."""
    fake.queue(status, openai_error(f"Key {KEY} is not valid for this project", INVALID))

    error = await raised(session, fake)

    assert KEY not in str(error)
    assert KEY not in error.message
    assert "[redacted]" in error.message


async def test_a_wrong_key_stops_the_job(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """The fake checks the bearer key like the API does; a 401 is fatal."""
    env = env_for(fake) | {"OPENAI_API_KEY": "sk-wrong-key-000000"}

    with pytest.raises(FatalJobError, match="openai HTTP 401 invalid_api_key"):
        await create(
            model=MODEL, session=session, credentials=PROVIDERS["openai"].credentials(env)
        ).rate(LOCAL, PROMPT)


async def test_a_base_url_without_v1_is_fatal(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """OPENAI_BASE_URL without /v1 hits a 404: the job stops instead of failing every image."""
    env = env_for(fake) | {"OPENAI_BASE_URL": fake.base_url}

    with pytest.raises(FatalJobError, match="openai HTTP 404"):
        await create(
            model=MODEL, session=session, credentials=PROVIDERS["openai"].credentials(env)
        ).rate(LOCAL, PROMPT)


def test_a_missing_key_is_fatal_and_names_the_variable() -> None:
    """create() refuses to build an adapter that could only fail."""
    with pytest.raises(FatalJobError, match="OPENAI_API_KEY"):
        create(model=MODEL, session=None, credentials=PROVIDERS["openai"].credentials({}))  # type: ignore[arg-type]


async def test_the_registry_builds_the_openai_adapter(
    session: aiohttp.ClientSession, fake: FakeChatServer
) -> None:
    """create_provider imports this module and passes the env mapping through."""
    provider = create_provider(
        PROVIDERS["openai"], MODEL, session, PROVIDERS["openai"].credentials(env_for(fake))
    )

    assert isinstance(provider, OpenAIProvider)
    assert (provider.name, provider.model) == ("openai", MODEL)
    assert (await provider.rate(LOCAL, PROMPT)).rating.starRating == 4


# --- through aioresponses (needs the aiohttp 3.14 shim in conftest.py) --------------------------


async def test_without_a_base_url_the_adapter_calls_api_openai_com(
    session: aiohttp.ClientSession,
) -> None:
    """The default endpoint, no org headers unless set (aioresponses, via the conftest shim)."""
    provider = create(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["openai"].credentials({"OPENAI_API_KEY": KEY}),
    )
    with aioresponses() as mocked:
        mocked.post(DEFAULT_URL, payload=ANSWERS.completion(), headers=OPENAI_LIMIT_HEADERS)
        answer = await provider.rate(LOCAL, PROMPT)

    assert answer.rating == Rating.model_validate(RATING)
    assert answer.limits == LIMITS
    ((_, calls),) = mocked.requests.items()
    sent = calls[0].kwargs["headers"]
    assert sent["Authorization"] == f"Bearer {KEY}"
    assert "OpenAI-Organization" not in sent
    assert "OpenAI-Project" not in sent


# fmt: off
DROPS = [
    (aiohttp.ClientConnectionError("Connection reset by peer"), "HTTP client error: ClientConnectionError"),
    (aiohttp.ServerDisconnectedError(), "server closed the connection"),
    (TimeoutError(), "request timed out"),
]
# fmt: on


@pytest.mark.parametrize(("exception", "expected"), DROPS)
async def test_connection_failures_and_timeouts_are_transient(
    session: aiohttp.ClientSession, exception: Exception, expected: str
) -> None:
    """A dropped connection or a timeout is retried, never fatal."""
    provider = create(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["openai"].credentials({"OPENAI_API_KEY": KEY}),
    )
    with aioresponses() as mocked:
        mocked.post(DEFAULT_URL, exception=exception)
        with pytest.raises(Transient, match=expected):
            await provider.rate(LOCAL, PROMPT)


def test_an_endpoint_never_shows_its_key_in_a_repr() -> None:
    """Printing or logging a ChatEndpoint cannot leak the API key."""
    auth = {"Authorization": "Bearer sk-secret-123"}
    endpoint = ChatEndpoint("openai", "https://x.test/v1", auth, "sk-secret-123")
    assert "sk-secret-123" not in repr(endpoint)


def test_the_rating_schema_asks_for_issues_from_the_fixed_vocabulary() -> None:
    """`issues` is required (strict mode needs every property) and limited to the eight words."""
    assert "issues" in RATING_SCHEMA["required"]
    assert set(RATING_SCHEMA["required"]) == set(RATING_SCHEMA["properties"])
    assert RATING_SCHEMA["properties"]["issues"]["items"]["enum"] == list(models.ISSUES)
    assert Rating.model_validate(RATING).issues == ["tilted"]
