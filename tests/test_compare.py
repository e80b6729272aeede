"""Burst comparison on the wire: every network provider's multi-image request against its strict
fake, the answer's schema, the per-request image limit, and the rounds of a bigger burst."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from fake_anthropic_server import KEY as ANTHROPIC_KEY
from fake_anthropic_server import FakeAnthropic, body_problem, error_reply, message_reply
from fake_compare import sharpness
from fake_gemini_server import GEMINI_KEY, INTERNAL, FakeGemini
from fake_openai_server import FakeChatServer
from PIL import Image, ImageFilter

from kullbatch.errors import PermanentImageError, ProviderError, Transient
from kullbatch.models import PreparedImage, Usage
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.providers._chat import json_schema_format
from kullbatch.providers.anthropic import compare_body
from kullbatch.providers.compare import (
    Comparer,
    Comparison,
    Verdict,
    comparer_of,
    image_limit,
    parse_comparison,
)
from kullbatch.run.compare import CompareSender, chunks, images_for, requests_for, tournament
from kullbatch.run.ratelimit import Gate
from kullbatch.run.retry import RetryPolicy, Schedule
from tests.burst_shoot import EXAMPLES

NETWORK = ["openai", "grok", "groq", "openai-compatible", "anthropic", "gemini"]
CHAT = {
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
}
FAST = RetryPolicy(
    max_retry_time=30, other=Schedule(0.01, 0.01, 1), rate_limit=Schedule(0.01, 0.01, 1)
)


def frame_bytes(blur: float, shift: int = 0, edge: int = 320) -> bytes:
    """A frame of the harbour example, blurred by `blur` (0: the sharp one)."""
    with Image.open(EXAMPLES / "01_harbour_sharp.jpg") as opened:
        image = opened.convert("RGB")
    image.thumbnail((edge, edge))
    if shift:
        image = image.rotate(0, translate=(shift, 0))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def burst(blurs: list[float]) -> list[PreparedImage]:
    return [
        PreparedImage(image_id=f"f{n}", filename=f"f{n}.jpg", data=frame_bytes(b, shift=n))
        for n, b in enumerate(blurs)
    ]


@dataclass
class Wired:
    provider: Any
    fake: Any

    @property
    def comparer(self) -> Comparer:
        found = comparer_of(self.provider)
        assert found is not None
        return found


async def wired(aiohttp_server: Any, session: aiohttp.ClientSession, name: str) -> Wired:
    if name == "anthropic":
        anthropic = FakeAnthropic()
        server = await aiohttp_server(anthropic.app())
        env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": str(server.make_url(""))}
        spec = PROVIDERS[name]
        return Wired(
            create_provider(spec, "claude-haiku-4-5", session, spec.credentials(env)), anthropic
        )
    if name == "gemini":
        gemini = FakeGemini()
        server = await aiohttp_server(gemini.app())
        env = {"GEMINI_API_KEY": GEMINI_KEY, "GOOGLE_GEMINI_BASE_URL": str(server.make_url(""))}
        spec = PROVIDERS[name]
        return Wired(
            create_provider(spec, "gemini-2.5-flash", session, spec.credentials(env)), gemini
        )
    prefix, flavour, key_var, base_var, with_prefix = CHAT[name]
    key = f"key-for-{name}"
    chat = await FakeChatServer(prefix=prefix, api_key=key, flavour=flavour).start(aiohttp_server)
    base = chat.base_url + (prefix if with_prefix else "")
    spec = PROVIDERS[name]
    env = {key_var: key, base_var: base}
    return Wired(create_provider(spec, "gpt-4o-mini", session, spec.credentials(env)), chat)


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def wire(aiohttp_server: Any, session: aiohttp.ClientSession) -> Callable[[str], Awaitable[Wired]]:
    async def make(name: str) -> Wired:
        return await wired(aiohttp_server, session, name)

    return make


def sender(comparer: Comparer) -> CompareSender:
    """A sender with waits of 10 ms, on the loop's clock (the gate holds on it)."""
    now = asyncio.get_running_loop().time
    return CompareSender(comparer, Gate(now), FAST, now, random.Random(1))


# --- every provider ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NETWORK)
async def test_every_network_provider_compares_a_burst_in_one_request_and_finds_the_sharpest(
    name: str, wire: Callable[[str], Awaitable[Wired]]
) -> None:
    """Four frames, the sharp one third: one multi-image request the strict fake accepts, and
    the verdict (read from the pixels) names frame 3, whatever the order."""
    w = await wire(name)
    frames = burst([3.0, 2.0, 0.0, 4.0])
    verdict = await w.comparer.compare(frames)
    assert verdict.comparison.best == 3
    assert verdict.comparison.ranking == [3, 2, 1, 4]
    assert "sharpest" in verdict.comparison.reason
    assert verdict.usage.input_tokens > 0
    assert verdict.usage.output_tokens > 0
    problems = getattr(w.fake, "problems", getattr(w.fake, "rejections", []))
    assert problems == []


@pytest.mark.parametrize("name", NETWORK)
async def test_the_frames_travel_in_capture_order_each_after_its_label(
    name: str, wire: Callable[[str], Awaitable[Wired]]
) -> None:
    """The request holds the four images in the order given, each after "Frame n:"."""
    w = await wire(name)
    frames = burst([3.0, 2.0, 0.0, 4.0])
    await w.comparer.compare(frames)
    texts, images = _sent(name, w.fake)
    assert [t for t in texts if t.startswith("Frame ")] == [f"Frame {n}:" for n in range(1, 5)]
    assert [round(sharpness(i)) for i in images] == [
        round(sharpness(f.data or b"")) for f in frames
    ]


def _sent(name: str, fake: Any) -> tuple[list[str], list[bytes]]:
    """The text parts and the decoded images of the last request, in order."""
    if name == "anthropic":
        content = fake.requests[-1].body["messages"][0]["content"]
        texts = [b["text"] for b in content if b["type"] == "text"]
        images = [base64.b64decode(b["source"]["data"]) for b in content if b["type"] == "image"]
        return texts, images
    if name == "gemini":
        parts = fake.requests[-1]["contents"][0]["parts"]
        texts = [p["text"] for p in parts if "text" in p]
        images = [base64.b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p]
        return texts, images
    content = fake.last.json["messages"][-1]["content"]
    texts = [p["text"] for p in content if p["type"] == "text"]
    images = [
        base64.b64decode(p["image_url"]["url"].partition(",")[2])
        for p in content
        if p["type"] == "image_url"
    ]
    return texts, images


async def test_local_compares_nothing(session: aiohttp.ClientSession) -> None:
    """`local` has no compare: it keeps its sharpness pick."""
    spec = PROVIDERS["local"]
    local = create_provider(spec, "local", session, spec.credentials({}))
    assert comparer_of(local) is None


# --- the strict fakes -------------------------------------------------------------------------


async def test_the_chat_fake_refuses_a_malformed_multi_image_message(
    wire: Callable[[str], Awaitable[Wired]],
) -> None:
    """An image part without a URL is refused, as the API would."""
    w = await wire("openai")
    request = w.provider.compare_request(burst([0.0, 1.0]))
    request.body["messages"][0]["content"][2] = {"type": "image_url", "image_url": {}}
    answer = await w.provider.send(request)
    assert answer.status == 400
    assert "not a CreateChatCompletionRequest" in w.fake.problems[0]


async def test_the_chat_fake_refuses_several_images_asked_for_a_rating(
    wire: Callable[[str], Awaitable[Wired]],
) -> None:
    """Several images with the rating schema are no comparison kullbatch sends: refused."""
    w = await wire("openai")
    request = w.provider.compare_request(burst([0.0, 1.0]), json_schema_format(strict=True))
    answer = await w.provider.send(request)
    assert answer.status == 400
    assert w.fake.problems == ["a comparison must ask for the burst_comparison schema"]


async def test_the_anthropic_fake_refuses_an_image_that_is_not_its_media_type(
    wire: Callable[[str], Awaitable[Wired]],
) -> None:
    """A frame whose bytes are not the JPEG it claims is refused, naming its block."""
    frames = burst([0.0, 1.0])
    bad = PreparedImage(image_id="x", filename="x.jpg", data=b"not a jpeg at all")
    body = compare_body("claude-haiku-4-5", [frames[0], bad])
    problem = body_problem(body, 5 * 1024 * 1024, {})
    assert problem is not None
    assert problem.startswith("messages.0.content.3.image.source.base64.data")


async def test_groq_refuses_a_sixth_image_as_groq_does(
    wire: Callable[[str], Awaitable[Wired]],
) -> None:
    """Groq's fake answers more than five images with a 400; the adapter says so."""
    w = await wire("groq")
    with pytest.raises(PermanentImageError, match="up to 5 images"):
        await w.provider.parse_verdict(
            await w.provider.send(w.provider.compare_request(burst([0, 1, 2, 3, 4, 5]))), 6
        )


# --- the answer's schema ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("not json", "not JSON"),
        ('{"best": 1, "ranking": [1, 2]}', "reason"),
        ('{"best": 1, "ranking": [1, 2, 3], "reason": "x"}', "not frames 1 to 2"),
        ('{"best": 1, "ranking": [1, 1], "reason": "x"}', "not frames 1 to 2"),
        ('{"best": 2, "ranking": [1, 2], "reason": "x"}', "not the ranking's first"),
        ('{"best": true, "ranking": [1, 2], "reason": "x"}', "best"),
        ('{"best": "1", "ranking": [1, 2], "reason": "x"}', "best"),
        ('{"best": 1, "ranking": [1, 2], "reason": " "}', "reason is empty"),
        ('{"best": 1, "ranking": [1, 2], "reason": "x", "extra": 1}', "extra"),
        ('{"best": 3, "ranking": [3, 1], "reason": "x"}', "not frames 1 to 2"),
    ],
)
def test_a_bad_comparison_is_worth_another_try(answer: str, why: str) -> None:
    """Anything but a full ranking of the frames, led by `best`, is Transient."""
    with pytest.raises(Transient, match=why):
        parse_comparison(answer, 2, source="test")


def test_a_good_comparison_is_read() -> None:
    """A ranking of every frame once, led by best, with a reason, passes."""
    found = parse_comparison(
        '{"best": 2, "ranking": [2, 1, 3], "reason": "eyes open"}', 3, source="t"
    )
    assert (found.best, found.ranking, found.reason) == (2, [2, 1, 3], "eyes open")


@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_a_bad_answer_is_retried_through_the_retry_loop(
    name: str, wire: Callable[[str], Awaitable[Wired]]
) -> None:
    """An off-schema verdict is asked again; the second, good one counts, both requests' tokens
    are spent."""
    w = await wire(name)
    bad = json.dumps({"best": 1, "ranking": [1], "reason": "only one"})
    if name == "anthropic":
        w.fake.scripted_comparisons = True
        w.fake.queue(message_reply(bad))
    else:
        w.fake.queue_completion(bad)
    frames = burst([2.0, 0.0])
    send = sender(w.comparer)
    ranked = await send.rank(frames)
    assert ranked.order == [1, 0]
    assert len(send.spent) == 1  # the bad answer's tokens are not counted as a verdict
    assert len(w.fake.requests) == 2


# --- rounds -----------------------------------------------------------------------------------


def test_a_burst_is_cut_into_near_equal_chunks() -> None:
    """8 by 5 is 4 and 4; 5 by 5 is one request; 11 by 5 is 4, 4, 3."""
    assert [len(r) for r in chunks(8, 5)] == [4, 4]
    assert [len(r) for r in chunks(5, 5)] == [5]
    assert [len(r) for r in chunks(11, 5)] == [4, 4, 3]
    assert requests_for(8, 5) == 3
    assert images_for(8, 5) == 10
    assert requests_for(8, 8) == 1
    assert requests_for(1, 5) == 0
    with pytest.raises(ValueError, match="two images"):
        chunks(4, 1)


async def test_a_burst_larger_than_groqs_limit_is_compared_in_rounds(
    wire: Callable[[str], Awaitable[Wired]],
) -> None:
    """Eight frames on Groq (five at most): two chunks of four, then the two winners; every
    request within the limit, and the sharpest frame (the seventh) wins overall."""
    w = await wire("groq")
    assert w.comparer.max_images == image_limit("groq") == 5
    blurs = [3.0, 2.5, 4.0, 1.0, 3.5, 2.0, 0.0, 5.0]
    ranked = await sender(w.comparer).rank(burst(blurs))
    sizes = [len(frames) for frames in w.fake.comparisons]
    assert sizes == [4, 4, 2]
    assert ranked.order[0] == 6
    assert sorted(ranked.order) == list(range(8))
    assert ranked.requests == 3
    # the final ranks the winners; each chunk's seconds follow in the winners' order
    assert ranked.order[:2] == [6, 3]
    assert w.fake.problems == []


async def test_a_tournament_merges_places_chunk_by_chunk() -> None:
    """The winners in the final's order, then the chunks' seconds, then their thirds."""

    strength = [5, 1, 7, 3, 8, 2, 6]  # higher is better; frames 0..6, limit 3 -> 3, 2, 2

    async def ask(indices: Any) -> Verdict:
        order = sorted(range(1, len(indices) + 1), key=lambda n: -strength[indices[n - 1]])
        return Verdict(Comparison(best=order[0], ranking=order, reason="r"), Usage(10, 1))

    ranked = await tournament(7, 3, ask)
    # chunks [0,1,2] -> 2,0,1; [3,4] -> 4,3; [5,6] -> 6,5; final of 2,4,6 -> 4,2,6
    assert ranked.order == [4, 2, 6, 3, 0, 5, 1]
    assert ranked.requests == 4
    assert (ranked.usage.input_tokens, ranked.usage.output_tokens) == (40, 4)


# --- errors on the wire -----------------------------------------------------------------------


async def test_a_server_without_json_schema_gets_json_object_and_the_schema_in_words(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    """An OpenAI-compatible server that refuses json_schema: the comparison is asked again
    with json_object and the schema spelled out, and answered."""
    fake = await FakeChatServer(api_key=None, flavour="ollama", reject_json_schema=400).start(
        aiohttp_server
    )
    spec = PROVIDERS["openai-compatible"]
    env = {"OPENAI_COMPATIBLE_BASE_URL": f"{fake.base_url}/v1"}
    provider = create_provider(spec, "qwen3-vl:8b", session, spec.credentials(env))
    comparer = comparer_of(provider)
    assert comparer is not None
    verdict = await comparer.compare(burst([2.0, 0.0]))
    assert verdict.comparison.best == 2
    formats = [r.json["response_format"]["type"] for r in fake.requests]
    assert formats == ["json_schema", "json_object"]
    assert "burst_comparison" not in fake.last.raw.decode()
    assert '"ranking"' in fake.last.json["messages"][0]["content"][0]["text"]


@pytest.mark.parametrize(
    ("name", "reply", "kind"),
    [
        ("gemini", (500, "INTERNAL"), "Transient"),
        ("anthropic", (529, "overloaded_error"), "RateLimited"),
        ("openai", (200, "not a completion"), "Transient"),
    ],
)
async def test_error_answers_to_a_comparison_are_classified_as_for_a_rating(
    name: str, reply: tuple[int, str], kind: str, wire: Callable[[str], Awaitable[Wired]]
) -> None:
    """The provider's own classifier reads a comparison's error answer."""
    w = await wire(name)
    status, what = reply
    if name == "gemini":
        w.fake.reply(status, INTERNAL)
    elif name == "anthropic":
        w.fake.scripted_comparisons = True
        w.fake.queue(error_reply(status, what, "Overloaded"))
    else:
        w.fake.queue(status, {"object": what})
    with pytest.raises(ProviderError) as raised:
        await w.comparer.compare(burst([1.0, 0.0]))
    assert type(raised.value).__name__ == kind


async def test_a_chunk_of_one_frame_goes_on_to_the_final_unasked() -> None:
    """Three frames at two a request: [0, 1] is asked, frame 2 meets its winner in the final;
    two requests, not three."""
    asked: list[list[int]] = []

    async def ask(indices: Any) -> Verdict:
        asked.append(list(indices))
        order = sorted(range(1, len(indices) + 1), key=lambda n: -indices[n - 1])
        return Verdict(Comparison(best=order[0], ranking=order, reason="r"), Usage(1, 1))

    ranked = await tournament(3, 2, ask)
    assert asked == [[0, 1], [1, 2]]
    assert ranked.order == [2, 1, 0]
    assert ranked.requests == requests_for(3, 2) == 2
    assert images_for(3, 2) == 4
