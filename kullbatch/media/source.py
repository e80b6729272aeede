"""A local photo's bytes read once, with their SHA-256: what the result cache keys a photo by.

The bytes then go on to `images.prepare(..., source=...)`, which decodes them instead of
opening the file again, so a photo checked against the cache and then sent is read once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kullbatch.errors import PermanentImageError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Source", "read_source"]


@dataclass(frozen=True, slots=True)
class Source:
    """A local photo's bytes as they are on disk and their SHA-256 (hex)."""

    data: bytes
    sha256: str


def read_source(path: Path) -> Source:
    """The file's bytes and their digest (blocking: call it in a worker thread); a missing or
    unreadable file is a PermanentImageError naming it, as `prepare` would say."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PermanentImageError(f"{path}: file not found (moved or deleted?)") from exc
    except OSError as exc:
        raise PermanentImageError(f"{path}: cannot be read: {exc}") from exc
    return Source(data, hashlib.sha256(data).hexdigest())
