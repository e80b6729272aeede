"""The photographer's corrections from the dashboard's contact sheet: -1 rejects, 1-5 stars,
0 clears (stored as none). They are the photographer's own data: no run, resume or regrouping
writes them, and exports carry them as `photographerRating`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kullbatch.errors import NotFoundError

if TYPE_CHECKING:
    from kullbatch.service.jobs import Service


async def set_photographer_rating(
    service: Service, job_id: str, image_id: str, rating: int
) -> int | None:
    """Store the photographer's `rating` (-1..5; 0 clears) of one photo; what is stored now.

    The job is looked up by the caller (the route's first call); a photo the job does not hold
    is a NotFoundError.
    """
    stored = None if rating == 0 else rating
    if not await service.store.ratings.set(job_id, image_id, stored):
        raise NotFoundError(f"job {job_id} has no photo {image_id[:200]!r}")
    return stored
