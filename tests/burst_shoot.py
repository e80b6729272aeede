"""A small shoot with bursts, written to disk for the burst tests: JPEGs with EXIF times."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageFilter

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "photos"
EXIF_IFD, DATE_TIME_ORIGINAL, SUBSEC_TIME_ORIGINAL = 0x8769, 36867, 37521


@dataclass(frozen=True)
class Shot:
    id: str
    source: str  # an example photo's stem
    shift: int = 0  # pixels the camera moved
    blur: float = 0.0
    time: str | None = None  # "HH:MM:SS.ss" on 2024-06-11, or None: no EXIF time


def frame(shot: Shot) -> Image.Image:
    with Image.open(EXAMPLES / f"{shot.source}.jpg") as opened:
        image = opened.convert("RGB")
    if shot.shift:
        image = ImageChops.offset(image, shot.shift, shot.shift // 2)
    if shot.blur:
        image = image.filter(ImageFilter.GaussianBlur(shot.blur))
    return image


def write(shot: Shot, folder: Path) -> Path:
    path = folder / f"{shot.id}.jpg"
    exif = Image.Exif()
    if shot.time is not None:
        whole, _, fraction = shot.time.partition(".")
        ifd = exif.get_ifd(EXIF_IFD)
        ifd[DATE_TIME_ORIGINAL] = f"2024:06:11 {whole}"
        if fraction:
            ifd[SUBSEC_TIME_ORIGINAL] = fraction
    frame(shot).save(path, "JPEG", quality=90, exif=exif)
    return path


def make_shoot(folder: Path, shots: list[Shot]) -> Path:
    """The photos and a JSON manifest listing them in the given order; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [
        {"id": shot.id, "filename": write(shot, folder).name, "path": f"{shot.id}.jpg"}
        for shot in shots
    ]
    manifest = folder / "shoot.json"
    manifest.write_text(json.dumps({"shootId": "bursts", "images": images}), encoding="utf-8")
    return manifest


# A burst of the harbour (sharp, then two shifted and blurred copies 0.3 s apart), the city
# within the same second, the harbour again an hour later, and a portrait pair without EXIF.
SHOOT = [
    Shot("h1", "01_harbour_sharp", time="14:03:07.10"),
    Shot("h2", "01_harbour_sharp", shift=6, blur=2.5, time="14:03:07.40"),
    Shot("c1", "02_city_skyline_sharp", time="14:03:07.55"),
    Shot("h3", "01_harbour_sharp", shift=12, blur=4.0, time="14:03:07.70"),
    Shot("h4", "01_harbour_sharp", shift=3, time="15:03:07.00"),
    Shot("p1", "03_portrait_sharp", shift=4, blur=3.0),
    Shot("p2", "03_portrait_sharp"),
    Shot("m1", "05_market_street_sharp"),
]
