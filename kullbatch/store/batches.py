"""Economy mode's records: each provider batch of a job, and which photos it holds.

A batch is recorded with its photos before anything of it is sent (state `creating`, with its
request count and the time), so that a process killed while the provider makes it leaves a
trace: the next run looks for what the provider made of it before sending those photos again
(and, when it made nothing, `forget` gives them back). The uploaded file's id (`uploaded`) and
the batch's id (`created`) are committed the moment the provider returns them, so a crash
between submitting and polling costs nothing: `resume` finds the batch and never submits (or
pays for) the same photos twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from kullbatch.models import ImageInput, ItemState, JobState
from kullbatch.store.sql import run, run_many

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection, Mapping

    import aiosqlite


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One provider batch as last seen."""

    id: int
    provider: str
    file_id: str | None
    batch_id: str | None
    state: str
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    requests: int = 0
    bytes: int = 0
    fetched: bool = False
    created_at: str = ""  # when it was recorded, just before the provider was asked to make it


class BatchRecords:
    """Reads and writes `provider_batches` and the batch columns of `batch_items`."""

    def __init__(self, db: aiosqlite.Connection, now: Callable[[], str]) -> None:
        self._db = db
        self._now = now  # the store's clock format, one for the whole database

    async def record(
        self,
        job_id: str,
        provider: str,
        custom_ids: Mapping[str, str],
        *,
        file_id: str | None,
        batch_id: str | None,
        state: str,
        size: int,
    ) -> int:
        """A batch the provider now knows (an uploaded file, or a created batch) and its
        photos (custom_id -> image id), in one transaction."""
        now = self._now()
        cursor = await run(
            self._db,
            "INSERT INTO provider_batches (job_id, provider, file_id, batch_id, state, requests,"
            " bytes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, provider, file_id, batch_id, state, len(custom_ids), size, now, now),
        )
        row_id = cursor.lastrowid
        assert row_id is not None
        await run_many(
            self._db,
            "UPDATE batch_items SET custom_id = ?, provider_batch = ?"
            " WHERE job_id = ? AND image_id = ?",
            [(custom, row_id, job_id, image) for custom, image in custom_ids.items()],
        )
        await self._set_provider_job_id(job_id)
        await self._db.commit()
        return row_id

    async def uploaded(self, row_id: int, file_id: str) -> None:
        """The batch's input file is at the provider: commit its id before making the batch."""
        await run(
            self._db,
            "UPDATE provider_batches SET file_id = ?, state = 'uploaded', updated_at = ?"
            " WHERE id = ?",
            (file_id, self._now(), row_id),
        )
        await self._db.commit()

    async def forget(self, row_id: int, job_id: str) -> None:
        """A batch the provider never made: its photos go back to be sent again."""
        await run(
            self._db,
            "UPDATE batch_items SET custom_id = NULL, provider_batch = NULL"
            " WHERE provider_batch = ?",
            (row_id,),
        )
        await run(self._db, "DELETE FROM provider_batches WHERE id = ?", (row_id,))
        await self._set_provider_job_id(job_id)
        await self._db.commit()

    async def made(self, row_ids: Collection[int]) -> int:
        """How many of these recorded batches the provider made (their id is known)."""
        marks = ",".join("?" * len(row_ids))
        async with self._db.execute(
            f"SELECT count(*) FROM provider_batches WHERE id IN ({marks})"  # noqa: S608 - only ?s
            " AND batch_id IS NOT NULL",
            tuple(row_ids),
        ) as cur:
            row = await cur.fetchone()
        return row[0] if row else 0

    async def recorded_batch_ids(self, provider: str) -> set[str]:
        """Every batch id of `provider` this database knows, whichever job it belongs to."""
        async with self._db.execute(
            "SELECT batch_id FROM provider_batches WHERE provider = ? AND batch_id IS NOT NULL",
            (provider,),
        ) as cur:
            return {row[0] for row in await cur.fetchall()}

    async def created(self, row_id: int, job_id: str, batch_id: str, state: str) -> None:
        """The batch made from an uploaded file now exists: commit its id at once."""
        await run(
            self._db,
            "UPDATE provider_batches SET batch_id = ?, state = ?, updated_at = ? WHERE id = ?",
            (batch_id, state, self._now(), row_id),
        )
        await self._set_provider_job_id(job_id)
        await self._db.commit()

    async def _set_provider_job_id(self, job_id: str) -> None:
        """`providerJobId` of the status object: the provider's batch ids, comma-separated."""
        await run(
            self._db,
            "UPDATE batch_jobs SET provider_job_id = (SELECT group_concat(batch_id, ',')"
            " FROM (SELECT batch_id FROM provider_batches WHERE job_id = ?"
            " AND batch_id IS NOT NULL ORDER BY id)) WHERE id = ?",
            (job_id, job_id),
        )

    async def polled(
        self, row_id: int, state: str, counts: Mapping[str, int], error: str | None
    ) -> None:
        await run(
            self._db,
            "UPDATE provider_batches SET state = ?, counts = ?, error = ?, updated_at = ?"
            " WHERE id = ?",
            (state, json.dumps(dict(counts)), error, self._now(), row_id),
        )
        await self._db.commit()

    async def fetched(self, row_id: int) -> None:
        """Every answer of this batch is stored: it is never fetched again."""
        await run(
            self._db,
            "UPDATE provider_batches SET fetched = 1, updated_at = ? WHERE id = ?",
            (self._now(), row_id),
        )
        await self._db.commit()

    async def of_job(self, job_id: str) -> list[BatchRecord]:
        async with self._db.execute(
            "SELECT * FROM provider_batches WHERE job_id = ? ORDER BY id", (job_id,)
        ) as cur:
            return [_record(row) for row in await cur.fetchall()]

    async def custom_ids(self, row_id: int) -> dict[str, str]:
        """custom_id -> image id of the photos in one batch that still have no result."""
        async with self._db.execute(
            "SELECT custom_id, image_id FROM batch_items WHERE provider_batch = ? AND status = ?",
            (row_id, ItemState.PENDING),
        ) as cur:
            return {row[0]: row[1] for row in await cur.fetchall()}

    def unbatched(self, job_id: str, page: int = 500) -> AsyncIterator[ImageInput]:
        """Photos without a result and in no batch, a page at a time: what to submit."""
        return images_in_pages(self._db, job_id, "unbatched", page)

    async def leftovers(self, job_id: str) -> list[ImageInput]:
        """Photos without a result whose batch has ended and been read: fast mode's share."""
        async with self._db.execute(
            "SELECT i.image FROM batch_items i JOIN provider_batches b ON b.id = i.provider_batch"
            " WHERE i.job_id = ? AND i.status = ? AND b.fetched = 1 ORDER BY i.position",
            (job_id, ItemState.PENDING),
        ) as cur:
            return [ImageInput.model_validate_json(row[0]) for row in await cur.fetchall()]

    async def release_ended(self, job_id: str) -> int:
        """A resumed economy job: photos without a result whose batch ended (expired,
        cancelled, errored) go into new batches; their last error stays until a new answer."""
        cursor = await run(
            self._db,
            "UPDATE batch_items SET provider_batch = NULL, custom_id = NULL"
            " WHERE job_id = ? AND status = ? AND provider_batch IN"
            " (SELECT id FROM provider_batches WHERE job_id = ? AND fetched = 1)",
            (job_id, ItemState.PENDING, job_id),
        )
        await self._db.commit()
        return cursor.rowcount

    async def set_state(self, job_id: str, state: JobState) -> None:
        """`submitted` while the provider works; `processing` while leftovers go fast."""
        await run(self._db, "UPDATE batch_jobs SET status = ? WHERE id = ?", (state, job_id))
        await self._db.commit()


def _record(row: Any) -> BatchRecord:
    return BatchRecord(
        id=row["id"],
        provider=row["provider"],
        file_id=row["file_id"],
        batch_id=row["batch_id"],
        state=row["state"],
        counts=json.loads(row["counts"] or "{}"),
        error=row["error"],
        requests=row["requests"],
        bytes=row["bytes"],
        fetched=bool(row["fetched"]),
        created_at=row["created_at"],
    )


# the photos `images_in_pages` can list, by name: whole queries, nothing built from input, each
# with the item state it binds
_PAGE = "SELECT position, image FROM batch_items WHERE job_id = ? AND position > ? AND "
PAGED: dict[str, tuple[str, ItemState]] = {
    "unfinished": (_PAGE + "status != ? ORDER BY position LIMIT ?", ItemState.RATED),
    "unbatched": (
        _PAGE + "status = ? AND provider_batch IS NULL ORDER BY position LIMIT ?",
        ItemState.PENDING,
    ),
}


async def images_in_pages(
    db: aiosqlite.Connection, job_id: str, which: Literal["unfinished", "unbatched"], page: int
) -> AsyncIterator[ImageInput]:
    """A job's `which` images in manifest order, one page of rows at a time; rows that change
    meanwhile are still read once (the page starts after the last position read)."""
    after = -1
    query, state = PAGED[which]
    while True:
        async with db.execute(query, (job_id, after, state, page)) as cur:
            rows = list(await cur.fetchall())
        for row in rows:
            yield ImageInput.model_validate_json(row[1])
        if len(rows) < page:
            return
        after = rows[-1][0]
