"""Whose jobs are whose, and which jobs `serve` was running: the queries of serve's users and
restarts (batch_jobs.user_id, batch_jobs.served)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kullbatch.models import CANCELLABLE_STATES
from kullbatch.store.rows import JobRow, job_row
from kullbatch.store.sql import run

if TYPE_CHECKING:
    import aiosqlite

# the states a job `serve` ran can be left in when the server stops or dies (not ended)
_UNFINISHED = tuple(sorted(state.value for state in CANCELLABLE_STATES))


class Owners:
    """The owner and `served` queries, on the store's connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def jobs_of(self, user: str, limit: int = 100) -> list[JobRow]:
        """One user's jobs, newest first (`GET /api/batch/jobs` for a user who is no admin)."""
        async with self._db.execute(
            "SELECT * FROM batch_jobs WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (user, limit),
        ) as cur:
            return [job_row(row) for row in await cur.fetchall()]

    async def mark_served(self, job_id: str) -> None:
        """`serve` runs this job: when it stops before the job ends, its next start goes on."""
        await run(self._db, "UPDATE batch_jobs SET served = 1 WHERE id = ?", (job_id,))
        await self._db.commit()

    async def served_unfinished(self) -> list[JobRow]:
        """Jobs `serve` was running that did not end, oldest first: the restart's candidates
        (whether their owner is still alive is the caller's question)."""
        marks = ", ".join("?" * len(_UNFINISHED))
        async with self._db.execute(
            f"SELECT * FROM batch_jobs WHERE served = 1 AND status IN ({marks})"  # noqa: S608 - placeholders only
            " ORDER BY created_at, id",
            _UNFINISHED,
        ) as cur:
            return [job_row(row) for row in await cur.fetchall()]
