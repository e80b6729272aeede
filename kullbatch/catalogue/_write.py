"""`results --format xmp`: each rated photo's XMP where its program looks for it.

Without `embed`, every file of every rated local photo gets a sidecar. With `embed`, JPEG,
TIFF, PNG and DNG files get the packet inside themselves (and an existing sidecar of theirs is
updated too, so that the two never disagree); RAW files still get sidecars. One photo that
cannot be written (read-only, vanished, a broken existing packet) is reported and skipped;
the others are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kullbatch.catalogue._embed import EmbedError, embed, embeddable
from kullbatch.catalogue._ours import Stamp
from kullbatch.catalogue._packet import REJECTED, SidecarError, packet_text
from kullbatch.catalogue._sidecars import (
    SidecarStyle,
    Target,
    read_sidecar,
    write_atomically,
    xmp_targets,
)

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from kullbatch.models import ItemRecord


@dataclass(frozen=True, slots=True)
class XmpOptions:
    """How to write XMP: into the photos where they can hold it, how sidecars are named, and
    whether a burst's frames besides its best are written rejected (-1)."""

    embed: bool = False
    style: SidecarStyle = "adobe"
    reject_duplicates: bool = False
    overwrite_ratings: bool = False  # replace a photographer's own xmp:Rating with our stars
    job_id: str | None = None  # written beside our stars (kullbatch:Job)


@dataclass(frozen=True, slots=True)
class XmpReport:
    """What was written: sidecars, photos with embedded XMP, and one line per photo that failed."""

    sidecars: tuple[Path, ...] = ()
    embedded: tuple[Path, ...] = ()
    failures: tuple[str, ...] = ()

    @property
    def written(self) -> tuple[Path, ...]:
        """Every file written, sidecars first."""
        return self.sidecars + self.embedded


def _stars(item: ItemRecord, options: XmpOptions) -> int:
    """The photo's stars; REJECTED for a burst's other frames when asked, and for the photos a
    keep target (`results --keep`) did not keep."""
    assert item.rating is not None
    if item.kept is not None:
        return item.rating.starRating if item.kept else REJECTED
    if options.reject_duplicates and item.group is not None and not item.best_in_group:
        return REJECTED
    return item.rating.starRating


def _stamp(item: ItemRecord, options: XmpOptions) -> Stamp:
    score = item.rating.score if item.rating is not None else None
    return Stamp(
        options.job_id,
        item.photographer_rating,
        options.overwrite_ratings,
        score=score,
        group_rank=item.group_rank,
        group_reason=item.group_reason,
    )


def _write_sidecar(target: Target, options: XmpOptions) -> None:
    item = target.item
    assert item.rating is not None
    existing = read_sidecar(target.sidecar)
    text = packet_text(
        existing,
        item.rating,
        str(target.sidecar),
        stars=_stars(item, options),
        group=item.group,
        stamp=_stamp(item, options),
    )
    write_atomically(target.sidecar, text)


def write_xmp(
    items: Iterable[ItemRecord], out_dir: Path | None, options: XmpOptions | None = None
) -> XmpReport:
    """XMP for every rated local photo, beside it, in `out_dir`, or inside it (`embed`)."""
    options = options or XmpOptions()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    sidecars: list[Path] = []
    embedded: list[Path] = []
    failures: list[str] = []
    for target in xmp_targets(items, out_dir, options.style):
        item = target.item
        assert item.rating is not None
        try:
            if options.embed and embeddable(target.photo):
                stars, stamp = _stars(item, options), _stamp(item, options)
                embed(target.photo, item.rating, stars=stars, group=item.group, stamp=stamp)
                embedded.append(target.photo)
                if not target.sidecar.exists():
                    continue
            _write_sidecar(target, options)
            sidecars.append(target.sidecar)
        except (EmbedError, SidecarError) as exc:  # their messages name the file
            failures.append(str(exc))
        except OSError as exc:
            failures.append(f"{target.photo}: cannot write its XMP: {exc.strerror or exc}")
    return XmpReport(tuple(sidecars), tuple(embedded), tuple(failures))
