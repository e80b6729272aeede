"""`serve` goes on with its jobs after a restart (Ctrl-C, SIGTERM, a crash, a reboot).

Every job `serve` runs is marked `served`; when a server starts on the same database, each
such job that did not end and whose owner no longer beats is run again: `Runtime.run_job`
claims it with a compare-and-swap first (of two servers starting at once, one runs it, the
other is told `JobTakenError`), only photos without a stored result are sent, and an economy
job's open provider batches are polled again (photos of batches that ended without them go
into new ones, as `resume` does). Photos that failed stay failed: a restart is not a retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kullbatch.models import Mode

if TYPE_CHECKING:
    from kullbatch.service.jobs import Service
    from kullbatch.store.rows import JobRow


async def jobs_to_restart(service: Service) -> list[JobRow]:
    """Jobs a server was running when it stopped and nobody runs now, oldest first."""
    return [job for job in await service.store.owners.served_unfinished() if not job.is_live()]


async def prepare_restart(service: Service, job: JobRow) -> JobRow:
    """Ready an economy job to go on: photos of its ended batches go into new ones."""
    if job.mode is Mode.ECONOMY:
        await service.store.batches.release_ended(job.id)
    return job


async def mark_served(service: Service, job_id: str) -> None:
    """This server runs the job: if it stops first, its next start goes on with it."""
    await service.store.owners.mark_served(job_id)
