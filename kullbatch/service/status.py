"""A job's status object as its record tells it, at a moment: what `status`, the API and
the dashboard show (a processing job whose owner died reads as interrupted)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kullbatch.models import JobState, JobStatus
from kullbatch.run.events import eta_seconds
from kullbatch.store.rows import parse_time

if TYPE_CHECKING:
    from kullbatch.store.rows import JobRow

__all__ = ["status_of"]


def status_of(job: JobRow, now: datetime | None = None) -> JobStatus:
    """The status object; a processing job whose owner died reads as interrupted."""
    now = now or datetime.now(UTC)
    state = job.status
    if state is JobState.PROCESSING and not job.is_live(now):
        state = JobState.INTERRUPTED
    done = job.processed_images + job.failed_images
    total = job.total_images
    return JobStatus(
        jobId=job.id,
        shootId=job.shoot_id,
        providerId=job.provider_id,
        mode=job.mode,
        status=state,
        totalImages=total,
        processedImages=job.processed_images,
        failedImages=job.failed_images,
        progress=round(done / total, 4) if total else 1.0,
        eta=_eta(job, done, now) if state is JobState.PROCESSING else None,
        providerJobId=job.provider_job_id,
        error=job.error
        or (
            "the process running this job stopped; `kullbatch resume` finishes it"
            if state is JobState.INTERRUPTED and job.status is JobState.PROCESSING
            else None
        ),
        createdAt=job.created_at,
        startedAt=job.started_at,
        completedAt=job.completed_at,
    )


def _eta(job: JobRow, done: int, now: datetime) -> int | None:
    started = parse_time(job.started_at)
    elapsed = None if started is None else (now - started).total_seconds()
    return None if elapsed is None else eta_seconds(done, job.total_images, elapsed)
