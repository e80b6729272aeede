"""Burst comparisons' records: each frame's rank and the reason, and what the requests cost.

A burst's verdict (`group_rank`, `group_reason`, `best_in_group` on its frames) is written in
one transaction with the tokens its requests used, so a comparison is never paid for without
being kept, nor kept without being counted. A burst whose frames carry a rank is done: a
`resume` regroups the shoot and re-applies the stored verdict (`apply_best`) instead of asking
again.

The comparisons' tokens are not any one photo's, so they are kept with the job, in its
`options` JSON under `comparisonUsage` (one entry per provider and model: requests, input and
output tokens), until the schema gives them a table of their own. `JobOptions` ignores the key.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from kullbatch.pricing.prices import RatedUsage
from kullbatch.store.sql import run, run_many

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import aiosqlite

    from kullbatch.models import Usage

USAGE_KEY = "comparisonUsage"


class Comparisons:
    """The store's comparison records (`Store.comparisons`)."""

    def __init__(self, db: aiosqlite.Connection, lock: asyncio.Lock | None = None) -> None:
        self._db = db
        # the store's flush lock: a verdict's statements and commit never interleave with the
        # writer's, nor with another verdict's (the usage is read, added to and written back)
        self._lock = lock or asyncio.Lock()

    async def record(
        self,
        job_id: str,
        ranks: Mapping[str, int | None],
        reason: str | None,
        best: str | None,
        spent: tuple[str, str, int, Usage] | None = None,
    ) -> None:
        """A burst's verdict: each frame's rank (None: not compared), the reason on every
        frame, `best` as the burst's pick (None: the pick stays), and `spent` = (provider,
        model, requests, tokens) added to the job's comparison usage; one transaction."""
        async with self._lock:
            await self._record(job_id, ranks, reason, best, spent)

    async def _record(
        self,
        job_id: str,
        ranks: Mapping[str, int | None],
        reason: str | None,
        best: str | None,
        spent: tuple[str, str, int, Usage] | None,
    ) -> None:
        if best is not None:
            await run_many(
                self._db,
                "UPDATE batch_items SET group_rank = ?, group_reason = ?, best_in_group = ?"
                " WHERE job_id = ? AND image_id = ?",
                [(rank, reason, int(key == best), job_id, key) for key, rank in ranks.items()],
            )
        if spent is not None:
            await self._add_usage(job_id, *spent)
        await self._db.commit()

    async def apply_best(self, job_id: str, keys: Sequence[str], best: str) -> None:
        """A burst compared before (a resume regrouped it): its stored pick is its best."""
        async with self._lock:
            await self._apply_best(job_id, keys, best)

    async def _apply_best(self, job_id: str, keys: Sequence[str], best: str) -> None:
        await run_many(
            self._db,
            "UPDATE batch_items SET best_in_group = ? WHERE job_id = ? AND image_id = ?",
            [(int(key == best), job_id, key) for key in keys],
        )
        await self._db.commit()

    async def clear_ungrouped(self, job_id: str) -> None:
        """Frames no longer in any burst (a regrouping) lose an old comparison's rank."""
        async with self._lock:
            await self._clear_ungrouped(job_id)

    async def _clear_ungrouped(self, job_id: str) -> None:
        await run(
            self._db,
            "UPDATE batch_items SET group_rank = NULL, group_reason = NULL"
            " WHERE job_id = ? AND burst_group IS NULL AND group_rank IS NOT NULL",
            (job_id,),
        )
        await self._db.commit()

    async def _add_usage(
        self, job_id: str, provider: str, model: str, requests: int, usage: Usage
    ) -> None:
        async with self._db.execute(
            "SELECT options FROM batch_jobs WHERE id = ?", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return
        options: dict[str, Any] = json.loads(row[0] or "{}")
        entries: list[dict[str, Any]] = options.get(USAGE_KEY) or []
        entry = next(
            (e for e in entries if e.get("provider") == provider and e.get("model") == model),
            None,
        )
        if entry is None:
            entry = {"provider": provider, "model": model, "requests": 0}
            entry |= {"inputTokens": 0, "outputTokens": 0}
            entries.append(entry)
        entry["requests"] += requests
        entry["inputTokens"] += usage.input_tokens
        entry["outputTokens"] += usage.output_tokens
        options[USAGE_KEY] = entries
        await run(
            self._db,
            "UPDATE batch_jobs SET options = ? WHERE id = ?",
            (json.dumps(options, separators=(",", ":")), job_id),
        )

    async def usage(self, job_id: str) -> list[RatedUsage]:
        """The comparisons' tokens, one group per provider and model (at the list price: they
        are sent in fast mode), to add to the photos' (`Store.usage`) for the job's cost."""
        async with self._db.execute(
            "SELECT options FROM batch_jobs WHERE id = ?", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        options = json.loads(row[0] or "{}") if row is not None else {}
        return [
            RatedUsage(
                e["provider"], e["model"], "standard", 0, e["inputTokens"], e["outputTokens"]
            )
            for e in options.get(USAGE_KEY) or []
        ]

    async def uncompared(self, job_id: str) -> int:
        """Bursts of the job none of whose frames has a rank (failed, or never reached)."""
        async with self._db.execute(
            "SELECT count(*) FROM (SELECT burst_group FROM batch_items"
            " WHERE job_id = ? AND burst_group IS NOT NULL"
            " GROUP BY burst_group HAVING count(group_rank) = 0)",
            (job_id,),
        ) as cur:
            row = await cur.fetchone()
        return row[0] if row else 0

    async def requests(self, job_id: str) -> int:
        """How many comparison requests the job has made."""
        async with self._db.execute(
            "SELECT options FROM batch_jobs WHERE id = ?", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        options = json.loads(row[0] or "{}") if row is not None else {}
        return sum(int(e.get("requests", 0)) for e in options.get(USAGE_KEY) or [])
