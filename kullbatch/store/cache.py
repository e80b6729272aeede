"""The result cache's reads: a rating already stored under a cache key, found by its index.

Every rated photo of a local file is stored with its `cache_key` (`run.cache.cache_key`: the
file's SHA-256, provider, model, max edge and prompt); `batch_items_by_cache_key` (a partial
index over the rows that have one) makes finding it one index probe, however many photos the
database holds. Only rated photos are sources: a failed one is never reused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kullbatch.models import Answer, Fingerprint, ItemState, Rating
from kullbatch.store.sql import run_many

if TYPE_CHECKING:
    from collections.abc import Iterable

    import aiosqlite

__all__ = ["LOOKUP_SQL", "CacheRecords"]

LOOKUP_SQL = (
    "SELECT result, phash, captured FROM batch_items"
    " WHERE cache_key = ? AND status = ? AND result IS NOT NULL LIMIT 1"
)
_MANY_SQL = "SELECT cache_key, result, phash, captured FROM batch_items"
_CHUNK = 500  # keys per query of `find_many`, under SQLite's bound-parameter limit


class CacheRecords:
    """Reads the cache columns of `batch_items` (the store's writer writes them)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def find(self, key: str) -> Answer | None:
        """The stored answer under `key`, as a free copy (`cached`, zero tokens); None when no
        rated photo has that key."""
        async with self._db.execute(LOOKUP_SQL, (key, ItemState.RATED)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _copy(key, row)

    async def find_many(self, keys: Iterable[str]) -> dict[str, Answer]:
        """The stored answers of those `keys` that have one, a few hundred keys a query."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Answer] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))  # placeholders only: the keys are bound
            sql = f"{_MANY_SQL} WHERE cache_key IN ({marks}) AND status = ?"
            async with self._db.execute(sql, (*chunk, ItemState.RATED)) as cursor:
                for row in await cursor.fetchall():
                    found.setdefault(row[0], _copy(row[0], row[1:]))
        return found

    async def remember(self, job_id: str, keys: Iterable[tuple[str, str]]) -> None:
        """Photos' keys (image id, key) before their answers exist (economy mode's batches):
        found only once the photo is rated; the rating keeps a key stored this way."""
        await run_many(
            self._db,
            "UPDATE batch_items SET cache_key = ? WHERE job_id = ? AND image_id = ?",
            [(key, job_id, image_id) for image_id, key in keys],
        )
        await self._db.commit()

    async def count(self, job_id: str) -> int:
        """How many of the job's photos were copied from the cache."""
        async with self._db.execute(
            "SELECT count(*) FROM batch_items WHERE job_id = ? AND cached = 1", (job_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])


def _copy(key: str, row: Any) -> Answer:
    result, phash, captured = row[0], row[1], row[2]
    fingerprint = None if phash is None else Fingerprint(int(phash, 16), captured)
    return Answer(
        Rating.model_validate_json(result), fingerprint=fingerprint, cache_key=key, cached=True
    )
