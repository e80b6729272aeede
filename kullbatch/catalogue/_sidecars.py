"""Where each photo's sidecar goes, and writing files so that a crash never leaves half of one.

Adobe style (Lightroom, Capture One, Bridge): ``<stem>.xmp`` beside the photo, or in
``out_dir``. When two photos claim one name (``IMG_1.CR2`` and ``IMG_1.jpg`` in one folder, or
``a/IMG_1.jpg`` and ``b/IMG_1.jpg`` written to one ``out_dir``), the first in manifest order
keeps ``<stem>.xmp`` and the others get ``<file name>.xmp``, then ``<stem>_2.xmp`` … Within a
RAW+JPEG pair the RAW comes first, so it keeps ``<stem>.xmp``.

darktable style (darktable, digiKam): ``<file name>.xmp`` (``IMG_1.CR3.xmp``), then
``<stem>_2<suffix>.xmp`` … when several folders meet in one ``out_dir``.

Names are compared case-insensitively, because macOS and Windows compare them so.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from kullbatch.catalogue._packet import SidecarError
from kullbatch.models import RAW_SUFFIXES, ItemRecord, ItemState

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

SidecarStyle = Literal["adobe", "darktable"]


@dataclass(frozen=True, slots=True)
class Target:
    """One photo file of a rated image and the sidecar name it claims."""

    item: ItemRecord
    photo: Path
    sidecar: Path


def _claim_key(path: Path) -> str:
    return os.path.abspath(path).casefold()  # noqa: PTH100  (no filesystem access, unlike resolve)


def _natural(photo: Path, folder: Path, style: SidecarStyle) -> Path:
    return folder / (f"{photo.name}.xmp" if style == "darktable" else f"{photo.stem}.xmp")


def _alternatives(photo: Path, folder: Path, style: SidecarStyle) -> Iterator[Path]:
    if style == "adobe":
        yield folder / f"{photo.name}.xmp"
    number = 2
    while True:
        suffix = photo.suffix if style == "darktable" else ""
        yield folder / f"{photo.stem}_{number}{suffix}.xmp"
        number += 1


def photo_files(item: ItemRecord) -> list[Path]:
    """The files of one rated local photo, RAW first: a RAW+JPEG pair is two files."""
    if item.state is not ItemState.RATED or item.rating is None or item.image.path is None:
        return []
    files = [item.image.path, *item.image.companions]
    return sorted(files, key=lambda path: path.suffix.lower() not in RAW_SUFFIXES)


def xmp_targets(
    items: Iterable[ItemRecord], out_dir: Path | None, style: SidecarStyle = "adobe"
) -> list[Target]:
    """Each file of each rated local photo with its sidecar path, collisions resolved in order."""
    wanted: list[tuple[ItemRecord, Path, Path]] = []
    for item in items:
        for photo in photo_files(item):
            folder = photo.parent if out_dir is None else out_dir
            wanted.append((item, photo, _natural(photo, folder, style)))
    claimed: set[str] = set()
    natural: list[bool] = []
    for _, _, sidecar in wanted:  # first pass: every natural name goes to its first claimant
        key = _claim_key(sidecar)
        natural.append(key not in claimed)
        claimed.add(key)
    targets: list[Target] = []
    for (item, photo, natural_sidecar), is_first in zip(wanted, natural, strict=True):
        sidecar = natural_sidecar
        if not is_first:
            options = _alternatives(photo, natural_sidecar.parent, style)
            sidecar = next(p for p in options if _claim_key(p) not in claimed)
            claimed.add(_claim_key(sidecar))
        targets.append(Target(item, photo, sidecar))
    return targets


def read_sidecar(sidecar: Path) -> bytes | None:
    """An existing sidecar's bytes, or None when there is none yet."""
    try:
        return sidecar.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SidecarError(f"{sidecar}: cannot read the existing sidecar: {exc}") from exc


def temporary_beside(target: Path) -> Path:
    """A hidden, unique name in the target's folder, so that the final rename is atomic."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_atomically(target: Path, text: str) -> None:
    """Write `text` to a temporary file beside `target`, then rename it over `target`."""
    tmp = temporary_beside(target)
    # os.open with 0o666 lets the umask decide the mode, as for any new file (mkstemp gives 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
