"""The local rater and the burst thresholds on photos they were not tuned on.

The rater's thresholds (kullbatch/providers/local.py) and the burst grouping's
(`DEFAULT_GAP`, `DEFAULT_DISTANCE` in kullbatch/media/bursts.py) were calibrated on the bundled
shoot (examples/make_examples.py: Pillow-drawn landscapes and portraits). Here the photos are
made differently, with numpy from fixed seeds: other scenes (a 1/f "gravel" texture, hard-edged
shapes on a gradient, a mosaic of tiles, gratings, a sunset skyline) and other degradations
(Gaussian and motion blur, under- and overexposure, low contrast, sensor grain, heavy JPEG
compression); bursts are the same scene seen through a camera that moved, zoomed, re-exposed
or lost focus a little, beside other scenes in the same seconds.

What the rater cannot see is written down as strict xfails (each says why), so the day it
learns to see it the suite says so.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from scipy.spatial import cKDTree
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.media.bursts import (
    DEFAULT_DISTANCE,
    DEFAULT_GAP,
    Frame,
    distance,
    fingerprint,
    group_frames,
)
from kullbatch.providers.local import load_greyscale, measure, rate_bytes

SIZE = (960, 640)  # every photo, width x height
MARGIN = 24  # bursts: scenes are drawn this much larger on each side, then framed
SEED = 20260611
Scene = Callable[[np.random.Generator, tuple[int, int]], Image.Image]
Degradation = Callable[[Image.Image], Image.Image]

# --- scenes ----------------------------------------------------------------------------------


def picture(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def gravel(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """1/f^1.6 noise in earth tones: detail at every scale, like gravel or rock seen close."""
    width, height = size
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequency = np.hypot(fx, fy)
    frequency[0, 0] = 1.0
    shape = (height, width // 2 + 1)
    spectrum = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / frequency**0.8
    spectrum[0, 0] = 0
    field = np.fft.irfft2(spectrum, s=(height, width))
    grey = 120 + 45 * (field - field.mean()) / field.std()
    return picture(np.stack([grey * 1.05, grey * 0.95 + 10, grey * 0.8], -1))


def shapes(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Hard-edged rectangles, rings and bars on a diagonal gradient: a graphic, built scene."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = 60 + 120 * (0.6 * x / width + 0.4 * y / height)
    image = picture(np.stack([base, base * 0.9 + 20, 200 - base * 0.5], -1))
    draw = ImageDraw.Draw(image)
    for _ in range(90):
        x0, y0 = int(rng.integers(0, width - 80)), int(rng.integers(0, height - 80))
        side = int(rng.integers(20, 140))
        colour = tuple(int(c) for c in rng.integers(20, 235, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.rectangle([x0, y0, x0 + side, y0 + side * 0.6], fill=colour)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + side, y0 + side], fill=colour, outline=(10, 10, 10), width=3)
        else:
            draw.line(
                [x0, y0, x0 + 2 * side, y0 + side], fill=colour, width=int(rng.integers(2, 8))
            )
    return image


def mosaic(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Voronoi tiles of flat colour with dark joints: cobblestones or a mosaic floor."""
    width, height = size
    seeds = rng.uniform([0, 0], [height, width], size=(90, 2))
    y, x = np.mgrid[0:height, 0:width]
    gaps, nearest = cKDTree(seeds).query(np.stack([y.ravel(), x.ravel()], -1), k=2)
    rgb = rng.uniform(70, 200, size=(90, 3))[nearest[:, 0]]
    rgb[gaps[:, 1] - gaps[:, 0] < 3] = 35
    return picture(rgb.reshape(height, width, 3))


def gratings(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Four sinusoidal gratings, 9 to 33 pixels a cycle, none level: fabric, a fence."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(float)
    waves = np.zeros((height, width))
    for pitch, degrees in ((0.03, 20), (0.05, 65), (0.08, 110), (0.11, 155)):  # cycles a pixel
        angle = np.radians(degrees)
        along = x * np.cos(angle) + y * np.sin(angle)
        waves += np.sin(along * pitch * 2 * np.pi + rng.uniform(0, 2 * np.pi))
    grey = 128 + 22 * waves
    return picture(np.stack([grey, grey * 0.9, grey * 0.8 + 20], -1))


def skyline(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A smooth sunset gradient over black buildings with lit windows: edges at one place."""
    width, height = size
    t = np.mgrid[0:height, 0:width][0] / height
    image = picture(np.stack([250 - 80 * t, 190 - 100 * t, 90 + 100 * t], -1))
    draw = ImageDraw.Draw(image)
    left = 0
    while left < width:
        wide, tall = int(rng.integers(30, 110)), int(rng.integers(120, 420))
        draw.rectangle([left, height - tall, left + wide, height], fill=(25, 22, 30))
        for wy in range(height - tall + 10, height - 10, 18):
            for wx in range(left + 6, left + wide - 6, 14):
                if rng.random() < 0.4:
                    draw.rectangle([wx, wy, wx + 5, wy + 8], fill=(240, 210, 120))
        left += wide + int(rng.integers(0, 12))
    return image


SCENES: dict[str, Scene] = {
    "gravel": gravel,
    "shapes": shapes,
    "mosaic": mosaic,
    "gratings": gratings,
    "skyline": skyline,
}


@functools.cache
def scene(name: str, seed: int = SEED, margin: int = 0) -> Image.Image:
    width, height = SIZE
    return SCENES[name](np.random.default_rng(seed), (width + 2 * margin, height + 2 * margin))


# --- degradations ----------------------------------------------------------------------------


def gaussian_blur(radius: float) -> Degradation:
    return lambda image: image.filter(ImageFilter.GaussianBlur(radius))


def motion_blur(length: int) -> Degradation:
    """The camera moved `length` pixels sideways while the shutter was open (a box along x)."""

    def blur(image: Image.Image) -> Image.Image:
        pixels = np.asarray(image, dtype=float)
        padded = np.pad(pixels, ((0, 0), (length // 2 + 1, length // 2), (0, 0)), mode="edge")
        summed = np.cumsum(padded, axis=1)
        return picture(((summed[:, length:] - summed[:, :-length]) / length)[:, : image.width])

    return blur


def exposure(gain: float, lift: float = 0.0) -> Degradation:
    return lambda image: picture(np.asarray(image, dtype=float) * gain + lift)


def flattened(contrast: float) -> Degradation:
    """Haze or a cheap lens: every level pulled toward mid grey."""
    return lambda image: picture(128 + (np.asarray(image, dtype=float) - 128) * contrast)


def grain(sigma: float) -> Degradation:
    """High-ISO luminance noise."""

    def noisy(image: Image.Image) -> Image.Image:
        pixels = np.asarray(image, dtype=float)
        noise = np.random.default_rng(SEED).normal(0, sigma, pixels.shape[:2])
        return picture(pixels + noise[..., None])

    return noisy


def recompressed(quality: int) -> Degradation:
    def jpeg_artefacts(image: Image.Image) -> Image.Image:
        with Image.open(io.BytesIO(jpeg(image, quality))) as opened:
            return opened.convert("RGB")

    return jpeg_artefacts


# strong: a photo editor rejects it at a glance, so it must lose stars; mild: it must at least
# rank below its original the way the rater ranks frames (stars, then the focus measure)
STRONG: dict[str, Degradation] = {
    "gaussian blur 5 px": gaussian_blur(5.0),
    "motion blur 31 px": motion_blur(31),
    "underexposed 2.2 stops": exposure(0.22),
    "overexposed 1.4 stops": exposure(2.6, 30),
    "contrast cut to a fifth": flattened(0.2),
    "JPEG quality 8": recompressed(8),
}
MILD: dict[str, Degradation] = {
    "gaussian blur 2 px": gaussian_blur(2.0),
    "motion blur 15 px": motion_blur(15),
    "grain sigma 20": grain(20.0),
}

FINE_TEXTURE = (
    "a frame-filling fine texture reads as sensor noise (Immerkaer's estimator takes its "
    "smoothest tile, and gravel has none), so the sharp original already loses the noise star"
)
BLIND: dict[tuple[str, str], str] = {
    ("gravel", "motion blur 31 px"): FINE_TEXTURE + "; motion blur smooths it and wins it back",
    ("gravel", "motion blur 15 px"): FINE_TEXTURE + "; motion blur smooths it and wins it back",
    ("gravel", "grain sigma 20"): FINE_TEXTURE + "; added grain costs nothing more and the "
    "Laplacian reads it as extra detail",
    **{
        (name, "JPEG quality 8"): "JPEG blocking is none of the measures (focus, exposure, "
        "contrast, noise) and its block edges keep the focus measure up: a quality-8 copy keeps "
        "its stars"
        for name in SCENES
    },
}


# --- measuring -------------------------------------------------------------------------------


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


Judgement = tuple[int, float, tuple[str, ...], str]  # stars, focus measure, issues, label


def judge(image: Image.Image) -> Judgement:
    """What the local rater says of the photo, sent as a JPEG as kullbatch sends it."""
    data = jpeg(image)
    rating = rate_bytes(data, "photo.jpg")
    detail = measure(load_greyscale(data, "photo.jpg")).detail
    return rating.starRating, detail, tuple(rating.issues), rating.colorLabel


@functools.cache
def judged(name: str, degradation: str | None = None) -> Judgement:
    """The judgement of a scene, or of one of its degraded copies."""
    image = scene(name)
    if degradation is not None:
        image = {**STRONG, **MILD}[degradation](image)
    return judge(image)


def cases(degradations: dict[str, Degradation]) -> list[object]:
    return [
        pytest.param(
            name,
            label,
            id=f"{name}-{label}",
            marks=[pytest.mark.xfail(strict=True, reason=BLIND[name, label])]
            if (name, label) in BLIND
            else [],
        )
        for name in SCENES
        for label in degradations
    ]


# --- the rater -------------------------------------------------------------------------------


def test_the_sharp_originals_are_picks_except_the_texture_read_as_noise():
    """Well exposed, sharp, contrasty: five stars and green; gravel loses one star to noise."""
    for name in SCENES:
        stars, _, issues, label = judged(name)
        if name == "gravel":
            assert (stars, issues, label) == (4, ("noise",), "green"), FINE_TEXTURE
        else:
            assert (stars, issues, label) == (5, (), "green"), name


@pytest.mark.parametrize(("name", "degradation"), cases(STRONG))
def test_a_strongly_degraded_copy_gets_fewer_stars_than_its_original(name, degradation):
    original, damaged = judged(name), judged(name, degradation)
    assert damaged[0] < original[0], f"{degradation}: {damaged} vs the original's {original}"


@pytest.mark.parametrize(("name", "degradation"), cases(MILD))
def test_a_mildly_degraded_copy_ranks_below_its_original(name, degradation):
    """Ranked as the burst picker ranks frames: by stars, then by the focus measure."""
    original, damaged = judged(name), judged(name, degradation)
    assert damaged[:2] < original[:2], f"{degradation}: {damaged} vs the original's {original}"


def test_no_degradation_earns_a_photo_more_stars_except_blurring_a_fine_texture():
    """Whatever the rater cannot see, it does not reward, but for the gravel's motion blur."""
    for name in SCENES:
        for degradation in {**STRONG, **MILD}:
            gained = judged(name, degradation)[0] - judged(name)[0]
            if name == "gravel" and degradation.startswith("motion blur"):
                assert gained <= 1, FINE_TEXTURE
            else:
                assert gained <= 0, (name, degradation)


@pytest.mark.parametrize("name", ["shapes", "mosaic", "skyline", "gravel"])
def test_more_blur_never_ranks_higher_and_always_measures_less_detail(name):
    """Radii 0, 1, 2, 3.5, 6: stars never rise and the focus measure falls at every step."""
    ladder = [judged(name)] + [
        judge(gaussian_blur(radius)(scene(name))) for radius in (1.0, 2.0, 3.5, 6.0)
    ]
    stars = [step[0] for step in ladder]
    detail = [step[1] for step in ladder]
    assert stars == sorted(stars, reverse=True) and stars[-1] <= 2, ladder
    assert all(b < a for a, b in zip(detail, detail[1:], strict=False)), ladder


@pytest.mark.parametrize("name", ["shapes", "mosaic", "gratings", "skyline"])
def test_darker_and_brighter_exposures_lose_stars_step_by_step_and_say_why(name):
    """Gains from x1 down to x0.2 and up to x2.6: stars fall monotonically away from x1, and
    the far ends are called underexposed and overexposed."""
    darker = [judge(exposure(gain)(scene(name))) for gain in (1.0, 0.6, 0.4, 0.2)]
    brighter = [judge(exposure(gain, 10)(scene(name))) for gain in (1.0, 1.4, 1.9, 2.6)]
    for ladder in (darker, brighter):
        stars = [step[0] for step in ladder]
        assert stars == sorted(stars, reverse=True) and stars[-1] < stars[0], ladder
    assert "underexposed" in darker[-1][2] and "overexposed" in brighter[-1][2]


# --- bursts ----------------------------------------------------------------------------------

# how the camera saw the scene in each frame of a burst: shift (x, y) in pixels, zoom (share of
# the frame cropped away), brightness factor, blur radius. Moves of up to 1 % of the frame and a
# 3 % zoom come out at most 8 bits from the first frame on these scenes (eight seeds measured);
# 1.5 % moves and a 5 % zoom reach 12, the threshold itself, and a 2.5 % move 14: a burst that
# pans further than that stays together only frame to frame (see the drift test below).
FRAMES: dict[str, tuple[tuple[int, int], float, float, float]] = {
    "first": ((0, 0), 0.0, 1.0, 0.0),
    "moved": ((8, 4), 0.0, 1.0, 0.0),
    "moved back": ((-10, 8), 0.0, 1.0, 0.0),
    "zoomed": ((0, 0), 0.03, 1.0, 0.0),
    "brighter": ((0, 0), 0.0, 1.15, 0.0),
    "darker": ((0, 0), 0.0, 0.8, 0.0),
    "soft": ((0, 0), 0.0, 1.0, 1.5),
    "all a little": ((8, 0), 0.03, 0.9, 0.0),
}
SEEDS = (SEED, SEED + 1, SEED + 2)  # each burst scene drawn three times: three places
BURST_SCENES = ("gravel", "shapes", "mosaic", "skyline")


def framed(name: str, frame: str, seed: int = SEED) -> Image.Image:
    """One frame of a burst: the larger scene cropped where the camera pointed, then adjusted."""
    return camera(name, seed, *FRAMES[frame])


def camera(
    name: str,
    seed: int,
    shift: tuple[int, int],
    zoom: float = 0.0,
    brightness: float = 1.0,
    blur: float = 0.0,
) -> Image.Image:
    width, height = SIZE
    left, top = MARGIN + shift[0], MARGIN + shift[1]
    cut_x, cut_y = int(width * zoom / 2), int(height * zoom / 2)
    box = (left + cut_x, top + cut_y, left + width - cut_x, top + height - cut_y)
    image = scene(name, seed, MARGIN).crop(box).resize(SIZE, Image.Resampling.LANCZOS)
    if brightness != 1.0:
        image = ImageEnhance.Brightness(image).enhance(brightness)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    return image


def hash_of(image: Image.Image) -> int:
    """The pHash as kullbatch takes it of the photo saved as a JPEG and read back."""
    with Image.open(io.BytesIO(jpeg(image, 90))) as prepared:
        return fingerprint(prepared.convert("RGB"), None).phash


@functools.cache
def phash(name: str, frame: str, seed: int = SEED) -> int:
    return hash_of(framed(name, frame, seed))


def test_every_frame_of_a_burst_is_within_the_distance_of_its_first():
    """Moved, zoomed, re-exposed or softened: at most `DEFAULT_DISTANCE` bits from the first."""
    for name in BURST_SCENES:
        for seed in SEEDS:
            first = phash(name, "first", seed)
            apart = {frame: distance(first, phash(name, frame, seed)) for frame in FRAMES}
            assert max(apart.values()) <= DEFAULT_DISTANCE, (name, seed, apart)


def test_different_scenes_are_never_within_the_distance():
    """Any frame of one scene against any of another, and against the same kind of scene drawn
    from another seed (another gravel bed, another skyline): always further than the threshold."""
    hashes = {
        (name, seed, frame): phash(name, frame, seed)
        for name in BURST_SCENES
        for seed in SEEDS
        for frame in FRAMES
    }
    closest = min(
        (distance(hashes[a], hashes[b]), a, b) for a in hashes for b in hashes if a[:2] != b[:2]
    )
    assert closest[0] > DEFAULT_DISTANCE, closest


@pytest.mark.xfail(
    strict=True,
    reason="a frame-filling grating has no low-frequency structure: the 8x8 DCT coefficients "
    "pHash keeps sit near their median and flip with any shift or exposure change",
)
def test_near_duplicates_of_a_frame_filling_grating_stay_within_the_distance():
    first = phash("gratings", "first")
    assert all(distance(first, phash("gratings", frame)) <= DEFAULT_DISTANCE for frame in FRAMES)


@pytest.mark.parametrize("name", BURST_SCENES)
def test_a_burst_that_pans_across_the_scene_stays_one_group_frame_to_frame(name):
    """Seven frames 0.1 s apart, 8 pixels further right each (48 in all, 5 % of the frame):
    each is compared with the last frames of its burst, so the pan stays one group."""
    frames = [
        Frame(f"pan{n}", n, 100.0 + n / 10, hash_of(camera(name, SEED, (8 * n - 24, 0))), 3, 0.0)
        for n in range(7)
    ]
    steps = [distance(a.phash, b.phash) for a, b in zip(frames, frames[1:], strict=False)]
    assert max(steps) <= DEFAULT_DISTANCE, steps
    assert [burst.keys for burst in group_frames(frames)] == [tuple(f.key for f in frames)]


def write_shoot(folder: Path) -> tuple[Path, dict[str, str]]:
    """Four bursts shot in the same seconds, interleaved frame by frame, two more scenes of the
    same kinds in two frames each, and one photo alone; a JSON manifest with EXIF times.

    Returns the manifest and, for each image id, the burst it belongs to (or "" alone).
    """
    shots: list[tuple[str, str, int, str]] = []  # id, scene, seed, frame
    for frame in FRAMES:  # round robin: each burst's frames are len(scenes) steps apart
        shots.extend((f"{name}-{frame}", name, SEED, frame) for name in BURST_SCENES)
    shots += [
        ("other-shapes-first", "shapes", SEED + 1, "first"),
        ("other-mosaic-first", "mosaic", SEED + 1, "first"),
        ("other-shapes-moved", "shapes", SEED + 1, "moved"),
        ("other-mosaic-moved", "mosaic", SEED + 1, "moved"),
        ("lone-skyline", "skyline", SEED + 1, "first"),
    ]
    step = 20  # hundredths of a second between frames: a burst's are 0.8 s apart
    assert len(BURST_SCENES) * step / 100 < DEFAULT_GAP
    folder.mkdir()
    images, expected = [], {}
    for n, (image_id, name, seed, frame) in enumerate(shots):
        exif = Image.Exif()
        seconds, hundredths = divmod(10 * 60 * 100 + n * step, 100)
        original = exif.get_ifd(0x8769)  # DateTimeOriginal, SubSecTimeOriginal
        original[36867] = f"2025:09:14 17:{seconds // 60:02d}:{seconds % 60:02d}"
        original[37521] = f"{hundredths:02d}"
        framed(name, frame, seed).save(folder / f"{image_id}.jpg", "JPEG", quality=90, exif=exif)
        images.append({"id": image_id, "filename": f"{image_id}.jpg", "path": f"{image_id}.jpg"})
        if image_id.startswith("lone"):
            expected[image_id] = ""
        else:
            expected[image_id] = f"{name}-{seed}"
    manifest = folder / "shoot.json"
    manifest.write_text(json.dumps({"shootId": "independent", "images": images}))
    return manifest, expected


def test_a_shoot_of_interleaved_bursts_groups_each_scene_and_nothing_else(tmp_path):
    """End to end: `process` with the local rater, then `results`: each scene's frames form
    one group, scenes shot in the same second never share one, the lone frame has none, and
    the soft frame is never the one picked."""
    manifest, expected = write_shoot(tmp_path / "shoot")
    db = str(tmp_path / "k.db")
    runner = CliRunner()
    done = runner.invoke(app, ["process", str(manifest), "--db", db, "--json", "--quiet"])
    assert done.exit_code == 0, done.output
    job_id = done.stdout.split("\n", 1)[0].strip()
    results = json.loads(runner.invoke(app, ["results", job_id, "--db", db]).stdout)["results"]
    found: dict[str, set[str]] = {}
    for result in results:
        if result["group"] is not None:
            found.setdefault(result["group"], set()).add(result["imageId"])
    wanted: dict[str, set[str]] = {}
    for image_id, burst in expected.items():
        if burst:
            wanted.setdefault(burst, set()).add(image_id)
    assert sorted(map(sorted, found.values())) == sorted(map(sorted, wanted.values()))
    assert next(r for r in results if r["imageId"] == "lone-skyline")["group"] is None
    best = {r["imageId"] for r in results if r["bestInGroup"]}
    assert len(best) == len(wanted) and not any(image_id.endswith("-soft") for image_id in best)
