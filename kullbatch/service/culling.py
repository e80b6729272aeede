"""After a run: group the job's rated local photos into bursts and mark each burst's best frame.

The engine fingerprints each local photo (pHash and EXIF capture time) while it prepares it for
sending, from the same decode, and the fingerprint is stored with the rating: grouping then
reads no file (economy mode keeps each photo's fingerprint from its encoding until its answer
comes). A photo rated without one (an economy job resumed after a crash; a job begun by an older
kullbatch) is decoded again here at reduced size (`images.fingerprint_file`). Only the frames of
a burst that tie on stars are then measured for focus (the local rater's `detail`, on a small
greyscale copy of each, so they compare fairly): the sharpest of them is the best. Photos given
by URL are not grouped. Any decoding runs on a few worker threads (Pillow releases the GIL while
it decodes), and the grouping is stored in the job's items, replacing any earlier grouping, so a
`resume` groups the whole shoot again.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from kullbatch.errors import PermanentImageError
from kullbatch.media import bursts
from kullbatch.media.images import fingerprint_file, preview
from kullbatch.models import ItemState
from kullbatch.providers.local import detail
from kullbatch.store.pages import PAGE

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from kullbatch.models import GroupingOptions, ItemRecord
    from kullbatch.store.database import Store


FOCUS_EDGE = 128  # pixels on the short side, at least, that tied frames' focus is compared at


def frame_of(item: ItemRecord) -> bursts.Frame | None:
    """A rated local photo as grouping sees it (no focus measure yet); None when it has no
    stored fingerprint and its file cannot be read now."""
    assert item.rating is not None
    assert item.image.path is not None
    taken = item.fingerprint
    if taken is None:
        try:
            taken = fingerprint_file(item.image.path)
        except PermanentImageError:
            return None
    return bursts.Frame(
        key=item.image.id,
        position=item.position,
        captured=taken.captured,
        phash=taken.phash,
        stars=item.rating.starRating,
        detail=0.0,
    )


def measured(frame: bursts.Frame, path: Path) -> bursts.Frame:
    """The frame with its focus measure; a file gone since counts as no detail."""
    try:
        return replace(frame, detail=detail(preview(path, FOCUS_EDGE)))
    except PermanentImageError:
        return frame


def find_bursts(
    items: list[ItemRecord], options: GroupingOptions, workers: int | None = None
) -> list[bursts.Burst]:
    """Hash every rated local photo on `workers` threads (default: one per CPU), group them,
    and pick each burst's best, measuring focus only where stars tie."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        frames, paths = frames_of(items, pool)
        return pick_bursts(frames, paths, options, pool)


def frames_of(
    items: Iterable[ItemRecord], pool: ThreadPoolExecutor
) -> tuple[list[bursts.Frame], dict[str, Path]]:
    """The frames of the rated local photos among `items` (hashed on `pool` where no
    fingerprint is stored), and each one's path."""
    wanted = [i for i in items if i.state is ItemState.RATED and i.image.path is not None]
    paths: dict[str, Path] = {i.image.id: i.image.path for i in wanted if i.image.path}
    return [frame for frame in pool.map(frame_of, wanted) if frame is not None], paths


def pick_bursts(
    frames: list[bursts.Frame],
    paths: dict[str, Path],
    options: GroupingOptions,
    pool: ThreadPoolExecutor,
) -> list[bursts.Burst]:
    """Group the frames, and pick each burst's best, measuring focus only where stars tie."""
    found = bursts.group_frames(frames, gap=options.gap, max_distance=options.max_distance)
    by_key = {frame.key: frame for frame in frames}
    picked = []
    for burst in found:
        ties = bursts.tied([by_key[key] for key in burst.keys])
        if len(ties) > 1:
            sharp = list(pool.map(lambda f: measured(f, paths[f.key]), ties))
            burst = replace(burst, best=bursts.best_of(sharp))  # noqa: PLW2901
        picked.append(burst)
    return picked


async def group_job(
    store: Store, job_id: str, options: GroupingOptions, page: int = PAGE
) -> list[bursts.Burst]:
    """Group the job's rated local photos and store the groups; returns the bursts.

    A job without a rated local photo (a shoot of URLs) is not read at all: one SQL count says
    so. The others are read `page` items at a time; only their frames (a few numbers each)
    are kept for the grouping."""
    if not await store.pages.rated_local_count(job_id):
        return []  # nothing can burst, and rated photos are never regrouped away: no earlier groups
    frames: list[bursts.Frame] = []
    paths: dict[str, Path] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        async for chunk in store.pages.rated_local(job_id, page):
            more, where = await asyncio.to_thread(frames_of, chunk, pool)
            frames += more
            paths.update(where)
        found = await asyncio.to_thread(pick_bursts, frames, paths, options, pool)
    await store.set_groups(
        job_id, [(key, burst.group, key == burst.best) for burst in found for key in burst.keys]
    )
    return found
