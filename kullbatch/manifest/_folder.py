"""The folder reader: every image directly in a folder, by name, ids from the file stems.

A RAW+JPEG pair (``IMG_0001.CR3`` and ``IMG_0001.JPG``, one shutter press) is one photo: the
JPEG is sent, the RAW is its companion and gets the same XMP.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kullbatch.manifest._base import IMAGE_SUFFIXES, Manifest, probe
from kullbatch.manifest._images import ImageList
from kullbatch.models import RAW_SUFFIXES, ImageInput

if TYPE_CHECKING:
    from kullbatch.manifest._base import Loader


def load_folder(loader: Loader) -> Manifest:
    """Every image directly in the folder, by name; ids are stems, made unique by unique_id."""
    taken: set[str] = set()
    images = ImageList()
    names = _folder_image_names(loader)
    raw_of = raw_pairs(names)
    paired = set(raw_of.values())
    for name in (name for name in names if name not in paired):
        files = [name] if name not in raw_of else [name, raw_of[name]]
        for file in files:
            problem = probe(loader.base / file)
            if problem is not None:
                loader.fail(file, problem)
        image_id = unique_id(Path(name).stem, name, taken)
        companions = [loader.base / file for file in files[1:]]
        path = loader.base / name
        images.add(ImageInput(id=image_id, filename=name, path=path, companions=companions))
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


_RENDERED_SUFFIXES = frozenset({".jpg", ".jpeg", ".heic", ".heif"})  # what cameras shoot beside RAW


def raw_pairs(names: list[str]) -> dict[str, str]:
    """Rendered file name -> RAW file name, for each stem with exactly one of each."""
    by_stem: dict[str, list[str]] = {}
    for name in names:
        by_stem.setdefault(Path(name).stem.casefold(), []).append(name)
    pairs: dict[str, str] = {}
    for group in by_stem.values():
        raws = [n for n in group if Path(n).suffix.lower() in RAW_SUFFIXES]
        rendered = [n for n in group if Path(n).suffix.lower() in _RENDERED_SUFFIXES]
        if len(raws) == 1 and len(rendered) == 1:
            pairs[rendered[0]] = raws[0]
    return pairs


def unique_id(stem: str, name: str, taken: set[str]) -> str:
    """The stem, else the full file name (`a.jpg`, `a.png` -> `a`, `a.png`), else `name~2`, …"""
    candidate = stem if stem not in taken else name
    counter = 2
    while candidate in taken:
        candidate = f"{name}~{counter}"
        counter += 1
    taken.add(candidate)
    return candidate
