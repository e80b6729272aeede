"""The photographer's own stars on each photo (batch_items.photographer_rating).

-1 rejects, 1-5 are stars, NULL means the photographer has not touched the photo. Only this
module writes the column: a run, a resume or a regrouping updates other columns of the row,
never this one, so a correction made in the browser survives whatever the job does next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kullbatch.store.sql import run

if TYPE_CHECKING:
    import aiosqlite

LOWEST, HIGHEST = -1, 5  # rejected .. five stars; 0 is not stored (it clears)


class PhotographerRatings:
    """Reads and writes the photographer's rating of a job's photos."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def set(self, job_id: str, image_id: str, rating: int | None) -> bool:
        """Store `rating` (None clears it) and commit; False when the job has no such photo."""
        if rating is not None and not LOWEST <= rating <= HIGHEST:
            msg = f"a photographer's rating is {LOWEST}..{HIGHEST} or None, not {rating}"
            raise ValueError(msg)
        ran = await run(
            self._db,
            "UPDATE batch_items SET photographer_rating = ? WHERE job_id = ? AND image_id = ?",
            (rating, job_id, image_id),
        )
        await self._db.commit()
        return ran.rowcount == 1
