"""What every manifest format shares: the error, the result, and the checks on one image."""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from PIL import Image, UnidentifiedImageError

from kullbatch.errors import UsageError, file_kind
from kullbatch.manifest._images import ImageList, encode
from kullbatch.models import RAW_SUFFIXES, ImageInput, Mode

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import BinaryIO

IMAGE_SUFFIXES = (
    frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif"}) | RAW_SUFFIXES
)

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
ECHO_MAX = 200  # an error repeats at most this much of what it was given
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


class ManifestError(UsageError):
    """A shoot that cannot be loaded (exit 2, HTTP 400); str() is one line: source, location,
    problem.

    `file` is the manifest's path, or the name given to a document from memory
    (``request body``).
    """

    def __init__(self, file: Path | str, location: str | None, problem: str) -> None:
        self.file = file
        self.location = location
        self.problem = problem
        where = f"{file}: {location}" if location else str(file)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Manifest:
    """A loaded shoot; the optional fields come from a JSON request body, else stay None.

    `source` is the manifest file, the folder of images, or for a document from memory the
    folder its relative paths start at.
    """

    source: Path
    shoot_id: str
    images: Sequence[ImageInput]  # an ImageList when loaded here (compact); any list will do
    provider_id: str | None = None
    prompt: str | None = None
    system_prompt: str | None = None
    mode: Mode | None = None
    budget_usd: float | None = None  # `budgetUsd`: as `--budget USD`
    flex_wait: float | None = None  # `flexWait` ("10m", or seconds): as `--flex-wait D`
    cache: bool | None = None  # `cache: false`: as `--no-cache`
    compare_bursts: bool | None = None  # `compareBursts: true`: as `--compare-bursts`


@dataclass(frozen=True, slots=True)
class Spot:
    """A place in a manifest (``images[3]``, ``line 7``) that names its fields the format's way."""

    place: str
    csv: bool = False

    def at(self, field: str) -> str:
        return f"{self.place}, column {field!r}" if self.csv else f"{self.place}.{field}"


@dataclass(frozen=True, slots=True)
class Fields:
    """One image's raw values, before the checks every format shares."""

    id: object
    filename: object
    url: object
    path: object
    metadata: dict[str, Any]
    tags: list[str]


# http(s), a host (and port) in plain ASCII with no user name or password, then anything without
# spaces: a URL `urlsplit` accepts with no user info. Anything else is split and checked below.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.:_~%!$&'()*+,;=-]+(?:[/?#]\S*)?", re.IGNORECASE)


class Loader:
    """What every format shares: the name errors give, where paths start, which ids are taken."""

    def __init__(self, name: Path | str, base: Path) -> None:
        self.name = name
        self.base = base
        self.seen: dict[str, str] = {}

    def fail(self, location: str | None, problem: str) -> NoReturn:
        raise ManifestError(self.name, location, problem)

    def image(self, spot: Spot, fields: Fields, into: ImageList) -> None:
        """Check one manifest entry and add it to `into` (as the JSON the store keeps, not a
        model); the id comes first so a duplicate is caught before any I/O."""
        image_id = self._id(spot, fields.id)
        filename = self._text(spot, "filename", fields.filename)
        # `is`/`==`, not `in {…}`: a list or object sent as a value is not hashable
        has_url = fields.url is not None and fields.url != ""
        has_path = fields.path is not None and fields.path != ""
        if has_url and has_path:
            self.fail(spot.place, "has both 'url' and 'path'; give one of them")
        if not (has_url or has_path):
            self.fail(spot.place, "needs a 'url' or a 'path'")
        url = self._url(spot, fields.url) if has_url else None
        path = None if has_url else self._path(spot, fields.path)
        document = encode(image_id, filename, url, path, fields.metadata, fields.tags)
        into.append(image_id, document, path)

    def finish(self, images: ImageList, location: str | None) -> ImageList:
        if not images:
            self.fail(location, "no images; the manifest lists none")
        return pair_raw_with_jpeg(images)

    def read_text(self, source: Path) -> str:
        """Read the whole manifest as UTF-8 (a BOM from Excel is fine); manifests are small."""
        try:
            data = source.read_bytes()
        except OSError as exc:
            self.fail(None, f"cannot read: {exc.strerror or exc}")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self.fail(f"line {line}", "is not UTF-8 text; save the manifest as UTF-8")

    def _id(self, spot: Spot, value: object) -> str:
        """Ids are strings; ints are accepted because spreadsheets and scripts love numbering."""
        where = spot.at("id")
        if value is None:
            self.fail(where, "missing; every image needs an id")
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(where, f"must be a string, got {json_type(value)}")
        image_id = str(value)
        if not image_id.strip():
            self.fail(where, "is empty; every image needs an id")
        first = self.seen.get(image_id)
        if first is not None:
            self.fail(where, f"{show(image_id)} duplicates {first}")
        self.seen[image_id] = spot.place
        return image_id

    def _text(self, spot: Spot, field: str, value: object) -> str:
        if value is None:
            self.fail(spot.at(field), "missing")
        if not isinstance(value, str):
            self.fail(spot.at(field), f"must be a string, got {json_type(value)}")
        if not value.strip():
            self.fail(spot.at(field), "is empty")
        return value

    def _url(self, spot: Spot, value: object) -> str:
        url = self._text(spot, "url", value)
        if _PLAIN_URL.fullmatch(url):  # the usual URL, settled without splitting it
            return url
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = urlsplit("")
        if parts.username is not None or parts.password is not None:
            self.fail(
                spot.at("url"),
                f"must not hold a user name or password ({show(redact(url))}): they would be "
                "stored with the job and sent to the provider",
            )
        if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
            self.fail(spot.at("url"), f"must be an http(s) URL, got {show(redact(url))}")
        return url

    def _path(self, spot: Spot, value: object) -> Path:
        """Relative paths start at the manifest's folder, not at wherever the CLI was run."""
        text = self._text(spot, "path", value)
        try:
            path = (self.base / Path(text).expanduser()).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            self.fail(spot.at("path"), f"cannot resolve {show(text)}: {exc}")
        problem = probe(path)
        if problem is not None:
            self.fail(spot.at("path"), f"{problem}: {clip(str(path))}")
        return path


@contextmanager
def photos_not_bombs() -> Iterator[None]:
    """Silence Pillow's bomb warning: a 150-megapixel medium-format frame is a photo."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def probe(path: Path) -> str | None:
    """Say why `path` is not a usable image, or None; only the header is read, so it stays fast.

    Only a regular file is opened: `stat` says what the path is first (a FIFO would block an
    open forever), and the opened descriptor is asked again, in case the file was swapped.
    """
    try:
        kind = file_kind(path.stat().st_mode)
        if kind is not None:
            return f"is {kind}, not an image file"
        fd = os.open(path, _OPEN_FLAGS)
        try:
            kind = file_kind(os.fstat(fd).st_mode)
            if kind is not None:
                return f"is {kind}, not an image file"
            os.set_blocking(fd, True)
            handle = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with handle:
            # a RAW file's preview is read when the photo is sent (images.py); here, that it opens
            return None if path.suffix.lower() in RAW_SUFFIXES else _probe_header(handle)
    except FileNotFoundError:
        return "file not found"
    except (OSError, ValueError) as exc:
        return f"cannot read ({getattr(exc, 'strerror', None) or exc})"


def clip(text: str, limit: int = ECHO_MAX) -> str:
    """At most `limit` characters of something a user sent, for an error message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact(url: str) -> str:
    """The URL with any user name and password replaced by `***`."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"***@{host}"))
    except ValueError:
        return "<an address that cannot be parsed>"


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


def json_type(value: object) -> str:
    """Name a value's type the way a JSON author thinks of it."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def show(value: object) -> str:
    """Quote a value for a one-line message, cut short so a huge cell cannot flood the terminal."""
    text = repr(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 3] + "..."


def pair_raw_with_jpeg(images: ImageList) -> ImageList:
    """A RAW file and a JPEG (or HEIC) of the same name in one folder are one shutter press:
    the pair is rated once, through the JPEG entry, and the RAW becomes its companion (its
    sidecar gets the same rating). The RAW entry's own id is dropped. Only a manifest with a
    RAW photo is looked at again, and then only its photos given by path, one at a time."""
    raws = images.raw_positions()
    if not raws:
        return images
    by_shot: dict[tuple[Path, str], int] = {}
    for index in images.local_positions():
        path = images[index].path
        if path is not None and path.suffix.lower() not in RAW_SUFFIXES:
            by_shot.setdefault((path.parent, path.stem.lower()), index)
    merged: dict[int, ImageInput] = {}
    dropped: set[int] = set()
    for index in raws:
        path = images[index].path
        assert path is not None
        partner = by_shot.get((path.parent, path.stem.lower()))
        if partner is None:
            continue
        jpeg = merged.get(partner) or images[partner]
        merged[partner] = jpeg.model_copy(update={"companions": [*jpeg.companions, path]})
        dropped.add(index)
    return images.rebuilt(merged, dropped)
