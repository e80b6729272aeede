"""build_request / parse_answer: the pure halves of every network adapter, against the fakes.

Fast mode sends exactly what `build_request` returns (economy mode will batch the same bodies),
and `parse_answer` reads an answer with or without headers (a batch result has none).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from fake_anthropic_server import KEY as ANTHROPIC_KEY
from fake_anthropic_server import FakeAnthropic, error_reply, rating_reply
from fake_gemini_server import API_KEY_INVALID, GEMINI_KEY, FakeGemini, generate_content_response
from fake_gemini_server import RATING as GEMINI_RATING
from fake_openai_server import RATING as CHAT_RATING
from fake_openai_server import FakeChatServer, image_bytes, openai_error, xai_error

from kullbatch.errors import FatalJobError, Transient
from kullbatch.models import PreparedImage, Prompt, Rating
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.providers.base import Capabilities, WireRequest
from kullbatch.providers.http import HTTPAnswer
from kullbatch.providers.openai import batch_url

PROMPT = Prompt(text="Rate this photo.", system="You are a photo editor.")
IMAGE = PreparedImage(image_id="img1", filename="a.jpg", data=image_bytes())
CHAT_KEYS = {
    "openai": "sk-test-key",
    "grok": "xai-test-key-0123456789",
    "groq": "gsk_TESTKEYaBcDeFgHiJkLmNoPqRsTuV",
    "openai-compatible": "sk-local-0123456789",
}
NETWORK = ["openai", "grok", "groq", "openai-compatible", "anthropic", "gemini"]


@dataclass
class Wire:
    """An adapter wired to its fake, and what that fake received last."""

    provider: Any
    key: str
    last: Callable[[], tuple[str | None, bytes]]  # (path if recorded, body as sent)
    success: bytes  # a recorded 2xx body
    rating: dict[str, Any]


def compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def chat_wire(aiohttp_server: Any, session: aiohttp.ClientSession, name: str) -> Wire:
    prefix, flavour, key_var, base_var, with_prefix = {
        "openai": ("/v1", "openai", "OPENAI_API_KEY", "OPENAI_BASE_URL", True),
        "grok": ("/v1", "xai", "XAI_API_KEY", "XAI_BASE_URL", True),
        "groq": ("/openai/v1", "groq", "GROQ_API_KEY", "GROQ_BASE_URL", False),
        "openai-compatible": (
            "/v1",
            "ollama",
            "OPENAI_COMPATIBLE_API_KEY",
            "OPENAI_COMPATIBLE_BASE_URL",
            True,
        ),
    }[name]
    key = CHAT_KEYS[name]
    fake = await FakeChatServer(prefix=prefix, api_key=key, flavour=flavour).start(aiohttp_server)
    base = fake.base_url + (prefix if with_prefix else "")
    provider = create_provider(
        PROVIDERS[name],
        "test-model",
        session,
        PROVIDERS[name].credentials({key_var: key, base_var: base}),
    )
    return Wire(
        provider,
        key,
        lambda: (fake.last.path, fake.last.raw),
        compact(fake.completion()),
        CHAT_RATING,
    )


async def anthropic_wire(aiohttp_server: Any, session: aiohttp.ClientSession) -> Wire:
    fake = FakeAnthropic()
    server = await aiohttp_server(fake.app())
    env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": str(server.make_url(""))}
    provider = create_provider(
        PROVIDERS["anthropic"], "claude-haiku-4-5", session, PROVIDERS["anthropic"].credentials(env)
    )
    reply = rating_reply()
    rating = json.loads(json.loads(reply.body)["content"][0]["text"])
    return Wire(
        provider,
        ANTHROPIC_KEY,
        lambda: (fake.requests[-1].path, compact(fake.requests[-1].body)),
        reply.body,
        rating,
    )


async def gemini_wire(aiohttp_server: Any, session: aiohttp.ClientSession) -> Wire:
    fake = FakeGemini()
    server = await aiohttp_server(fake.app())
    env = {"GEMINI_API_KEY": GEMINI_KEY, "GOOGLE_GEMINI_BASE_URL": str(server.make_url(""))}
    provider = create_provider(
        PROVIDERS["gemini"], "gemini-2.5-flash", session, PROVIDERS["gemini"].credentials(env)
    )
    return Wire(
        provider,
        GEMINI_KEY,
        lambda: (None, compact(fake.requests[-1])),
        compact(generate_content_response()),
        GEMINI_RATING,
    )


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def wire(aiohttp_server: Any, session: aiohttp.ClientSession) -> Callable[[str], Awaitable[Wire]]:
    async def make(name: str) -> Wire:
        if name == "anthropic":
            return await anthropic_wire(aiohttp_server, session)
        if name == "gemini":
            return await gemini_wire(aiohttp_server, session)
        return await chat_wire(aiohttp_server, session, name)

    return make


@pytest.mark.parametrize("name", NETWORK)
async def test_fast_mode_sends_exactly_the_built_request(name, wire):
    """The body the fake receives is byte for byte the built body, at the built path."""
    w = await wire(name)
    built = w.provider.build_request(IMAGE, PROMPT)

    answer = await w.provider.rate(IMAGE, PROMPT)

    path, raw = w.last()
    assert raw == compact(built.body)
    if path is not None:
        assert path == urlsplit(w.provider.base_url + built.path).path
    assert answer.rating == Rating.model_validate(w.rating)


@pytest.mark.parametrize("name", NETWORK)
async def test_a_built_request_carries_no_key(name, wire):
    """Neither the headers nor the body of a WireRequest hold the key: batch files are safe."""
    w = await wire(name)
    built = w.provider.build_request(IMAGE, PROMPT)

    assert isinstance(built, WireRequest)
    assert w.key not in json.dumps(dict(built.headers)) + json.dumps(built.body)
    assert {"authorization", "x-api-key", "x-goog-api-key"}.isdisjoint(
        name.lower() for name in built.headers
    )


def test_each_provider_builds_at_its_documented_path():
    """Paths are relative to the adapter's base URL, as its SDK's base-URL variable reads."""
    env = {var: "key" for spec in PROVIDERS.values() for var in spec.key_vars}
    env["OPENAI_COMPATIBLE_BASE_URL"] = "http://localhost:11434/v1"
    specs = {name: PROVIDERS[name] for name in NETWORK}
    paths = {
        name: create_provider(spec, spec.default_model, None, spec.credentials(env))  # type: ignore[arg-type]
        .build_request(IMAGE, PROMPT)
        .path
        for name, spec in specs.items()
    }
    assert paths == {
        "openai": "/chat/completions",
        "grok": "/chat/completions",
        "groq": "/openai/v1/chat/completions",
        "openai-compatible": "/chat/completions",
        "anthropic": "/v1/messages",
        "gemini": "/v1beta/models/gemini-2.5-flash:generateContent",
    }


def test_an_openai_batch_line_names_the_path_from_the_api_root():
    """OPENAI_BASE_URL includes /v1, the Batch API's `url` field does too."""
    assert batch_url(WireRequest("/chat/completions", {}, {})) == "/v1/chat/completions"


@pytest.mark.parametrize("name", NETWORK)
async def test_a_recorded_success_parses_without_headers(name, wire):
    """A batch result line (status 200, no headers) gives the rating and no limits."""
    w = await wire(name)

    answer = w.provider.parse_answer(HTTPAnswer(200, {}, w.success))

    assert answer.rating == Rating.model_validate(w.rating)
    assert answer.limits is None
    assert answer.usage.input_tokens > 0


@pytest.mark.parametrize("name", NETWORK)
async def test_an_answer_that_is_not_a_rating_is_transient_without_headers(name, wire):
    """A 200 whose body is no answer at all is worth another try, headers or not."""
    w = await wire(name)

    with pytest.raises(Transient) as caught:
        w.provider.parse_answer(HTTPAnswer(200, {}, b'{"unexpected": true}'))

    assert caught.value.limits is None


KEY_ERRORS = {  # provider -> (status, error body as it arrives, the variable named)
    "openai": (
        401,
        openai_error(
            "Incorrect API key provided: sk-pr****.", "invalid_request_error", "invalid_api_key"
        ),
        "[check OPENAI_API_KEY]",
    ),
    "grok": (
        400,
        xai_error("Client specified an invalid argument", "Incorrect API key provided: xa***op."),
        "[check XAI_API_KEY]",
    ),
    "groq": (
        401,
        openai_error("Invalid API Key", "invalid_request_error", "invalid_api_key"),
        "[check GROQ_API_KEY]",
    ),
    "openai-compatible": (
        401,
        openai_error("Invalid API key", "invalid_request_error", "invalid_api_key"),
        "[check OPENAI_COMPATIBLE_API_KEY]",
    ),
    "anthropic": (
        401,
        json.loads(error_reply(401, "authentication_error", "invalid x-api-key").body),
        "[check ANTHROPIC_API_KEY]",
    ),
    "gemini": (400, API_KEY_INVALID, "[check GOOGLE_API_KEY or GEMINI_API_KEY]"),
}


@pytest.mark.parametrize("name", NETWORK)
async def test_a_wrong_key_is_fatal_and_names_the_variable_to_set(name, wire):
    """Each provider's own wrong-key answer, parsed with no headers, says which variable to fix."""
    w = await wire(name)
    status, body, hint = KEY_ERRORS[name]

    with pytest.raises(FatalJobError) as caught:
        w.provider.parse_answer(HTTPAnswer(status, {}, compact(body)))

    assert caught.value.message.endswith(f" {hint}")
    assert "\n" not in caught.value.message
    assert caught.value.status == status
    assert hint == PROVIDERS[name].key_hint
    assert caught.value.env_vars == PROVIDERS[name].key_vars  # as data, not only in words


@pytest.mark.parametrize("name", NETWORK)
async def test_a_wrong_key_stops_a_real_exchange_with_the_hint(name, wire):
    """Sent with a wrong key, the fake's refusal reaches the caller with the variable named."""
    adapter = (await wire(name)).provider
    spec = PROVIDERS[name]
    env = {spec.key_vars[0]: "wrong-key-0000", spec.base_url_vars[0]: adapter.base_url}
    other = create_provider(spec, adapter.model, adapter._session, spec.credentials(env))

    with pytest.raises(FatalJobError, match=rf"\[check {spec.key_vars[0]}( or [A-Z_]+)?\]$"):
        await other.rate(IMAGE, PROMPT)


def test_capabilities_are_declared_on_each_provider_type():
    """URL downloaders say so on their type; economy-capable providers name a batch client."""
    env = {var: "key" for spec in PROVIDERS.values() for var in spec.key_vars}
    env["OPENAI_COMPATIBLE_BASE_URL"] = "http://localhost:11434/v1"
    for name, spec in PROVIDERS.items():
        provider = create_provider(spec, spec.default_model, None, spec.credentials(env))  # type: ignore[arg-type]
        assert isinstance(type(provider).capabilities, Capabilities)
        assert spec.economy == (name in {"openai", "anthropic"}), name
        downloads = name in {"gemini", "openai-compatible"}
        assert type(provider).capabilities.inlines_url_images == downloads, name


@pytest.mark.parametrize("name", NETWORK)
async def test_a_bare_401_from_a_proxy_names_the_variable_too(name, wire):
    """A 401 whose body is not the provider's error shape (an HTML page) still names the key."""
    w = await wire(name)
    page = b"<html><body><h1>401 Unauthorized</h1></body></html>"

    with pytest.raises(FatalJobError) as caught:
        w.provider.parse_answer(HTTPAnswer(401, {"Content-Type": "text/html"}, page))

    assert caught.value.message.endswith(f" {PROVIDERS[name].key_hint}")
    assert caught.value.env_vars == PROVIDERS[name].key_vars


@pytest.mark.parametrize("name", NETWORK)
async def test_a_fatal_error_not_about_the_key_names_no_variable(name, wire):
    """A 404 (unknown model) stops the job without blaming the key."""
    w = await wire(name)

    with pytest.raises(FatalJobError) as caught:
        w.provider.parse_answer(HTTPAnswer(404, {}, b"Not Found"))

    assert "[check" not in caught.value.message
    assert caught.value.env_vars == ()
