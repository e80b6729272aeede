"""The folder reader: every image directly in a folder, by name, ids from the file stems."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kullbatch.manifest._base import IMAGE_SUFFIXES, Manifest, probe
from kullbatch.models import ImageInput

if TYPE_CHECKING:
    from kullbatch.manifest._base import Loader


def load_folder(loader: Loader) -> Manifest:
    """Every image directly in the folder, by name; ids are stems, made unique by unique_id."""
    taken: set[str] = set()
    images: list[ImageInput] = []
    for name in _folder_image_names(loader):
        path = loader.base / name
        problem = probe(path)
        if problem is not None:
            loader.fail(name, problem)
        image_id = unique_id(Path(name).stem, name, taken)
        images.append(ImageInput(id=image_id, filename=name, path=path))
    if not images:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        loader.fail(None, f"no images in this folder (looked for {kinds})")
    return Manifest(source=loader.base, shoot_id=loader.base.name or "shoot", images=images)


def _folder_image_names(loader: Loader) -> list[str]:
    """Hidden files are skipped: macOS leaves `._IMG_1.jpg` resource forks on every card."""
    try:
        with os.scandir(loader.base) as entries:
            names = [
                entry.name
                for entry in entries
                if not entry.name.startswith(".")
                and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
                and entry.is_file()
            ]
    except OSError as exc:
        loader.fail(None, f"cannot read folder: {exc.strerror or exc}")
    return sorted(names)


def unique_id(stem: str, name: str, taken: set[str]) -> str:
    """The stem, else the full file name (`a.jpg`, `a.png` -> `a`, `a.png`), else `name~2`, …"""
    candidate = stem if stem not in taken else name
    counter = 2
    while candidate in taken:
        candidate = f"{name}~{counter}"
        counter += 1
    taken.add(candidate)
    return candidate
