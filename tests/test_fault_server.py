"""The fault server itself: each fault does what it says, the RPM window is exact, answers
depend on the image, and it runs in a thread or as a process."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from kullbatch.errors import RateLimited, Transient
from kullbatch.models import PreparedImage, Prompt, Rating
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.providers._chat import build_body, json_schema_format
from kullbatch.providers.http import parse_go_duration, retry_after_hint
from tests import fault_server
from tests.fault_server import (
    DROP_KINDS,
    GARBAGE_KINDS,
    FaultConfig,
    FaultServer,
    SlidingWindow,
    expected_rating,
    go_duration,
    image_id_from_bytes,
    image_id_from_url,
    run_in_thread,
)

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = "http://photos.test/shoot"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SleepRecorder:
    """Stands in for asyncio.sleep: remembers each latency instead of waiting it out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def chat_body(url: str, model: str = "gpt-5.4-mini") -> bytes:
    """The request kullbatch's OpenAI adapter sends, byte for byte."""
    body = build_body(
        model=model,
        prompt=Prompt("rate"),
        image_url=url,
        response_format=json_schema_format(strict=True),
        detail="auto",
    )
    return json.dumps(body, separators=(",", ":")).encode()


AUTH = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


async def start(aiohttp_client, config: FaultConfig, **kwargs):
    server = FaultServer(config, **kwargs)
    client = await aiohttp_client(server.app())
    return server, client


async def post(client, url: str = f"{PHOTOS}/img1.jpg", headers=AUTH):
    response = await client.post("/v1/chat/completions", data=chat_body(url), headers=headers)
    return response, await response.read()


def content_of(body: bytes) -> str:
    return json.loads(body)["choices"][0]["message"]["content"]


def openai(session: aiohttp.ClientSession, base_url: str):
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": base_url}
    return create_provider(
        PROVIDERS["openai"], "gpt-5.4-mini", session, PROVIDERS["openai"].credentials(env)
    )


def url_image(image_id: str) -> PreparedImage:
    return PreparedImage(
        image_id=image_id, filename=f"{image_id}.jpg", url=f"{PHOTOS}/{image_id}.jpg"
    )


# --- the sliding window, with a fake clock ---------------------------------------------------


def test_the_window_admits_the_limit_then_says_exactly_when_a_slot_frees():
    """Three per 10 s: the fourth waits until the first is 10 s old, not a moment longer."""
    clock = FakeClock()
    window = SlidingWindow(3, 10.0, clock)
    for remaining in (2, 1, 0):
        admission = window.admit()
        assert admission.admitted and admission.remaining == remaining
        clock.advance(1.0)
    refused = window.admit()  # at +3 s; the first request leaves at +10 s
    assert not refused.admitted and refused.retry_after == pytest.approx(7.0)
    clock.advance(7.0 - 0.001)
    assert not window.admit().admitted
    clock.advance(0.001)
    assert window.admit().admitted


def test_the_window_slides_instead_of_resetting_at_fixed_boundaries():
    """Requests at 0, 4 and 8 s: one slot frees at 10 s, the next at 14 s."""
    clock = FakeClock(0.0)
    window = SlidingWindow(3, 10.0, clock)
    for at in (0.0, 4.0, 8.0):
        clock.now = at
        assert window.admit().admitted
    clock.now = 9.0
    assert window.admit().retry_after == pytest.approx(1.0)
    clock.now = 10.0
    assert window.admit().admitted  # the slot of the request at 0 s
    clock.now = 11.0
    assert window.admit().retry_after == pytest.approx(3.0)  # the request at 4 s leaves at 14 s
    assert len(window) == 3


def test_the_reset_header_means_full_again_or_next_slot():
    """With slots left, reset is when the window is empty again; with none, when one frees."""
    clock = FakeClock(0.0)
    window = SlidingWindow(3, 60.0, clock)
    first = window.admit()
    assert first.reset == pytest.approx(60.0) and first.headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "1m0s",
    }
    clock.now = 20.0
    assert window.admit().reset == pytest.approx(60.0)  # the newest leaves at 80 s
    clock.now = 30.0
    last = window.admit()  # the window is now full: the next slot frees at 60 s
    assert last.remaining == 0 and last.reset == pytest.approx(30.0)
    assert last.headers()["x-ratelimit-reset-requests"] == "30s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "1ms"),
        (0.012, "12ms"),
        (0.9996, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (83.25, "1m23.25s"),
        (3600, "1h0m0s"),
        (5025.5, "1h23m45.5s"),
    ],
)
def test_resets_are_go_durations_that_kullbatch_reads_back(seconds, text):
    """The reset header is written like OpenAI's (rounded up to the ms) and parses back."""
    assert go_duration(seconds) == text
    assert parse_go_duration(text) == pytest.approx(max(seconds, 0.001 if seconds else 0), abs=1e-3)


# --- the RPM window over HTTP ----------------------------------------------------------------


async def test_the_rpm_limit_answers_openais_429_with_accurate_hints(aiohttp_client):
    """Past the limit: OpenAI's body, retry-after-ms to the millisecond, retry-after rounded up."""
    clock = FakeClock()
    server, client = await start(aiohttp_client, FaultConfig(rpm_limit=2), clock=clock)
    ok, _ = await post(client)
    assert ok.status == 200
    assert ok.headers["x-ratelimit-remaining-requests"] == "1"
    assert ok.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.advance(12.5)
    ok, _ = await post(client)
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    assert ok.headers["x-ratelimit-reset-requests"] == "47.5s"  # the first leaves at 60 s
    clock.advance(0.25)
    refused, body = await post(client)
    assert refused.status == 429
    assert refused.headers["retry-after-ms"] == "47250"
    assert refused.headers["retry-after"] == "48"
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "47.25s"
    error = json.loads(body)["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert error["param"] is None
    assert error["message"].startswith("Rate limit reached for gpt-5.4-mini in organization")
    assert "requests per min (RPM): Limit 2, Used 2, Requested 1" in error["message"]
    clock.advance(47.25)
    again, _ = await post(client)
    assert again.status == 200
    assert server.stats.outcomes == Counter({"ok": 3, "window_429": 1})
    assert server.stats.admitted_at == [1000.0, 1012.5, 1060.0]


async def test_a_short_windows_headers_speak_per_minute_like_openais(aiohttp_client):
    """20 per 1 s is announced as 1200 requests per minute; remaining scales the same way."""
    clock = FakeClock()
    _, client = await start(aiohttp_client, FaultConfig(rpm_limit=20, window=1.0), clock=clock)
    response, _ = await post(client)
    assert response.headers["x-ratelimit-limit-requests"] == "1200"
    assert response.headers["x-ratelimit-remaining-requests"] == "1140"
    assert response.headers["x-ratelimit-reset-requests"] == "1s"


async def test_limit_headers_can_be_left_out(aiohttp_client):
    """limit_headers=False: the window still refuses, but only its 429s tell the client."""
    config = FaultConfig(rpm_limit=1, window=5.0, limit_headers=False)
    _, client = await start(aiohttp_client, config, clock=FakeClock())
    ok, _ = await post(client)
    refused, _ = await post(client)
    assert (ok.status, refused.status) == (200, 429)
    assert refused.headers["retry-after-ms"] == "5000"
    for response in (ok, refused):
        assert not any(name.lower().startswith("x-ratelimit") for name in response.headers)


async def test_kullbatch_reads_the_windows_hints_and_headers(aiohttp_client):
    """The real adapter turns the window's 429 into RateLimited with the exact wait and limits."""
    clock = FakeClock()
    server = FaultServer(FaultConfig(rpm_limit=1, window=60), clock=clock)
    http = await aiohttp_client(server.app())
    provider = openai(http.session, str(http.make_url("/v1")))
    answer = await provider.rate(url_image("img1"), Prompt("rate"))
    assert answer.limits is not None and answer.limits.requests_remaining == 0
    assert answer.limits.requests_reset == pytest.approx(60.0)
    clock.advance(15.0)
    with pytest.raises(RateLimited) as raised:
        await provider.rate(url_image("img2"), Prompt("rate"))
    assert raised.value.retry_after == pytest.approx(45.0)
    assert raised.value.limits is not None and raised.value.limits.requests_limit == 1


# --- each fault ------------------------------------------------------------------------------


async def test_a_random_429_carries_the_configured_hint(aiohttp_client):
    """p429=1: OpenAI's TPM rate-limit body, retry-after-ms as configured, no latency."""
    sleep = SleepRecorder()
    config = FaultConfig(p429=1.0, retry_after_ms=20, latency=1.0)
    server, client = await start(aiohttp_client, config, sleep=sleep)
    response, body = await post(client)
    assert response.status == 429
    assert response.headers["retry-after-ms"] == "20"
    assert response.headers["retry-after"] == "1"
    assert retry_after_hint({k.lower(): v for k, v in response.headers.items()}) == 0.02
    error = json.loads(body)["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "tokens"
    assert sleep.delays == []  # a 429 comes at once
    assert server.stats.outcomes == Counter({"429": 1})


async def test_a_random_429_can_come_without_a_hint(aiohttp_client):
    """retry_after_ms=None: a bare 429, so the client's own schedule decides."""
    _, client = await start(aiohttp_client, FaultConfig(p429=1.0, retry_after_ms=None))
    response, _ = await post(client)
    assert response.status == 429
    assert "retry-after-ms" not in response.headers and "retry-after" not in response.headers


@pytest.mark.parametrize(
    ("field", "status", "message"),
    [
        ("p500", 500, "The server had an error while processing your request."),
        ("p503", 503, "The engine is currently overloaded, please try again later."),
    ],
)
async def test_server_errors_have_openais_bodies(aiohttp_client, field, status, message):
    """p500=1 answers 500, p503=1 answers 503, each with OpenAI's server_error body."""
    server, client = await start(aiohttp_client, FaultConfig(**{field: 1.0}))
    response, body = await post(client)
    assert response.status == status
    error = json.loads(body)["error"]
    assert error["type"] == "server_error" and error["message"].startswith(message)
    assert server.stats.outcomes == Counter({str(status): 1})


async def test_a_dropped_connection_is_a_disconnect_or_a_cut_body(aiohttp_client):
    """p_drop=1 alternates: closed before any answer, then closed halfway through the body."""
    server, client = await start(aiohttp_client, FaultConfig(p_drop=1.0))
    seen = []
    for _ in range(4):
        try:
            await post(client)
        except aiohttp.ServerDisconnectedError:
            seen.append("before_answer")
        except aiohttp.ClientPayloadError:
            seen.append("mid_body")
    assert seen == ["before_answer", "mid_body"] * 2
    assert server.stats.drop_kinds == Counter(dict.fromkeys(DROP_KINDS, 2))
    assert server.stats.ok_per_image == Counter()  # a cut rating is not an answer


async def test_kullbatch_retries_a_dropped_connection_as_transient(aiohttp_client):
    """Both kinds of drop reach the engine as Transient, never as a rating or a crash."""
    server = FaultServer(FaultConfig(p_drop=1.0))
    http = await aiohttp_client(server.app())
    provider = openai(http.session, str(http.make_url("/v1")))
    messages = []
    for _ in DROP_KINDS:
        with pytest.raises(Transient) as raised:
            await provider.rate(url_image("img1"), Prompt("rate"))
        messages.append(raised.value.message)
    assert messages[0] == "server closed the connection before answering"
    assert messages[1].startswith("connection dropped")


async def test_garbage_is_a_200_that_is_not_a_rating_in_four_ways(aiohttp_client):
    """p_garbage=1 cycles truncated JSON, prose, the wrong schema and a non-completion body."""
    server, client = await start(aiohttp_client, FaultConfig(p_garbage=1.0))
    bodies = []
    for _ in GARBAGE_KINDS:
        response, body = await post(client, f"{PHOTOS}/img5.jpg")
        assert response.status == 200
        bodies.append(body)
    truncated, prose, wrong, html = bodies
    with pytest.raises(json.JSONDecodeError):
        json.loads(content_of(truncated))
    assert content_of(prose).startswith("What a lovely photo!")
    assert set(json.loads(content_of(wrong))) == {"stars", "label", "caption"}
    assert html.startswith(b"<html>")
    assert server.stats.garbage_kinds == Counter(dict.fromkeys(GARBAGE_KINDS, 1))


async def test_kullbatch_treats_every_kind_of_garbage_as_transient(aiohttp_client):
    """The adapter must retry garbage, not store it: each kind raises Transient."""
    server = FaultServer(FaultConfig(p_garbage=1.0))
    http = await aiohttp_client(server.app())
    provider = openai(http.session, str(http.make_url("/v1")))
    for _ in GARBAGE_KINDS:
        with pytest.raises(Transient):
            await provider.rate(url_image("img1"), Prompt("rate"))


async def test_a_request_without_a_bearer_key_is_refused(aiohttp_client):
    """No Authorization header: OpenAI's 401, and nothing is counted against the image."""
    server, client = await start(aiohttp_client, FaultConfig())
    response, body = await post(client, headers={"Content-Type": "application/json"})
    assert response.status == 401
    assert "You didn't provide an API key" in json.loads(body)["error"]["message"]
    assert server.stats.outcomes == Counter({"401": 1}) and not server.stats.per_image


async def test_a_request_with_another_key_is_refused(aiohttp_client):
    """A bearer key other than the configured one: OpenAI's 401 `invalid_api_key`."""
    server, client = await start(aiohttp_client, FaultConfig(api_key="sk-the-right-one"))
    wrong = {**AUTH, "Authorization": "Bearer sk-wrong"}
    response, body = await post(client, headers=wrong)
    assert response.status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert server.stats.outcomes == Counter({"401": 1}) and not server.stats.per_image
    right = {**AUTH, "Authorization": "Bearer sk-the-right-one"}
    response, _ = await post(client, headers=right)
    assert response.status == 200


async def test_a_request_without_an_image_is_a_400(aiohttp_client):
    """A chat request with no image_url part is not what kullbatch sends: 400."""
    server, client = await start(aiohttp_client, FaultConfig())
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    response = await client.post("/v1/chat/completions", data=body, headers=AUTH)
    assert response.status == 400
    assert server.stats.outcomes == Counter({"400": 1})


# --- answers depend on the image -------------------------------------------------------------


async def test_each_image_gets_its_own_rating(aiohttp_client):
    """The rating names the image and its stars are a function of it; kullbatch parses it."""
    server = FaultServer(FaultConfig())
    http = await aiohttp_client(server.app())
    provider = openai(http.session, str(http.make_url("/v1")))
    ratings = {}
    for image_id in ("img0", "img1", "img17", "bride-42"):
        answer = await provider.rate(url_image(image_id), Prompt("rate"))
        assert answer.rating == Rating.model_validate(expected_rating(image_id))
        assert image_id in answer.rating.title and image_id in answer.rating.tags
        ratings[image_id] = answer.rating.model_dump_json()
    assert len(set(ratings.values())) == 4
    assert len({expected_rating(f"img{i}")["starRating"] for i in range(50)}) == 5
    assert server.stats.ok_per_image == Counter(dict.fromkeys(ratings, 1))


async def test_a_data_uri_image_is_known_by_the_hash_of_its_bytes(aiohttp_client):
    """Local photos arrive as base64: their id is the hash of the bytes, whatever the filename."""
    server = FaultServer(FaultConfig())
    http = await aiohttp_client(server.app())
    provider = openai(http.session, str(http.make_url("/v1")))
    data = b"\xff\xd8\xff\xe0 pretend jpeg"
    image = PreparedImage(image_id="anything", filename="a.jpg", data=data)
    answer = await provider.rate(image, Prompt("rate"))
    image_id = image_id_from_bytes(data)
    assert image_id.startswith("sha256-") and len(image_id) == len("sha256-") + 16
    assert answer.rating == Rating.model_validate(expected_rating(image_id))
    assert server.stats.per_image == Counter({image_id: 1})


def test_image_ids_come_from_the_url_file_name():
    """img17.jpg -> img17; query strings and fragments do not count; data URIs are hashed."""
    assert image_id_from_url("http://h/photos/img17.jpg") == "img17"
    assert image_id_from_url("https://h/a/b/IMG_0042.JPG?sig=abc#x") == "IMG_0042"
    assert image_id_from_url("https://h/a/noext") == "noext"
    uri = "data:image/jpeg;base64," + base64.b64encode(b"abc").decode()
    assert image_id_from_url(uri) == image_id_from_bytes(b"abc")
    assert FaultServer.expected_rating("img3") == expected_rating("img3")


async def test_the_image_is_found_whatever_the_layout_of_the_request(aiohttp_client):
    """Other clients' JSON (spaces, keys in another order, escapes) is parsed the slow way."""
    server, client = await start(aiohttp_client, FaultConfig())
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": 'say "model": "x"'},
                    {
                        "type": "image_url",
                        "image_url": {"detail": "low", "url": f"{PHOTOS}/img9.jpg"},
                    },
                ],
            }
        ],
        "model": "gpt\u00e9",
    }
    response = await client.post(
        "/v1/chat/completions", data=json.dumps(body, indent=2), headers=AUTH
    )
    payload = json.loads(await response.read())
    assert payload["model"] == "gpt\u00e9"
    assert json.loads(payload["choices"][0]["message"]["content"]) == expected_rating("img9")


# --- latency, randomness, counters -----------------------------------------------------------


async def test_latency_is_fixed_plus_jitter_and_never_negative(aiohttp_client):
    """latency 1 s +- 0.5 s: every wait is within [0.5, 1.5] s and they differ."""
    sleep = SleepRecorder()
    _, client = await start(
        aiohttp_client, FaultConfig(latency=1.0, latency_jitter=0.5), sleep=sleep
    )
    for i in range(40):
        await post(client, f"{PHOTOS}/img{i}.jpg")
    assert all(0.5 <= delay <= 1.5 for delay in sleep.delays) and len(sleep.delays) == 40
    assert max(sleep.delays) - min(sleep.delays) > 0.5
    sleep.delays.clear()
    _, client = await start(
        aiohttp_client, FaultConfig(latency=0.1, latency_jitter=1.0), sleep=sleep
    )
    for _ in range(20):
        await post(client)
    assert 0 < len(sleep.delays) < 20  # below zero means no wait at all
    assert all(0 < delay <= 1.1 for delay in sleep.delays)


async def test_latency_really_delays_the_answer(aiohttp_client):
    """With the real sleep, an answer takes at least the configured latency."""
    _, client = await start(aiohttp_client, FaultConfig(latency=0.05))
    started = time.perf_counter()
    response, _ = await post(client)
    assert response.status == 200 and time.perf_counter() - started >= 0.05


def test_faults_are_drawn_in_their_configured_shares_from_a_seeded_rng():
    """10,000 draws land within 1.5 points of each share, and the same seed draws the same."""
    config = FaultConfig(p429=0.2, p500=0.1, p503=0.05, p_drop=0.05, p_garbage=0.05, seed=3)
    server = FaultServer(config)
    draws = [server._draw()[0] for _ in range(10_000)]
    shares = {kind: count / len(draws) for kind, count in Counter(draws).items()}
    expected = {"429": 0.2, "500": 0.1, "503": 0.05, "drop": 0.05, "garbage": 0.05, "ok": 0.55}
    assert shares == pytest.approx(expected, abs=0.015)
    again = FaultServer(config)
    assert [again._draw()[0] for _ in range(10_000)] == draws
    other = FaultServer(FaultConfig(p429=0.2, p500=0.1, seed=4))
    assert [other._draw()[0] for _ in range(100)] != draws[:100]


def test_impossible_configurations_are_refused():
    """Shares above 100 %, negative latency and a zero limit are mistakes, said at once."""
    with pytest.raises(ValueError, match="sum to <= 1"):
        FaultConfig(p429=0.6, p500=0.5)
    with pytest.raises(ValueError, match="latency"):
        FaultConfig(latency=-1)
    with pytest.raises(ValueError, match="rpm_limit"):
        FaultConfig(rpm_limit=0)
    with pytest.raises(ValueError, match="window"):
        FaultConfig(window=0)


async def test_counters_record_concurrency_images_and_history(aiohttp_client):
    """20 requests at once are 20 in flight; per-image counts and histories add up."""
    server, client = await start(aiohttp_client, FaultConfig(latency=0.05))
    await asyncio.gather(*(post(client, f"{PHOTOS}/img{i % 10}.jpg") for i in range(20)))
    stats = server.stats
    assert stats.max_in_flight == 20 and stats.in_flight == 0
    assert stats.requests == 20 and len(stats.admitted_at) == 20
    assert stats.per_image == Counter({f"img{i}": 2 for i in range(10)})
    assert stats.history["img3"] == ["ok", "ok"]
    stats_answer = await client.get("/_fault/stats")
    summary = await stats_answer.json()
    assert summary["requests"] == 20 and summary["images_rated_twice"] == 10


# --- running it outside a test's loop --------------------------------------------------------


def test_run_in_thread_serves_until_the_block_ends():
    """The thread has its own loop; the stats are read after it stops."""
    server = FaultServer(FaultConfig(p500=1.0))

    async def ask(base_url: str) -> int:
        url = f"{base_url}/chat/completions"
        body = chat_body(f"{PHOTOS}/img1.jpg")
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers=AUTH) as response,
        ):
            return response.status

    with run_in_thread(server) as base_url:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert asyncio.run(ask(base_url)) == 500
    assert server.stats.outcomes == Counter({"500": 1})
    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(ask(base_url))


def test_run_in_thread_accepts_a_plain_config():
    """A FaultConfig is enough when the caller only needs the URL."""
    with run_in_thread(FaultConfig()) as base_url:
        assert base_url.endswith("/v1")


def test_the_module_runs_as_a_process_that_prints_its_port_first():
    """`python -m tests.fault_server` prints the port, serves, and prints its stats on SIGTERM."""
    command = [sys.executable, "-m", "tests.fault_server", "--port", "0", "--p503", "1"]
    command += ["--rpm-limit", "100", "--window", "1.5", "--retry-after-ms", "-1"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        base_url = f"http://127.0.0.1:{port}/v1"

        async def ask() -> tuple[int, str, dict]:
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"{base_url}/chat/completions", data=chat_body(f"{PHOTOS}/i.jpg"), headers=AUTH
                ) as response:
                    limit = response.headers["x-ratelimit-limit-requests"]
                async with session.get(f"http://127.0.0.1:{port}/_fault/stats") as stats:
                    return response.status, limit, await stats.json()

        status, limit, summary = asyncio.run(ask())
        assert (status, limit) == (503, "4000")  # 100 per 1.5 s, said per minute
        assert summary["outcomes"] == {"503": 1}
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert json.loads(out.strip().splitlines()[-1])["requests"] == 1


def test_the_command_line_knows_every_config_field():
    """Each FaultConfig field has a --flag; -1 for retry-after-ms means no hint."""
    flags = "--latency 1 --latency-jitter 0.2 --p429 0.2 --retry-after-ms -1 --p500 0.1"
    flags += " --p503 0.05 --p-drop 0.05 --p-garbage 0.05 --rpm-limit 500 --window 30 --seed 9"
    flags += " --no-limit-headers"
    _, config = fault_server._parse_args(flags.split(" "))
    assert config == FaultConfig(
        latency=1,
        latency_jitter=0.2,
        p429=0.2,
        retry_after_ms=None,
        p500=0.1,
        p503=0.05,
        p_drop=0.05,
        p_garbage=0.05,
        rpm_limit=500,
        window=30,
        limit_headers=False,
        seed=9,
    )
    assert math.isclose(fault_server._parse_args([])[1].window, 60)
