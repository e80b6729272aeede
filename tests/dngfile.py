"""Tiny DNG files for the tests, written byte by byte: a CFA raw image, optionally with a JPEG preview.

A DNG is a TIFF: IFD0 holds the preview (NewSubFileType 1) and points through SubIFDs to the raw
CFA image (NewSubFileType 0). Without a preview, IFD0 is the raw image itself. LibRaw (rawpy)
opens these, finds the preview for `extract_thumb` and demosaics the CFA data for `postprocess`.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image

SHORT, LONG, ASCII, BYTE, SRATIONAL = 3, 4, 2, 1, 10
_SIZES = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, SRATIONAL: 8}
_FORMATS = {BYTE: "B", ASCII: "B", SHORT: "H", LONG: "I", SRATIONAL: "i"}


def _value_bytes(kind: int, values: tuple | bytes | str) -> tuple[int, bytes]:
    if kind == ASCII:
        raw = (values.encode() if isinstance(values, str) else values) + b"\0"
        return len(raw), raw
    if kind == SRATIONAL:
        return len(values) // 2, struct.pack(f"<{len(values)}i", *values)
    return len(values), struct.pack(f"<{len(values)}{_FORMATS[kind]}", *values)


class _Tiff:
    """A little-endian TIFF assembled in memory; offsets are patched as blocks are appended."""

    def __init__(self) -> None:
        self.data = bytearray(b"II*\0\0\0\0\0")

    def append(self, block: bytes) -> int:
        if len(self.data) % 2:
            self.data += b"\0"
        offset = len(self.data)
        self.data += block
        return offset

    def ifd(self, entries: list[tuple[int, int, tuple | bytes | str]]) -> int:
        """Write one IFD (entries sorted by tag, out-of-line values after it); return its offset."""
        entries = sorted(entries, key=lambda entry: entry[0])
        start = len(self.data) + (len(self.data) % 2)
        size = 2 + 12 * len(entries) + 4
        extra = bytearray()
        table = bytearray(struct.pack("<H", len(entries)))
        for tag, kind, values in entries:
            count, raw = _value_bytes(kind, values)
            if len(raw) <= 4:
                table += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\0")
            else:
                table += struct.pack("<HHII", tag, kind, count, start + size + len(extra))
                extra += raw + (b"\0" if len(raw) % 2 else b"")
        table += b"\0\0\0\0"
        offset = self.append(bytes(table) + bytes(extra))
        assert offset == start
        return offset


def _cfa(width: int, height: int) -> bytes:
    """A 16-bit RGGB mosaic of a soft gradient."""
    return b"".join(
        struct.pack("<H", 400 + (x * 3000) // width + (y * 200) // height)
        for y in range(height)
        for x in range(width)
    )


def _raw_entries(width: int, height: int, strip: int) -> list[tuple[int, int, tuple | bytes | str]]:
    return [
        (254, LONG, (0,)),
        (256, LONG, (width,)),
        (257, LONG, (height,)),
        (258, SHORT, (16,)),
        (259, SHORT, (1,)),
        (262, SHORT, (32803,)),
        (273, LONG, (strip,)),
        (277, SHORT, (1,)),
        (278, LONG, (height,)),
        (279, LONG, (width * height * 2,)),
        (33421, SHORT, (2, 2)),
        (33422, BYTE, (0, 1, 1, 2)),
        (50717, LONG, (4095,)),
    ]


def _camera_entries(
    orientation: int, taken: str | None = None
) -> list[tuple[int, int, tuple | bytes | str]]:
    stamp: list[tuple[int, int, tuple | bytes | str]] = (
        [] if taken is None else [(306, ASCII, taken)]
    )
    return [
        *stamp,
        (271, ASCII, "TestMake"),
        (272, ASCII, "TestModel"),
        (274, SHORT, (orientation,)),
        (50706, BYTE, (1, 4, 0, 0)),
        (50708, ASCII, "TestMake TestModel"),
        (50721, SRATIONAL, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)),
    ]


def preview_jpeg(
    size: tuple[int, int] = (160, 120), colour: tuple[int, int, int] = (20, 180, 40)
) -> bytes:
    """A JPEG whose left half is `colour` and right half white, so rotation shows."""
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(colour, (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_dng(
    path: Path,
    *,
    preview: bytes | None = None,
    preview_size: tuple[int, int] = (160, 120),
    orientation: int = 1,
    raw_size: tuple[int, int] = (96, 64),
    bitmap: bool = False,
    taken: str | None = None,
) -> Path:
    """A DNG at `path`: a raw CFA image and, when `preview` is given, that JPEG as IFD0.

    With `bitmap`, `preview` is raw RGB bytes of `preview_size`, stored uncompressed. `taken`
    ("YYYY:MM:DD HH:MM:SS") goes in IFD0's DateTime, where LibRaw reads the capture time.
    """
    width, height = raw_size
    tiff = _Tiff()
    raw_strip = tiff.append(_cfa(width, height))
    if preview is None:
        ifd0 = tiff.ifd(
            _raw_entries(width, height, raw_strip) + _camera_entries(orientation, taken)
        )
    else:
        jpeg_strip = tiff.append(preview)
        raw_ifd = tiff.ifd(_raw_entries(width, height, raw_strip))
        pw, ph = preview_size
        ifd0 = tiff.ifd(
            [
                (254, LONG, (1,)),
                (256, LONG, (pw,)),
                (257, LONG, (ph,)),
                (258, SHORT, (8, 8, 8)),
                (259, SHORT, (1,) if bitmap else (7,)),
                (262, SHORT, (2,) if bitmap else (6,)),
                (273, LONG, (jpeg_strip,)),
                (277, SHORT, (3,)),
                (278, LONG, (ph,)),
                (279, LONG, (len(preview),)),
                (330, LONG, (raw_ifd,)),
                *_camera_entries(orientation, taken),
            ]
        )
    tiff.data[4:8] = struct.pack("<I", ifd0)
    path.write_bytes(bytes(tiff.data))
    return path
