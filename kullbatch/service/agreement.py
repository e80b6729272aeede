"""`kullbatch agreement JOBID`: how far a job's stars are from the photographer's own.

The photographer's rating of each photo kullbatch rated is read from their XMP (see
`kullbatch.catalogue.TheirRatings`: `--against DIR`, then beside the photo; never a rating
kullbatch wrote), else from the stars they set in the dashboard (`photographerRating`). A
rejection (-1) counts as 0 stars; a photo they left unrated is skipped and counted. Photos
kullbatch did not rate (failed, pending) are not compared.

The statistics are scipy's: Spearman's rho (tied ranks averaged) and Kendall's tau-b, None
when either side gives one value only (a rank correlation is then undefined).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kullbatch.catalogue import TheirRatings, photo_files
from kullbatch.models import ItemState
from kullbatch.service.jobs import get_job

if TYPE_CHECKING:
    from pathlib import Path

    from kullbatch.models import ItemRecord
    from kullbatch.service.jobs import Service

DEFAULT_KEEP_STARS = 3
STARS = ("5", "4", "3", "2", "1", "0")


@dataclass(frozen=True, slots=True)
class Pair:
    """One photo both rated: the photographer's stars (a rejection as 0) and kullbatch's."""

    image_id: str
    photographer: int
    kullbatch: int


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _correlation(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)


def _rank_statistics(pairs: list[Pair]) -> tuple[float | None, float | None]:
    theirs = [p.photographer for p in pairs]
    ours = [p.kullbatch for p in pairs]
    if len(pairs) < 2 or len(set(theirs)) < 2 or len(set(ours)) < 2:  # noqa: PLR2004
        return None, None
    from scipy import stats  # noqa: PLC0415 - 60 MB of imports only this command needs

    rho = stats.spearmanr(theirs, ours).statistic
    tau = stats.kendalltau(theirs, ours, variant="b").statistic
    return _correlation(rho), _correlation(tau)


def summary(job_id: str, pairs: list[Pair], skipped: int, keep_stars: int) -> dict[str, Any]:
    """The agreement document (DESIGN.md), plus `keepRate`: the share of the compared photos
    the photographer kept at `keep_stars`, the `results --keep P%` that keeps as many."""
    compared = len(pairs)
    spearman, kendall = _rank_statistics(pairs)
    theirs_kept = sum(1 for p in pairs if p.photographer >= keep_stars)
    ours_kept = sum(1 for p in pairs if p.kullbatch >= keep_stars)
    both = sum(1 for p in pairs if p.photographer >= keep_stars and p.kullbatch >= keep_stars)
    confusion = {row: dict.fromkeys(STARS, 0) for row in STARS}
    for p in pairs:
        confusion[str(p.photographer)][str(p.kullbatch)] += 1
    return {
        "jobId": job_id,
        "compared": compared,
        "skipped": skipped,
        "exact": _share(sum(1 for p in pairs if p.photographer == p.kullbatch), compared),
        "withinOne": _share(
            sum(1 for p in pairs if abs(p.photographer - p.kullbatch) <= 1), compared
        ),
        "spearman": spearman,
        "kendallTau": kendall,
        "keep": {
            "stars": keep_stars,
            "photographer": theirs_kept,
            "kullbatch": ours_kept,
            "both": both,
            "precision": _share(both, ours_kept),
            "recall": _share(both, theirs_kept),
        },
        "keepRate": _share(theirs_kept, compared),
        "confusion": confusion,
    }


def pair_up(items: list[ItemRecord], against: Path | None) -> tuple[list[Pair], int]:
    """(pairs, skipped): each photo kullbatch rated with the photographer's stars, and how many
    the photographer left unrated. Reads their XMP (a SidecarError names a broken file)."""
    finder = TheirRatings(against)
    pairs: list[Pair] = []
    skipped = 0
    for item in items:
        if item.state is not ItemState.RATED or item.rating is None:
            continue
        found = finder.find(photo_files(item), item.rating)
        theirs = found.rating if found is not None else item.photographer_rating
        if theirs is None or theirs == 0:
            skipped += 1
            continue
        pairs.append(Pair(item.image.id, max(theirs, 0), item.rating.starRating))
    return pairs, skipped


async def agreement(
    service: Service, job_id: str, against: Path | None, keep_stars: int = DEFAULT_KEEP_STARS
) -> dict[str, Any]:
    """Compare a stored job's stars with the photographer's (reads files; sends nothing)."""
    await get_job(service.store, job_id)  # an unknown job is a JobNotFound
    items = await service.store.items(job_id)
    pairs, skipped = await asyncio.to_thread(pair_up, items, against)
    return summary(job_id, pairs, skipped, keep_stars)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _number(value: float | None) -> str:
    return "n/a (one side gives every photo the same stars)" if value is None else f"{value:.2f}"


def lines(document: dict[str, Any]) -> list[str]:
    """The agreement as a short table a photographer reads."""
    keep = document["keep"]
    if document["compared"] == 0:
        return [
            (
                f"no photo to compare: you rated none of the {document['skipped']} photos "
                "kullbatch rated (no xmp:Rating of yours was found, none set in the dashboard)"
            )
        ]
    head = [
        f"compared on {document['compared']} photos"
        + (
            f" ({document['skipped']} you left unrated were skipped)" if document["skipped"] else ""
        ),
        f"  same stars       {_percent(document['exact'])}",
        f"  within one star  {_percent(document['withinOne'])}",
        f"  Spearman rho     {_number(document['spearman'])}",
        f"  Kendall tau-b    {_number(document['kendallTau'])}",
        (
            f"  keep ({keep['stars']}+ stars)  kullbatch kept {keep['kullbatch']}, you kept "
            f"{keep['photographer']}, {keep['both']} in common (precision "
            f"{_percent(keep['precision'])}, recall {_percent(keep['recall'])})"
        ),
        (
            f"  your keep rate   {_percent(document['keepRate'])} "
            f"(`results JOBID --keep {_percent(document['keepRate'])}` keeps about as many)"
        ),
        "your stars (rows) against kullbatch's (columns):",
        "       " + "".join(f"{stars:>5}" for stars in STARS),
    ]
    table = [
        f"  {row:>3}  " + "".join(f"{document['confusion'][row][col]:>5}" for col in STARS)
        for row in STARS
    ]
    return head + table
