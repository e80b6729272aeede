"""Economy mode end to end: a job through the local fakes of OpenAI's and Anthropic's batch APIs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from fake_batch_anthropic import KEY as ANTHROPIC_KEY
from fake_batch_anthropic import FakeAnthropicBatches
from fake_batch_openai import KEY as OPENAI_KEY
from fake_batch_openai import FakeOpenAIBatches
from fake_batch_shared import LineError, errors_for, expected_rating
from PIL import Image

from kullbatch.errors import Transient, UsageError
from kullbatch.manifest import manifest_from_document
from kullbatch.models import EventKind, ItemState, JobState, Rating
from kullbatch.providers.batch import openai as batch_openai
from kullbatch.providers.batch.anthropic import AnthropicBatchClient
from kullbatch.providers.batch.common import Limits
from kullbatch.providers.batch.openai import OpenAIBatchClient
from kullbatch.run.economy import EconomyRunner
from kullbatch.run.engine import BatchProcessor
from kullbatch.run.retry import RetryPolicy
from kullbatch.service import jobs
from kullbatch.web import server
from kullbatch.web.hub import Hub


def photos(folder: Path, count: int) -> list[dict[str, str]]:
    """Small JPEGs of different colours, and their manifest entries."""
    entries = []
    for n in range(count):
        path = folder / f"IMG_{n:04d}.jpg"
        Image.new("RGB", (64, 48), (n * 20 % 256, 90, 200 - n * 10 % 200)).save(path)
        entries.append({"id": f"img{n:03d}", "filename": path.name, "path": path.name})
    return entries


def expected_ratings(folder: Path, count: int) -> dict[str, Rating]:
    """What each photo should be rated: read from the photo on disk, as the fakes read it."""
    return {
        f"img{n:03d}": Rating(**expected_rating(folder / f"IMG_{n:04d}.jpg")) for n in range(count)
    }


def openai_env(fake: FakeOpenAIBatches, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "KULLBATCH_ECONOMY_POLL": "0.01",
        **extra,
    }


def anthropic_env(fake: FakeAnthropicBatches) -> dict[str, str]:
    return {
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": fake.base_url,
        "KULLBATCH_ECONOMY_POLL": "0.01",
    }


async def economy_job(
    service: jobs.Service, folder: Path, count: int, provider: str = "openai", **settings: Any
) -> Any:
    document = {"shootId": "economy", "images": photos(folder, count)}
    manifest = manifest_from_document(document, base=folder)
    wanted = jobs.ProcessSettings(provider=provider, mode="economy", **settings)
    return await service.create(manifest, wanted)


def ratings(items: list[Any]) -> dict[str, Rating | None]:
    return {item.image.id: item.rating for item in items}


async def stale(service: jobs.Service, job_id: str) -> None:
    """What a killed process leaves: a heartbeat nobody refreshes any more."""
    db = service.store._db
    await db.execute(
        "UPDATE batch_jobs SET heartbeat_at = ? WHERE id = ?", ("2000-01-01T00:00:00Z", job_id)
    )
    await db.commit()


async def test_an_openai_economy_job_rates_every_photo_through_one_batch(aiohttp_server, tmp_path):
    """Every photo's answer comes back from the batch, matched by custom_id, at batch price."""
    fake = await FakeOpenAIBatches(seed=3).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 12)
        events: list[Any] = []
        outcome = await service.run(job, subscribers=[events.append])
        status = await service.status(job.id)
        _, items = await service.results(job.id)
        async with service.store._db.execute(
            "SELECT DISTINCT pricing FROM batch_items WHERE job_id = ?", (job.id,)
        ) as cur:
            pricing = [row[0] for row in await cur.fetchall()]
    assert outcome.state is JobState.COMPLETED and outcome.rated == 12
    assert ratings(items) == expected_ratings(tmp_path, 12)
    assert fake.per_photo_requests() == 0 and fake.batch_creates == 1 and len(fake.uploads) == 1
    assert pricing == ["batch"]
    assert {(item.provider, item.model, item.pricing) for item in items} == {
        ("openai", "gpt-5.4-mini", "batch")
    }
    assert all(item.fingerprint is not None for item in items)  # hashed as they were encoded
    assert status.status is JobState.COMPLETED and status.providerJobId is not None
    assert [batch.id for batch in status.providerBatches] == [status.providerJobId]
    assert status.providerBatches[0].state == "completed"
    assert any(e.kind is EventKind.BATCH and "completed" in (e.note or "") for e in events)


async def test_a_shoot_over_the_request_limit_is_split_into_several_batches(
    aiohttp_server, tmp_path, monkeypatch
):
    """Ten photos under a three-request limit make four batches of one job."""
    monkeypatch.setattr(OpenAIBatchClient, "limits", Limits(3, batch_openai.MAX_BYTES))
    fake = await FakeOpenAIBatches().start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 10)
        outcome = await service.run(job)
        status = await service.status(job.id)
    assert outcome.rated == 10 and fake.batch_creates == 4
    assert [upload.lines for upload in fake.uploads] == [3, 3, 3, 1]
    assert len(status.providerBatches) == 4 and status.providerJobId.count(",") == 3


async def test_a_shoot_over_the_byte_limit_is_split_by_bytes(aiohttp_server, tmp_path, monkeypatch):
    """Inline photos fill a file long before the request limit: the split follows the bytes."""
    fake = await FakeOpenAIBatches().start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 6)
        line_size = max(len(line) for line in _lines_of(tmp_path, 6))
        monkeypatch.setattr(OpenAIBatchClient, "limits", Limits(50_000, line_size * 2 + 10))
        outcome = await service.run(job)
    assert outcome.rated == 6 and fake.batch_creates == 3
    assert all(upload.size <= line_size * 2 + 10 for upload in fake.uploads)


def _lines_of(folder: Path, count: int) -> list[bytes]:
    """Roughly what one photo's batch line weighs: its JPEG as base64 plus the request."""
    sizes = []
    for n in range(count):
        data = (folder / f"IMG_{n:04d}.jpg").read_bytes()
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buffer, format="JPEG", quality=85, optimize=True)
        sizes.append(b"x" * (len(buffer.getvalue()) * 4 // 3 + 2700))
    return sizes


async def test_errored_and_expired_lines_are_kept_and_the_rest_finish_in_fast_mode(
    aiohttp_server, tmp_path
):
    """A bad image fails alone; photos the expired batch never reached go through fast mode."""
    bad = LineError()  # an image error: permanent for that photo
    fake = await FakeAnthropicBatches(
        answer=errors_for({"img001"}, bad), expire_after=5, seed=1
    ).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", anthropic_env(fake)) as service:
        job = await economy_job(service, tmp_path, 10, provider="anthropic")
        events: list[Any] = []
        outcome = await service.run(job, subscribers=[events.append])
        _, items = await service.results(job.id)
    by_id = {item.image.id: item for item in items}
    assert outcome.state is JobState.COMPLETED and outcome.failed == 1 and outcome.rated == 9
    assert by_id["img001"].state is ItemState.FAILED and "image" in (by_id["img001"].error or "")
    fast = fake.per_photo_requests()
    assert fast == 10 - 5  # the five requests the batch finished are never sent again
    assert any("fast mode" in (e.note or "") for e in events if e.kind is EventKind.BATCH)


async def test_economy_only_leaves_what_the_batch_did_not_finish_failed(aiohttp_server, tmp_path):
    """With --economy-only, expired photos fail with the reason and nothing goes fast."""
    fake = await FakeOpenAIBatches(expire_after=4).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 7, economy_only=True)
        outcome = await service.run(job)
        _, items = await service.results(job.id)
    assert outcome.rated == 4 and outcome.failed == 3 and fake.per_photo_requests() == 0
    failed = [item for item in items if item.state is ItemState.FAILED]
    assert all("expired" in (item.error or "") for item in failed)


async def test_a_batch_failed_at_validation_finishes_in_fast_mode(aiohttp_server, tmp_path):
    """A batch the provider rejects at validation costs nothing; its photos go fast instead."""
    fake = await FakeOpenAIBatches(fail_validation="bad line").start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 4)
        outcome = await service.run(job)
    assert outcome.state is JobState.COMPLETED and outcome.rated == 4
    assert fake.per_photo_requests() == 4


async def test_the_photos_a_batch_left_run_in_fast_mode_where_ctrl_c_reaches_them(
    aiohttp_server, tmp_path
):
    """The runner hands back what its batch did not finish; the runtime runs it through the
    fast engine, which it registers as the job's stoppable: Ctrl-C then stops that run."""
    fake = await FakeOpenAIBatches(expire_after=4).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 8)
        stoppables: list[Any] = []
        ended: list[JobState] = []

        def interrupt_the_fast_run(event: Any) -> None:
            if event.kind is EventKind.ENDED:
                ended.append(event.status)
            elif event.kind is EventKind.RATED and isinstance(stoppables[-1], BatchProcessor):
                stoppables[-1].interrupt()

        outcome = await service.run(
            job, subscribers=[interrupt_the_fast_run], on_processor=stoppables.append
        )
        status = await service.status(job.id)
    assert [type(each) for each in stoppables] == [EconomyRunner, BatchProcessor]
    assert outcome.state is JobState.INTERRUPTED and status.status is JobState.INTERRUPTED
    assert 4 < outcome.rated < 8 and fake.per_photo_requests() < 4
    assert ended == [JobState.INTERRUPTED]  # one end: the fast run's


async def test_a_wrong_key_fails_the_economy_job_with_the_variable_to_set(aiohttp_server, tmp_path):
    """The provider refusing the upload outright stops the job, like fast mode's fatal errors."""
    fake = await FakeOpenAIBatches(api_key="sk-other").start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 3)
        outcome = await service.run(job)
        status = await service.status(job.id)
    assert outcome.state is JobState.FAILED and "OPENAI_API_KEY" in (outcome.error or "")
    assert OPENAI_KEY not in (outcome.error or "")
    assert status.status is JobState.FAILED and fake.batch_creates == 0


async def test_ctrl_c_leaves_the_batch_running_and_resume_collects_it(aiohttp_server, tmp_path):
    """Interrupted after submitting, the job is `submitted`; resume polls the same batch."""
    fake = await FakeOpenAIBatches(polls_per_state=3).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 5)
        runners: list[Any] = []

        def interrupt_once_submitted(event: Any) -> None:
            if event.kind is EventKind.BATCH and "submitted" in (event.note or ""):
                runners[0].interrupt()

        outcome = await service.run(
            job, subscribers=[interrupt_once_submitted], on_processor=runners.append
        )
        waiting = await service.status(job.id)
        again = await service.prepare_resume(job.id)
        finished = await service.run(again)
        status = await service.status(job.id)
    assert outcome.state is JobState.SUBMITTED and waiting.status is JobState.SUBMITTED
    assert waiting.completedAt is None and waiting.providerBatches[0].state == "validating"
    assert finished.state is JobState.COMPLETED and finished.rated == 5
    assert status.status is JobState.COMPLETED
    assert len(fake.uploads) == 1 and fake.batch_creates == 1 and fake.per_photo_requests() == 0


async def test_a_crash_between_upload_and_create_resumes_without_uploading_again(
    aiohttp_server, tmp_path, monkeypatch
):
    """The uploaded file's id was committed first: resume makes its batch from that file."""
    fake = await FakeOpenAIBatches().start(aiohttp_server)
    real_create = OpenAIBatchClient.create
    calls = {"n": 0}

    async def crashing_create(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # the process dies right after the upload
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(OpenAIBatchClient, "create", crashing_create)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 4)
        with pytest.raises(KeyboardInterrupt):
            await service.run(job)
        await stale(service, job.id)
        records = await service.store.batches.of_job(job.id)
        again = await service.prepare_resume(job.id)
        finished = await service.run(again)
    assert [(r.file_id is not None, r.batch_id) for r in records] == [(True, None)]
    assert finished.state is JobState.COMPLETED and finished.rated == 4
    assert len(fake.uploads) == 1 and fake.batch_creates == 1


@pytest.mark.parametrize("lost", [KeyboardInterrupt, "answer"])
async def test_a_batch_created_but_never_recorded_is_found_not_made_again(
    aiohttp_server, tmp_path, monkeypatch, lost
):
    """The provider made the batch, but kullbatch never committed its id: the process died
    right then (resume), or the create's answer was lost (the retry). Either way the batch is
    found by its file among the account's batches: one create, every photo rated once."""
    fake = await FakeOpenAIBatches(earlier_batches=150).start(aiohttp_server)
    real_create = OpenAIBatchClient.create
    calls = {"n": 0}

    async def create_then_lose(*args: Any, **kwargs: Any) -> Any:
        made = await real_create(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            if lost is KeyboardInterrupt:
                raise KeyboardInterrupt  # the process dies before the id is committed
            raise Transient("openai: connection reset by peer")  # the answer never came
        return made

    monkeypatch.setattr(OpenAIBatchClient, "create", create_then_lose)
    # the wait before the retry is the policy's business, tested on its own: none here
    monkeypatch.setattr(RetryPolicy, "next_wait", lambda *_: 0.0)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 4)
        if lost is KeyboardInterrupt:
            with pytest.raises(KeyboardInterrupt):
                await service.run(job)
            await stale(service, job.id)
            job = await service.prepare_resume(job.id)
        finished = await service.run(job)
        records = await service.store.batches.of_job(job.id)
    assert finished.state is JobState.COMPLETED and finished.rated == 4
    assert fake.batch_creates == 1 and len(fake.uploads) == 1 and fake.per_photo_requests() == 0
    assert [r.batch_id for r in records] == list(fake.batches)


async def test_a_crash_after_submission_resumes_without_submitting_again(
    aiohttp_server, tmp_path, monkeypatch
):
    """The batch id was committed the moment it existed: resume only polls it."""
    fake = await FakeAnthropicBatches(polls_per_state=2).start(aiohttp_server)
    real_get = AnthropicBatchClient.get

    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt  # the process dies at its first poll

    async with jobs.Service.open(tmp_path / "k.db", anthropic_env(fake)) as service:
        job = await economy_job(service, tmp_path, 6, provider="anthropic")
        monkeypatch.setattr(AnthropicBatchClient, "get", crash)
        with pytest.raises(KeyboardInterrupt):
            await service.run(job)
        monkeypatch.setattr(AnthropicBatchClient, "get", real_get)
        await stale(service, job.id)
        again = await service.prepare_resume(job.id)
        finished = await service.run(again)
    assert finished.state is JobState.COMPLETED and finished.rated == 6
    assert fake.batch_creates == 1 and fake.per_photo_requests() == 0


async def test_cancel_cancels_the_provider_batch_and_keeps_what_finished(aiohttp_server, tmp_path):
    """`kullbatch cancel` on a waiting job cancels at the provider and stores finished answers."""
    fake = await FakeOpenAIBatches(polls_per_state=4).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 8)
        runners: list[Any] = []

        def interrupt_once_some_done(event: Any) -> None:
            note = event.note or ""
            if (
                event.kind is EventKind.BATCH
                and "in_progress" in note
                and not note.endswith(" 0/8 done")
            ):
                runners[0].interrupt()

        await service.run(job, subscribers=[interrupt_once_some_done], on_processor=runners.append)
        message = await service.cancel(job.id)
        status = await service.status(job.id)
    assert "cancelled" in message
    assert status.status is JobState.CANCELLED
    assert 0 < status.processedImages < 8
    assert fake.per_photo_requests() == 0
    assert any(s.path.endswith("/cancel") for s in fake.seen)


async def test_economy_mode_is_refused_for_a_provider_without_a_batch_api(tmp_path):
    """Gemini, Grok and the others refuse economy mode before anything is written or sent."""
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        manifest = manifest_from_document({"images": photos(tmp_path, 1)}, base=tmp_path)
        with pytest.raises(UsageError, match="openai, anthropic"):
            await service.create(manifest, jobs.ProcessSettings(provider="grok", mode="economy"))
        with pytest.raises(UsageError, match="--economy-only"):
            await service.create(manifest, jobs.ProcessSettings(economy_only=True))
        assert await service.statuses() == []


def test_status_json_of_an_economy_job_lists_the_provider_batches(tmp_path):
    """`providerBatches` is part of the status object only with the batches' own figures."""
    document = json.loads(
        jobs.JobStatus(
            jobId="j", shootId="s", providerId="openai", mode="economy",
            status=JobState.SUBMITTED, totalImages=2, processedImages=0, failedImages=0,
            progress=0.0, eta=None, providerJobId="batch_1", error=None, createdAt="t",
            startedAt=None, completedAt=None,
        ).model_dump_json()
    )  # fmt: skip
    assert document["providerBatches"] == []


async def test_an_economy_job_posted_to_the_server_is_polled_by_it_to_the_end(
    aiohttp_server, aiohttp_client, tmp_path
):
    """`POST /api/batch/process` with mode economy: the server submits, polls and stores."""
    fake = await FakeOpenAIBatches().start(aiohttp_server)
    root = tmp_path / "root"
    root.mkdir()
    document = {
        "shootId": "s",
        "images": photos(root, 3),
        "providerId": "openai",
        "mode": "economy",
    }
    auth = {"Authorization": "Bearer tk"}
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        client = await aiohttp_client(server.build_app(service, Hub("tk"), root=root))
        ws = await client.ws_connect("/ws?token=tk")
        response = await client.post("/api/batch/process", json=document, headers=auth)
        accepted = await response.json()
        async for message in ws:
            data = json.loads(message.data)["data"]
            if data["jobId"] == accepted["jobId"] and data["status"] not in {
                "processing",
                "submitted",
            }:
                break
        status = await (
            await client.get(f"/api/batch/status/{accepted['jobId']}", headers=auth)
        ).json()
        await ws.close()
        await client.close()
    assert response.status == 202 and accepted["mode"] == "economy"
    assert data["status"] == "completed" and data["processedCount"] == 3
    assert status["status"] == "completed" and status["providerBatches"][0]["state"] == "completed"
    assert fake.batch_creates == 1 and fake.per_photo_requests() == 0
