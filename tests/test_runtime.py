"""One runtime, many jobs: each account its own gate, one writer, GC tuned while any job runs.

Two jobs run at once in one `Runtime` against two fault servers on 127.0.0.1 (OpenAI chat
completions). The real engine, store and OpenAI adapter do the work; the servers answer every
image with a rating that depends on its id, so a result stored under the wrong job or image shows.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from dataclasses import dataclass, field

import pytest

from kullbatch.manifest import Manifest
from kullbatch.models import EventKind, ImageInput, ItemState, JobState, ProgressEvent, Rating
from kullbatch.providers import PROVIDERS, create_batch_client
from kullbatch.run.engine import BatchProcessor
from kullbatch.run.ratelimit import HEADROOM
from kullbatch.run.runtime import Account, BatchGC, Runtime
from kullbatch.service import jobs
from kullbatch.store.database import Store
from tests.fake_gemini_server import FakeGemini, jpeg_bytes
from tests.fault_server import RATE_LIMITED, FaultConfig, FaultServer, expected_rating

OPENAI = jobs.ProcessSettings(provider="openai", model="gpt-5.4-mini")
WRITER_NAME = "kullbatch-store-writer"


def manifest(prefix: str, count: int, tmp_path) -> Manifest:
    """A shoot of URL images whose ids (and so their ratings) carry the job's prefix."""
    images = [
        ImageInput(
            id=f"{prefix}{i}", filename=f"{prefix}{i}.jpg", url=f"http://p.test/{prefix}{i}.jpg"
        )
        for i in range(count)
    ]
    return Manifest(tmp_path, f"shoot-{prefix}", images)


async def openai_env(aiohttp_server, server: FaultServer, key: str) -> dict[str, str]:
    http = await aiohttp_server(server.app(), host="127.0.0.1")
    return {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": str(http.make_url("/v1"))}


@dataclass
class Watch:
    """What a job's subscriber saw while it ran: GC settings, writer tasks, running jobs."""

    store: Store
    runtime: Runtime
    thresholds: set[tuple[int, int, int]] = field(default_factory=set)
    freeze_counts: list[int] = field(default_factory=list)
    writers: list[asyncio.Task[None] | None] = field(default_factory=list)
    writer_tasks: list[int] = field(default_factory=list)
    running: list[frozenset[str]] = field(default_factory=list)
    images: Counter[str] = field(default_factory=Counter)
    processors: list[BatchProcessor] = field(default_factory=list)

    def __call__(self, event: ProgressEvent) -> None:
        self.thresholds.add(gc.get_threshold())
        self.freeze_counts.append(gc.get_freeze_count())
        self.writers.append(self.store._writer)
        self.writer_tasks.append(
            sum(1 for task in asyncio.all_tasks() if task.get_name() == WRITER_NAME)
        )
        self.running.append(frozenset(self.runtime.running))
        if event.image_id is not None and event.kind is EventKind.RATED:
            self.images[event.image_id] += 1


def assert_rated_and_its_own(items, prefix: str, count: int) -> None:
    """Every image of the job rated once, with the rating the server gives that very image."""
    assert [item.image.id for item in items] == [f"{prefix}{i}" for i in range(count)]
    wrong = [
        item.image.id
        for item in items
        if item.state is not ItemState.RATED
        or item.rating != Rating.model_validate(expected_rating(item.image.id))
    ]
    assert wrong == []


async def test_two_jobs_at_once_in_one_runtime_keep_their_own_gates_and_results(
    aiohttp_server, tmp_path
):
    """A paced account and an open one, side by side: own gates, own results, one writer, GC back."""
    limited = FaultServer(
        FaultConfig(
            latency=0.005,
            rpm_limit=5,
            window=0.5,
            p429=0.1,
            retry_after_ms=20,
            seed=3,
            api_key="sk-limited",
        )
    )
    open_server = FaultServer(FaultConfig(latency=0.005, seed=4, api_key="sk-open"))
    env_a = await openai_env(aiohttp_server, limited, "sk-limited")
    env_b = await openai_env(aiohttp_server, open_server, "sk-open")
    gc_before = (gc.get_threshold(), gc.get_freeze_count())
    assert gc_before[0] != BatchGC.THRESHOLDS
    store = await Store.open(tmp_path / "kullbatch.db")
    try:
        job_a = await jobs.create_job(store, manifest("a", 12, tmp_path), OPENAI, env_a)
        job_b = await jobs.create_job(store, manifest("b", 10, tmp_path), OPENAI, env_b)
        async with Runtime(store, {}) as runtime:
            watch_a, watch_b = Watch(store, runtime), Watch(store, runtime)
            outcome_a, outcome_b = await asyncio.gather(
                runtime.run_job(
                    job_a, env=env_a, subscribers=[watch_a], on_processor=watch_a.processors.append
                ),
                runtime.run_job(
                    job_b, env=env_b, subscribers=[watch_b], on_processor=watch_b.processors.append
                ),
            )
            gate_a = runtime.gate_for(Account.of(PROVIDERS["openai"].credentials(env_a)))
            gate_b = runtime.gate_for(Account.of(PROVIDERS["openai"].credentials(env_b)))
            assert (gc.get_threshold(), gc.get_freeze_count()) == gc_before
        items_a, items_b = await store.items(job_a.id), await store.items(job_b.id)
        row_a, row_b = await store.get_job(job_a.id), await store.get_job(job_b.id)
    finally:
        await store.close()

    # each account its own gate: the limited one learned the announced pace, the other is open
    assert gate_a is not gate_b
    assert [p.gate for p in watch_a.processors] == [gate_a]
    assert [p.gate for p in watch_b.processors] == [gate_b]
    announced_per_second = 5 * (60 / 0.5) / 60
    assert gate_a.rate == pytest.approx(announced_per_second * HEADROOM)
    assert gate_b.rate is None
    assert limited.stats.outcomes[RATE_LIMITED] > 0  # the limited account did answer 429s

    # every image rated once, stored under its own job, and sent to its own job's provider
    assert (outcome_a.state, outcome_a.rated, outcome_a.failed) == (JobState.COMPLETED, 12, 0)
    assert (outcome_b.state, outcome_b.rated, outcome_b.failed) == (JobState.COMPLETED, 10, 0)
    assert (row_a.status, row_a.processed_images, row_a.failed_images) == (
        JobState.COMPLETED,
        12,
        0,
    )
    assert (row_b.status, row_b.processed_images, row_b.failed_images) == (
        JobState.COMPLETED,
        10,
        0,
    )
    assert_rated_and_its_own(items_a, "a", 12)
    assert_rated_and_its_own(items_b, "b", 10)
    assert set(limited.stats.ok_per_image) == {f"a{i}" for i in range(12)}
    assert set(open_server.stats.ok_per_image) == {f"b{i}" for i in range(10)}
    assert watch_a.images == Counter({f"a{i}": 1 for i in range(12)})
    assert watch_b.images == Counter({f"b{i}": 1 for i in range(10)})

    # the jobs overlapped, and both wrote through the one writer task of the store
    assert frozenset({job_a.id, job_b.id}) in {*watch_a.running, *watch_b.running}
    writers = {id(task) for task in watch_a.writers + watch_b.writers}
    assert len(writers) == 1 and None not in watch_a.writers + watch_b.writers
    assert set(watch_a.writer_tasks + watch_b.writer_tasks) == {1}

    # GC tuned while either job ran, and back to what it was once both ended (checked above)
    assert watch_a.thresholds == watch_b.thresholds == {BatchGC.THRESHOLDS}
    assert min(watch_a.freeze_counts + watch_b.freeze_counts) > gc_before[1]


async def test_two_jobs_on_one_account_share_one_gate(aiohttp_server, tmp_path):
    """Same provider, base URL and key: both jobs send through the very same gate."""
    config = FaultConfig(latency=0.005, rpm_limit=50, window=1.0, seed=5, api_key="sk-shared")
    server = FaultServer(config)
    env = await openai_env(aiohttp_server, server, "sk-shared")
    other_key = {**env, "OPENAI_API_KEY": "sk-other"}
    store = await Store.open(tmp_path / "kullbatch.db")
    try:
        first = await jobs.create_job(store, manifest("a", 4, tmp_path), OPENAI, env)
        second = await jobs.create_job(store, manifest("b", 4, tmp_path), OPENAI, dict(env))
        processors: list[BatchProcessor] = []
        async with Runtime(store, {}) as runtime:
            outcomes = await asyncio.gather(
                runtime.run_job(first, env=env, on_processor=processors.append),
                runtime.run_job(second, env=dict(env), on_processor=processors.append),
            )
            shared = runtime.gate_for(Account.of(PROVIDERS["openai"].credentials(env)))
            separate = runtime.gate_for(Account.of(PROVIDERS["openai"].credentials(other_key)))
    finally:
        await store.close()

    assert [outcome.rated for outcome in outcomes] == [4, 4]
    assert len(processors) == 2
    assert processors[0].gate is processors[1].gate is shared
    assert separate is not shared  # another key is another account
    assert shared.rate is not None  # what one job's answers taught, the other job obeyed too
    assert set(server.stats.ok_per_image) == {
        *(f"a{i}" for i in range(4)),
        *(f"b{i}" for i in range(4)),
    }


async def test_with_both_gemini_keys_set_the_key_sent_is_the_account_the_gate_paces(
    aiohttp_server, tmp_path
):
    """GOOGLE_API_KEY wins over GEMINI_API_KEY (python-genai's order), read once for the
    adapter, the batch client (gemini has none) and the gate's account alike: the account
    paced is the account charged. The fake refuses any key but GOOGLE_API_KEY's."""
    fake = FakeGemini(key="google-key")
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    env = {
        "GOOGLE_API_KEY": "google-key",
        "GEMINI_API_KEY": "gemini-key",
        "GEMINI_BASE_URL": str(server.make_url("")).rstrip("/"),
    }
    credentials = PROVIDERS["gemini"].credentials(env)
    assert (credentials.key, credentials.key_var) == ("google-key", "GOOGLE_API_KEY")
    photos = []
    for n in range(3):
        path = tmp_path / f"g{n}.jpg"
        path.write_bytes(jpeg_bytes(color=("teal", "navy", "olive")[n]))  # each its own
        photos.append(ImageInput(id=f"g{n}", filename=path.name, path=path))
    gemini = jobs.ProcessSettings(provider="gemini")
    store = await Store.open(tmp_path / "kullbatch.db")
    try:
        job = await jobs.create_job(store, Manifest(tmp_path, "shoot-g", photos), gemini, env)
        processors: list[BatchProcessor] = []
        async with Runtime(store, env) as runtime:
            outcome = await runtime.run_job(job, on_processor=processors.append)
            paced = runtime.gate_for(Account.of(credentials))
            batches = create_batch_client(
                PROVIDERS["gemini"], job.model, runtime.session, credentials
            )
    finally:
        await store.close()

    assert outcome.state is JobState.COMPLETED and outcome.rated == 3
    assert fake.problems == [] and len(fake.requests) == 3  # every request with google-key
    assert [processor.gate for processor in processors] == [paced]
    only_gemini = {key: value for key, value in env.items() if key != "GOOGLE_API_KEY"}
    assert Account.of(credentials) != Account.of(PROVIDERS["gemini"].credentials(only_gemini))
    assert batches is None


def test_batch_gc_restores_the_settings_only_when_the_last_of_two_overlapping_jobs_exits():
    """Enter, enter, exit keeps the tuning; the second exit brings Python's settings back."""
    before = (gc.get_threshold(), gc.get_freeze_count())
    assert before[0] != BatchGC.THRESHOLDS
    tuning = BatchGC()
    try:
        tuning.enter()
        frozen = gc.get_freeze_count()
        assert gc.get_threshold() == BatchGC.THRESHOLDS and frozen > before[1]
        tuning.enter()
        tuning.exit()
        assert gc.get_threshold() == BatchGC.THRESHOLDS
        # still frozen (frozen objects that die leave the count, so it may shrink a little)
        assert gc.get_freeze_count() > before[1]
    finally:
        tuning.exit()
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
