"""Turn a shoot (a JSON or CSV manifest, or a folder of photos) into ImageInputs, failing early.

Every problem is one line naming the file, the spot in it and the field, because a photographer
fixing a 10,000-row manifest needs to know exactly where to look. Locations follow the format:
``images[3].url`` in a JSON body (``[3].url`` in a bare list; indexes start at 0, as in jq),
``line 7, column 'url'`` in a CSV (physical lines, the header is line 1), the file name in a
folder. Local files are checked by reading their header only, so 10,000 photos load in seconds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from kullbatch.models import ImageInput

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif"})
MODES = ("fast", "economy")

_IMAGE_KEYS = frozenset({"id", "filename", "url", "path", "metadata", "tags"})
_CSV_FIELDS = ("id", "filename", "url", "path", "tags")
# Pillow cannot read HEIC/HEIF without a plugin, so those are recognised by their ISO-BMFF brand.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_JSON_TYPES = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "list",
    dict: "object",
}
_SHOW_MAX = 60


class ManifestError(ValueError):
    """A shoot that cannot be loaded; str() is one line: file, location, problem."""

    def __init__(self, file: Path, location: str | None, problem: str) -> None:
        self.file = file
        self.location = location
        self.problem = problem
        where = f"{file}: {location}" if location else str(file)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Manifest:
    """A loaded shoot; the optional fields come from a JSON request body, else stay None."""

    source: Path
    shoot_id: str
    images: list[ImageInput]
    provider_id: str | None = None
    prompt: str | None = None
    system_prompt: str | None = None
    mode: str | None = None


def load_manifest(source: Path) -> Manifest:
    """Load a .json or .csv manifest or a folder of images; any problem is a ManifestError."""
    with warnings.catch_warnings():
        # A 150-megapixel medium-format frame is a photo, not a decompression bomb.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _dispatch(Path(source))


@dataclass(frozen=True, slots=True)
class _Spot:
    """A place in a manifest (``images[3]``, ``line 7``) that names its fields the format's way."""

    place: str
    csv: bool = False

    def at(self, field: str) -> str:
        return f"{self.place}, column {field!r}" if self.csv else f"{self.place}.{field}"


@dataclass(frozen=True, slots=True)
class _Fields:
    """One image's raw values, before the checks every format shares."""

    id: object
    filename: object
    url: object
    path: object
    metadata: dict[str, Any]
    tags: list[str]


class _Loader:
    """What every format shares: the file errors name, where paths start, which ids are taken."""

    def __init__(self, source: Path, base: Path) -> None:
        self.source = source
        self.base = base
        self.seen: dict[str, str] = {}

    def fail(self, location: str | None, problem: str) -> NoReturn:
        raise ManifestError(self.source, location, problem)

    def image(self, spot: _Spot, fields: _Fields) -> ImageInput:
        """Check one manifest entry; the id comes first so a duplicate is caught before any I/O."""
        image_id = self._id(spot, fields.id)
        filename = self._text(spot, "filename", fields.filename)
        has_url = fields.url not in {None, ""}
        has_path = fields.path not in {None, ""}
        if has_url and has_path:
            self.fail(spot.place, "has both 'url' and 'path'; give one of them")
        if not (has_url or has_path):
            self.fail(spot.place, "needs a 'url' or a 'path'")
        url = self._url(spot, fields.url) if has_url else None
        path = None if has_url else self._path(spot, fields.path)
        return ImageInput(
            id=image_id,
            filename=filename,
            url=url,
            path=path,
            metadata=fields.metadata,
            tags=fields.tags,
        )

    def _id(self, spot: _Spot, value: object) -> str:
        """Ids are strings; ints are accepted because spreadsheets and scripts love numbering."""
        where = spot.at("id")
        if value is None:
            self.fail(where, "missing; every image needs an id")
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(where, f"must be a string, got {_json_type(value)}")
        image_id = str(value)
        if not image_id.strip():
            self.fail(where, "is empty; every image needs an id")
        first = self.seen.get(image_id)
        if first is not None:
            self.fail(where, f"{_show(image_id)} duplicates {first}")
        self.seen[image_id] = spot.place
        return image_id

    def _text(self, spot: _Spot, field: str, value: object) -> str:
        if value is None:
            self.fail(spot.at(field), "missing")
        if not isinstance(value, str):
            self.fail(spot.at(field), f"must be a string, got {_json_type(value)}")
        if not value.strip():
            self.fail(spot.at(field), "is empty")
        return value

    def _url(self, spot: _Spot, value: object) -> str:
        url = self._text(spot, "url", value)
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = urlsplit("")
        if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
            self.fail(spot.at("url"), f"must be an http(s) URL, got {_show(url)}")
        return url

    def _path(self, spot: _Spot, value: object) -> Path:
        """Relative paths start at the manifest's folder, not at wherever the CLI was run."""
        text = self._text(spot, "path", value)
        try:
            path = (self.base / Path(text).expanduser()).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            self.fail(spot.at("path"), f"cannot resolve {_show(text)}: {exc}")
        problem = _probe(path)
        if problem is not None:
            self.fail(spot.at("path"), f"{problem}: {path}")
        return path


def _dispatch(source: Path) -> Manifest:
    """One stat decides the format, so a missing file and an unreadable one read differently."""
    try:
        mode = source.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise ManifestError(source, None, "not found") from None
    except OSError as exc:
        raise ManifestError(source, None, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        return _load_folder(_Loader(source, source.resolve()))
    loader = _Loader(source, source.resolve().parent)
    load = _LOADERS.get(source.suffix.lower())
    if load is None:
        kind = repr(source.suffix) if source.suffix else "(no extension)"
        loader.fail(None, f"unsupported manifest type {kind}; use .json, .csv or a folder")
    return load(loader)


def _read_text(loader: _Loader) -> str:
    """Read the whole manifest as UTF-8 (a BOM from Excel is fine); manifests are small."""
    try:
        data = loader.source.read_bytes()
    except OSError as exc:
        loader.fail(None, f"cannot read: {exc.strerror or exc}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        loader.fail(f"line {line}", "is not UTF-8 text; save the manifest as UTF-8")


def _probe(path: Path) -> str | None:
    """Say why `path` is not a usable image, or None; only the header is read, so it stays fast."""
    try:
        with path.open("rb") as handle:
            return _probe_header(handle)
    except FileNotFoundError:
        return "file not found"
    except IsADirectoryError:
        return "is a folder, not an image file"
    except (OSError, ValueError) as exc:
        return f"cannot read ({getattr(exc, 'strerror', None) or exc})"


def _probe_header(handle: BinaryIO) -> str | None:
    head = handle.read(12)
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return None
    handle.seek(0)
    try:
        with Image.open(handle):
            return None
    except Image.DecompressionBombError:
        return None  # huge, but an image: sizing it down is images.py's job
    except (UnidentifiedImageError, OSError, ValueError):
        return "not an image Pillow can read"


def _finish(loader: _Loader, images: list[ImageInput], location: str | None) -> list[ImageInput]:
    if not images:
        loader.fail(location, "no images; the manifest lists none")
    return images


# JSON ----------------------------------------------------------------------------------------


def _load_json(loader: _Loader) -> Manifest:
    """Accept the REST request body or, for quick scripts, a bare list of images."""
    try:
        data: object = json.loads(_read_text(loader))
    except json.JSONDecodeError as exc:
        loader.fail(f"line {exc.lineno}, column {exc.colno}", f"malformed JSON: {exc.msg}")
    resolved = loader.source.resolve()
    if isinstance(data, list):
        images = _finish(loader, _json_images(data, "", loader), None)
        return Manifest(source=resolved, shoot_id=loader.source.stem, images=images)
    if not isinstance(data, dict):
        kind = _json_type(data)
        loader.fail("top level", f"must be an object or a list of images, got {kind}")
    if "images" not in data:
        loader.fail("images", "missing; the manifest object needs an 'images' list")
    if not isinstance(data["images"], list):
        loader.fail("images", f"must be a list, got {_json_type(data['images'])}")
    mode = _json_option(data, "mode", loader)
    if mode is not None and mode not in MODES:
        loader.fail("mode", f"must be 'fast' or 'economy', got {_show(mode)}")
    return Manifest(
        source=resolved,
        shoot_id=_shoot_id(data.get("shootId"), loader),
        images=_finish(loader, _json_images(data["images"], "images", loader), "images"),
        provider_id=_json_option(data, "providerId", loader),
        prompt=_json_option(data, "prompt", loader),
        system_prompt=_json_option(data, "systemPrompt", loader),
        mode=mode,
    )


def _shoot_id(value: object, loader: _Loader) -> str:
    """Absent means the file's stem, so `wedding.json` is the shoot `wedding`."""
    if value is None:
        return loader.source.stem
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        loader.fail("shootId", f"must be a non-empty string, got {_show(value)}")
    return value


def _json_option(data: dict[str, Any], key: str, loader: _Loader) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        loader.fail(key, f"must be a string, got {_json_type(value)}")
    return value


def _json_images(items: list[Any], prefix: str, loader: _Loader) -> list[ImageInput]:
    images: list[ImageInput] = []
    for index, item in enumerate(items):
        spot = _Spot(f"{prefix}[{index}]")
        if not isinstance(item, dict):
            loader.fail(spot.place, f"must be an object, got {_json_type(item)}")
        images.append(loader.image(spot, _json_fields(item, spot, loader)))
    return images


def _json_fields(item: dict[str, Any], spot: _Spot, loader: _Loader) -> _Fields:
    """Unknown keys become metadata (a key in `metadata` wins), so no exported field is lost."""
    metadata = item.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        loader.fail(spot.at("metadata"), f"must be an object, got {_json_type(metadata)}")
    extras = {key: value for key, value in item.items() if key not in _IMAGE_KEYS}
    return _Fields(
        id=item.get("id"),
        filename=item.get("filename"),
        url=item.get("url"),
        path=item.get("path"),
        metadata={**extras, **metadata},
        tags=_json_tags(item.get("tags"), spot, loader),
    )


def _json_tags(value: object, spot: _Spot, loader: _Loader) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        loader.fail(spot.at("tags"), f"must be a list of strings, got {_json_type(value)}")
    for index, tag in enumerate(value):
        if not isinstance(tag, str):
            loader.fail(spot.at(f"tags[{index}]"), f"must be a string, got {_json_type(tag)}")
    return list(value)


# CSV -----------------------------------------------------------------------------------------


def _load_csv(loader: _Loader) -> Manifest:
    rows = _csv_rows(_read_text(loader), loader)
    first = next(rows, None)
    if first is None:
        loader.fail(None, "is empty; a CSV manifest needs a header row (id, filename, url or path)")
    names = _csv_header(*first, loader)
    images = [
        loader.image(_Spot(f"line {line}", csv=True), _csv_fields(names, row, line, loader))
        for line, row in rows
    ]
    return Manifest(
        source=loader.source.resolve(),
        shoot_id=loader.source.stem,
        images=_finish(loader, images, None),
    )


def _csv_rows(text: str, loader: _Loader) -> Iterator[tuple[int, list[str]]]:
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


def _csv_header(line: int, row: list[str], loader: _Loader) -> list[str]:
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


def _csv_fields(names: list[str], row: list[str], line: int, loader: _Loader) -> _Fields:
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
    return _Fields(
        id=values.get("id"),
        filename=values.get("filename"),
        url=values.get("url"),
        path=values.get("path"),
        metadata={key: value for key, value in values.items() if key not in _CSV_FIELDS},
        tags=tags,
    )


# Folder --------------------------------------------------------------------------------------


def _load_folder(loader: _Loader) -> Manifest:
    """Every image directly in the folder, by name; ids are stems, made unique by _unique_id."""
    taken: set[str] = set()
    images: list[ImageInput] = []
    for name in _folder_image_names(loader):
        path = loader.base / name
        problem = _probe(path)
        if problem is not None:
            loader.fail(name, problem)
        image_id = _unique_id(Path(name).stem, name, taken)
        images.append(ImageInput(id=image_id, filename=name, path=path))
    if not images:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        loader.fail(None, f"no images in this folder (looked for {kinds})")
    return Manifest(source=loader.base, shoot_id=loader.base.name or "shoot", images=images)


def _folder_image_names(loader: _Loader) -> list[str]:
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


def _unique_id(stem: str, name: str, taken: set[str]) -> str:
    """The stem, else the full file name (`a.jpg`, `a.png` -> `a`, `a.png`), else `name~2`, …"""
    candidate = stem if stem not in taken else name
    counter = 2
    while candidate in taken:
        candidate = f"{name}~{counter}"
        counter += 1
    taken.add(candidate)
    return candidate


# Helpers -------------------------------------------------------------------------------------


def _json_type(value: object) -> str:
    """Name a value's type the way a JSON author thinks of it."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """Quote a value for a one-line message, cut short so a huge cell cannot flood the terminal."""
    text = repr(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 3] + "..."


_LOADERS: dict[str, Callable[[_Loader], Manifest]] = {".json": _load_json, ".csv": _load_csv}
