"""The Anthropic adapter against a local fake of the Messages API: requests, answers, errors."""

from __future__ import annotations

import base64
import io
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from fake_anthropic_server import (
    GOOD_RATING,
    KEY,
    FakeAnthropic,
    Reply,
    error_reply,
    message_reply,
    rating_reply,
    real_errors,
)
from PIL import Image

from kullbatch.errors import (
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Transient,
)
from kullbatch.models import PreparedImage, Prompt, RateLimits
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.providers.anthropic import (
    DEFAULT_BASE_URL,
    AnthropicProvider,
    classify_error,
    create,
    parse_limits,
)
from kullbatch.providers.base import RATING_SCHEMA
from kullbatch.providers.http import HTTPAnswer

MODEL = "claude-haiku-4-5"
PROMPT = Prompt(text="Rate this wedding photo.", system="You are a picky photo editor.")
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def jpeg(size: int = 64, *, noise: bool = False) -> bytes:
    """A small JPEG; noisy ones compress badly, which makes them big for their size."""
    if noise:
        picture = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    else:
        picture = Image.new("RGB", (size, size), (200, 120, 40))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def local_image(data: bytes | None = None) -> PreparedImage:
    return PreparedImage(image_id="img1", filename="IMG_0001.jpg", data=data or jpeg())


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeAnthropic:
    fake = FakeAnthropic()
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def provider(fake: FakeAnthropic, session: aiohttp.ClientSession) -> AnthropicProvider:
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.base_url}
    return create(model=MODEL, session=session, credentials=PROVIDERS["anthropic"].credentials(env))


# --- requests -------------------------------------------------------------------------------


async def test_a_local_jpeg_goes_as_a_base64_image_block_before_the_prompt(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """A local photo is sent base64 with its media type, image first, prompt second."""
    data = jpeg()
    await provider.rate(local_image(data), PROMPT)

    assert fake.rejections == []
    (sent,) = fake.requests
    assert sent.path == "/v1/messages"
    image, text = sent.body["messages"][0]["content"]
    assert image["source"]["type"] == "base64"
    assert image["source"]["media_type"] == "image/jpeg"
    assert base64.b64decode(image["source"]["data"]) == data
    assert text == {"type": "text", "text": PROMPT.text}


async def test_the_request_carries_key_version_model_max_tokens_system_and_schema(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """Headers and body fields are the ones the Messages API requires."""
    await provider.rate(local_image(), PROMPT)

    (sent,) = fake.requests
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"].startswith("application/json")
    assert "authorization" not in sent.headers
    assert sent.body["model"] == MODEL
    assert sent.body["max_tokens"] == 1024
    assert sent.body["system"] == PROMPT.system
    assert sent.body["output_config"] == {
        "format": {"type": "json_schema", "schema": RATING_SCHEMA}
    }
    assert sent.body["messages"][0]["role"] == "user"


async def test_without_a_system_prompt_the_body_has_no_system_field(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """An empty system prompt is left out rather than sent as null."""
    await provider.rate(local_image(), Prompt(text="Rate it."))

    assert "system" not in fake.requests[0].body
    assert fake.rejections == []


async def test_a_url_image_is_sent_as_a_url_for_anthropic_to_fetch(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """Anthropic fetches URLs itself, so the photo is not downloaded by us."""
    image = PreparedImage(image_id="u1", filename="a.jpg", url="https://cdn.example.com/a.jpg")
    await provider.rate(image, PROMPT)

    assert fake.rejections == []
    source = fake.requests[0].body["messages"][0]["content"][0]["source"]
    assert source == {"type": "url", "url": "https://cdn.example.com/a.jpg"}


# --- answers --------------------------------------------------------------------------------


async def test_a_good_answer_becomes_a_rating_with_usage_and_limits(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """The first text block is the rating; usage and rate-limit headers come along."""
    fake.queue(rating_reply(input_tokens=1500, output_tokens=90))
    answer = await provider.rate(local_image(), PROMPT)

    assert answer.rating.model_dump() == GOOD_RATING
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (1500, 90)
    assert answer.limits is not None
    assert answer.limits.requests_limit == 50
    assert answer.limits.requests_remaining == 49
    assert answer.limits.tokens_limit == 40000
    assert answer.limits.tokens_remaining == 38000
    assert answer.limits.requests_reset is not None
    assert 0 < answer.limits.requests_reset <= 31


BAD_ANSWERS = [
    pytest.param(rating_reply(stop_reason="max_tokens"), "truncated", id="max_tokens"),
    pytest.param(rating_reply(stop_reason="refusal"), "refused", id="refusal"),
    pytest.param(message_reply(None, stop_reason="tool_use"), "no text block", id="no-text"),
    pytest.param(message_reply("Four stars, green label."), "not JSON", id="prose"),
    pytest.param(
        rating_reply({**GOOD_RATING, "starRating": 7}), "not a valid rating", id="off-schema"
    ),
    pytest.param(
        Reply(200, b"<html>oops</html>", {}, "text/html"), "not a Messages API", id="html"
    ),
]


@pytest.mark.parametrize(("reply", "fragment"), BAD_ANSWERS)
async def test_an_answer_that_is_not_a_usable_rating_is_transient(
    provider: AnthropicProvider, fake: FakeAnthropic, reply: Reply, fragment: str
) -> None:
    """Truncated, refused, prose, off-schema or non-Message answers are retried, with why."""
    fake.queue(reply)
    with pytest.raises(Transient) as caught:
        await provider.rate(local_image(), PROMPT)

    assert fragment in caught.value.message
    assert caught.value.message.startswith("anthropic")
    expected_limits = reply.status == 200 and "anthropic-ratelimit-requests-limit" in reply.headers
    assert (caught.value.limits is not None) is expected_limits


# --- errors ---------------------------------------------------------------------------------

# name in real_errors() -> (class, fragment of the message, retry_after)
ERROR_TABLE: list[tuple[str, type[ProviderError], str, float | None]] = [
    ("bad_key", FatalJobError, "HTTP 401 authentication_error: invalid x-api-key", None),
    ("forbidden", FatalJobError, "HTTP 403 permission_error", None),
    ("billing", FatalJobError, "HTTP 402 billing_error", None),
    ("unknown_model", FatalJobError, "HTTP 404 not_found_error: model: claude-nonexistent", None),
    ("spend_limit", FatalJobError, "specified API usage limits", None),
    ("workspace_limit", FatalJobError, "workspace API usage limits", None),
    ("credit", FatalJobError, "credit balance is too low", None),
    ("unknown_param", FatalJobError, "every image would fail", None),
    ("missing_version", FatalJobError, "anthropic-version: header is required", None),
    ("image_too_big", PermanentImageError, "image exceeds 5 MB maximum", None),
    ("bad_image", PermanentImageError, "Could not process image", None),
    ("media_type", PermanentImageError, "media_type", None),
    ("too_large", PermanentImageError, "HTTP 413 request_too_large", None),
    ("rate_limited", RateLimited, "HTTP 429 rate_limit_error: This request would exceed", 17.0),
    ("overloaded", RateLimited, "HTTP 529 overloaded_error: Overloaded", None),
    ("api_error", Transient, "HTTP 500 api_error", None),
    ("unavailable", Transient, "HTTP 503: upstream connect error", None),
    ("timeout", Transient, "HTTP 504 timeout_error", None),
]


@pytest.mark.parametrize("case", ERROR_TABLE, ids=[row[0] for row in ERROR_TABLE])
async def test_each_real_error_answer_maps_onto_the_taxonomy(
    provider: AnthropicProvider,
    fake: FakeAnthropic,
    case: tuple[str, type[ProviderError], str, float | None],
) -> None:
    """Status and body decide the class; the provider's own message is kept, prefixed."""
    name, kind, fragment, retry_after = case
    fake.queue(real_errors()[name])
    with pytest.raises(ProviderError) as caught:
        await provider.rate(local_image(), PROMPT)

    error = caught.value
    assert type(error) is kind
    assert error.message.startswith("anthropic HTTP ")
    assert fragment in error.message
    if isinstance(error, (RateLimited, Transient)):
        assert error.retry_after == retry_after


async def test_errors_with_a_json_envelope_name_the_request_id(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """The request id lets the admin quote the failing call to Anthropic support."""
    reply = real_errors()["api_error"]
    fake.queue(reply)
    with pytest.raises(Transient) as caught:
        await provider.rate(local_image(), PROMPT)

    assert f"(request {reply.headers['request-id']})" in caught.value.message


async def test_a_429_carries_its_rate_limit_headers_on_the_error(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """The gate learns the exhausted bucket and its reset from the failing answer."""
    fake.queue(real_errors()["rate_limited"])
    with pytest.raises(RateLimited) as caught:
        await provider.rate(local_image(), PROMPT)

    limits = caught.value.limits
    assert limits is not None
    assert limits.requests_remaining == 0
    assert limits.requests_reset is not None
    assert 0 < limits.requests_reset <= 18


@pytest.mark.parametrize("name", [row[0] for row in ERROR_TABLE])
async def test_the_api_key_never_appears_in_an_error_message(
    provider: AnthropicProvider, fake: FakeAnthropic, name: str
) -> None:
    """Even when a server echoes the key back, the raised message has it redacted."""
    original = real_errors()[name]
    if original.content_type == "application/json":
        body = json.loads(original.body)
        body["error"]["message"] += f" (key {KEY})"
        echoed = replace(original, body=json.dumps(body).encode())
    else:
        echoed = replace(original, body=original.body + f" key={KEY}".encode())
    fake.queue(echoed)
    with pytest.raises(ProviderError) as caught:
        await provider.rate(local_image(), PROMPT)

    assert KEY not in caught.value.message
    assert KEY not in str(caught.value)
    assert "[redacted]" in caught.value.message


async def test_the_fake_rejects_a_wrong_key_like_the_real_api(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    """A bad key stops the job at once: 401 authentication_error is fatal."""
    wrong = create(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["anthropic"].credentials(
            {"ANTHROPIC_API_KEY": "sk-ant-wrong-key", "ANTHROPIC_BASE_URL": fake.base_url}
        ),
    )
    with pytest.raises(FatalJobError, match="invalid x-api-key"):
        await wrong.rate(local_image(), PROMPT)


async def test_the_fake_answers_an_unknown_model_with_404_which_is_fatal(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    """A typo in --model fails the job, not every image one by one."""
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.base_url}
    typo = create(
        model="cluade-haiku", session=session, credentials=PROVIDERS["anthropic"].credentials(env)
    )
    with pytest.raises(FatalJobError, match="HTTP 404 not_found_error: model: cluade-haiku"):
        await typo.rate(local_image(), PROMPT)


async def test_the_fake_rejects_a_body_with_an_unknown_parameter(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    """The fake checks the body as strictly as the API: extra fields are a 400."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    body = {"model": MODEL, "max_tokens": 10, "messages": [], "output_format": {}}
    async with session.post(f"{fake.base_url}/v1/messages", json=body, headers=headers) as got:
        assert got.status == 400
        answer = await got.json()
    assert answer["error"] == {
        "type": "invalid_request_error",
        "message": "output_format: Extra inputs are not permitted",
    }


async def test_a_connection_failure_is_transient(session: aiohttp.ClientSession) -> None:
    """Nothing listening is an outage to wait out, never a fatal error."""
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    unreachable = create(
        model=MODEL, session=session, credentials=PROVIDERS["anthropic"].credentials(env)
    )
    with pytest.raises(Transient):
        await unreachable.rate(local_image(), PROMPT)


CLASSIFY_TABLE: list[tuple[int, bytes, type[ProviderError], str]] = [
    (408, b"", Transient, "anthropic HTTP 408"),
    (409, error_reply(409, "conflict_error", "Conflict").body, Transient, "conflict_error"),
    (529, b"<html>overloaded</html>", RateLimited, "anthropic HTTP 529: <html>"),
    (400, b"Bad Request", PermanentImageError, "anthropic HTTP 400: Bad Request"),
    (401, b"{}", FatalJobError, "anthropic HTTP 401: {}"),
    (418, error_reply(418, "teapot_error", "short and stout").body, Transient, "teapot_error"),
    (
        400,
        error_reply(400, "invalid_request_error", "Unable to download the file at url").body,
        PermanentImageError,
        "Unable to download",
    ),
    (
        400,
        error_reply(
            400,
            "invalid_request_error",
            "'claude-3-haiku-20240307' does not support output_config.format",
        ).body,
        FatalJobError,
        "does not support",
    ),
]


@pytest.mark.parametrize(("status", "body", "kind", "fragment"), CLASSIFY_TABLE)
def test_classify_error_handles_odd_statuses_and_bodies(
    status: int, body: bytes, kind: type[ProviderError], fragment: str
) -> None:
    """Bodies without the envelope fall back on the status; unknown types too."""
    error = classify_error(HTTPAnswer(status, {}, body), KEY)

    assert type(error) is kind
    assert fragment in error.message
    assert error.limits is None


def test_classify_error_reads_a_retry_after_date_and_scrubs_the_key() -> None:
    """An HTTP-date retry-after is a hint too; the key is redacted from the message."""
    headers = {"retry-after": "Sun, 01 Mar 2026 12:00:30 GMT"}
    body = error_reply(429, "rate_limit_error", f"slow down {KEY}").body
    error = classify_error(HTTPAnswer(429, headers, body), KEY, now=NOW)

    assert isinstance(error, RateLimited)
    assert error.retry_after == 30.0
    assert KEY not in error.message


# --- rate-limit headers ---------------------------------------------------------------------

LIMIT_TABLE: list[tuple[dict[str, str], RateLimits | None]] = [
    ({}, None),
    ({"request-id": "req_1"}, None),
    (
        {
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            "anthropic-ratelimit-requests-reset": "2026-03-01T12:00:06Z",
            "anthropic-ratelimit-tokens-limit": "400000",
            "anthropic-ratelimit-tokens-remaining": "398000",
            "anthropic-ratelimit-tokens-reset": "2026-03-01T12:01:00Z",
            "anthropic-ratelimit-input-tokens-limit": "1",
        },
        RateLimits(4000, 3999, 6.0, 400000, 398000, 60.0),
    ),
    (
        {
            "anthropic-ratelimit-input-tokens-limit": "50000",
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": "2026-03-01T12:00:12.5+00:00",
        },
        RateLimits(tokens_limit=50000, tokens_remaining=0, tokens_reset=12.5),
    ),
    (
        {
            "anthropic-ratelimit-requests-limit": "lots",
            "anthropic-ratelimit-requests-remaining": "5",
            "anthropic-ratelimit-requests-reset": "2026-03-01T11:59:00Z",
        },
        RateLimits(requests_remaining=5, requests_reset=0.0),
    ),
    (
        {"anthropic-ratelimit-requests-reset": "not a time"},
        None,
    ),
]


@pytest.mark.parametrize(("headers", "expected"), LIMIT_TABLE)
def test_rate_limit_headers_become_rate_limits(
    headers: dict[str, str], expected: RateLimits | None
) -> None:
    """RFC 3339 resets become seconds from now; input tokens stand in when tokens-* is absent."""
    assert parse_limits(headers, now=NOW) == expected


# --- image size -----------------------------------------------------------------------------


async def test_a_local_image_over_the_limit_is_shrunk_before_sending(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """Bytes over the per-image limit are re-encoded smaller instead of failing."""
    data = jpeg(400, noise=True)
    limit = len(data) // 2
    provider.max_image_bytes = fake.max_image_bytes = limit
    await provider.rate(local_image(data), PROMPT)

    assert fake.rejections == []
    sent = fake.requests[0].body["messages"][0]["content"][0]["source"]
    assert len(base64.b64decode(sent["data"])) <= limit
    assert sent["media_type"] == "image/jpeg"


async def test_an_image_that_cannot_be_shrunk_fails_without_a_request(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """When even a small version is too big, the image fails at once with a clear message."""
    provider.max_image_bytes = 100
    with pytest.raises(PermanentImageError, match=r"IMG_0001\.jpg: .*5 MB per image"):
        await provider.rate(local_image(jpeg(600, noise=True)), PROMPT)

    assert fake.requests == []


async def test_an_unsupported_media_type_fails_without_a_request(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """Anthropic takes JPEG, PNG, GIF and WebP only; bytes that cannot become a JPEG fail alone."""
    tiff = PreparedImage(
        image_id="t", filename="scan.tif", data=b"II*\x00", media_type="image/tiff"
    )
    with pytest.raises(PermanentImageError, match=r"scan\.tif: image cannot be converted to JPEG"):
        await provider.rate(tiff, PROMPT)

    assert fake.requests == []


async def test_a_tiff_is_converted_to_jpeg_before_sending(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """A media type Anthropic refuses (TIFF) goes out as a JPEG of the same picture."""
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (10, 200, 30)).save(buffer, format="TIFF")
    tiff = PreparedImage(
        image_id="t", filename="scan.tif", data=buffer.getvalue(), media_type="image/tiff"
    )

    await provider.rate(tiff, PROMPT)

    (request,) = fake.requests
    source = request.body["messages"][0]["content"][0]["source"]
    assert source["media_type"] == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(source["data"]))) as sent:
        assert (sent.format, sent.size) == ("JPEG", (48, 32))


async def test_an_image_with_neither_bytes_nor_url_fails_without_a_request(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """A prepared image that lost its bytes fails alone instead of sending an empty block."""
    empty = PreparedImage(image_id="e", filename="empty.jpg")
    with pytest.raises(PermanentImageError, match="no image data"):
        await provider.rate(empty, PROMPT)

    assert fake.requests == []


async def test_a_url_image_anthropic_finds_too_big_is_downloaded_shrunk_and_inlined(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """A full-size photo on a CDN still gets rated: fetch, shrink, send base64."""
    big = jpeg(400, noise=True)
    fake.photos["big.jpg"] = big
    provider.max_image_bytes = fake.max_image_bytes = len(big) // 2
    url = f"{fake.base_url}/photos/big.jpg"
    answer = await provider.rate(PreparedImage(image_id="b", filename="big.jpg", url=url), PROMPT)

    assert answer.rating.starRating == GOOD_RATING["starRating"]
    first, second = fake.requests
    assert first.body["messages"][0]["content"][0]["source"] == {"type": "url", "url": url}
    inline = second.body["messages"][0]["content"][0]["source"]
    assert inline["type"] == "base64"
    assert len(base64.b64decode(inline["data"])) <= provider.max_image_bytes


async def test_a_url_image_anthropic_cannot_process_is_not_downloaded(
    provider: AnthropicProvider, fake: FakeAnthropic
) -> None:
    """Only the size error triggers the download fallback; other image errors fail the image."""
    fake.queue(real_errors()["bad_image"])
    image = PreparedImage(image_id="u", filename="u.jpg", url="https://cdn.example.com/u.jpg")
    with pytest.raises(PermanentImageError, match="Could not process image"):
        await provider.rate(image, PROMPT)

    assert len(fake.requests) == 1


# --- construction ---------------------------------------------------------------------------


def test_the_base_url_defaults_to_the_api_host(session: aiohttp.ClientSession) -> None:
    """Without ANTHROPIC_BASE_URL the adapter talks to api.anthropic.com/v1/messages."""
    provider = create(
        model=MODEL,
        session=session,
        credentials=PROVIDERS["anthropic"].credentials({"ANTHROPIC_API_KEY": KEY}),
    )

    assert provider._url == f"{DEFAULT_BASE_URL}/v1/messages"
    assert (provider.name, provider.model) == ("anthropic", MODEL)


def test_the_base_url_override_is_a_host_and_a_trailing_slash_is_ignored(
    session: aiohttp.ClientSession,
) -> None:
    """ANTHROPIC_BASE_URL is host-only, like the anthropic SDK's."""
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": "http://proxy.local:8080/"}
    provider = create(
        model=MODEL, session=session, credentials=PROVIDERS["anthropic"].credentials(env)
    )

    assert provider._url == "http://proxy.local:8080/v1/messages"


def test_create_without_a_key_is_fatal_and_names_the_variable(
    session: aiohttp.ClientSession,
) -> None:
    """A missing key stops the job before any request, saying which variable to set."""
    with pytest.raises(FatalJobError, match="ANTHROPIC_API_KEY"):
        create(
            model=MODEL,
            session=session,
            credentials=PROVIDERS["anthropic"].credentials({"ANTHROPIC_API_KEY": " "}),
        )


async def test_the_registry_builds_this_adapter_and_it_rates_an_image(
    fake: FakeAnthropic, session: aiohttp.ClientSession
) -> None:
    """`--provider anthropic` reaches this module through create_provider."""
    env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.base_url}
    provider = create_provider(
        PROVIDERS["anthropic"],
        "claude-sonnet-4-6",
        session,
        PROVIDERS["anthropic"].credentials(env),
    )
    answer = await provider.rate(local_image(), PROMPT)

    assert isinstance(provider, AnthropicProvider)
    assert answer.rating.colorLabel == "green"
    assert fake.requests[0].body["model"] == "claude-sonnet-4-6"
