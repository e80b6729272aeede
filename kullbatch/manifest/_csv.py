"""The CSV reader: a header row naming the columns, one image per record after it."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from kullbatch.manifest._base import Fields, Manifest, Spot
from kullbatch.manifest._images import ImageList

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from kullbatch.manifest._base import Loader

_CSV_FIELDS = ("id", "filename", "url", "path", "tags")


def load_csv(source: Path, loader: Loader) -> Manifest:
    rows = _csv_rows(loader.read_text(source), loader)
    first = next(rows, None)
    if first is None:
        loader.fail(None, "is empty; a CSV manifest needs a header row (id, filename, url or path)")
    names = _csv_header(*first, loader)
    images = ImageList()
    for line, row in rows:
        loader.image(Spot(f"line {line}", csv=True), _csv_fields(names, row, line, loader), images)
    return Manifest(
        source=source.resolve(),
        shoot_id=source.stem,
        images=loader.finish(images, None),
    )


def _csv_rows(text: str, loader: Loader) -> Iterator[tuple[int, list[str]]]:
    """Yield each non-blank record with the physical line it starts on (quoted cells may span)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            loader.fail(f"line {reader.line_num}", f"malformed CSV: {exc}")
        start, line = line, reader.line_num + 1
        if any(cell.strip() for cell in row):
            yield start, row


def _csv_header(line: int, row: list[str], loader: Loader) -> list[str]:
    """Known columns match case-insensitively; other names are kept as written, for metadata."""
    names: list[str] = []
    for cell in row:
        name = cell.strip()
        name = name.lower() if name.lower() in _CSV_FIELDS else name
        if name and name in names:
            loader.fail(f"line {line}, column {name!r}", "appears twice in the header")
        names.append(name)
    missing = [column for column in ("id", "filename") if column not in names]
    if "url" not in names and "path" not in names:
        missing.append("url or path")
    if missing:
        loader.fail(
            f"line {line}",
            f"the header lacks {', '.join(missing)}; the first row must name the columns "
            "(id, filename, url or path, tags, any metadata)",
        )
    return names


def _csv_fields(names: list[str], row: list[str], line: int, loader: Loader) -> Fields:
    if len(row) > len(names):
        loader.fail(f"line {line}", f"has {len(row)} cells but the header has {len(names)}")
    values: dict[str, str] = {}
    for index, cell in enumerate(row):
        value = cell.strip()
        if value and not names[index]:
            loader.fail(f"line {line}, column {index + 1}", "has a value but no header name")
        if value:
            values[names[index]] = value
    tags = [tag.strip() for tag in values.get("tags", "").split(";") if tag.strip()]
    return Fields(
        id=values.get("id"),
        filename=values.get("filename"),
        url=values.get("url"),
        path=values.get("path"),
        metadata={key: value for key, value in values.items() if key not in _CSV_FIELDS},
        tags=tags,
    )
