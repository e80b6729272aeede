"""A manifest's photos kept compact: each as the JSON the store records, not as a model.

100,000 checked photos held as `ImageInput` models take about 240 MB; as one short JSON string
each (what `Store.create_job` writes anyway) they take about a tenth of that. An entry is read
back as an `ImageInput` only when asked for (`images[3]`, iterating), and the store writes the
strings as they are, so creating a job neither builds nor dumps a model per photo.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from kullbatch.models import RAW_SUFFIXES, ImageInput

if TYPE_CHECKING:
    from pathlib import Path

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_STRING = json.encoder.encode_basestring  # a str as a JSON string, as _DUMPS writes one


def encode(
    image_id: str,
    filename: str,
    url: str | None,
    path: Path | None,
    metadata: dict[str, Any],
    tags: list[str],
) -> str:
    """The stored JSON of a checked entry, as `ImageInput.model_dump_json()` would give it."""
    if not metadata and not tags:  # the usual entry: four strings, written without a dict
        url_json = "null" if url is None else _STRING(url)
        path_json = "null" if path is None else _STRING(str(path))
        return (
            f'{{"id":{_STRING(image_id)},"filename":{_STRING(filename)},"url":{url_json},'
            f'"path":{path_json},"metadata":{{}},"tags":[],"companions":[]}}'
        )
    try:
        return _DUMPS(
            {
                "id": image_id,
                "filename": filename,
                "url": url,
                "path": None if path is None else str(path),
                "metadata": metadata,
                "tags": tags,
                "companions": [],
            }
        )
    except ValueError:  # NaN or Infinity in the metadata: pydantic writes those as null
        image = ImageInput(
            id=image_id, filename=filename, url=url, path=path, metadata=metadata, tags=tags
        )
        return image.model_dump_json()


class ImageList(Sequence[ImageInput]):
    """The photos of a manifest in order, each stored as (id, JSON); a Sequence of ImageInput."""

    __slots__ = ("_documents", "_ids", "_local", "_raw")

    def __init__(self, images: Iterable[ImageInput] = ()) -> None:
        self._ids: list[str] = []
        self._documents: list[str] = []
        self._local: list[int] = []  # the positions of photos given by path (RAW pairing)
        self._raw: list[int] = []  # those of them that are RAW files
        for image in images:
            self.add(image)

    def append(self, image_id: str, document: str, path: Path | None) -> None:
        """Add a checked photo: its id, its stored JSON and its local path (None for a URL)."""
        if path is not None:
            self._local.append(len(self._ids))
            if path.suffix.lower() in RAW_SUFFIXES:
                self._raw.append(len(self._ids))
        self._ids.append(image_id)
        self._documents.append(document)

    def add(self, image: ImageInput) -> None:
        self.append(image.id, image.model_dump_json(), image.path)

    def stored(self) -> Iterator[tuple[str, str]]:
        """(image id, JSON) of each photo in order: what the store writes."""
        return zip(self._ids, self._documents, strict=True)

    def local_positions(self) -> list[int]:
        return list(self._local)

    def raw_positions(self) -> list[int]:
        return list(self._raw)

    def rebuilt(self, replaced: dict[int, ImageInput], dropped: set[int]) -> ImageList:
        """A copy with the photos at `replaced`'s positions replaced and those at `dropped`
        left out."""
        local, raw = set(self._local), set(self._raw)
        copy = ImageList()
        for index, (image_id, document) in enumerate(self.stored()):
            if index in replaced:
                copy.add(replaced[index])
            elif index not in dropped:
                if index in local:
                    copy._local.append(len(copy._ids))
                if index in raw:
                    copy._raw.append(len(copy._ids))
                copy._ids.append(image_id)
                copy._documents.append(document)
        return copy

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> ImageInput: ...

    @overload
    def __getitem__(self, index: slice) -> list[ImageInput]: ...

    def __getitem__(self, index: int | slice) -> ImageInput | list[ImageInput]:
        if isinstance(index, slice):
            return [ImageInput.model_validate_json(doc) for doc in self._documents[index]]
        return ImageInput.model_validate_json(self._documents[index])

    def __iter__(self) -> Iterator[ImageInput]:
        for document in self._documents:
            yield ImageInput.model_validate_json(document)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ImageList):
            return self._documents == other._documents
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a list of photos, as unhashable as a list

    def __repr__(self) -> str:
        return f"ImageList({len(self)} photos)"
