"""The BatchProcessor: probe, all at once, schedules, hints, the window, fatal stop, cancel."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from kullbatch.errors import FatalJobError, PermanentImageError, RateLimited, Transient
from kullbatch.models import (
    EventKind,
    ImageInput,
    ItemState,
    JobOptions,
    JobState,
    Mode,
    ProgressEvent,
    Prompt,
    RateLimits,
)
from kullbatch.run.engine import BatchProcessor, EngineOptions, JobOutcome
from kullbatch.run.ratelimit import Gate
from kullbatch.run.retry import quiet_stamina, retrying
from kullbatch.store.database import Store
from kullbatch.store.rows import NewJob
from tests.fakes import DownloadingProvider, ScriptedProvider, rating_for
from tests.vtime import run_virtual

quiet_stamina()


def images(n: int) -> list[ImageInput]:
    return [
        ImageInput(id=f"img{i}", filename=f"p{i}.jpg", url=f"https://example.test/p{i}.jpg")
        for i in range(n)
    ]


async def run_job(
    db: Path,
    provider: ScriptedProvider,
    inputs: list[ImageInput],
    options: EngineOptions | None = None,
    events: list[ProgressEvent] | None = None,
    before_run=None,
    gate: Gate | None = None,
    sink=None,
) -> tuple[JobOutcome, Store]:
    store = await Store.open(db)
    job = NewJob(
        "batch_1_aaaaaa",
        "me",
        "shoot",
        "fake",
        "fake-1",
        Mode.FAST,
        "rate",
        None,
        "x",
        JobOptions(),
    )
    await store.create_job(job, inputs)
    assert await store.claim(await store.get_job(job.id))
    store.start_writer()
    processor = BatchProcessor(
        job_id=job.id,
        provider=provider,
        prompt=Prompt("rate"),
        store=store,
        sink=sink or store,
        options=options or EngineOptions(heartbeat_interval=3600, cancel_poll_interval=600),
        subscribers=[] if events is None else [events.append],
        rng=random.Random(7),
        gate=gate,
    )
    if before_run is not None:
        before_run(processor)
    outcome = await processor.run(inputs, total=len(inputs))
    await store.finish_job(job.id, outcome.state, outcome.error)
    try:
        return outcome, Finished(await store.items(job.id), await store.get_job(job.id))
    finally:
        await store.close()  # in the job's own loop: no SQLite thread outlives it


@dataclass
class Finished:
    """What the store held when the job ended (the store itself is closed)."""

    items: list
    job: object


def retry_gaps(provider: ScriptedProvider, image_id: str) -> list[float]:
    times = [t for i, t in provider.calls if i == image_id]
    return [round(b - a, 3) for a, b in zip(times, times[1:])]


def test_every_image_is_rated_and_stored(tmp_path):
    """All images are rated once, and each stored rating is that image's own."""
    provider = ScriptedProvider()

    async def main():
        outcome, finished = await run_job(tmp_path / "k.db", provider, images(50))
        return outcome, finished.items

    outcome, items = run_virtual(main())
    assert outcome.state is JobState.COMPLETED and outcome.rated == 50 and outcome.failed == 0
    assert [item.rating for item in items] == [rating_for(f"img{i}") for i in range(50)]
    assert all(item.state is ItemState.RATED for item in items)


def test_rate_limits_follow_the_rate_limit_schedule(tmp_path):
    """Seven 429s without a hint wait 1, 2, 4, 8, 16, 32, 60 s (plus at most 10 % jitter)."""
    provider = ScriptedProvider(script={"img0": [RateLimited()] * 7})
    run_virtual(run_job(tmp_path / "k.db", provider, images(1)))
    gaps = retry_gaps(provider, "img0")
    for gap, base in zip(gaps, [1, 2, 4, 8, 16, 32, 60], strict=True):
        assert base * 0.9 <= gap <= min(base * 1.1, 60) + 0.01


def test_other_errors_follow_the_slower_schedule(tmp_path):
    """Transient errors wait 2, 4, …, 64, then 120 s."""
    provider = ScriptedProvider(script={"img0": [Transient("HTTP 503")] * 8})
    run_virtual(run_job(tmp_path / "k.db", provider, images(1)))
    gaps = retry_gaps(provider, "img0")
    for gap, base in zip(gaps, [2, 4, 8, 16, 32, 64, 120, 120], strict=True):
        assert base * 0.9 <= gap <= min(base * 1.1, 120) + 0.01


def test_a_hint_replaces_the_wait_and_is_capped(tmp_path):
    """retry-after 7 s waits about 7 s; a 500 s hint is capped at the schedule's 60 s."""
    provider = ScriptedProvider(
        script={"img0": [RateLimited(retry_after=7), RateLimited(retry_after=500)]}
    )
    run_virtual(run_job(tmp_path / "k.db", provider, images(1)))
    first, second = retry_gaps(provider, "img0")
    assert 7 <= first <= 7.8
    assert 54 <= second <= 60.01


def test_a_hinted_rate_limit_holds_new_sends_to_the_provider(tmp_path):
    """After the probe's 429 with a 30 s hint, no other image is sent before the 30 s pass."""
    provider = ScriptedProvider(script={"img0": [RateLimited(retry_after=30)]})
    run_virtual(run_job(tmp_path / "k.db", provider, images(5)))
    first = provider.calls[0][1]
    later = [t - first for image_id, t in provider.calls[1:]]
    assert later and min(later) >= 30


def test_the_window_ends_retries_after_six_hours(tmp_path):
    """An image that always hits 429 fails once its 6 h window passes, with its last error."""
    provider = ScriptedProvider(script={"img0": [RateLimited("Rate limit exceeded")] * 10_000})
    outcome, finished = run_virtual(run_job(tmp_path / "k.db", provider, images(1)))
    times = [t for _, t in provider.calls]
    assert times[-1] - times[0] == pytest.approx(6 * 3600, abs=0.01)  # the last try at the window
    assert 360 <= len(times) <= 400  # ~57 s per retry at the cap (jitter goes downwards there)
    assert outcome.failed == 1 and outcome.state is JobState.COMPLETED
    items = finished.items
    assert items[0].state is ItemState.FAILED and items[0].error == "Rate limit exceeded"
    assert items[0].attempts == len(times)


def test_max_retry_time_is_an_option(tmp_path):
    """--max-retry-time 90s: the last attempt is made at 90 s, then the image fails."""
    provider = ScriptedProvider(script={"img0": [Transient("boom")] * 100})
    run_virtual(
        run_job(
            tmp_path / "k.db",
            provider,
            images(1),
            EngineOptions(max_retry_time=90, heartbeat_interval=3600, cancel_poll_interval=600),
        )
    )
    times = [t for _, t in provider.calls]
    assert times[-1] - times[0] == pytest.approx(90, abs=0.01)


def test_a_fatal_probe_stops_the_job_after_one_request(tmp_path):
    """A bad key on the first image: one request, job failed, nothing else sent."""
    provider = ScriptedProvider(script={"img0": [FatalJobError("openai HTTP 401: bad key")]})
    outcome, _ = run_virtual(run_job(tmp_path / "k.db", provider, images(100)))
    assert len(provider.calls) == 1
    assert outcome.state is JobState.FAILED and outcome.error == "openai HTTP 401: bad key"


def test_a_fatal_error_later_stops_all_in_flight_work(tmp_path):
    """A fatal answer after release stops the job at once; in-flight images stay unrated."""
    script = {"img3": [FatalJobError("out of credit")]}
    provider = ScriptedProvider(script=script, latency=1.0)
    outcome, _ = run_virtual(run_job(tmp_path / "k.db", provider, images(20)))
    assert outcome.state is JobState.FAILED and outcome.error == "out of credit"
    assert outcome.rated < 20


def test_a_permanent_image_error_fails_that_image_only(tmp_path):
    """A 400 about one image fails it at once; the others are rated."""
    provider = ScriptedProvider(script={"img2": [PermanentImageError("HTTP 400: bad image")]})
    outcome, finished = run_virtual(run_job(tmp_path / "k.db", provider, images(5)))
    items = finished.items
    assert outcome.rated == 4 and outcome.failed == 1
    assert items[2].state is ItemState.FAILED and items[2].error == "HTTP 400: bad image"
    assert provider.attempts["img2"] == 1


def test_the_first_image_goes_alone(tmp_path):
    """Nothing else is sent until the probe has answered."""
    provider = ScriptedProvider(latency=2.0)
    run_virtual(run_job(tmp_path / "k.db", provider, images(10)))
    first = provider.calls[0][1]
    assert all(t - first >= 2.0 for _, t in provider.calls[1:])


def test_all_images_are_in_flight_at_once_by_default(tmp_path):
    """With concurrency 0 and 1 s latency, 200 images take about 2 s (probe + one round)."""
    provider = ScriptedProvider(latency=1.0)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await run_job(tmp_path / "k.db", provider, images(200))
        return loop.time() - start

    assert run_virtual(main()) < 2.6


def test_concurrency_caps_requests_in_flight(tmp_path):
    """--concurrency 10 with 1 s latency: 50 images take at least 5 rounds."""
    provider = ScriptedProvider(latency=1.0)
    options = EngineOptions(concurrency=10, heartbeat_interval=3600, cancel_poll_interval=600)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await run_job(tmp_path / "k.db", provider, images(50), options)
        return loop.time() - start

    assert run_virtual(main()) >= 5.0


def test_cancel_from_the_store_stops_the_job(tmp_path):
    """A cancel flag set in the database (by another process) stops the job within a poll."""
    provider = ScriptedProvider(latency=10.0)
    options = EngineOptions(heartbeat_interval=5, cancel_poll_interval=0.5)

    async def main():
        store_other = None

        def schedule_cancel(processor):
            async def later():
                nonlocal store_other
                await asyncio.sleep(12)
                store_other = await Store.open(tmp_path / "k.db")
                await store_other.request_cancel("batch_1_aaaaaa")

            asyncio.get_running_loop().create_task(later())

        loop = asyncio.get_running_loop()
        start = loop.time()
        outcome, finished = await run_job(
            tmp_path / "k.db", provider, images(30), options, before_run=schedule_cancel
        )
        elapsed = loop.time() - start
        await store_other.close()
        return outcome, elapsed, finished.job

    outcome, elapsed, job = run_virtual(main())
    assert outcome.state is JobState.CANCELLED
    assert elapsed <= 12 + 1.0  # within a poll or two of the flag (time waits for SQLite)
    assert job.status is JobState.CANCELLED and job.processed_images == 1


def test_events_report_retries_and_the_gate(tmp_path):
    """Subscribers see RETRYING with the wait, a GATE hold, and the counts at the end."""
    events: list[ProgressEvent] = []
    provider = ScriptedProvider(script={"img0": [RateLimited(retry_after=4)]})
    run_virtual(run_job(tmp_path / "k.db", provider, images(2), events=events))
    kinds = [e.kind for e in events]
    assert kinds[0] is EventKind.STARTED and kinds[-1] is EventKind.ENDED
    retry = next(e for e in events if e.kind is EventKind.RETRYING)
    assert retry.image_id == "img0" and retry.attempt == 1 and 4 <= retry.wait <= 4.4
    assert any(e.kind is EventKind.GATE and e.wait == 4 for e in events)
    assert events[-1].rated == 2


class BrokenSink:
    """A result sink that takes nothing (a bug, a full disk)."""

    def rated(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("no room")

    failed = retried = rated


def test_results_go_to_the_sink_and_a_broken_one_stops_nothing(tmp_path, caplog):
    """Results reach the store only through the sink, never through the events; a sink that
    fails is logged per result, and the job and its counts go on."""
    events: list[ProgressEvent] = []
    provider = ScriptedProvider(
        script={"img0": [Transient("HTTP 503")], "img1": [PermanentImageError("HTTP 400: bad")]}
    )
    with caplog.at_level(logging.ERROR, logger="kullbatch.admin"):
        outcome, finished = run_virtual(
            run_job(tmp_path / "k.db", provider, images(3), events=events, sink=BrokenSink())
        )
    assert (outcome.state, outcome.rated, outcome.failed) == (JobState.COMPLETED, 2, 1)
    lost = [r.getMessage() for r in caplog.records if "result sink" in r.getMessage()]
    assert len(lost) == 4  # img0's retry and rating, img1's failure, img2's rating
    assert (events[-1].rated, events[-1].failed) == (2, 1)
    assert all(item.state is ItemState.PENDING for item in finished.items)


def test_every_failed_attempt_is_logged_in_the_spec_format(tmp_path, caplog):
    """The admin log reads `[BatchProcessor] Image img0 attempt 1 failed: … Retrying in …ms`."""
    provider = ScriptedProvider(
        script={"img0": [RateLimited("Rate limit exceeded", retry_after=4)]}
    )
    with caplog.at_level(logging.WARNING, logger="kullbatch.admin"):
        run_virtual(run_job(tmp_path / "k.db", provider, images(1)))
    line = next(r.getMessage() for r in caplog.records if "attempt 1" in r.getMessage())
    assert line.startswith(
        "[BatchProcessor] Image img0 attempt 1 failed: Rate limit exceeded. Retrying in 4"
    )
    assert line.endswith("ms")


def test_limit_headers_from_the_probe_pace_the_rest_of_the_job(tmp_path):
    """A 600 RPM limit in the probe's headers: 51 images go out at ~9.5 a second, not at once."""
    provider = ScriptedProvider(limits=RateLimits(requests_limit=600))
    events: list[ProgressEvent] = []
    run_virtual(run_job(tmp_path / "k.db", provider, images(51), events=events))
    times = sorted(t for _, t in provider.calls)
    assert times[-1] - times[1] == pytest.approx(49 / 9.5, rel=0.02)
    assert any(e.kind is EventKind.GATE and e.rate == pytest.approx(570) for e in events)


def test_rpm_option_paces_from_the_first_send(tmp_path):
    """--rpm 120 sends 2 a second even though the provider reports no limits."""
    provider = ScriptedProvider()
    options = EngineOptions(rpm=120, heartbeat_interval=3600, cancel_poll_interval=600)
    run_virtual(run_job(tmp_path / "k.db", provider, images(11), options))
    times = sorted(t for _, t in provider.calls)
    assert times[-1] - times[0] == pytest.approx(5.0, rel=0.01)


def test_photos_held_as_bytes_are_bounded_in_flight(tmp_path):
    """A provider that downloads URL photos gets at most prepared_limit of them at once."""
    provider = DownloadingProvider(latency=1.0)
    options = EngineOptions(prepared_limit=5, heartbeat_interval=3600, cancel_poll_interval=600)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await run_job(tmp_path / "k.db", provider, images(21), options)
        return loop.time() - start

    assert run_virtual(main()) >= 5.0  # probe, then 20 photos 5 at a time


def test_a_hold_stops_photos_already_queued_for_a_bytes_slot(tmp_path):
    """A 10 s hint holds every send, including photos waiting for one of the few bytes slots."""
    provider = DownloadingProvider(script={"img1": [RateLimited(retry_after=10)]}, latency=1.0)
    options = EngineOptions(prepared_limit=2, heartbeat_interval=3600, cancel_poll_interval=600)
    run_virtual(run_job(tmp_path / "k.db", provider, images(12), options))
    limited_at = next(t for i, t in provider.calls if i == "img1") + 1.0  # its 429 came back
    during_hold = [t for _, t in provider.calls if limited_at + 0.01 < t < limited_at + 10 - 0.01]
    assert during_hold == []


def test_concurrency_slots_are_not_held_while_an_image_waits_to_retry(tmp_path):
    """Two failing images retrying for 30 s do not keep the other images out of 2 slots."""
    failing = [Transient("HTTP 503")] * 100
    provider = ScriptedProvider(script={"img1": failing, "img2": failing}, latency=1.0)
    options = EngineOptions(
        concurrency=2, max_retry_time=30, heartbeat_interval=3600, cancel_poll_interval=600
    )
    run_virtual(run_job(tmp_path / "k.db", provider, images(10), options))
    first = provider.calls[0][1]
    others = [t - first for i, t in provider.calls if i not in {"img1", "img2"}]
    assert max(others) < 10


def test_the_retry_window_starts_when_an_image_is_first_sent(tmp_path):
    """Queued behind --rpm 60 for 15 s, an image still gets its 5 s window of retries."""
    provider = ScriptedProvider(script={"img15": [Transient("HTTP 503")]})
    options = EngineOptions(
        rpm=60, max_retry_time=5, heartbeat_interval=3600, cancel_poll_interval=600
    )
    outcome, _ = run_virtual(run_job(tmp_path / "k.db", provider, images(20), options))
    assert outcome.failed == 0 and provider.attempts["img15"] == 2


@pytest.mark.parametrize(
    ("failure", "first_step"),
    [
        (RateLimited("Rate limit exceeded", retry_after=0.0), 1.0),
        (Transient("HTTP 503", retry_after=0.0), 2.0),
        (Transient("HTTP 500", retry_after=-30.0), 2.0),
    ],
    ids=["429-zero", "503-zero", "500-negative"],
)
def test_a_hint_of_zero_or_less_never_waits_less_than_the_schedules_first_step(
    tmp_path, failure, first_step
):
    """retry-after 0, a past date or retryDelay "0s" still waits 1 s (429) or 2 s (5xx) a retry."""
    provider = ScriptedProvider(script={"img0": [failure] * 5})
    outcome, _ = run_virtual(run_job(tmp_path / "k.db", provider, images(1)))
    gaps = retry_gaps(provider, "img0")
    assert outcome.rated == 1 and len(gaps) == 5
    assert min(gaps) >= first_step


def test_a_hint_longer_than_the_window_waits_only_until_the_window_ends(tmp_path, caplog):
    """retry-after 60 with --max-retry-time 5s: the last try is at 5 s, as the log says."""
    limited = RateLimited("Rate limit exceeded", retry_after=60)
    provider = ScriptedProvider(script={"img0": [limited] * 10})
    options = EngineOptions(max_retry_time=5, heartbeat_interval=3600, cancel_poll_interval=600)
    with caplog.at_level(logging.WARNING, logger="kullbatch.admin"):
        outcome, finished = run_virtual(run_job(tmp_path / "k.db", provider, images(3), options))
    times = [t for i, t in provider.calls if i == "img0"]
    assert times[-1] - times[0] == pytest.approx(5, abs=0.01)
    assert outcome.failed == 1 and finished.items[0].attempts == len(times) == 2
    retrying = [r.getMessage() for r in caplog.records if "Retrying in" in r.getMessage()]
    assert retrying == [
        "[BatchProcessor] Image img0 attempt 1 failed: Rate limit exceeded. Retrying in 5000ms"
    ]
    others = [t - times[0] for i, t in provider.calls if i != "img0"]
    assert others and min(others) == pytest.approx(5, abs=0.01)  # the hold lasted the wait


def test_a_hold_on_the_shared_gate_never_keeps_a_photo_past_its_window(tmp_path):
    """Another job's 60 s hold on the account's gate: the photo fails with its 503 by 5 s."""
    provider = ScriptedProvider(script={"img0": [Transient("HTTP 503")] * 10})
    options = EngineOptions(max_retry_time=5, heartbeat_interval=3600, cancel_poll_interval=600)

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time)
        start = loop.time()
        loop.call_later(1.0, gate.hold, 60)  # a job on the same account heard a 60 s hint
        outcome, finished = await run_job(
            tmp_path / "k.db", provider, images(2), options, gate=gate
        )
        await gate.close()
        return start, loop.time(), outcome, finished

    start, ended, outcome, finished = run_virtual(main())
    assert outcome.rated == 1 and outcome.failed == 1
    failed = finished.items[0]
    assert (failed.state, failed.error, failed.attempts) == (ItemState.FAILED, "HTTP 503", 1)
    assert [t - start for i, t in provider.calls if i == "img0"] == [0]
    assert ended - start <= 5


async def test_a_failure_waiting_for_its_retry_holds_no_traceback() -> None:
    """While 10,000 photos wait out an outage, each kept failure would hold its attempt's frames
    (request, socket: 70 KB a photo, 750 MB in 40 s against a refused port): the tracebacks of
    a failure that will be retried, and of its cause, are dropped; its message stays."""
    kept: list[BaseException] = []

    async def attempt(number: int) -> str:
        if number < 3:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as cause:
                raise Transient(f"cannot connect: {cause}") from cause
        return "rated"

    def backoff(error: Exception) -> float:
        kept.append(error)
        return 0.0

    assert await retrying(attempt, backoff) == ("rated", 3)
    assert [str(error) for error in kept] == ["cannot connect: [Errno 111] Connection refused"] * 2
    assert all(error.__traceback__ is None for error in kept)
    assert all(error.__cause__ is not None for error in kept)
    assert all(error.__cause__.__traceback__ is None for error in kept)  # type: ignore[union-attr]
