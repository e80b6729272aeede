"""A 200-photo shoot for the contact sheet's browser tests: small JPEGs drawn from a seed, each
its own scene, 10 s apart by EXIF, opening with a three-frame burst; one file is broken."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from tests.burst_shoot import DATE_TIME_ORIGINAL, EXIF_IFD, SUBSEC_TIME_ORIGINAL

SIZE = (240, 160)
BURST = ("b0", "b1", "b2")  # one moment, 0.3 s apart: the shoot's first frames
BROKEN = "broken"  # a JPEG cut short: its header reads, its pixels do not, so it fails


def scene(seed: int) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", SIZE, tuple(rng.randrange(40, 220) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(SIZE[0]), rng.randrange(SIZE[1])
        w, h = rng.randrange(10, 120), rng.randrange(10, 90)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        else:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
    return image


def save(image: Image.Image, path: Path, seconds: float) -> None:
    exif = Image.Exif()
    ifd = exif.get_ifd(EXIF_IFD)
    whole = int(seconds)
    ifd[DATE_TIME_ORIGINAL] = (
        f"2024:06:11 {10 + whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    )
    ifd[SUBSEC_TIME_ORIGINAL] = f"{round((seconds - whole) * 100):02d}"
    image.save(path, "JPEG", quality=85, exif=exif)


def make_sheet_shoot(folder: Path, photos: int = 200) -> list[dict[str, str]]:
    """The photos under `folder`, and the manifest's images (paths relative to its parent)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    base = scene(0)
    for i, image_id in enumerate(BURST):
        frame = base.filter(ImageFilter.GaussianBlur(i * 0.8)) if i else base
        save(frame, folder / f"{image_id}.jpg", i * 0.3)
        images.append(image_id)
    for n in range(photos - len(BURST) - 1):
        image_id = f"p{n:03d}"
        save(scene(n + 1), folder / f"{image_id}.jpg", 10.0 * (n + 1))
        images.append(image_id)
    save(scene(9999), folder / f"{BROKEN}.jpg", 10.0 * photos)
    whole = (folder / f"{BROKEN}.jpg").read_bytes()
    (folder / f"{BROKEN}.jpg").write_bytes(whole[: len(whole) // 3])
    images.append(BROKEN)
    return [
        {"id": image_id, "filename": f"{image_id}.jpg", "path": f"{folder.name}/{image_id}.jpg"}
        for image_id in images
    ]
