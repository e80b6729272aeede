"""An economy job stays alive, stops on Ctrl-C and obeys `cancel` in every state: while it
encodes and uploads, while it retries a batch call, and while it waits between polls.

Most tests run in virtual time (`vtime`): the fake provider lives in the test's own loop, so a
45 s upload or a minute of retried polls takes milliseconds, and the store's clock follows the
loop's, so a heartbeat ages as the job sees time pass. Ctrl-C itself is sent to a real
`kullbatch process` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fake_batch_openai import KEY as OPENAI_KEY
from fake_batch_openai import FakeOpenAIBatches
from test_economy import economy_job

from kullbatch.models import JobState
from kullbatch.providers.batch import openai as batch_openai
from kullbatch.providers.batch.common import Limits
from kullbatch.providers.batch.openai import OpenAIBatchClient
from kullbatch.service import jobs
from kullbatch.store import database as store_module
from tests.app_thread import AppThread
from tests.vtime import run_virtual

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
SHOOT = Path(__file__).parent.parent / "examples" / "shoot.json"


def virtual_now() -> datetime:
    """The wall clock as the job's loop sees it."""
    return EPOCH + timedelta(seconds=asyncio.get_running_loop().time())


@pytest.fixture
def virtual_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store stamps heartbeats (and everything else) with the loop's time."""

    def utc_now() -> str:
        return virtual_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")

    monkeypatch.setattr(store_module, "utc_now", utc_now)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """The fake on 127.0.0.1 in the running (virtual) loop; yields its root URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def env_for(url: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{url}/v1"}


@dataclass(frozen=True)
class Seen:
    """The job as `status` and `resume` saw it at one moment."""

    at: float
    status: JobState
    live: bool


async def watch(service: jobs.Service, job_id: str, seen: list[Seen]) -> None:
    """Look at the job every virtual second, as a user running `status` would."""
    started = asyncio.get_running_loop().time()
    while True:
        await asyncio.sleep(1.0)
        job = await service.store.get_job(job_id)
        assert job is not None
        now = virtual_now()
        at = asyncio.get_running_loop().time() - started
        seen.append(Seen(at, jobs.status_of(job, now).status, job.is_live(now)))


async def when(predicate: Any) -> None:
    """Wait (in virtual time) until `predicate()` holds."""
    while not predicate():
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    "slow",
    [
        pytest.param({"upload_delays": [45.0]}, id="an upload taking 45 s"),
        pytest.param({"failing_polls": 5}, id="five polls answering 500"),
    ],
)
def test_an_economy_job_reads_live_all_through_a_slow_upload_or_retried_polls(
    tmp_path, virtual_wall_clock, slow
):
    """The heartbeat beats while the job uploads and retries, not only between polls."""

    async def main() -> tuple[Any, list[Seen], FakeOpenAIBatches]:
        fake = FakeOpenAIBatches(**slow)
        async with (
            serving(fake.app()) as url,
            jobs.Service.open(tmp_path / "k.db", env_for(url)) as service,
        ):
            job = await economy_job(service, tmp_path, 4)
            seen: list[Seen] = []
            watcher = asyncio.create_task(watch(service, job.id, seen))
            try:
                outcome = await service.run(job)
            finally:
                watcher.cancel()
        return outcome, seen, fake

    outcome, seen, fake = run_virtual(main())
    assert outcome.state is JobState.COMPLETED and outcome.rated == 4
    assert seen[-1].at > 40  # longer than a heartbeat stays fresh (30 s)
    running = [s for s in seen if s.status in {JobState.PROCESSING, JobState.SUBMITTED}]
    assert [s for s in seen if s.status is JobState.INTERRUPTED] == []
    assert len(running) == len(seen) and all(s.live for s in running)
    assert len(fake.uploads) == 1 and fake.batch_creates == 1 and fake.per_photo_requests() == 0


def test_a_cancel_during_a_slow_upload_sends_no_further_batch_and_cancels_those_made(
    tmp_path, virtual_wall_clock, monkeypatch
):
    """Cancel while the 2nd of 3 batches uploads: the 1st is cancelled, no more are made."""
    monkeypatch.setattr(OpenAIBatchClient, "limits", Limits(3, batch_openai.MAX_BYTES))

    async def main() -> tuple[Any, FakeOpenAIBatches]:
        fake = FakeOpenAIBatches(upload_delays=[0.0, 45.0], polls_per_state=3)
        async with (
            serving(fake.app()) as url,
            jobs.Service.open(tmp_path / "k.db", env_for(url)) as service,
        ):
            job = await economy_job(service, tmp_path, 7)

            async def cancel_during_second_upload() -> None:
                await when(lambda: fake.uploads_started == 2)
                await asyncio.sleep(10.0)
                await service.store.request_cancel(job.id)  # `kullbatch cancel` on a live job

            canceller = asyncio.create_task(cancel_during_second_upload())
            outcome = await service.run(job)
            await canceller
        return outcome, fake

    outcome, fake = run_virtual(main())
    assert outcome.state is JobState.CANCELLED
    assert fake.batch_creates == 1
    assert [batch.cancel_requested for batch in fake.batches.values()] == [True]
    assert fake.per_photo_requests() == 0


def test_a_cancelled_job_reads_live_until_what_its_batch_finished_is_stored(
    tmp_path, virtual_wall_clock
):
    """After a cancel the job polls (through 500s) to store what finished, and reads live."""

    async def main() -> tuple[Any, list[Seen], FakeOpenAIBatches]:
        fake = FakeOpenAIBatches(polls_per_state=1000)
        async with (
            serving(fake.app()) as url,
            jobs.Service.open(tmp_path / "k.db", env_for(url)) as service,
        ):
            job = await economy_job(service, tmp_path, 4)
            seen: list[Seen] = []
            watcher = asyncio.create_task(watch(service, job.id, seen))

            async def cancel_while_the_provider_works() -> None:
                await when(lambda: fake.batches)
                await asyncio.sleep(10.0)
                fake.failing_polls = fake.polls_failed + 5
                await service.store.request_cancel(job.id)

            canceller = asyncio.create_task(cancel_while_the_provider_works())
            try:
                outcome = await service.run(job)
            finally:
                watcher.cancel()
            await canceller
        return outcome, seen, fake

    outcome, seen, fake = run_virtual(main())
    assert outcome.state is JobState.CANCELLED
    assert seen[-1].at > 10 + 40 and fake.polls_failed == 5
    assert [s for s in seen if not s.live] == []
    assert [batch.cancel_requested for batch in fake.batches.values()] == [True]


def test_ctrl_c_abandons_an_upload_under_way(tmp_path, virtual_wall_clock):
    """Ctrl-C five seconds into a 45 s upload ends the run while the upload is still held."""

    async def main() -> tuple[Any, int, FakeOpenAIBatches]:
        fake = FakeOpenAIBatches(upload_delays=[45.0])
        async with (
            serving(fake.app()) as url,
            jobs.Service.open(tmp_path / "k.db", env_for(url)) as service,
        ):
            job = await economy_job(service, tmp_path, 4)
            runners: list[Any] = []

            async def interrupt_during_upload() -> None:
                await when(lambda: fake.uploads_started == 1)
                await asyncio.sleep(5.0)
                runners[0].interrupt()

            interrupter = asyncio.create_task(interrupt_during_upload())
            outcome = await service.run(job, on_processor=runners.append)
            finished_uploads = len(fake.uploads)  # the fake still holds the upload's answer
            await interrupter
        return outcome, finished_uploads, fake

    outcome, finished_uploads, fake = run_virtual(main())
    assert outcome.state is JobState.INTERRUPTED
    assert finished_uploads == 0 and fake.batch_creates == 0


def test_ctrl_c_stops_a_batch_call_being_retried(tmp_path, virtual_wall_clock):
    """Polls answering 500: Ctrl-C ends the run at once, the batch left running for resume."""

    async def main() -> tuple[Any, int]:
        fake = FakeOpenAIBatches(failing_polls=1_000_000)
        async with (
            serving(fake.app()) as url,
            jobs.Service.open(tmp_path / "k.db", env_for(url)) as service,
        ):
            job = await economy_job(service, tmp_path, 3)
            runners: list[Any] = []

            async def interrupt_while_retrying() -> None:
                await when(lambda: fake.polls_failed == 2)
                runners[0].interrupt()

            interrupter = asyncio.create_task(interrupt_while_retrying())
            outcome = await service.run(job, on_processor=runners.append)
            await interrupter
        return outcome, fake.polls_failed

    outcome, polls = run_virtual(main())
    assert outcome.state is JobState.SUBMITTED and polls == 2


# --- Ctrl-C on a real process ---------------------------------------------------------------


def polls(fake: FakeOpenAIBatches) -> int:
    return sum(1 for s in fake.seen if s.method == "GET" and "/batches/" in s.path)


@pytest.mark.parametrize(
    ("knobs", "reached"),
    [
        pytest.param(
            {"upload_delays": [120.0]}, lambda fake: fake.uploads_started >= 1, id="uploading"
        ),
        pytest.param(
            {"failing_polls": 1_000_000},
            lambda fake: fake.polls_failed >= 2,
            id="retrying a poll",
        ),
        pytest.param(
            {"polls_per_state": 1_000_000},
            lambda fake: polls(fake) >= 2,
            id="waiting between polls",
        ),
    ],
)
def test_ctrl_c_ends_an_economy_run_with_exit_130_within_10_s_in_every_state(
    tmp_path, knobs, reached
):
    """SIGINT while uploading, retrying a poll or waiting: exit 130 within the README's 10 s."""
    fake = FakeOpenAIBatches(**knobs)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KULLBATCH")},
        "KULLBATCH_DB": str(tmp_path / "k.db"),
        "KULLBATCH_ECONOMY_POLL": "0.05",
        "OPENAI_API_KEY": OPENAI_KEY,
    }
    with AppThread(fake.app()) as server:
        env["OPENAI_BASE_URL"] = f"{server.url}/v1"
        command = ["process", str(SHOOT), "--provider", "openai", "--mode", "economy", "-q"]
        child = subprocess.Popen(
            [sys.executable, "-m", "kullbatch", *command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not reached(fake):
                assert child.poll() is None and time.monotonic() < deadline, "never got there"
                time.sleep(0.05)
            child.send_signal(signal.SIGINT)
            _, err = child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert child.returncode == 130, err
    assert "Traceback" not in err
