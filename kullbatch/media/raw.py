"""A camera RAW file -> an upright Pillow image, from its embedded preview (LibRaw, via rawpy).

Cameras embed a full-size or near-full-size JPEG in every RAW file: reading it is fast and it
is what the photographer saw on the camera's screen. Only when a file has no usable preview
(none, one LibRaw cannot hand over, or a thumbnail too small to judge focus by) is the raw
data demosaiced, at half size, which is still larger than any provider wants.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from kullbatch.errors import PermanentImageError

if TYPE_CHECKING:
    from pathlib import Path

    import rawpy

MIN_PREVIEW_EDGE = 512  # a smaller preview is a thumbnail: too coarse to judge sharpness
_EXIF_ORIENTATION = 0x0112
# LibRaw's `flip` (0 upright, 3 upside down, 5 turned left, 6 turned right) -> the turn that
# makes the preview upright
_TURNS = {
    3: Image.Transpose.ROTATE_180,
    5: Image.Transpose.ROTATE_90,
    6: Image.Transpose.ROTATE_270,
}


def read_raw(path: Path, source: bytes | None = None) -> Image.Image:
    """The RAW file's preview (else its demosaiced data), upright, or PermanentImageError;
    from `source`, the file's bytes, when they were read already."""
    import rawpy  # noqa: PLC0415 - LibRaw and numpy load with the first RAW file, not at start

    try:
        with rawpy.imread(str(path) if source is None else io.BytesIO(source)) as raw:
            preview = _preview(raw)
            if preview is not None:
                return _upright(preview, raw.sizes.flip)
            return Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True))
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        if source is None and not path.exists():  # LibRaw says only "Input/output error"
            raise PermanentImageError(f"{path}: file not found (moved or deleted?)") from exc
        raise PermanentImageError(
            f"{path}: cannot read this RAW file's preview or data: {exc}"
        ) from exc


def _preview(raw: rawpy.RawPy) -> Image.Image | None:
    """The embedded preview, or None when there is none usable."""
    import rawpy  # noqa: PLC0415 - loaded by read_raw already

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    try:
        image = _decode(thumb.data)
    except (UnidentifiedImageError, OSError, ValueError, TypeError):
        return None
    if max(image.size) < MIN_PREVIEW_EDGE:
        return None
    return image


def _decode(data: object) -> Image.Image:
    """A JPEG preview's bytes, or a bitmap preview's RGB array, as a Pillow image."""
    if isinstance(data, bytes):
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    return Image.fromarray(data)  # type: ignore[arg-type]  # rawpy's bitmap: an RGB ndarray


def _upright(preview: Image.Image, flip: int) -> Image.Image:
    """Turn the preview by the RAW file's orientation, unless the preview carries its own."""
    if preview.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        return preview  # images.encode_image applies the preview's own EXIF orientation
    turn = _TURNS.get(flip)
    return preview if turn is None else preview.transpose(turn)
