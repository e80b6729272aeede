"""`resume` of economy jobs: new batches by default, `--mode fast` on request, counts that add up."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_batch_openai import KEY as OPENAI_KEY
from fake_batch_openai import FakeOpenAIBatches
from test_economy import economy_job, openai_env
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.errors import ConflictError, UsageError
from kullbatch.models import EventKind, ItemState, JobState
from kullbatch.service import jobs


async def cancelled_midway(service: jobs.Service, folder: Path, count: int) -> Any:
    """An economy job whose batch was cancelled at the provider with some photos answered."""
    job = await economy_job(service, folder, count)
    runners: list[Any] = []

    def interrupt_once_some_done(event: Any) -> None:
        note = event.note or ""
        if event.kind is EventKind.BATCH and "in_progress" in note and " 0/" not in note:
            runners[0].interrupt()

    await service.run(job, subscribers=[interrupt_once_some_done], on_processor=runners.append)
    await service.cancel(job.id)
    status = await service.status(job.id)
    assert status.status is JobState.CANCELLED and 0 < status.processedImages < count
    return job


async def test_resuming_a_cancelled_economy_job_sends_the_rest_in_new_batches(
    aiohttp_server, tmp_path
):
    """The photos a cancelled batch left go into a new batch at the batch price, not fast."""
    fake = await FakeOpenAIBatches(polls_per_state=4).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await cancelled_midway(service, tmp_path, 8)
        rated_before = (await service.status(job.id)).processedImages
        resumed = await service.prepare_resume(job.id)
        fake.polls_per_state = 1
        outcome = await service.run(resumed)
        status = await service.status(job.id)
    assert outcome.state is JobState.COMPLETED and outcome.rated == 8
    assert fake.per_photo_requests() == 0 and fake.batch_creates == 2
    second = status.providerBatches[-1]
    assert second.requests == 8 - rated_before and status.mode == "economy"


async def test_resume_mode_fast_sends_a_cancelled_economy_jobs_rest_at_the_list_price(
    aiohttp_server, tmp_path
):
    """Asked for, the rest goes through fast mode; no new batch is made."""
    fake = await FakeOpenAIBatches(polls_per_state=4).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await cancelled_midway(service, tmp_path, 8)
        rated_before = (await service.status(job.id)).processedImages
        resumed = await service.prepare_resume(job.id, "fast")
        outcome = await service.run(resumed)
        status = await service.status(job.id)
    assert outcome.state is JobState.COMPLETED and outcome.rated == 8
    assert fake.batch_creates == 1 and fake.per_photo_requests() == 8 - rated_before
    assert status.mode == "fast"


async def test_resume_mode_fast_is_refused_while_a_provider_batch_is_open(aiohttp_server, tmp_path):
    """A batch still running would answer for photos fast mode also paid for: refused."""
    fake = await FakeOpenAIBatches(polls_per_state=50).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 3)
        runners: list[Any] = []

        def leave(event: Any) -> None:
            if event.kind is EventKind.BATCH and "submitted" in (event.note or ""):
                runners[0].interrupt()

        await service.run(job, subscribers=[leave], on_processor=runners.append)
        with pytest.raises(ConflictError, match=r"batch_\w+.*--mode fast"):
            await service.prepare_resume(job.id, "fast")
        with pytest.raises(UsageError, match="resumes in fast or economy"):
            await service.prepare_resume(job.id, "flex")
    assert fake.per_photo_requests() == 0


async def test_resuming_an_economy_only_job_rebatches_the_expired_photos(aiohttp_server, tmp_path):
    """Expired photos keep the provider's reason until resume puts them in a new batch."""
    fake = await FakeOpenAIBatches(expire_after=4).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 7, economy_only=True)
        await service.run(job)
        resumed = await service.prepare_resume(job.id)
        _, waiting = await service.results(job.id)
        reasons = [i.error for i in waiting if i.state is ItemState.PENDING]
        outcome = await service.run(resumed)
    assert len(reasons) == 3 and all("expired" in (r or "") for r in reasons)
    assert outcome.state is JobState.COMPLETED and outcome.rated == 7 and outcome.failed == 0
    assert fake.batch_creates == 2 and fake.per_photo_requests() == 0


async def test_resume_counts_the_reopened_photos_as_waiting_not_failed(aiohttp_server, tmp_path):
    """After `resume` reopens failed photos (and before they are sent), status adds up."""
    fake = await FakeOpenAIBatches(expire_after=4).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 6, economy_only=True)
        await service.run(job)
        before = await service.status(job.id)
        await service.prepare_resume(job.id)
        after = await service.status(job.id)
    assert before.failedImages == 2
    assert after.failedImages == 0 and after.processedImages == 4 and after.progress < 1


def test_status_watch_follows_a_submitted_job_a_live_process_polls(tmp_path, monkeypatch):
    """`status --watch` waits while the owner polls the provider, and returns when it ends."""
    monkeypatch.setenv("KULLBATCH_DB", str(tmp_path / "k.db"))
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    ended = threading.Event()

    async def submitted_and_owned() -> str:
        async with jobs.Service.open(tmp_path / "k.db", {"OPENAI_API_KEY": OPENAI_KEY}) as service:
            job = await economy_job(service, tmp_path, 2)
            assert await service.store.claim(job)  # this (live) process owns it
            await service.store.batches.set_state(job.id, JobState.SUBMITTED)
            return str(job.id)

    async def finish(job_id: str) -> None:
        async with jobs.Service.open(tmp_path / "k.db", {}) as service:
            await service.store.finish_job(job_id, JobState.COMPLETED)

    job_id = asyncio.run(submitted_and_owned())

    def end_later() -> None:
        time.sleep(1.0)
        ended.set()
        asyncio.run(finish(job_id))

    ender = threading.Thread(target=end_later)
    ender.start()
    result = CliRunner().invoke(app, ["status", job_id, "--watch"], catch_exceptions=False)
    ender.join()
    assert result.exit_code == 0
    assert ended.is_set() and "completed" in result.stdout
