"""Pick the reader for a path: a folder, a .json or a .csv manifest."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

from kullbatch.manifest._base import Loader, ManifestError, photos_not_bombs
from kullbatch.manifest._csv import load_csv
from kullbatch.manifest._folder import load_folder
from kullbatch.manifest._json import load_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from kullbatch.manifest._base import Manifest

_LOADERS: dict[str, Callable[[Path, Loader], Manifest]] = {".json": load_json, ".csv": load_csv}


def load_manifest(source: Path) -> Manifest:
    """Load a .json or .csv manifest or a folder of images; any problem is a ManifestError."""
    with photos_not_bombs():
        return _dispatch(Path(source))


def _dispatch(source: Path) -> Manifest:
    """One stat decides the format, so a missing file and an unreadable one read differently."""
    try:
        mode = source.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise ManifestError(source, None, "not found") from None
    except OSError as exc:
        raise ManifestError(source, None, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        return load_folder(Loader(source, source.resolve()))
    loader = Loader(source, source.resolve().parent)
    load = _LOADERS.get(source.suffix.lower())
    if load is None:
        kind = repr(source.suffix) if source.suffix else "(no extension)"
        loader.fail(None, f"unsupported manifest type {kind}; use .json, .csv or a folder")
    return load(source, loader)
