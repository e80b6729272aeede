"""Local photo -> JPEG bytes ready to send, made just before sending and dropped after.

A camera RAW file is read through its embedded preview (`kullbatch.media.raw`), then prepared like
any photo.

Pillow work runs in a worker thread so that 10,000 coroutines keep flowing while one photo
is decoded; the engine bounds how many prepared photos exist at once. `fit_image` is the one
place that converts and shrinks an image for a provider's formats and size limit.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from kullbatch.errors import PermanentImageError
from kullbatch.media import bursts
from kullbatch.media.confine import open_photo
from kullbatch.media.raw import read_raw
from kullbatch.models import (
    DEFAULT_MAX_EDGE,
    RAW_SUFFIXES,
    Fingerprint,
    ImageInput,
    PreparedImage,
)

if TYPE_CHECKING:
    from pathlib import Path

JPEG_QUALITY = 85
MAX_MEGAPIXELS = 200  # a photo beyond this fails alone: decoding it could take gigabytes

register_heif_opener()  # iPhone shoots are HEIC: Pillow reads them through pillow-heif
# Pillow refuses to open an image of more than twice this many pixels anywhere in the
# process, and only warns below that: a 150 MP medium-format frame is a photo, not a bomb.
Image.MAX_IMAGE_PIXELS = MAX_MEGAPIXELS * 1_000_000 // 2
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


async def prepare(
    image: ImageInput,
    max_edge: int = DEFAULT_MAX_EDGE,
    *,
    fingerprint: bool = False,
    source: bytes | None = None,
) -> PreparedImage:
    """A URL passes through; a local file is rotated, downscaled and re-encoded as JPEG, and,
    with `fingerprint`, hashed for burst grouping from the same decode. `source` is the file's
    bytes when they were read already (the result cache hashed them): the file is not read
    again."""
    if image.url is not None:
        return PreparedImage(image_id=image.id, filename=image.filename, url=image.url)
    assert image.path is not None
    data, taken = await asyncio.to_thread(encode_file, image.path, max_edge, fingerprint, source)
    return PreparedImage(image_id=image.id, filename=image.filename, data=data, fingerprint=taken)


def encode_file(
    path: Path, max_edge: int, fingerprint: bool = False, source: bytes | None = None
) -> tuple[bytes, Fingerprint | None]:
    """A local photo as upright JPEG bytes within `max_edge` (a RAW file through its preview),
    and its fingerprint when asked for; from `source`, the file's bytes, when given."""
    upright, captured = upright_file(path, max_edge, "RGB", timed=fingerprint, source=source)
    prepared = within(upright, max_edge)
    return jpeg(prepared), bursts.fingerprint(prepared, captured) if fingerprint else None


def upright_file(
    path: Path, edge: int, mode: str, *, timed: bool = True, source: bytes | None = None
) -> tuple[Image.Image, float | None]:
    """The photo decoded and upright, and its capture time when `timed`.

    A JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers `edge` in `mode`: a 24 MP
    frame then costs a fraction of the time and memory. A RAW file gives its preview, and its
    capture time from the preview's EXIF as LibRaw writes it, else from its own TIFF header.
    `source` holds the file's bytes when they were read already.
    """
    if path.suffix.lower() in RAW_SUFFIXES:
        if source is None:
            with open_photo(path) as handle:
                source = handle.read()
        preview = read_raw(path, source)
        captured = bursts.capture_time_of(preview, raw=True) if timed else None
        if timed and captured is None:  # a bitmap preview or raw data: no EXIF of their own
            captured = bursts.capture_time(io.BytesIO(source), raw=True)
        ImageOps.exif_transpose(preview, in_place=True)
        return preview, captured
    try:
        handle = open_photo(path) if source is None else io.BytesIO(source)
        with handle, _open_image(handle) as opened:
            check_size(opened.size)
            opened.draft(mode, (edge, edge))
            captured = bursts.capture_time_of(opened) if timed else None
            # loads the pixels, so the file can close; in place: a copy of a 6 MP decode
            # costs about a millisecond and a second block of memory
            ImageOps.exif_transpose(opened, in_place=True)
            return opened, captured
    except PermanentImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PermanentImageError(f"{path}: cannot be read as an image: {exc}") from exc


def check_size(size: tuple[int, int]) -> None:
    """A photo over `MAX_MEGAPIXELS` fails alone, before its pixels are decoded."""
    width, height = size
    pixels = width * height
    if pixels > MAX_MEGAPIXELS * 1_000_000:
        raise PermanentImageError(
            f"image too large: {width}x{height} ({round(pixels / 1_000_000)} MP, "
            f"limit {MAX_MEGAPIXELS} MP)"
        )


def _open_image(handle: BinaryIO) -> Image.Image:
    """Pillow's open; an image past its bomb limit is measured from its header instead, so
    the error can say how large it is."""
    try:
        return Image.open(handle)
    except Image.DecompressionBombError:
        size = header_size(handle)
        if size is not None:
            check_size(size)
        raise


def header_size(handle: BinaryIO) -> tuple[int, int] | None:
    """Width and height from the header alone, through the format plugin itself (Pillow's
    `open` would refuse a huge one before saying its size)."""
    Image.init()
    handle.seek(0)
    prefix = handle.read(16)
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        if accept is not None and accept(prefix) is not True:
            continue
        handle.seek(0)
        try:
            with factory(handle, "") as image:
                return image.size
        except (SyntaxError, IndexError, TypeError, ValueError, OSError):
            continue
    return None


def fingerprint_file(path: Path) -> Fingerprint:
    """A photo's fingerprint on its own, from a reduced-size decode: for photos rated without
    one (economy mode, a job from an older kullbatch)."""
    upright, captured = upright_file(path, bursts.SAMPLE_EDGE, "L")
    return bursts.fingerprint(upright, captured)


def preview(path: Path, edge: int) -> Image.Image:
    """The photo upright and in greyscale, at least `edge` pixels on its short side where it
    is that big, from a reduced-size decode: what the focus of a burst's frames is compared on."""
    upright, _ = upright_file(path, edge, "L", timed=False)
    if min(upright.size) > 2 * edge:
        upright = upright.reduce(min(upright.size) // edge)
    return upright.convert("L")


def encode_image(opened: Image.Image, max_edge: int, quality: int = JPEG_QUALITY) -> bytes:
    return jpeg(within(ImageOps.exif_transpose(opened), max_edge), quality)


def within(upright: Image.Image, max_edge: int) -> Image.Image:
    """The image in a mode JPEG stores, shrunk within `max_edge` (in place: it is ours)."""
    if upright.mode not in {"RGB", "L"}:
        upright = upright.convert("RGB")
    if max(upright.size) > max_edge:
        upright.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
    return upright


def jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of encoded image bytes, read from the header without decoding."""
    with Image.open(io.BytesIO(data)) as opened:
        return opened.size


def fit_within(data: bytes, max_bytes: int) -> bytes:
    """Shrink JPEG bytes until they fit a provider's per-image limit, or say why they cannot."""
    if len(data) <= max_bytes:
        return data
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            current = opened.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise PermanentImageError(f"image cannot be decoded to shrink it: {exc}") from exc
    edge = max(current.size)
    while edge >= 256:  # noqa: PLR2004
        edge = int(edge * 0.75)
        smaller = encode_image(current, edge, quality=80)
        if len(smaller) <= max_bytes:
            return smaller
    raise PermanentImageError(
        f"image is {len(data)} bytes and cannot be shrunk under the {max_bytes}-byte limit"
    )


async def fit_image(
    image: PreparedImage,
    *,
    max_bytes: int,
    media_types: frozenset[str],
    why: str = "",
) -> PreparedImage:
    """Bytes a provider accepts: JPEG when the media type is not in `media_types`, then shrunk
    under `max_bytes`, in a worker thread.

    A URL image (no bytes) passes unchanged, for the provider to fetch. An image that cannot be
    converted or shrunk enough is a PermanentImageError naming the file, the limit and `why`
    (the provider's rule, e.g. "anthropic accepts at most 5 MB per image").
    """
    if image.data is None:
        if image.url is not None:
            return image
        raise PermanentImageError(f"{image.filename}: no image data and no URL to send")
    accepted = image.media_type in media_types
    if accepted and len(image.data) <= max_bytes:
        return image
    try:
        data = await asyncio.to_thread(_fit_bytes, image.data, max_bytes, convert=not accepted)
    except PermanentImageError as exc:
        note = f" ({why})" if why else ""
        raise PermanentImageError(f"{image.filename}: {exc.message}{note}") from exc
    return replace(image, data=data, media_type="image/jpeg")


def _fit_bytes(data: bytes, max_bytes: int, *, convert: bool) -> bytes:
    return fit_within(to_jpeg(data) if convert else data, max_bytes)


def to_jpeg(data: bytes, max_edge: int = DEFAULT_MAX_EDGE) -> bytes:
    """Any image Pillow reads (WebP, GIF's first frame, HEIC) -> upright JPEG bytes."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return encode_image(opened, max_edge)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PermanentImageError(f"image cannot be converted to JPEG: {exc}") from exc


def sniff_media_type(data: bytes) -> str | None:
    """The media type of downloaded bytes, from their magic numbers."""
    signatures = {
        b"\xff\xd8\xff": "image/jpeg",
        b"\x89PNG\r\n\x1a\n": "image/png",
        b"GIF87a": "image/gif",
        b"GIF89a": "image/gif",
    }
    for magic, media_type in signatures.items():
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
