"""A job's photos written as they come, and read back a page at a time (or only counted).

Creating a job inserts each photo's row as it is made, from the manifest's stored JSON. The
steps after a run read a job's items a page at a time, or only count them in SQL.

A 100,000-photo job's items are never all in memory at once: grouping first counts the rated
photos that have a local path (URL photos never form bursts), and reads only those, in
manifest order, `page` rows at a time (keyset paging on the (job, position) index).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kullbatch.manifest import ImageList
from kullbatch.models import ItemState
from kullbatch.store.rows import item_record

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator

    import aiosqlite

    from kullbatch.models import ImageInput, ItemRecord

ITEM_COLUMNS = (  # what `rows.item_record` reads: every read of items selects these
    "position, image, status, attempts, last_error, result, input_tokens, output_tokens,"
    " provider, model, pricing, burst_group, best_in_group, phash, captured,"
    " photographer_rating, cached, group_rank, group_reason"
)
_RATED_LOCAL = "job_id = ? AND status = ? AND json_extract(image, '$.path') IS NOT NULL"
PAGE = 2000


class ItemPages:
    """Paged and counted reads of `batch_items` for the steps after a run."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def rated_local_count(self, job_id: str) -> int:
        """How many of the job's photos are rated and have a local path (can be grouped)."""
        async with self._db.execute(
            f"SELECT count(*) FROM batch_items WHERE {_RATED_LOCAL}",  # noqa: S608
            (job_id, ItemState.RATED),
        ) as cur:
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def rated_local(self, job_id: str, page: int = PAGE) -> AsyncIterator[list[ItemRecord]]:
        """The job's rated local photos in manifest order, `page` of them at a time."""
        after = -1
        while True:
            async with self._db.execute(
                f"SELECT {ITEM_COLUMNS} FROM batch_items WHERE {_RATED_LOCAL}"  # noqa: S608
                " AND position > ? ORDER BY position LIMIT ?",
                (job_id, ItemState.RATED, after, page),
            ) as cur:
                rows = list(await cur.fetchall())
            if rows:
                yield [item_record(row) for row in rows]
            if len(rows) < page:
                return
            after = rows[-1]["position"]


def item_rows(
    job_id: str, images: Iterable[ImageInput], now: str
) -> tuple[int, Iterator[tuple[Any, ...]]]:
    """How many photos, and the rows of batch_items to insert for them, made as they are
    inserted: a manifest's `ImageList` gives its stored JSON as it is (no model per photo)."""
    if isinstance(images, ImageList):
        stored = enumerate(images.stored())
        return len(images), ((job_id, at, key, doc, now) for at, (key, doc) in stored)
    rows = [
        (job_id, position, image.id, image.model_dump_json(), now)
        for position, image in enumerate(images)
    ]
    return len(rows), iter(rows)
