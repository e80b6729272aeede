"""The proof: through 429s, 5xx, dropped connections, garbage and an RPM window, every image of
a shoot ends with exactly one stored result, and it is that image's own.

The real BatchProcessor, the real Store (SQLite in tmp_path) and the real OpenAI adapter talk
HTTP to the fault server in the test's own loop. The retry schedules are scaled down to tens of
milliseconds so the run takes seconds; the real schedules are tested with a virtual clock in
test_engine.py.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import aiohttp
import pytest

from kullbatch.models import (
    ImageInput,
    ItemRecord,
    ItemState,
    JobOptions,
    JobState,
    Mode,
    Prompt,
    Rating,
)
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.run.engine import BatchProcessor, EngineOptions, JobOutcome
from kullbatch.run.retry import RetryPolicy, Schedule, quiet_stamina
from kullbatch.store.database import Store
from kullbatch.store.rows import JobRow, NewJob
from tests.fault_server import (
    DROP_KINDS,
    GARBAGE_KINDS,
    OK,
    WINDOW_LIMITED,
    FaultConfig,
    FaultServer,
    expected_rating,
)

quiet_stamina()

JOB_ID = "batch_1700000000000_fault0"
PHOTOS = "http://photos.test/shoot"
FAST_POLICY = RetryPolicy(rate_limit=Schedule(0.01, 0.2, 6), other=Schedule(0.02, 0.4, 6))


@dataclass
class Run:
    outcome: JobOutcome
    items: list[ItemRecord]
    job: JobRow
    server: FaultServer


def shoot(count: int) -> list[ImageInput]:
    return [
        ImageInput(id=f"img{i}", filename=f"img{i}.jpg", url=f"{PHOTOS}/img{i}.jpg")
        for i in range(count)
    ]


async def run_shoot(
    aiohttp_server, tmp_path, config: FaultConfig, count: int, policy: RetryPolicy
) -> Run:
    """One job of `count` URL images, start to finish, as `kullbatch process` runs it."""
    server = FaultServer(config)
    http = await aiohttp_server(server.app(), host="127.0.0.1")
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": str(http.make_url("/v1"))}
    inputs = shoot(count)
    store = await Store.open(tmp_path / "kullbatch.db")
    try:
        options = JobOptions()
        job = NewJob(
            JOB_ID, "me", "faults", "openai", "gpt-5.4-mini", Mode.FAST, "rate", None, "x", options
        )
        await store.create_job(job, inputs)
        assert await store.claim(await store.get_job(JOB_ID))
        store.start_writer()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            provider = create_provider(
                PROVIDERS["openai"], "gpt-5.4-mini", session, PROVIDERS["openai"].credentials(env)
            )
            processor = BatchProcessor(
                job_id=JOB_ID,
                provider=provider,
                prompt=Prompt("rate"),
                store=store,
                sink=store,
                options=EngineOptions(),
                rng=random.Random(11),
                policy=policy,
            )
            outcome = await processor.run(inputs, total=count)
        await store.finish_job(JOB_ID, outcome.state, outcome.error)
        await store.stop_writer()
        items = await store.items(JOB_ID)
        row = await store.get_job(JOB_ID)
    finally:
        await store.close()
    assert row is not None
    return Run(outcome, items, row, server)


def assert_every_image_rated_once_with_its_own_rating(run: Run, count: int) -> None:
    ids = [f"img{i}" for i in range(count)]
    assert run.outcome.state is JobState.COMPLETED, run.outcome
    assert (run.outcome.rated, run.outcome.failed) == (count, 0)
    assert (run.job.status, run.job.processed_images, run.job.failed_images) == (
        JobState.COMPLETED,
        count,
        0,
    )
    assert [item.image.id for item in run.items] == ids  # one row per image, manifest order
    wrong = [
        item.image.id
        for item in run.items
        if item.state is not ItemState.RATED
        or item.rating != Rating.model_validate(expected_rating(item.image.id))
    ]
    assert wrong == []
    stats = run.server.stats
    assert stats.ok_per_image == Counter(dict.fromkeys(ids, 1))  # one rating sent per image
    asked_after_rated = [i for i in ids if stats.history[i].index(OK) != len(stats.history[i]) - 1]
    assert asked_after_rated == []
    # every attempt the store counted is one request the server saw, no more, no fewer
    assert {item.image.id: item.attempts for item in run.items} == dict(stats.per_image)
    assert sum(stats.per_image.values()) == stats.requests


async def test_every_image_ends_rated_once_through_429s_5xx_drops_and_garbage(
    aiohttp_server, tmp_path
):
    """300 images under 20 % 429, 10 % 500, 5 % drops and 5 % garbage: 300 right ratings."""
    config = FaultConfig(
        latency=0.005,
        latency_jitter=0.004,
        p429=0.2,
        retry_after_ms=20,
        p500=0.1,
        p_drop=0.05,
        p_garbage=0.05,
        # OpenAI sends its limit headers on every answer, 429s included; a generous limit lets
        # the engine's gate learn that the 429s are not about the request rate (without any
        # headers, its AIMD would slow the whole shoot down on every 429)
        rpm_limit=1_000_000,
        seed=2024,
    )
    run = await run_shoot(aiohttp_server, tmp_path, config, 300, FAST_POLICY)

    assert_every_image_rated_once_with_its_own_rating(run, 300)
    stats = run.server.stats
    for fault in ("429", "500", "drop", "garbage"):
        assert stats.outcomes[fault] > 0, stats.outcomes
    assert set(stats.drop_kinds) == set(DROP_KINDS)
    assert set(stats.garbage_kinds) == set(GARBAGE_KINDS)
    faults = stats.requests - stats.outcomes[OK]
    assert faults / stats.requests == pytest.approx(0.4, abs=0.06)
    assert any(n > 2 for n in stats.per_image.values())  # some images failed more than once
    assert stats.max_in_flight > 10  # requests overlapped (the gate paces them out quickly)


async def test_every_image_ends_rated_once_when_the_limit_headers_set_the_pace(
    aiohttp_server, tmp_path
):
    """60 images, 20 requests per 1 s window announced in x-ratelimit-*: paced, all rated once."""
    config = FaultConfig(latency=0.005, rpm_limit=20, window=1.0, seed=7)
    run = await run_shoot(aiohttp_server, tmp_path, config, 60, FAST_POLICY)

    assert_every_image_rated_once_with_its_own_rating(run, 60)
    assert_the_window_was_kept(run.server, 20, 1.0)
    # the probe's headers set the pace before the rest were released: (almost) no 429s
    assert run.server.stats.outcomes[WINDOW_LIMITED] <= 3, run.server.stats.outcomes


async def test_every_image_ends_rated_once_when_only_429s_tell_the_limit(aiohttp_server, tmp_path):
    """60 images, 20 per 1 s window, no limit headers: 429s, all rated once, hints honoured."""
    config = FaultConfig(latency=0.005, rpm_limit=20, window=1.0, limit_headers=False, seed=7)
    # the rate-limit cap (2 s) is above the window, so the server's hints are followed as given
    policy = RetryPolicy(rate_limit=Schedule(0.01, 2.0, 6), other=Schedule(0.02, 0.4, 6))
    run = await run_shoot(aiohttp_server, tmp_path, config, 60, policy)

    assert_every_image_rated_once_with_its_own_rating(run, 60)
    assert_the_window_was_kept(run.server, 20, 1.0)
    stats = run.server.stats
    assert stats.outcomes[WINDOW_LIMITED] > 0
    early = []
    not_before: dict[str, float] = {}
    for at, image_id, outcome, hint in stats.log:
        if image_id in not_before and at < not_before[image_id] - 0.002:
            early.append((image_id, round(not_before[image_id] - at, 4)))
        not_before.pop(image_id, None)
        if outcome == WINDOW_LIMITED and hint is not None:
            not_before[image_id] = at + hint
    assert early == []  # the engine waited out every retry-after-ms it was given


def assert_the_window_was_kept(server: FaultServer, limit: int, window: float) -> None:
    """The fault server's own promise: never more than `limit` admitted in any window."""
    admitted = server.stats.admitted_at
    assert admitted and all(
        sum(1 for t in admitted if start <= t < start + window) <= limit for start in admitted
    )
