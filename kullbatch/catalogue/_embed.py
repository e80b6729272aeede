"""XMP written into the photo itself, through libexiv2 (python-exiv2), for the formats whose
sidecars Lightroom ignores: JPEG (an APP1 segment), TIFF and DNG (tag 700), PNG (an iTXt chunk).

Only the XMP packet changes: exiv2 rewrites the metadata blocks around untouched image data,
and keeps the camera's EXIF, IPTC and ICC profile byte for byte. The photo is copied beside
itself, the copy is changed, then renamed over the photo, so a crash leaves the photo whole.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
from typing import TYPE_CHECKING, Any

from kullbatch.catalogue._packet import packet_text
from kullbatch.catalogue._sidecars import temporary_beside
from kullbatch.errors import KullbatchError

if TYPE_CHECKING:
    from pathlib import Path

    from kullbatch.catalogue._ours import Stamp
    from kullbatch.models import Rating

EMBEDDABLE_SUFFIXES = frozenset({".jpg", ".jpeg", ".tif", ".tiff", ".png", ".dng"})


@functools.cache
def exiv2_module() -> Any:  # exiv2 has no type information
    """exiv2, imported when a photo's XMP is first read or written: not at every start."""
    import exiv2  # noqa: PLC0415 - 70 ms that `process` and `status` do not need

    exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.error)  # its warnings are not the user's business
    return exiv2


class EmbedError(KullbatchError, OSError):
    """A photo whose XMP could not be written: read-only, vanished, or not readable by exiv2.

    That photo fails with this message; an OSError still, as the write that failed is one."""


def embeddable(photo: Path) -> bool:
    """Whether `--embed` writes into this file (JPEG, TIFF, PNG, DNG) rather than a sidecar."""
    return photo.suffix.lower() in EMBEDDABLE_SUFFIXES


def _check_writable(photo: Path) -> None:
    try:
        mode = photo.stat().st_mode
    except FileNotFoundError as exc:
        raise EmbedError(
            f"{photo}: not found (moved or deleted?); its XMP was not written"
        ) from exc
    # the mode bits as well as access(): root may write anything, but a photo locked read-only
    # (chmod a-w, or Finder's "Locked") is the photographer saying "leave this file alone"
    if not mode & stat.S_IWUSR or not os.access(photo, os.W_OK):
        raise EmbedError(f"{photo}: read-only; its XMP was not written (make it writable)")


def read_embedded(photo: Path) -> str:
    """The XMP packet embedded in a photo, or "" when it has none."""
    image = exiv2_module().ImageFactory.open(str(photo))
    image.readMetadata()
    return str(image.xmpPacket())


def _rewrite(
    copy: Path,
    rating: Rating,
    photo: Path,
    stars: int | None,
    group: str | None,
    stamp: Stamp | None,
) -> None:
    exiv2 = exiv2_module()
    try:
        image = exiv2.ImageFactory.open(str(copy))
        image.readMetadata()
        existing = str(image.xmpPacket()).encode("utf-8")
        image.setXmpPacket(
            packet_text(existing, rating, str(photo), stars=stars, group=group, stamp=stamp)
        )
        image.writeXmpFromPacket(True)  # noqa: FBT003  (exiv2's signature)
        image.writeMetadata()
    except exiv2.Exiv2Error as exc:
        raise EmbedError(f"{photo}: cannot write its XMP: {exc}") from exc


def embed(
    photo: Path,
    rating: Rating,
    *,
    stars: int | None = None,
    group: str | None = None,
    stamp: Stamp | None = None,
) -> None:
    """Write `rating` into the photo's own XMP packet, merged with what is there, atomically
    (`stars`, `group` and `stamp` as for `packet_text`)."""
    _check_writable(photo)
    copy = temporary_beside(photo)
    try:
        shutil.copy2(photo, copy)  # keeps the photo's mode and times
        _rewrite(copy, rating, photo, stars, group, stamp)
        copy.replace(photo)
    except BaseException:
        with contextlib.suppress(OSError):
            copy.unlink()
        raise
