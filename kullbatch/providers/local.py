"""The offline `local` rater: judges focus, exposure and contrast with Pillow, no model, no key.

It reads the prepared JPEG bytes, shrinks them to a 512-pixel greyscale copy and measures:

- detail: the variance of a Laplacian filter in the most detailed tiles of the frame, after
  stretching its tones, so a dark or hazy frame is judged on its focus and not its exposure;
- exposure: mean brightness and the share of crushed shadows and blown highlights;
- contrast: the standard deviation of luminance;
- noise: the standard deviation of sensor noise in the smoothest tile (Immerkaer's estimator).

Every frame is measured on a copy of the same size (512 pixels on the long edge), so the
focus measure means the same for a 6000-pixel raw preview and a 1200-pixel JPEG. What it finds
wrong is also said in the shared `issues` vocabulary (`out-of-focus`, `underexposed`,
`overexposed`, `noise`), so a first cull needs no key; motion blur cannot be told from missed
focus by this measure and is reported as `out-of-focus`.

Stars start at 5 and lose points for each flaw; the `score` (0-100) places the frame within its
star's band of 20 points by the same measures, so frames of equal stars can be ordered; the
thresholds were calibrated on the synthetic shoot in examples/ (examples/make_examples.py).
Like every Laplacian measure it reads heavy noise as detail, so a noisy blurred frame can pass
for a soft one.
"""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from PIL import Image, ImageFilter, ImageOps, ImageStat

from kullbatch.errors import PermanentImageError
from kullbatch.models import Answer, ColorLabel, Issue, PreparedImage, Prompt, Rating, Usage
from kullbatch.providers.base import Capabilities

if TYPE_CHECKING:
    from kullbatch.providers.base import Credentials

Focus = Literal["crisp", "sharp", "soft", "blurry"]
Exposure = Literal["well-exposed", "dark", "bright", "underexposed", "overexposed"]

ANALYSIS_EDGE = 512  # long edge of the copy that is measured, in pixels
LAPLACIAN = ImageFilter.Kernel((3, 3), (0, 1, 0, 1, -4, 1, 0, 1, 0), scale=1, offset=128)
GRID = 4  # the frame is cut into GRID x GRID tiles ...
TOP_TILES = 3  # ... and focus is judged on the most detailed few, like a subject in focus
MIN_TILED_EDGE = 64  # smaller frames are measured whole

# detail (Laplacian variance) at or above which a frame is crisp / sharp / soft; below: blurry
CRISP_DETAIL, SHARP_DETAIL, SOFT_DETAIL = 1500.0, 600.0, 300.0
SHADOW_LEVEL, HIGHLIGHT_LEVEL = 8, 247  # at or below: crushed black; at or above: blown white
DARK_MEAN, UNDER_MEAN = 70.0, 40.0
BRIGHT_MEAN, OVER_MEAN = 185.0, 215.0
NOTABLE_CLIP, HEAVY_CLIP, SEVERE_CLIP = 0.08, 0.25, 0.5  # shares of the frame clipped
LOW_CONTRAST = 16.0  # luminance standard deviation below which a frame looks flat
# Immerkaer's noise kernel; a clean frame of the example shoot measures under 2, one with
# +-25 levels of grain over 4.5 (on the 512-pixel copy)
NOISE_KERNEL = ImageFilter.Kernel((3, 3), (1, -2, 1, -2, 4, -2, 1, -2, 1), scale=1, offset=128)
NOISY = 3.0
NOISE_PENALTY = 1

FOCUS_PENALTY: dict[Focus, int] = {"crisp": 0, "sharp": 1, "soft": 2, "blurry": 3}
EXPOSURE_PENALTY: dict[Exposure, int] = {
    "well-exposed": 0,
    "dark": 1,
    "bright": 1,
    "underexposed": 3,
    "overexposed": 3,
}
LOW_CONTRAST_PENALTY = 2


@dataclass(frozen=True, slots=True)
class Measurements:
    """What the analysis measured on the greyscale copy (levels are 0-255)."""

    detail: float
    mean: float
    shadows: float
    highlights: float
    contrast: float
    noise: float = 0.0


@dataclass(frozen=True, slots=True)
class Findings:
    """The measurements read as a photo editor would say them."""

    focus: Focus
    exposure: Exposure
    low_contrast: bool
    severe_clipping: bool
    noisy: bool = False


# --- pure scoring ---------------------------------------------------------------------------


def judge_focus(detail: float) -> Focus:
    if detail >= CRISP_DETAIL:
        return "crisp"
    if detail >= SHARP_DETAIL:
        return "sharp"
    if detail >= SOFT_DETAIL:
        return "soft"
    return "blurry"


def judge_exposure(m: Measurements) -> Exposure:
    """Heavy clipping or an extreme mean is a bad exposure; a milder lean is dark or bright."""
    if m.shadows >= HEAVY_CLIP or m.mean < UNDER_MEAN:
        return "underexposed"
    if m.highlights >= HEAVY_CLIP or m.mean > OVER_MEAN:
        return "overexposed"
    if m.shadows >= NOTABLE_CLIP or m.mean < DARK_MEAN:
        return "dark"
    if m.highlights >= NOTABLE_CLIP or m.mean > BRIGHT_MEAN:
        return "bright"
    return "well-exposed"


def judge(m: Measurements) -> Findings:
    """Contrast is only held against a frame whose exposure is not already the problem."""
    exposure = judge_exposure(m)
    badly_exposed = exposure in {"underexposed", "overexposed"}
    return Findings(
        focus=judge_focus(m.detail),
        exposure=exposure,
        low_contrast=not badly_exposed and m.contrast < LOW_CONTRAST,
        severe_clipping=max(m.shadows, m.highlights) >= SEVERE_CLIP,
        noisy=m.noise >= NOISY,
    )


def star_rating(f: Findings) -> int:
    penalty = FOCUS_PENALTY[f.focus] + EXPOSURE_PENALTY[f.exposure]
    penalty += LOW_CONTRAST_PENALTY if f.low_contrast else 0
    penalty += 1 if f.severe_clipping else 0
    penalty += NOISE_PENALTY if f.noisy else 0
    return max(1, 5 - penalty)


def color_label(stars: int) -> ColorLabel:
    """Green is a pick, yellow a maybe, red a reject."""
    if stars >= 4:  # noqa: PLR2004  (the scale is the spec's 1-5 stars)
        return "green"
    if stars == 3:  # noqa: PLR2004
        return "yellow"
    return "red"


def flaws(f: Findings) -> list[str]:
    found: list[str] = [] if f.exposure == "well-exposed" else [f.exposure]
    if f.low_contrast:
        found.append("low-contrast")
    if f.noisy:
        found.append("noisy")
    return found


def issues_for(f: Findings) -> list[Issue]:
    """What the measures can tell, in the shared vocabulary of every provider's answer."""
    found: list[Issue] = []
    if f.focus in {"soft", "blurry"}:
        found.append("out-of-focus")
    if f.exposure == "underexposed":
        found.append("underexposed")
    elif f.exposure == "overexposed":
        found.append("overexposed")
    if f.noisy:
        found.append("noise")
    return found


def title_for(f: Findings) -> str:
    """'Crisp, well-exposed frame', 'Sharp but underexposed frame', 'Blurry, dark frame'."""
    focus = f.focus.capitalize()
    problems = flaws(f)
    if not problems:
        return f"{focus}, well-exposed frame"
    joiner = " but " if f.focus in {"crisp", "sharp"} else ", "
    return f"{focus}{joiner}{', '.join(problems)} frame"


def description_for(m: Measurements, f: Findings) -> str:
    contrast = "low" if m.contrast < LOW_CONTRAST else "good"
    return (
        f"Measured offline: edge detail {m.detail:.0f} ({f.focus}), mean brightness "
        f"{m.mean:.0f}/255 with {m.shadows:.1%} crushed shadows and {m.highlights:.1%} blown "
        f"highlights ({f.exposure}), luminance spread {m.contrast:.0f} ({contrast} contrast) "
        f"and noise {m.noise:.1f} ({'noisy' if f.noisy else 'clean'})."
    )


def tags_for(f: Findings) -> list[str]:
    focus = "sharp" if f.focus in {"crisp", "sharp"} else f.focus
    return [focus, f.exposure, *(["low-contrast"] if f.low_contrast else [])]


def _unit(value: float) -> float:
    return min(1.0, max(0.0, value))


def score_for(m: Measurements, stars: int) -> int:
    """0-100, finer than stars and ordered with them: each star owns a band of 20 points, and
    within it the frame is placed by how sharp (log of the detail), how well exposed (mean near
    mid-grey, little clipped) and how contrasty it measures."""
    span = math.log(4 * CRISP_DETAIL / SOFT_DETAIL)  # from soft to far beyond crisp
    focus = _unit(math.log(max(m.detail, 1.0) / SOFT_DETAIL) / span)
    exposure = _unit(1 - abs(m.mean - 128) / 128 - (m.shadows + m.highlights))
    contrast = _unit(m.contrast / (4 * LOW_CONTRAST))
    fine = (2 * focus + exposure + contrast) / 4
    return (stars - 1) * 20 + round(fine * 19)


def rating_for(m: Measurements) -> Rating:
    findings = judge(m)
    stars = star_rating(findings)
    return Rating(
        score=score_for(m, stars),
        starRating=stars,
        colorLabel=color_label(stars),
        title=title_for(findings),
        description=description_for(m, findings),
        tags=tags_for(findings),
        issues=issues_for(findings),
    )


# --- image analysis -------------------------------------------------------------------------


def load_greyscale(data: bytes, filename: str) -> Image.Image:
    """Decode and shrink; anything Pillow cannot read is this image's permanent failure."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("L", (ANALYSIS_EDGE, ANALYSIS_EDGE))  # JPEG: decode at reduced size
            grey = image.convert("L")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PermanentImageError(
            f"{filename}: the local rater cannot read this image ({exc})"
        ) from exc
    grey.thumbnail((ANALYSIS_EDGE, ANALYSIS_EDGE), Image.Resampling.LANCZOS)
    return grey


def tiles(image: Image.Image) -> list[Image.Image]:
    if min(image.size) < MIN_TILED_EDGE:
        return [image]
    w, h = image.size
    return [
        image.crop((col * w // GRID, row * h // GRID, (col + 1) * w // GRID, (row + 1) * h // GRID))
        for row in range(GRID)
        for col in range(GRID)
    ]


def detail(grey: Image.Image) -> float:
    """Laplacian variance of the most detailed tiles, after stretching the tones to 0-255."""
    edges = ImageOps.autocontrast(grey, cutoff=1).filter(LAPLACIAN)
    variances = sorted((ImageStat.Stat(tile).var[0] for tile in tiles(edges)), reverse=True)
    top = variances[:TOP_TILES]
    return sum(top) / len(top)


def noise(grey: Image.Image) -> float:
    """Sensor noise (a standard deviation, in levels) in the smoothest tile of the frame."""
    deviations = []
    for tile in tiles(grey):
        histogram = tile.filter(NOISE_KERNEL).histogram()
        count = sum(histogram) or 1
        deviations.append(sum(abs(level - 128) * n for level, n in enumerate(histogram)) / count)
    return min(deviations) * math.sqrt(math.pi / 2) / 6


def measure(grey: Image.Image) -> Measurements:
    histogram = grey.histogram()
    pixels = grey.width * grey.height
    stat = ImageStat.Stat(grey)
    return Measurements(
        detail=detail(grey),
        mean=stat.mean[0],
        shadows=sum(histogram[: SHADOW_LEVEL + 1]) / pixels,
        highlights=sum(histogram[HIGHLIGHT_LEVEL:]) / pixels,
        contrast=stat.stddev[0],
        noise=noise(grey),
    )


def rate_bytes(data: bytes, filename: str) -> Rating:
    """The whole synchronous analysis of one encoded image."""
    return rating_for(measure(load_greyscale(data, filename)))


# --- the provider ---------------------------------------------------------------------------


class LocalRater:
    """A Provider that never leaves the machine: `kullbatch process` works with no key."""

    name = "local"
    capabilities: ClassVar[Capabilities] = Capabilities()  # reads local bytes; no batch API

    def __init__(self, model: str = "local-v1") -> None:
        self.model = model

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        del prompt  # there is no language model to instruct; the measurements are the answer
        if image.data is None:
            raise PermanentImageError(
                f"the local rater reads local files only; {image.url} is a URL "
                "(use a network provider, or download the image and pass its path)"
            )
        rating = await asyncio.to_thread(rate_bytes, image.data, image.filename)
        return Answer(rating=rating, usage=Usage(0, 0))


def create(*, model: str, session: object, credentials: Credentials) -> LocalRater:
    """The registry's entry point; the local rater needs no HTTP session and no key."""
    del session, credentials
    return LocalRater(model=model)
