"""Economy mode never pays twice for a photo: a batch the provider made but kullbatch never
recorded (its answer lost, or the process killed right after) is found, not made again, and
`cancel` cancels what exists without making anything new."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from fake_batch_anthropic import FakeAnthropicBatches
from fake_batch_openai import FakeOpenAIBatches
from test_batch_anthropic import create, lines
from test_economy import anthropic_env, economy_job, openai_env, stale

from kullbatch.models import JobState
from kullbatch.providers.batch.anthropic import AnthropicBatchClient
from kullbatch.providers.batch.openai import OpenAIBatchClient
from kullbatch.run.retry import RetryPolicy
from kullbatch.service import jobs


@pytest.fixture
def no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait before a retry is the policy's business, tested on its own: none here."""
    monkeypatch.setattr(RetryPolicy, "next_wait", lambda *_: 0.0)


def killed(monkeypatch: pytest.MonkeyPatch, client: type, name: str, *, sent: bool = True) -> None:
    """The process dies at its first call of the batch client's method `name`: right after
    the provider answered it (`sent`), or just before it was sent."""
    real = getattr(client, name)
    calls = {"n": 0}

    async def then_die(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:
            return await real(*args, **kwargs)
        if sent:
            await real(*args, **kwargs)
        raise KeyboardInterrupt  # kill -9: nothing after this point happens

    monkeypatch.setattr(client, name, then_die)


@pytest.mark.parametrize("lost", ["answer", "process"])
async def test_an_anthropic_batch_made_but_never_recorded_is_found_not_made_again(
    aiohttp_server, tmp_path, monkeypatch, no_retry_wait, lost
):
    """A lost create answer, or a kill after it: the batch is found and adopted, made once."""
    fake = await FakeAnthropicBatches(lost_creates=1 if lost == "answer" else 0).start(
        aiohttp_server
    )
    if lost == "process":
        killed(monkeypatch, AnthropicBatchClient, "create")
    async with jobs.Service.open(tmp_path / "k.db", anthropic_env(fake)) as service:
        job = await economy_job(service, tmp_path, 4, provider="anthropic")
        if lost == "process":
            with pytest.raises(KeyboardInterrupt):
                await service.run(job)
            await stale(service, job.id)
            job = await service.prepare_resume(job.id)
        finished = await service.run(job)
        records = await service.store.batches.of_job(job.id)
    assert finished.state is JobState.COMPLETED and finished.rated == 4
    assert fake.batch_creates == 1 and fake.per_photo_requests() == 0
    assert [r.batch_id for r in records] == list(fake.batches)


async def test_a_batch_recorded_by_another_job_is_not_taken_for_the_lost_one(
    aiohttp_server, tmp_path, no_retry_wait
):
    """Another job's recorded batch of the same size is not taken for this job's lost one."""
    fake = await FakeAnthropicBatches(lost_creates=0).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", anthropic_env(fake)) as service:
        first = await service.run(await economy_job(service, tmp_path, 4, provider="anthropic"))
        fake.lost_creates = 1  # the same photos again: not from the cache, in a batch again
        second = await economy_job(service, tmp_path, 4, provider="anthropic", cache=False)
        finished = await service.run(second)
        records = await service.store.batches.of_job(second.id)
    assert first.state is finished.state is JobState.COMPLETED and finished.rated == 4
    assert fake.batch_creates == 2
    assert [r.batch_id for r in records] == [list(fake.batches)[1]]


async def test_when_two_batches_could_be_the_lost_one_the_job_stops_naming_them(
    aiohttp_server, tmp_path, no_retry_wait
):
    """Two batches could be the lost one: the job stops naming both instead of paying twice."""
    fake = await FakeAnthropicBatches(lost_creates=0).start(aiohttp_server)
    async with aiohttp.ClientSession() as session:
        other = await create(session, fake, lines(4), tmp_path)
    fake.lost_creates = 1
    async with jobs.Service.open(tmp_path / "k.db", anthropic_env(fake)) as service:
        job = await economy_job(service, tmp_path, 4, provider="anthropic")
        outcome = await service.run(job)
        status = await service.status(job.id)
    ours = next(batch_id for batch_id in fake.batches if batch_id != other.id)
    assert outcome.state is JobState.FAILED and status.status is JobState.FAILED
    assert other.id in (outcome.error or "") and ours in (outcome.error or "")
    assert f"kullbatch resume {job.id}" in (outcome.error or "")
    assert fake.batch_creates == 2 and fake.per_photo_requests() == 0


async def test_a_create_refused_outright_leaves_no_batch_waiting(aiohttp_server, tmp_path):
    """A create refused outright (wrong key) fails the job with no batch left under way."""
    fake = await FakeAnthropicBatches(api_key="sk-ant-other").start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", anthropic_env(fake)) as service:
        job = await economy_job(service, tmp_path, 3, provider="anthropic")
        outcome = await service.run(job)
        records = await service.store.batches.of_job(job.id)
    assert outcome.state is JobState.FAILED and "ANTHROPIC_API_KEY" in (outcome.error or "")
    assert records == [] and fake.batch_creates == 0


@pytest.mark.parametrize(
    ("provider", "call", "made"),
    [
        pytest.param("openai", "create", 0, id="openai, killed between upload and create"),
        pytest.param("openai", "create", 1, id="openai, killed right after the create"),
        pytest.param("anthropic", "create", 1, id="anthropic, killed after the create"),
    ],
)
async def test_cancel_of_a_job_killed_before_recording_its_batch_sends_nothing_new(
    aiohttp_server, tmp_path, monkeypatch, provider, call, made
):
    """cancel after a kill mid-submit cancels a batch the provider made, and creates none."""
    if provider == "openai":
        fake: Any = await FakeOpenAIBatches(polls_per_state=5).start(aiohttp_server)
        env, client = openai_env(fake), OpenAIBatchClient
    else:
        fake = await FakeAnthropicBatches(polls_per_state=5).start(aiohttp_server)
        env, client = anthropic_env(fake), AnthropicBatchClient
    killed(monkeypatch, client, call, sent=made == 1)
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await economy_job(service, tmp_path, 4, provider=provider)
        with pytest.raises(KeyboardInterrupt):
            await service.run(job)
        await stale(service, job.id)
        sent_before = len(fake.seen)
        message = await service.cancel(job.id)
        status = await service.status(job.id)
    sent = fake.seen[sent_before:]
    assert status.status is JobState.CANCELLED
    assert f"{made} provider batch(es) cancelled" in message
    assert fake.batch_creates == made
    assert [batch.cancel_requested for batch in fake.batches.values()] == [True] * made
    assert not any(s.method == "POST" and s.path.endswith(("/files", "/batches")) for s in sent)
    assert fake.per_photo_requests() == 0
