"""Cancels under load: many jobs at once, each cancelled with its request in flight or on its way.

A cancel must end a job whenever it lands. Through the API, each round posts a burst of jobs to
one server and cancels them while the server is busy starting the others: all along their start
(each after another pause), or once every job's first request is held in flight by the provider.
Every job must then read `cancelled` through the API within a generous limit, with nothing rated.
A cancel that lands between a job's creation (which makes it live) and its claim cannot be
timed through HTTP; it is made directly through the service. The dashboard's side of a cancel
(a list fetched behind the WebSocket's end message) is in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from kullbatch.manifest import manifest_from_document
from kullbatch.models import JobState
from kullbatch.service import jobs
from kullbatch.web import server
from kullbatch.web.hub import Hub
from tests.test_server import EXAMPLES, TOKEN, Api, HeldProvider, body

ROUNDS = 3
AT_ONCE = 10  # jobs started (and cancelled) together in each round: 30 cancels in all
ENDED_WITHIN = 10.0  # seconds: generous; a cancelled job ends in well under one


@pytest.fixture
async def held(aiohttp_server):
    fake = await HeldProvider().start(aiohttp_server)
    yield fake
    fake.release.set()


@pytest.fixture
def root(tmp_path):
    shutil.copytree(EXAMPLES / "photos", tmp_path / "root" / "photos")
    return tmp_path / "root"


@pytest.fixture
def env(held):
    return {"OPENAI_COMPATIBLE_BASE_URL": str(held.server.make_url("/v1"))}


@pytest.fixture
async def api(tmp_path, aiohttp_client, held, root, env):
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        client = await aiohttp_client(server.build_app(service, Hub(TOKEN), root=root))
        yield Api(client, None)
        held.release.set()
        await client.close()


async def until_ended(api: Api, job_id: str) -> dict:
    """Read the job's status until it has ended; AssertionError if it still runs after
    `ENDED_WITHIN` seconds (a lost cancel: the held job would run for ever)."""
    current = {"status": "unread"}
    try:
        async with asyncio.timeout(ENDED_WITHIN):
            while True:
                status, current = await api.get(f"status/{job_id}")
                assert status == 200, current
                if current["status"] not in {"processing", "submitted"}:
                    return current
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"job {job_id} still reads {current['status']} {ENDED_WITHIN:.0f} s after its "
            "cancel was answered: the cancel was lost"
        ) from None


async def all_cancelled(api: Api, job_ids: list[str]) -> None:
    ended = await asyncio.gather(*(until_ended(api, job_id) for job_id in job_ids))
    assert [e["status"] for e in ended] == ["cancelled"] * len(job_ids), ended
    assert all(e["processedImages"] == 0 for e in ended), ended


async def test_jobs_cancelled_all_along_their_start_all_end_cancelled(api, held):
    """30 jobs, 10 at a time, each cancelled after another pause: every one ends cancelled."""

    async def start_and_cancel(pause: int) -> str:
        status, accepted = await api.post("process", body(2, provider="openai-compatible"))
        assert status == 202, accepted
        job_id = accepted["jobId"]
        for _ in range(pause):  # a few turns of the loop: the cancel lands at another step
            await asyncio.sleep(0)
        status, answer = await api.post(f"cancel/{job_id}")
        assert status == 200, answer
        return job_id

    for _ in range(ROUNDS):
        job_ids = await asyncio.gather(*(start_and_cancel(3 * i) for i in range(AT_ONCE)))
        await all_cancelled(api, job_ids)
    assert not held.release.is_set()  # nothing was ever answered: every job ended by its cancel


async def test_jobs_cancelled_with_their_requests_in_flight_all_end_cancelled(api, held):
    """10 jobs at a time, each with its first request held by the provider, all cancelled at
    once: every one ends cancelled, three rounds in a row."""
    for round_ in range(ROUNDS):
        posted = await asyncio.gather(
            *(api.post("process", body(2, provider="openai-compatible")) for _ in range(AT_ONCE))
        )
        assert [status for status, _ in posted] == [202] * AT_ONCE, posted
        job_ids = [accepted["jobId"] for _, accepted in posted]
        async with asyncio.timeout(ENDED_WITHIN):
            await held.until_asked((round_ + 1) * AT_ONCE)  # every first request is out, held
        answers = await asyncio.gather(*(api.post(f"cancel/{job_id}") for job_id in job_ids))
        assert [status for status, _ in answers] == [200] * AT_ONCE, answers
        await all_cancelled(api, job_ids)
    assert not held.release.is_set()


async def test_a_cancel_between_creation_and_claim_stops_the_job_before_it_sends(
    tmp_path, held, root, env
):
    """A job is live from its creation (`process --quiet` has printed its id) but not yet
    claimed: a `cancel` then raises the database's flag, the claim keeps it, and the job ends
    cancelled without sending a request (the claim used to clear the flag: the job ran on)."""
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        manifest = manifest_from_document(body(2, provider="openai-compatible"), base=root)
        job = await service.create(manifest, jobs.ProcessSettings())
        assert (await service.cancel(job.id)).startswith("cancel requested")
        async with asyncio.timeout(ENDED_WITHIN):  # held for ever if the cancel were lost
            outcome = await service.run(job)
        assert outcome.state is JobState.CANCELLED
        assert (await service.status(job.id)).status is JobState.CANCELLED
    assert held.requests == 0


async def test_the_claim_keeps_a_cancel_asked_since_the_job_was_read_and_clears_an_old_one(
    tmp_path, root, env
):
    """The claim compares what it saw: a flag raised since is a live cancel and stays; a flag
    `seen` already carried (a cancelled job resumed) is an old one and is cleared."""
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        store = service.store
        manifest = manifest_from_document(body(2, provider="openai-compatible"), base=root)
        seen = await service.create(manifest, jobs.ProcessSettings())
        await store.request_cancel(seen.id)
        assert await store.claim(seen)
        assert await store.cancel_requested(seen.id)
        await store.finish_job(seen.id, JobState.CANCELLED, "cancelled by the user")
        resumed = await store.get_job(seen.id)
        assert resumed is not None and resumed.cancel_requested
        assert await store.claim(resumed)
        assert not await store.cancel_requested(seen.id)


async def test_a_job_cancelled_since_it_was_read_is_not_claimed(tmp_path, root, env):
    """A `resume` reads an interrupted job; before it claims it, a `cancel` (nobody runs the
    job, so it is marked cancelled at once, its owner and heartbeat untouched): the claim
    compares the status it saw too, and the cancelled job is not run."""
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        store = service.store
        manifest = manifest_from_document(body(2, provider="openai-compatible"), base=root)
        job = await service.create(manifest, jobs.ProcessSettings())
        await store.finish_job(job.id, JobState.INTERRUPTED, "interrupted (Ctrl-C)")
        seen = await store.get_job(job.id)
        assert seen is not None and seen.status is JobState.INTERRUPTED
        assert (await service.cancel(job.id)) == f"job {job.id} cancelled"
        assert not await store.claim(seen)
        assert (await service.status(job.id)).status is JobState.CANCELLED
