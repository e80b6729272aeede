"""After a run: group the job's rated local photos into bursts and mark each burst's best frame.

Each rated photo with a local file is prepared again at the offline rater's analysis size
(`HASH_EDGE`, so a JPEG decodes at a half, a quarter or an eighth of its size: a fraction of the
cost of the photo's own preparation), hashed (`bursts.perceptual_hash`) and measured for focus
(the local rater's `detail`); its capture time comes from its EXIF header. Photos given by URL
are not grouped. The work runs on a few worker threads (Pillow releases the GIL while it
decodes), and the grouping is stored in the job's items, replacing any earlier grouping, so a
`resume` groups the whole shoot again.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kullbatch import bursts
from kullbatch.errors import PermanentImageError
from kullbatch.images import encode_file
from kullbatch.models import ItemState
from kullbatch.providers.local import ANALYSIS_EDGE, detail, load_greyscale

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kullbatch.models import ItemRecord
    from kullbatch.store import Store

HASH_EDGE = ANALYSIS_EDGE  # the frame is hashed and measured at the local rater's size


@dataclass(frozen=True, slots=True)
class GroupingOptions:
    """`--no-groups`, `--burst-gap` and `--burst-distance`, as stored with the job."""

    enabled: bool = True
    gap: float = bursts.DEFAULT_GAP
    max_distance: int = bursts.DEFAULT_DISTANCE

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> GroupingOptions:
        stored = options.get("grouping") or {}
        return cls(**{k: v for k, v in stored.items() if k in {"enabled", "gap", "max_distance"}})

    def stored(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "gap": self.gap, "max_distance": self.max_distance}


def frame_of(item: ItemRecord) -> bursts.Frame | None:
    """A rated local photo as grouping sees it; None when its file cannot be read now."""
    assert item.rating is not None
    assert item.image.path is not None
    try:
        grey = load_greyscale(encode_file(item.image.path, HASH_EDGE), item.image.filename)
    except PermanentImageError:
        return None
    return bursts.Frame(
        key=item.image.id,
        position=item.position,
        captured=bursts.capture_time(item.image.path),
        phash=bursts.perceptual_hash(grey),
        stars=item.rating.starRating,
        detail=detail(grey),
    )


def frames_of(items: list[ItemRecord], workers: int | None = None) -> list[bursts.Frame]:
    """Every rated local photo's frame, on `workers` threads (default: one per CPU)."""
    wanted = [i for i in items if i.state is ItemState.RATED and i.image.path is not None]
    if not wanted:
        return []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        return [frame for frame in pool.map(frame_of, wanted) if frame is not None]


async def group_job(store: Store, job_id: str, options: GroupingOptions) -> list[bursts.Burst]:
    """Group the job's rated local photos and store the groups; returns the bursts."""
    items = await store.items(job_id)
    frames = await asyncio.to_thread(frames_of, items)
    found = bursts.group_frames(frames, gap=options.gap, max_distance=options.max_distance)
    await store.set_groups(
        job_id, [(key, burst.group, key == burst.best) for burst in found for key in burst.keys]
    )
    return found
