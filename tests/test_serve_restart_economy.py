"""A served economy job left waiting on its provider batch is polled again by the next `serve`:
the batch already submitted is collected, never submitted a second time."""

from __future__ import annotations

import asyncio
from typing import Any

from fake_batch_openai import FakeOpenAIBatches
from test_economy import economy_job, openai_env

from kullbatch.models import EventKind, JobState
from kullbatch.service import jobs, restart
from kullbatch.web import server
from kullbatch.web.hub import Hub

TOKEN = "economy-restart-token-01"


async def test_a_served_economy_job_is_polled_again_after_a_restart(aiohttp_server, tmp_path):
    fake = await FakeOpenAIBatches(polls_per_state=50).start(aiohttp_server)
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        job = await economy_job(service, tmp_path, 4)
        await restart.mark_served(service, job.id)
        runners: list[Any] = []

        def stop_once_submitted(event: Any) -> None:
            if event.kind is EventKind.BATCH and runners:
                runners[0].interrupt()  # the server stopped while the provider worked

        await service.run(job, subscribers=[stop_once_submitted], on_processor=runners.append)
        stopped = await service.status(job.id)
        assert stopped.status is JobState.SUBMITTED and stopped.processedImages == 0
        assert not await service.is_live(job.id)  # nobody polls it now
        assert fake.batch_creates == 1
    fake.polls_per_state = 1
    async with jobs.Service.open(tmp_path / "k.db", openai_env(fake)) as service:
        app = server.build_app(service, Hub(TOKEN))
        assert await app[server.API].restart() == [job.id]
        for _ in range(1000):
            status = await service.status(job.id)
            if status.status is JobState.COMPLETED:
                break
            await asyncio.sleep(0.02)
        await app[server.API].stop()
    assert status.status is JobState.COMPLETED and status.processedImages == 4
    assert fake.batch_creates == 1 and fake.per_photo_requests() == 0
