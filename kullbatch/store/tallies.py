"""Sums over a job's photos computed in SQL: what the summary and the cost need, never the
whole job in memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kullbatch.pricing.prices import RatedUsage

if TYPE_CHECKING:
    import aiosqlite


class Tallies:
    """Read-only sums over one database's photos."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def usage(self, job_id: str) -> list[RatedUsage]:
        """The job's stored tokens, summed by who rated the photos and at which pricing."""
        async with self._db.execute(
            "SELECT provider, model, pricing, count(*), sum(input_tokens), sum(output_tokens)"
            " FROM batch_items WHERE job_id = ? GROUP BY provider, model, pricing",
            (job_id,),
        ) as cur:
            return [RatedUsage(*row) for row in await cur.fetchall()]

    async def group_counts(self, job_id: str) -> tuple[int, int]:
        """(moments, duplicates): how many bursts, and how many frames besides their best."""
        async with self._db.execute(
            "SELECT count(DISTINCT burst_group), count(burst_group) - sum(best_in_group)"
            " FROM batch_items WHERE job_id = ?",
            (job_id,),
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return row[0] or 0, row[1] or 0
