"""SQLite storage of jobs and per-image results; the only module that writes SQL.

The store is the engine's result sink (`run.events.ResultSink`: `rated`, `failed`, `retried`);
results reach disk through one writer task that commits every `FLUSH_INTERVAL` seconds in a
single transaction, so 10,000 results cost a handful of fsyncs, and a result the progress bar
counted is durable within a second. A rated image is never updated again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

import aiosqlite

from kullbatch.models import (
    ACTIVE_STATES,
    ImageInput,
    ItemRecord,
    ItemState,
    JobState,
    Mode,
)
from kullbatch.store.batches import BatchRecords, images_in_pages
from kullbatch.store.cache import CacheRecords
from kullbatch.store.comparisons import Comparisons
from kullbatch.store.migrations import migrate
from kullbatch.store.owners import Owners
from kullbatch.store.pages import ITEM_COLUMNS, ItemPages, item_rows
from kullbatch.store.ratings import PhotographerRatings
from kullbatch.store.rows import (
    ItemCounts,
    JobRow,
    NewJob,
    item_record,
    job_row,
    utc_now,
)
from kullbatch.store.sql import run, run_many
from kullbatch.store.tallies import Tallies

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from pathlib import Path

    from kullbatch.models import Answer

admin_log = logging.getLogger("kullbatch.admin")

FLUSH_INTERVAL = 0.25


class Store:
    """One open database; results handed to it (`rated`, ...) are committed by its writer."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # results queued for the writer, as the rows of their UPDATEs
        self._rated: list[tuple[Any, ...]] = []
        self._failed: list[tuple[Any, ...]] = []
        self._retried: list[tuple[Any, ...]] = []
        self._counts: dict[str, tuple[int, int]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()  # the writer and `finish_job` never interleave a flush
        self._closing = False
        self.batches = BatchRecords(db, utc_now)
        self.ratings = PhotographerRatings(db)
        self.cache = CacheRecords(db)
        self.owners = Owners(db)  # serve's users and restarts
        self.tallies = Tallies(db)  # sums for the summary and the cost
        self.comparisons = Comparisons(db, self._flushing)
        self.pages = ItemPages(db)  # paged and counted reads for the steps after a run

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating it and its folder if needed) and migrate; a bad file is closed again."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, timeout=30)
        try:
            db.row_factory = aiosqlite.Row
            await run(db, "PRAGMA journal_mode=WAL")
            await run(db, "PRAGMA synchronous=FULL")
            await run(db, "PRAGMA foreign_keys=ON")
            store = cls(db, path)
            await migrate(db)
        except BaseException:
            await db.close()  # else aiosqlite's thread keeps the process alive
            raise
        return store

    async def close(self) -> None:
        try:
            await self.stop_writer()
        finally:
            await self._db.close()

    # -- jobs ---------------------------------------------------------------------------------

    async def create_job(self, job: NewJob, images: Iterable[ImageInput]) -> int:
        """The job and all its images in one transaction: either all exist, or nothing does."""
        now = utc_now()
        count, rows = item_rows(job.id, images, now)  # made as they are inserted
        await run(
            self._db,
            "INSERT INTO batch_jobs (id, user_id, shoot_id, provider_id, model, status,"
            " total_images, mode, prompt, system_prompt, source, options, created_at,"
            " heartbeat_at, owner_pid, owner_host)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.user_id,
                job.shoot_id,
                job.provider_id,
                job.model,
                JobState.PROCESSING.value,
                count,
                job.mode,
                job.prompt,
                job.system_prompt,
                job.source,
                job.options.model_dump_json(),
                now,
                now,  # live from the start: `status` right after `--quiet` prints the id
                os.getpid(),
                socket.gethostname(),
            ),
        )
        await run_many(
            self._db,
            "INSERT INTO batch_items (job_id, position, image_id, image, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        await self._db.commit()
        return count

    async def get_job(self, job_id: str) -> JobRow | None:
        async with self._db.execute("SELECT * FROM batch_jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else job_row(row)

    async def list_jobs(self, limit: int = 100) -> list[JobRow]:
        async with self._db.execute(
            "SELECT * FROM batch_jobs ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
        ) as cur:
            return [job_row(row) for row in await cur.fetchall()]

    async def claim(self, seen: JobRow) -> bool:
        """This process now runs the job, if nobody took it since `seen` was read.

        A compare-and-swap on the owner, heartbeat and status: of two `resume`s racing for one
        job, one wins and the other is told, so no image is paid for twice; a job cancelled
        since it was read is not run. A cancel flag `seen` already carried is an old one and is
        cleared; one raised since (a `cancel` of the job between its creation, which makes it
        live, and this claim) is kept, for the job's heartbeat to act on: clearing it would lose
        the cancel, and the job would run on.
        """
        now = utc_now()
        cursor = await run(
            self._db,
            "UPDATE batch_jobs SET status = ?, started_at = coalesce(started_at, ?),"
            " heartbeat_at = ?, owner_pid = ?, owner_host = ?,"
            " cancel_requested = CASE WHEN ? THEN 0 ELSE cancel_requested END,"
            " completed_at = NULL, error = NULL"
            " WHERE id = ? AND owner_pid IS ? AND owner_host IS ? AND heartbeat_at IS ?"
            " AND status = ?",
            (
                JobState.PROCESSING.value,
                now,
                now,
                os.getpid(),
                socket.gethostname(),
                seen.cancel_requested,
                seen.id,
                seen.owner_pid,
                seen.owner_host,
                seen.heartbeat_at,
                seen.status.value,  # a job that ended (or was cancelled) since is not run
            ),
        )
        await self._db.commit()
        return cursor.rowcount == 1

    async def beat(self, job_id: str) -> bool:
        """Refresh the heartbeat; returns whether someone asked to cancel the job."""
        await run(
            self._db, "UPDATE batch_jobs SET heartbeat_at = ? WHERE id = ?", (utc_now(), job_id)
        )
        await self._db.commit()
        return await self.cancel_requested(job_id)

    async def cancel_requested(self, job_id: str) -> bool:
        async with self._db.execute(
            "SELECT cancel_requested FROM batch_jobs WHERE id = ?", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        return bool(row and row[0])

    async def request_cancel(self, job_id: str) -> None:
        await run(self._db, "UPDATE batch_jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        await self._db.commit()

    async def finish_job(self, job_id: str, state: JobState, error: str | None = None) -> None:
        """Record how the job ended, after every pending result is on disk."""
        await self.flush()
        completed_at = None if state in ACTIVE_STATES else utc_now()
        await run(
            self._db,
            "UPDATE batch_jobs SET status = :state, error = :error, completed_at = :at,"
            " heartbeat_at = NULL,"
            " processed_images = (SELECT count(*) FROM batch_items"
            "   WHERE job_id = :job AND status = :rated),"
            " failed_images = (SELECT count(*) FROM batch_items"
            "   WHERE job_id = :job AND status = :failed)"
            " WHERE id = :job",
            {
                "state": state,
                "error": error,
                "at": completed_at,
                "job": job_id,
                "rated": ItemState.RATED,
                "failed": ItemState.FAILED,
            },
        )
        await self._db.commit()

    # -- items --------------------------------------------------------------------------------

    async def item_counts(self, job_id: str) -> ItemCounts:
        """How many of the job's images are rated and failed, from the items themselves."""
        async with self._db.execute(
            "SELECT count(*) FILTER (WHERE status = ?),"
            " count(*) FILTER (WHERE status = ?) FROM batch_items WHERE job_id = ?",
            (ItemState.RATED, ItemState.FAILED, job_id),
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return ItemCounts(rated=row[0] or 0, failed=row[1] or 0)

    def iter_unfinished(self, job_id: str, page: int = 1000) -> AsyncIterator[ImageInput]:
        """Images without a stored result, in manifest order, read a page at a time as the
        engine releases them, so a 100,000-photo job never holds every photo at once."""
        return images_in_pages(self._db, job_id, "unfinished", page)

    async def reopen_failed(self, job_id: str) -> None:
        """Failed images become pending again, for a resume that retries them; the job's
        counts follow, so `status` never counts a photo as failed that is waiting again."""
        await run(
            self._db,
            "UPDATE batch_items SET status = ? WHERE job_id = ? AND status = ?",
            (ItemState.PENDING, job_id, ItemState.FAILED),
        )
        await run(
            self._db,
            "UPDATE batch_jobs SET failed_images = 0 WHERE id = ?",
            (job_id,),
        )
        await self._db.commit()

    async def set_budget(self, job_id: str, usd: float | None) -> None:
        """`--budget`: the job's ceiling, for this run and every resume."""
        await run(self._db, "UPDATE batch_jobs SET budget_usd = ? WHERE id = ?", (usd, job_id))
        await self._db.commit()

    async def set_mode(self, job_id: str, mode: Mode) -> None:
        """`resume --mode fast`: the rest of an economy job goes at the list price."""
        await run(self._db, "UPDATE batch_jobs SET mode = ? WHERE id = ?", (mode, job_id))
        await self._db.commit()

    async def items(self, job_id: str) -> list[ItemRecord]:
        async with self._db.execute(
            f"SELECT {ITEM_COLUMNS} FROM batch_items WHERE job_id = ? ORDER BY position",  # noqa: S608
            (job_id,),
        ) as cur:
            return [item_record(row) for row in await cur.fetchall()]

    async def set_groups(self, job_id: str, groups: Iterable[tuple[str, str, bool]]) -> None:
        """The job's bursts, (image id, group, best) each, replacing any grouping before."""
        await run(
            self._db,
            "UPDATE batch_items SET burst_group = NULL, best_in_group = 0 WHERE job_id = ?",
            (job_id,),
        )
        await run_many(
            self._db,
            "UPDATE batch_items SET burst_group = ?, best_in_group = ?"
            " WHERE job_id = ? AND image_id = ?",
            [(group, int(best), job_id, image_id) for image_id, group, best in groups],
        )
        await self._db.commit()

    # -- the result sink and its writer -------------------------------------------------------

    def rated(
        self,
        job_id: str,
        image_id: str,
        answer: Answer,
        *,
        attempt: int,
        provider: str,
        model: str,
        batch_priced: bool = False,
        counts: tuple[int, int],
    ) -> None:
        """Result sink: queue a rated photo; the writer commits it soon."""
        at = utc_now()
        taken = answer.fingerprint
        self._rated.append(
            (
                answer.rating.model_dump_json(),
                answer.usage.input_tokens,
                answer.usage.output_tokens,
                answer.tier or ("batch" if batch_priced else "standard"),
                provider or None,
                model or None,
                attempt,
                None if taken is None else f"{taken.phash:016x}",
                None if taken is None else taken.captured,
                answer.cache_key,
                int(answer.cached),
                at,
                at,
                job_id,
                image_id,
            )
        )
        self._counts[job_id] = counts
        self._wake.set()

    def failed(
        self, job_id: str, image_id: str, error: str, *, attempt: int, counts: tuple[int, int]
    ) -> None:
        """Result sink: queue a photo that failed for good."""
        at = utc_now()
        self._failed.append((error, attempt, at, at, job_id, image_id))
        self._counts[job_id] = counts
        self._wake.set()

    def retried(self, job_id: str, image_id: str, error: str, *, attempt: int) -> None:
        """Result sink: queue the last error of a photo that will be sent again."""
        self._retried.append((error, attempt, utc_now(), job_id, image_id))
        self._wake.set()

    def start_writer(self) -> None:
        if self._writer is None:
            self._closing = False
            self._writer = asyncio.create_task(self._write_loop(), name="kullbatch-store-writer")

    async def stop_writer(self) -> None:
        if self._writer is not None:
            self._closing = True
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self.flush()

    async def _write_loop(self) -> None:
        """Sleep while idle; once something is queued, gather for a moment and commit it."""
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if not self._closing:
                await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except Exception:  # e.g. "database is locked": the batch stays queued, try again
                admin_log.exception("kullbatch: could not write results; retrying")
                self._wake.set()
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        """Commit everything queued so far in one transaction; on failure, keep it queued.

        One flush at a time: two on one connection would mix their statements and commits."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        if not (self._rated or self._failed or self._retried):
            return
        rated, failed, retried = self._rated, self._failed, self._retried
        self._rated, self._failed, self._retried = [], [], []
        counts, self._counts = self._counts, {}
        try:
            await self._write(rated, failed, retried, counts)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db.rollback()
            self._rated[:0] = rated
            self._failed[:0] = failed
            self._retried[:0] = retried
            self._counts = {**counts, **self._counts}
            raise

    async def _write(
        self,
        rated: list[tuple[Any, ...]],
        failed: list[tuple[Any, ...]],
        retried: list[tuple[Any, ...]],
        counts: dict[str, tuple[int, int]],
    ) -> None:
        done, gave_up, waiting = ItemState.RATED, ItemState.FAILED, ItemState.PENDING
        await run_many(
            self._db,
            "UPDATE batch_items SET status = ?, result = ?, input_tokens = ?,"
            " output_tokens = ?, pricing = ?, provider = ?, model = ?, attempts = ?,"
            " phash = ?, captured = ?, cache_key = coalesce(?, cache_key), cached = ?,"
            " last_error = NULL, updated_at = ?, completed_at = ?"
            " WHERE job_id = ? AND image_id = ? AND status != ?",
            [(done, *row, done) for row in rated],
        )
        await run_many(
            self._db,
            "UPDATE batch_items SET status = ?, last_error = ?, attempts = ?,"
            " updated_at = ?, completed_at = ? WHERE job_id = ? AND image_id = ?"
            " AND status != ?",
            [(gave_up, *row, done) for row in failed],
        )
        await run_many(
            self._db,
            "UPDATE batch_items SET last_error = ?, attempts = ?, updated_at = ?"
            " WHERE job_id = ? AND image_id = ? AND status = ?",
            [(*row, waiting) for row in retried],
        )
        await run_many(
            self._db,
            "UPDATE batch_jobs SET processed_images = ?, failed_images = ? WHERE id = ?",
            [(r, f, job_id) for job_id, (r, f) in counts.items()],
        )
        await self._db.commit()
