"""Generate the example shoot: synthetic photos of deliberately varying quality.

Every photo is drawn with Pillow alone from a fixed seed, so a rerun with the same Pillow
gives the same files: a few sharp, well-exposed frames, and the same kinds of scene soft, badly
out of focus, underexposed, overexposed, dim or flat. The local rater
(kullbatch/providers/local.py) is calibrated on them and should tell them apart.

Rerun from anywhere (paths are relative to this file); it rewrites examples/photos/,
examples/shoot.json and examples/shoot.csv:

    python examples/make_examples.py
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps

HERE = Path(__file__).resolve().parent
PHOTOS = HERE / "photos"
LANDSCAPE = (1200, 800)
PORTRAIT = (800, 1200)
SEED = 20240611
Colour = tuple[int, int, int]
Scene = Callable[[random.Random], Image.Image]
Effect = Callable[[Image.Image], Image.Image]


# --- building blocks -------------------------------------------------------------------------


def gradient(size: tuple[int, int], top: Colour, bottom: Colour) -> Image.Image:
    """A vertical colour gradient, like a clear sky or a graded backdrop."""
    mask = Image.linear_gradient("L").resize(size, Image.Resampling.BICUBIC)
    return ImageOps.colorize(mask, black=top, white=bottom)


def noise(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Uniform grey noise from the seeded generator (Pillow's own noise is not seedable)."""
    return Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))


def texture(rng: random.Random, size: tuple[int, int], grain: int) -> Image.Image:
    """Cloudy greyscale texture: coarse noise blown up, with finer octaves on top."""
    layers = []
    for step in (grain * 4, grain, max(grain // 4, 1)):
        small = noise(rng, (max(size[0] // step, 2), max(size[1] // step, 2)))
        layers.append(small.resize(size, Image.Resampling.BICUBIC))
    mixed = Image.blend(layers[0], layers[1], 0.4)
    return ImageOps.autocontrast(Image.blend(mixed, layers[2], 0.25), cutoff=1)


def tinted(
    rng: random.Random, size: tuple[int, int], dark: Colour, light: Colour, grain: int
) -> Image.Image:
    """A textured surface (water, grass, sand, stone) between two colours."""
    return ImageOps.colorize(texture(rng, size, grain), black=dark, white=light)


def add_grain(rng: random.Random, image: Image.Image, strength: int) -> Image.Image:
    """Sensor grain: add plus or minus `strength` of noise to every channel."""
    grain = noise(rng, image.size).point(lambda v: v * (2 * strength + 1) // 256)
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), 1.0, -strength)


def ridge(rng: random.Random, width: int, base: int, rough: int, step: int = 20) -> list[int]:
    """A random-walk skyline height for every `step` pixels, for hills and mountains."""
    heights, y = [], base
    for _ in range(0, width + step, step):
        y = max(base - 3 * rough, min(base + rough, y + rng.randint(-rough // 2, rough // 2)))
        heights.append(y)
    return heights


def paste_ridge(
    canvas: Image.Image, heights: list[int], bottom: int, fill: Image.Image, step: int = 20
) -> None:
    """Fill the area under a ridge line with a texture."""
    mask = Image.new("L", canvas.size, 0)
    points = [(i * step, y) for i, y in enumerate(heights)]
    ImageDraw.Draw(mask).polygon([*points, (canvas.width, bottom), (0, bottom)], fill=255)
    canvas.paste(fill, (0, 0), mask)


# --- scenes --------------------------------------------------------------------------------


def harbour(rng: random.Random) -> Image.Image:
    """Sky, far hills, a textured sea with moored boats and a pier."""
    w, h = LANDSCAPE
    img = gradient(LANDSCAPE, (70, 120, 190), (205, 220, 235))
    paste_ridge(
        img, ridge(rng, w, 430, 30), 470, tinted(rng, LANDSCAPE, (40, 70, 50), (95, 120, 90), 24)
    )
    sea = tinted(rng, LANDSCAPE, (15, 50, 85), (90, 140, 170), 6)
    img.paste(sea.crop((0, 460, w, h)), (0, 460))
    draw = ImageDraw.Draw(img)
    for _ in range(260):
        x, y = rng.randrange(w), rng.randrange(470, h)
        draw.line((x, y, x + rng.randint(10, 40), y), fill=(200, 220, 230), width=1)
    for i in range(5):
        x, y = 120 + i * 210 + rng.randint(-30, 30), 560 + rng.randint(0, 120)
        draw.polygon(
            [(x, y), (x + 150, y), (x + 125, y + 35), (x + 20, y + 35)], fill=(235, 235, 225)
        )
        draw.rectangle((x + 20, y + 30, x + 125, y + 35), fill=(150, 30, 30))
        draw.line((x + 70, y, x + 70, y - 170), fill=(60, 50, 40), width=4)
        draw.polygon([(x + 74, y - 160), (x + 74, y - 10), (x + 140, y - 10)], fill=(245, 240, 225))
    for x in range(0, w, 60):
        draw.rectangle((x, 720, x + 14, h), fill=(70, 50, 35))
    draw.rectangle((0, 712, w, 730), fill=(110, 85, 60))
    return img


def city(rng: random.Random) -> Image.Image:
    """Dusk skyline: blocks of buildings with lit and dark windows, a street below."""
    w, h = LANDSCAPE
    img = gradient(LANDSCAPE, (35, 45, 95), (240, 160, 110))
    draw = ImageDraw.Draw(img)
    x = 0
    while x < w:
        bw, top = rng.randint(70, 160), rng.randint(150, 520)
        shade = rng.randint(35, 90)
        draw.rectangle((x, top, x + bw, 700), fill=(shade, shade, shade + 15), outline=(15, 15, 20))
        for wy in range(top + 15, 680, 26):
            for wx in range(x + 10, x + bw - 14, 20):
                lit = rng.random() < 0.45
                draw.rectangle(
                    (wx, wy, wx + 9, wy + 14), fill=(250, 215, 130) if lit else (20, 25, 40)
                )
        x += bw + rng.randint(0, 12)
    street = tinted(rng, LANDSCAPE, (25, 25, 30), (90, 90, 95), 3)
    img.paste(street.crop((0, 700, w, h)), (0, 700))
    for lane in range(0, w, 120):
        draw.rectangle((lane, 748, lane + 60, 754), fill=(235, 235, 220))
    return img


def portrait(rng: random.Random) -> Image.Image:
    """Head and shoulders in front of a bokeh background."""
    w, h = PORTRAIT
    back = gradient(PORTRAIT, (60, 80, 60), (120, 110, 80))
    bokeh = ImageDraw.Draw(back)
    for _ in range(40):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randint(20, 70)
        bokeh.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randint(150, 230), 200, 120))
    img = back.filter(ImageFilter.GaussianBlur(14))
    draw = ImageDraw.Draw(img)
    draw.ellipse((90, 820, 710, 1500), fill=(40, 60, 110))  # shoulders in a blue jacket
    draw.polygon([(330, 830), (470, 830), (400, 960)], fill=(235, 235, 230))  # collar
    draw.rectangle((345, 640, 455, 850), fill=(200, 150, 120))  # neck
    draw.ellipse((250, 260, 550, 700), fill=(215, 165, 135))  # face
    draw.chord((235, 200, 565, 560), 180, 360, fill=(55, 35, 25))  # hair
    for ex in (330, 470):
        draw.ellipse((ex - 32, 440, ex + 32, 472), fill=(245, 245, 240))
        draw.ellipse((ex - 13, 443, ex + 13, 469), fill=(70, 45, 30))
        draw.ellipse((ex - 5, 450, ex + 3, 458), fill=(255, 255, 255))
        draw.line((ex - 38, 415, ex + 38, 410), fill=(60, 40, 30), width=7)
    draw.line((400, 470, 385, 560, 410, 570), fill=(170, 115, 95), width=4)  # nose
    draw.arc((345, 575, 455, 635), 20, 160, fill=(150, 60, 60), width=8)  # smile
    skin = tinted(rng, PORTRAIT, (0, 0, 0), (255, 255, 255), 2).convert("L")
    return Image.composite(
        img, ImageChops.multiply(img, Image.merge("RGB", (skin,) * 3)), _soft_mask(skin)
    )


def _soft_mask(texture_l: Image.Image) -> Image.Image:
    """Keep most of the picture and let a little skin-pore texture through."""
    return texture_l.point(lambda v: 255 if v > 40 else 225)


def mountain_lake(rng: random.Random) -> Image.Image:
    """Snow-capped range mirrored in a lake, a stony shore in front."""
    w, h = LANDSCAPE
    img = gradient(LANDSCAPE, (40, 100, 180), (190, 215, 240))
    far = ridge(rng, w, 330, 70)
    paste_ridge(img, far, 480, tinted(rng, LANDSCAPE, (70, 80, 95), (150, 155, 170), 10))
    draw = ImageDraw.Draw(img)
    for i, y in enumerate(far):
        if y < 300:
            draw.polygon(
                [(i * 20 - 25, y + 28), (i * 20, y), (i * 20 + 25, y + 28)], fill=(245, 248, 252)
            )
    paste_ridge(
        img, ridge(rng, w, 430, 25), 480, tinted(rng, LANDSCAPE, (20, 55, 30), (70, 110, 60), 5)
    )
    mirror = ImageOps.flip(img.crop((0, 160, w, 480))).resize((w, 220))
    water = ImageEnhance.Brightness(mirror).enhance(0.7)
    img.paste(water, (0, 480))
    for _ in range(180):
        x, y = rng.randrange(w), rng.randrange(485, 700)
        draw.line((x, y, x + rng.randint(20, 80), y), fill=(170, 190, 205), width=1)
    img.paste(tinted(rng, (w, h - 700), (60, 55, 50), (185, 175, 160), 2), (0, 700))
    return img


def market_street(rng: random.Random) -> Image.Image:
    """Facades with striped awnings over a cobbled street."""
    w, h = LANDSCAPE
    img = Image.new("RGB", LANDSCAPE, (200, 190, 170))
    draw = ImageDraw.Draw(img)
    palette = [(190, 90, 60), (220, 200, 150), (120, 140, 160), (170, 160, 110), (200, 120, 120)]
    for x in range(0, w, 200):
        draw.rectangle(
            (x, 0, x + 200, 560), fill=rng.choice(palette), outline=(40, 35, 30), width=3
        )
        for wy in (60, 200):
            draw.rectangle(
                (x + 40, wy, x + 90, wy + 90), fill=(45, 55, 70), outline=(240, 240, 235), width=5
            )
            draw.rectangle(
                (x + 115, wy, x + 165, wy + 90), fill=(45, 55, 70), outline=(240, 240, 235), width=5
            )
        stripe = rng.choice([(200, 40, 40), (40, 110, 60), (30, 70, 150)])
        for sx in range(x, x + 200, 25):
            draw.polygon(
                [(sx, 360), (sx + 25, 360), (sx + 35, 440), (sx + 10, 440)],
                fill=stripe if sx // 25 % 2 else (245, 240, 230),
            )
        draw.rectangle((x + 70, 460, x + 130, 560), fill=(70, 45, 30))
    stones = tinted(rng, (w, h - 560), (70, 65, 60), (160, 150, 140), 2)
    img.paste(stones, (0, 560))
    for y in range(570, h, 22):
        offset = (y // 22 % 2) * 16
        for x in range(-offset, w, 32):
            draw.ellipse((x, y, x + 30, y + 20), outline=(50, 45, 40), width=2)
    return img


def forest(rng: random.Random) -> Image.Image:
    """Trunks and foliage in layers, a mossy floor, sky showing through."""
    w, h = LANDSCAPE
    img = gradient(LANDSCAPE, (150, 190, 220), (210, 225, 215))
    draw = ImageDraw.Draw(img)
    for depth, (dark, light) in enumerate(
        [((95, 135, 85), (160, 190, 130)), ((55, 95, 45), (120, 160, 85))]
    ):
        for _ in range(9 + depth * 4):
            x, tw = rng.randrange(w), rng.randint(18, 45) + depth * 15
            draw.rectangle((x, 0, x + tw, h), fill=(90 - depth * 25, 70 - depth * 20, 45))
            for _ in range(25):
                cx, cy, r = x + rng.randint(-120, 120), rng.randint(0, 480), rng.randint(30, 80)
                colour = tuple(rng.randint(a, b) for a, b in zip(dark, light, strict=True))
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    floor = tinted(rng, (w, 260), (60, 80, 35), (160, 170, 90), 3)
    img.paste(floor, (0, h - 260))
    leaves = tinted(rng, LANDSCAPE, (0, 0, 0), (255, 255, 255), 1).convert("L")
    return ImageChops.multiply(img, Image.merge("RGB", (leaves.point(lambda v: 195 + v // 4),) * 3))


def beach(rng: random.Random) -> Image.Image:
    """Bright sky, turquoise sea, sand with an umbrella and a few bathers."""
    w, h = LANDSCAPE
    img = gradient(LANDSCAPE, (90, 160, 225), (215, 235, 250))
    sea = tinted(rng, LANDSCAPE, (20, 120, 150), (120, 200, 210), 5)
    img.paste(sea.crop((0, 380, w, 520)), (0, 380))
    img.paste(tinted(rng, (w, h - 520), (190, 165, 120), (245, 225, 185), 2), (0, 520))
    draw = ImageDraw.Draw(img)
    for y in range(505, 530, 6):
        draw.line((0, y, w, y + rng.randint(-4, 4)), fill=(250, 252, 250), width=3)
    draw.line((700, 500, 720, 720), fill=(80, 60, 40), width=8)
    for i, colour in enumerate([(220, 50, 50), (250, 250, 240)] * 3):
        draw.pieslice((560, 440, 860, 640), 180 + i * 30, 210 + i * 30, fill=colour)
    for _ in range(6):
        x, y = rng.randint(50, 1100), rng.randint(560, 740)
        draw.ellipse((x, y - 60, x + 22, y - 38), fill=(160, 110, 80))
        draw.rectangle(
            (x + 2, y - 38, x + 20, y),
            fill=rng.choice([(30, 60, 160), (200, 60, 30), (250, 200, 40)]),
        )
    return img


def grassland(rng: random.Random) -> Image.Image:
    """Rolling grassland with a lone tree, furrows and a pale sky."""
    w, h = LANDSCAPE
    img = gradient(LANDSCAPE, (110, 160, 215), (225, 235, 240))
    paste_ridge(
        img,
        ridge(rng, w, 450, 20, 40),
        h,
        tinted(rng, LANDSCAPE, (70, 110, 30), (170, 190, 80), 4),
        40,
    )
    draw = ImageDraw.Draw(img)
    for y in range(520, h, 18):
        draw.line((0, y, w, y + 40), fill=(90, 120, 40), width=3)
    draw.rectangle((840, 300, 862, 480), fill=(60, 40, 25))
    for _ in range(40):
        cx, cy, r = 851 + rng.randint(-110, 110), 260 + rng.randint(-80, 60), rng.randint(25, 55)
        draw.ellipse(
            (cx - r, cy - r, cx + r, cy + r),
            fill=(30 + rng.randint(0, 40), 80 + rng.randint(0, 50), 30),
        )
    return img


# --- what goes wrong in a shoot ------------------------------------------------------------


def sharp(image: Image.Image) -> Image.Image:
    return image


def blurred(radius: float) -> Effect:
    """Missed focus: a Gaussian blur of `radius` pixels over the whole frame."""
    return lambda image: image.filter(ImageFilter.GaussianBlur(radius))


def exposed(gain: float, lift: int = 0) -> Effect:
    """Wrong exposure: scale every value by `gain`, shift by `lift`, clip to 0..255."""
    table = [max(0, min(255, round(v * gain) + lift)) for v in range(256)]
    return lambda image: image.point(table * 3)


def hazy(contrast: float, haze: Colour) -> Effect:
    """Flat light or haze: squeeze the contrast and veil the frame with a grey cast."""

    def effect(image: Image.Image) -> Image.Image:
        flat = ImageEnhance.Contrast(image).enhance(contrast)
        return Image.blend(flat, Image.new("RGB", image.size, haze), 0.35)

    return effect


def shifted(pixels: int) -> Effect:
    """The camera moved between two frames of a burst: the scene slides sideways."""
    return lambda image: ImageChops.offset(image, pixels, pixels // 3)


def chain(*effects: Effect) -> Effect:
    def effect(image: Image.Image) -> Image.Image:
        for step in effects:
            image = step(image)
        return image

    return effect


# --- the shoot -----------------------------------------------------------------------------


CAMERAS = {
    "xt5": "Fujifilm X-T5",
    "x100": "Fujifilm X100V",
    "a7": "Sony A7 IV",
    "r6": "Canon EOS R6",
    "z7": "Nikon Z7 II",
}


@dataclass(frozen=True, slots=True)
class Shot:
    """One frame of the shoot: what is in it, what went wrong, and how it was taken."""

    stem: str
    scene: Scene
    effect: Effect
    settings: str  # camera (a key of CAMERAS), ISO, aperture, shutter speed
    keywords: str  # the photographer's own tags, space-separated
    taken: str = ""  # EXIF capture time "HH:MM:SS.ss" on the shoot's day; "" = a minute per shot

    @property
    def camera(self) -> str:
        return CAMERAS[self.settings.split()[0]]

    @property
    def tags(self) -> list[str]:
        return self.keywords.split()


SHOTS = [
    Shot("01_harbour_sharp", harbour, sharp, "xt5 ISO160 f/8 1/500", "harbour boats"),
    Shot("02_city_skyline_sharp", city, sharp, "a7 ISO400 f/5.6 1/125", "city dusk"),
    Shot("03_portrait_sharp", portrait, sharp, "r6 ISO200 f/2 1/250", "portrait"),
    Shot("04_mountain_lake_sharp", mountain_lake, sharp, "z7 ISO64 f/11 1/200", "mountains lake"),
    Shot(
        "05_market_street_sharp", market_street, sharp, "x100 ISO320 f/5.6 1/320", "street market"
    ),
    Shot("06_forest_slightly_soft", forest, blurred(2.0), "a7 ISO800 f/4 1/60", "forest"),
    Shot("07_harbour_blurry", harbour, blurred(8.0), "xt5 ISO160 f/8 1/500", "harbour boats"),
    Shot("08_portrait_out_of_focus", portrait, blurred(4.5), "r6 ISO200 f/1.4 1/250", "portrait"),
    Shot(
        "09_city_night_underexposed", city, exposed(0.22, -8), "a7 ISO100 f/8 1/500", "city night"
    ),
    Shot("10_forest_underexposed", forest, exposed(0.35, -12), "a7 ISO200 f/8 1/250", "forest"),
    Shot("11_beach_overexposed", beach, exposed(1.7, 45), "r6 ISO400 f/2.8 1/60", "beach summer"),
    Shot(
        "12_field_blown_highlights",
        grassland,
        exposed(2.2, 60),
        "z7 ISO800 f/2.8 1/30",
        "field tree",
    ),
    Shot(
        "13_mountain_lake_hazy",
        mountain_lake,
        hazy(0.3, (200, 205, 210)),
        "z7 ISO64 f/11 1/200",
        "mountains haze",
    ),
    Shot(
        "14_market_street_flat",
        market_street,
        hazy(0.25, (150, 145, 140)),
        "x100 ISO320 f/5.6 1/320",
        "street market",
    ),
    Shot("15_harbour_dim", harbour, exposed(0.55), "xt5 ISO160 f/11 1/1000", "harbour boats"),
    Shot(
        "16_field_soft_and_dark",
        grassland,
        chain(blurred(3.0), exposed(0.45)),
        "z7 ISO100 f/16 1/15",
        "field tree",
    ),
    # a burst: three frames of one moment a third of a second apart, the middle one sharp
    Shot(
        "17_portrait_burst_soft",
        portrait,
        chain(shifted(10), blurred(2.5)),
        "r6 ISO200 f/2 1/250",
        "portrait burst",
        "10:20:00.10",
    ),
    Shot(
        "18_portrait_burst_sharp",
        portrait,
        shifted(4),
        "r6 ISO200 f/2 1/250",
        "portrait burst",
        "10:20:00.43",
    ),
    Shot(
        "19_portrait_burst_blurry",
        portrait,
        chain(shifted(-8), blurred(5.0)),
        "r6 ISO200 f/2 1/250",
        "portrait burst",
        "10:20:00.76",
    ),
]
SHOOT_DAY = "2024:06:11"
EXIF_IFD, DATE_TIME_ORIGINAL, SUBSEC_TIME_ORIGINAL = 0x8769, 36867, 37521


def exif_for(index: int, shot: Shot) -> Image.Exif:
    """DateTimeOriginal (and SubSecTimeOriginal): a minute per shot from 10:00, or its own."""
    taken = shot.taken or f"10:{index:02d}:00"
    whole, _, fraction = taken.partition(".")
    exif = Image.Exif()
    ifd = exif.get_ifd(EXIF_IFD)
    ifd[DATE_TIME_ORIGINAL] = f"{SHOOT_DAY} {whole}"
    if fraction:
        ifd[SUBSEC_TIME_ORIGINAL] = fraction
    return exif


def render(shot: Shot, seed: int) -> Image.Image:
    """Draw the scene from its own seed, apply what went wrong, then add sensor grain."""
    rng = random.Random(f"{SEED}-{shot.scene.__name__}")
    photo = shot.effect(shot.scene(rng))
    return add_grain(random.Random(seed), photo, 3)


def manifest_entry(index: int, shot: Shot) -> dict[str, object]:
    filename = f"{shot.stem}.jpg"
    _, iso, aperture, shutter = shot.settings.split()
    return {
        "id": f"img{index:02d}",
        "filename": filename,
        "path": f"photos/{filename}",
        "metadata": {
            "camera": shot.camera,
            "iso": int(iso.removeprefix("ISO")),
            "aperture": aperture,
            "shutter": shutter,
        },
        "tags": shot.tags,
    }


def write_manifests(entries: list[dict[str, object]]) -> None:
    shoot = {
        "shootId": "example-shoot",
        "images": entries,
        "providerId": "local",
        "prompt": "Rate these photos",
        "systemPrompt": "You are an expert photo editor",
        "mode": "fast",
    }
    (HERE / "shoot.json").write_text(json.dumps(shoot, indent=2) + "\n", encoding="utf-8")
    with (HERE / "shoot.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "filename", "path", "tags", "camera"])
        for entry, shot in zip(entries, SHOTS, strict=True):
            row = [entry["id"], entry["filename"], entry["path"], ";".join(shot.tags)]
            writer.writerow([*row, shot.camera])


def main() -> None:
    PHOTOS.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, shot in enumerate(SHOTS, start=1):
        target = PHOTOS / f"{shot.stem}.jpg"
        photo = render(shot, SEED + index)
        photo.save(target, "JPEG", quality=85, optimize=True, exif=exif_for(index, shot))
        entries.append(manifest_entry(index, shot))
        print(f"{target.relative_to(HERE)}  {target.stat().st_size // 1024} KB")
    write_manifests(entries)
    print(f"wrote {len(entries)} photos, shoot.json and shoot.csv into {HERE}")


if __name__ == "__main__":
    main()
