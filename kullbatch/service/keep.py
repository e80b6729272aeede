"""`results --keep N|P%`: cull a rated shoot to a delivery count, from stored results only.

Each burst offers only its best frame (the others are not kept); the photos on offer are taken
by stars, then by the rating's `score` (0-100; results stored before it existed count as
below any score), then by sharpness, then in manifest order. Sharpness is measured (the local
rater's focus measure, on a small copy of the photo) only for the photos tied on stars and
score at the cut, so a keep target decodes a handful of photos at most and sends nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kullbatch.errors import PermanentImageError, UsageError
from kullbatch.media.images import preview
from kullbatch.models import ItemState
from kullbatch.providers.local import detail

if TYPE_CHECKING:
    from collections.abc import Callable

    from kullbatch.models import ItemRecord

SHARPNESS_EDGE = 128  # pixels on the short side the tied photos' focus is compared at
_TARGET = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<percent>%?)")


class KeepTargetError(UsageError, ValueError):
    """A `--keep` value that is neither a count (12) nor a share of the rated photos (25%)."""


@dataclass(frozen=True, slots=True)
class KeepTarget:
    """How many photos to keep: `count` photos, or `percent` % of the rated photos."""

    count: int | None = None
    percent: float | None = None

    def wanted(self, rated: int) -> int:
        """The number of photos to keep out of `rated`; a share is rounded half up."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return int(rated * self.percent / 100 + 0.5)


def parse_keep(text: str) -> KeepTarget:
    """`12` (photos) or `25%` (of the rated photos); anything else is a KeepTargetError."""
    match = _TARGET.fullmatch(text.strip())
    problem = "a number of photos (e.g. 120) or a share of the rated photos (e.g. 25%)"
    if match is None:
        raise KeepTargetError(f"--keep {text!r}: expected {problem}")
    value = float(match["number"])
    if match["percent"]:
        if not 0 < value <= 100:  # noqa: PLR2004
            raise KeepTargetError(f"--keep {text}: a share is more than 0% and at most 100%")
        return KeepTarget(percent=value)
    if "." in match["number"] or value < 1:
        raise KeepTargetError(f"--keep {text}: a number of photos is a whole number, 1 or more")
    return KeepTarget(count=int(value))


def sharpness(item: ItemRecord) -> float:
    """The photo's focus measure; 0 for a URL photo or a file that cannot be read now."""
    if item.image.path is None:
        return 0.0
    try:
        return detail(preview(item.image.path, SHARPNESS_EDGE))
    except (PermanentImageError, OSError):
        return 0.0


def _on_offer(item: ItemRecord) -> bool:
    rated = item.state is ItemState.RATED and item.rating is not None
    return rated and (item.group is None or item.best_in_group)


def _rank(item: ItemRecord) -> tuple[int, int]:
    assert item.rating is not None
    score = -1 if item.rating.score is None else item.rating.score
    return (item.rating.starRating, score)


def choose(
    items: list[ItemRecord],
    target: KeepTarget,
    measure: Callable[[ItemRecord], float] = sharpness,
) -> list[ItemRecord]:
    """The items with `kept` set: True for the photos the target keeps, False for the rest."""
    rated = sum(1 for item in items if item.state is ItemState.RATED and item.rating is not None)
    offered = sorted(
        (item for item in items if _on_offer(item)), key=lambda i: (-_rank(i)[0], -_rank(i)[1])
    )
    wanted = min(target.wanted(rated), len(offered))
    kept: list[ItemRecord] = offered[:wanted]
    if 0 < wanted < len(offered) and _rank(offered[wanted - 1]) == _rank(offered[wanted]):
        # the cut falls among photos tied on stars and score: the sharpest of them go
        tie = _rank(offered[wanted])
        tied = [item for item in offered if _rank(item) == tie]
        above = [item for item in kept if _rank(item) != tie]
        by_focus = sorted(tied, key=lambda i: (-measure(i), i.position))
        kept = above + by_focus[: wanted - len(above)]
    chosen = {item.position for item in kept}
    return [replace(item, kept=item.position in chosen) for item in items]
