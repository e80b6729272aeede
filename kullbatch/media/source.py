"""A local photo's bytes read once, with their SHA-256: what the result cache keys a photo by.

The bytes then go on to `images.prepare(..., source=...)`, which decodes them instead of
opening the file again, so a photo checked against the cache and then sent is read once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kullbatch.media.confine import open_photo

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Source", "read_source"]


@dataclass(frozen=True, slots=True)
class Source:
    """A local photo's bytes as they are on disk and their SHA-256 (hex)."""

    data: bytes
    sha256: str


def read_source(path: Path) -> Source:
    """The file's bytes and their digest (blocking: call it in a worker thread); opened as every
    photo is (`confine.open_photo`: a regular file, beneath `--root` when one is set), so a
    missing, special or escaping file is a PermanentImageError naming it."""
    with open_photo(path) as handle:
        data = handle.read()
    return Source(data, hashlib.sha256(data).hexdigest())
