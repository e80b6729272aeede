"""Reading written metadata back the way photo software does: exiftool and an XML parser."""

from __future__ import annotations

import io
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

# skipped with the reason where exiftool is missing, failed under CI=true (tests/conftest.py)
needs_exiftool = pytest.mark.needs("exiftool")

RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
XMP = "{http://ns.adobe.com/xap/1.0/}"
DC = "{http://purl.org/dc/elements/1.1/}"
CRS = "{http://ns.adobe.com/camera-raw-settings/1.0/}"
XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\x00"


def exiftool(path: Path, *tags: str) -> dict[str, object]:
    """exiftool's JSON for one file (-G1: tags named by group, e.g. `XMP-xmp:Rating`)."""
    out = subprocess.run(
        ["exiftool", "-j", "-G1", "-a", "-struct", *tags, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (document,) = json.loads(out)
    return document


def embedded_packet(path: Path) -> ET.Element:
    """The photo's XMP packet as exiftool extracts it, parsed: its first rdf:Description."""
    data = subprocess.run(
        ["exiftool", "-b", "-XMP", str(path)], check=True, capture_output=True
    ).stdout
    root = ET.fromstring(data)
    description = root.find(f"{RDF}RDF/{RDF}Description")
    assert description is not None
    return description


def jpeg_segments(data: bytes) -> tuple[list[bytes], bytes]:
    """A JPEG's marker segments before the scan, and everything from the scan on (the pixels)."""
    segments, at = [], 2
    while data[at] == 0xFF and data[at + 1] != 0xDA:
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        segments.append(data[at : at + 2 + length])
        at += 2 + length
    return segments, data[at:]


def camera_jpeg(path: Path, size: tuple[int, int] = (320, 240)) -> Path:
    """A JPEG with a camera's EXIF (make, model, capture time, exposure) and an ICC profile."""
    image = Image.new("RGB", size, (180, 40, 40))
    image.paste((30, 60, 200), (0, 0, size[0] // 2, size[1] // 2))
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS R5"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 10:00:00"
    exif.get_ifd(0x8769)[0x829A] = IFDRational(1, 250)
    image.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


def pixels(path: Path) -> bytes:
    """Decoded pixels, to show that image data was not re-encoded."""
    with Image.open(path) as opened:
        return opened.convert("RGB").tobytes()


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()
