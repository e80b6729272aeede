"""The photographer's own ratings, read from their XMP: sidecars and embedded packets.

For each file of a photo (both of a RAW+JPEG pair), in order: the Adobe sidecar
(`IMG_0001.xmp`), the darktable sidecar (`IMG_0001.CR3.xmp`), then a JPEG, TIFF, PNG or DNG
of the same stem holding an embedded packet. Looked for in the folder the photographer names
(`agreement --against DIR`, matched by file stem, case-insensitively), then beside the photo.
The first `xmp:Rating` that is the photographer's counts: a rating kullbatch wrote itself is
passed over (see `_ours`), and so is 0 ("unrated").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kullbatch.catalogue._embed import EMBEDDABLE_SUFFIXES, exiv2_module, read_embedded
from kullbatch.catalogue._ours import photographers
from kullbatch.catalogue._packet import SidecarError, parse_packet

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

    from kullbatch.models import Rating


@dataclass(frozen=True, slots=True)
class Found:
    """A photographer's rating (-1..5) and the file it was read from."""

    rating: int
    source: Path


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SidecarError(f"{path}: cannot read it: {exc.strerror or exc}") from exc


def rating_in(path: Path, ours: Rating | None = None) -> int | None:
    """The photographer's rating in one sidecar or photo, or None (no file, no rating of
    theirs; `ours`, kullbatch's rating of the photo, recognises what an older kullbatch wrote);
    a file that is not XMP (or a photo exiv2 cannot read) is a SidecarError."""
    if path.suffix.lower() == ".xmp":
        data = _read(path)
    elif path.is_file():
        try:
            data = read_embedded(path).encode("utf-8")
        except exiv2_module().Exiv2Error as exc:
            raise SidecarError(f"{path}: cannot read its XMP: {exc}") from exc
    else:
        return None
    if data is None or not data.strip():
        return None
    return photographers(parse_packet(data, str(path)), ours)


class TheirRatings:
    """Finds the photographer's rating of each photo, in `against` (a folder) and beside it."""

    def __init__(self, against: Path | None = None) -> None:
        self._index: dict[str, Path] = {}
        if against is not None:
            if not against.is_dir():
                raise SidecarError(f"{against}: not a folder")
            self._index = {p.name.casefold(): p for p in against.iterdir() if p.is_file()}

    def _in_folder(self, photo: Path) -> Iterator[Path]:
        for name in (f"{photo.stem}.xmp", f"{photo.name}.xmp"):
            if (found := self._index.get(name.casefold())) is not None:
                yield found
        stem = photo.stem.casefold()
        for path in self._index.values():
            if path.stem.casefold() == stem and path.suffix.lower() in EMBEDDABLE_SUFFIXES:
                yield path

    @staticmethod
    def _beside(photo: Path) -> Iterator[Path]:
        yield photo.with_name(f"{photo.stem}.xmp")
        yield photo.with_name(f"{photo.name}.xmp")
        if photo.suffix.lower() in EMBEDDABLE_SUFFIXES:
            yield photo

    def find(self, files: Iterable[Path], ours: Rating | None = None) -> Found | None:
        """The photographer's rating of the photo made of `files` (RAW first), or None;
        `ours` is kullbatch's rating of it (see `rating_in`)."""
        files = list(files)
        candidates = [p for f in files for p in self._in_folder(f)]
        candidates += [p for f in files for p in self._beside(f)]
        for path in dict.fromkeys(candidates):
            rating = rating_in(path, ours)
            if rating is not None:
                return Found(rating, path)
        return None
