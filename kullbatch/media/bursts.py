"""Bursts and near-duplicates: which frames show one moment, and which of them is the best.

Pure functions, no I/O beyond reading a file's EXIF header:

- `fingerprint`: the 64-bit pHash (imagehash) of a frame, from the image as prepared for
  sending (sampled down to about `HASH_EDGE` pixels first, cheaply: see there), so a frame
  and its shifted, re-exposed or slightly blurred neighbour hash alike; `images` takes it while
  it prepares each photo, with the capture time;
- `capture_time`: EXIF DateTimeOriginal with SubSecTimeOriginal, in seconds; None without;
- `group_frames`: frames taken close together (at most `gap` seconds from the frame before
  them in their group) whose hashes differ in at most `distance` of 64 bits form a group.
  Frames are taken in capture-time order; a frame joins the open group whose last few frames
  (`COMPARED`) look most like it, or starts its own. Frames without a capture time are grouped
  among themselves in manifest order, where "close" means the next rated frame.
  A group of one is no group.
- the best frame of a group has the most stars, then the most detail (the offline focus
  measure), then comes first.

Thresholds (both are `process` options, their defaults in `models`): `DEFAULT_GAP` 2 s covers a
burst at any frame rate and a photographer's pause to recompose; `DEFAULT_DISTANCE` 12 of 64 bits
keeps a shifted, blurred or re-exposed frame of the same subject together (the tests' copies
differ in 0 to 4 bits) while different subjects (22 to 32 bits apart there) never meet. The same
subject an hour later is beyond the gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO

from PIL import Image

from kullbatch.models import DEFAULT_DISTANCE, DEFAULT_GAP, Fingerprint

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

SAMPLE_EDGE = 128  # pixels on the short side a frame is first sampled down to (nearest)
HASH_EDGE = 64  # then box-filtered to about this, from which imagehash takes its 32x32
COMPARED = 4  # a frame is compared with the last few frames of a burst, so a long one stays cheap
EXIF_IFD = 0x8769
DATE_TIME = 306
DATE_TIME_ORIGINAL = 36867
SUBSEC_TIME_ORIGINAL = 37521


@dataclass(frozen=True, slots=True)
class Frame:
    """One rated local photo as grouping sees it."""

    key: str  # the image id
    position: int  # manifest order
    captured: float | None  # seconds, from EXIF; None when the file has no capture time
    phash: int  # 64-bit perceptual hash
    stars: int
    detail: float  # the offline focus measure: more is sharper


@dataclass(frozen=True, slots=True)
class Burst:
    """The frames of one moment, in capture order, and the one picked."""

    group: str
    keys: tuple[str, ...]
    best: str


def perceptual_hash(image: Image.Image) -> int:
    """The 64-bit pHash of a frame as an integer."""
    import imagehash  # noqa: PLC0415  (numpy and scipy: loaded only when a job groups)

    return int(str(imagehash.phash(image)), 16)


def fingerprint(upright: Image.Image, captured: float | None) -> Fingerprint:
    """The frame's hash and its capture time.

    The image is sampled down by a whole factor to at least `SAMPLE_EDGE` pixels (nearest
    pixel: it touches only the pixels it keeps, where converting or filtering all of a 2 MP
    image costs a millisecond), then box-filtered to about `HASH_EDGE`. The hash reads only
    the lowest 8x8 frequencies of a 32x32 copy, which that sampling leaves intact: the copies
    and different subjects of the tests' shoots are as far apart as with a full-size filter.
    """
    sample = max(1, min(upright.size) // SAMPLE_EDGE)
    if sample > 1:
        size = (upright.width // sample, upright.height // sample)
        upright = upright.resize(size, Image.Resampling.NEAREST)
    grey = upright.convert("L")
    box = max(1, min(grey.size) // HASH_EDGE)
    return Fingerprint(perceptual_hash(grey.reduce(box) if box > 1 else grey), captured)


def distance(a: int, b: int) -> int:
    """Hamming distance: in how many of the 64 bits two hashes differ."""
    return (a ^ b).bit_count()


def capture_time(path: Path | BinaryIO, *, raw: bool = False) -> float | None:
    """EXIF DateTimeOriginal plus SubSecTimeOriginal as seconds; None when absent or unreadable.

    Only the header is read. The camera's clock has no zone here: only differences count.
    With `raw` (a RAW file, or the preview LibRaw handed over from one) IFD0's DateTime counts
    too: a camera writes it when it takes the RAW, and LibRaw puts its own record of the capture
    time there, in whole seconds, the epoch when it has none.
    """
    try:
        with Image.open(path) as opened:
            return capture_time_of(opened, raw=raw)
    except (OSError, ValueError, SyntaxError):
        return None


def capture_time_of(image: Image.Image, *, raw: bool = False) -> float | None:
    """The capture time in an opened image's EXIF (see `capture_time`)."""
    try:
        exif = image.getexif()
        original = exif.get_ifd(EXIF_IFD)
    except (OSError, ValueError, SyntaxError):
        return None
    found = parse_exif_time(original.get(DATE_TIME_ORIGINAL), original.get(SUBSEC_TIME_ORIGINAL))
    if found is None and raw:
        found = parse_exif_time(exif.get(DATE_TIME)) or None  # 0.0: LibRaw did not know
    return found


def parse_exif_time(stamp: object, subsec: object = None) -> float | None:
    """`2024:06:11 14:03:07` and `25` -> seconds (…07.25); None for anything else."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.strptime(stamp.strip("\x00 "), "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    fraction = str(subsec).strip("\x00 ") if subsec is not None else ""
    extra = float(f"0.{fraction}") if fraction.isdigit() else 0.0
    return moment.timestamp() + extra


def group_frames(
    frames: Iterable[Frame], *, gap: float = DEFAULT_GAP, max_distance: int = DEFAULT_DISTANCE
) -> list[Burst]:
    """The bursts among `frames`, in capture order (timed frames first, then the others)."""
    timed = sorted((f for f in frames if f.captured is not None), key=_time_order)
    untimed = sorted((f for f in frames if f.captured is None), key=lambda f: f.position)
    rank = {f.key: float(index) for index, f in enumerate(untimed)}
    clusters = _chain(timed, _captured, gap, max_distance)
    clusters += _chain(untimed, lambda f: rank[f.key], 1.0, max_distance)
    return [_burst(cluster) for cluster in clusters if len(cluster) > 1]


def _time_order(frame: Frame) -> tuple[float, int]:
    return (_captured(frame), frame.position)


def _captured(frame: Frame) -> float:
    assert frame.captured is not None
    return frame.captured


def _chain(
    ordered: Sequence[Frame], when: Callable[[Frame], float], gap: float, max_distance: int
) -> list[list[Frame]]:
    clusters: list[list[Frame]] = []
    open_clusters: list[list[Frame]] = []
    for frame in ordered:
        now = when(frame)
        open_clusters = [c for c in open_clusters if now - when(c[-1]) <= gap]
        scored = [
            (min(distance(frame.phash, f.phash) for f in c), i) for i, c in enumerate(open_clusters)
        ]
        near = min(scored, default=None)
        if near is not None and near[0] <= max_distance:
            open_clusters[near[1]].append(frame)
            continue
        cluster = [frame]
        clusters.append(cluster)
        open_clusters.append(cluster)
    return clusters


def best_of(frames: Iterable[Frame]) -> str:
    """The key of the frame with the most stars, then the most detail, then the first."""
    return max(frames, key=lambda f: (f.stars, f.detail, -f.position)).key


def tied(frames: Sequence[Frame]) -> list[Frame]:
    """The frames sharing the most stars: only these need the focus measure to pick one."""
    top = max(f.stars for f in frames)
    return [f for f in frames if f.stars == top]


def _burst(cluster: list[Frame]) -> Burst:
    best = best_of(cluster)
    group = cluster[0].key.replace("|", "-")  # the id of its first frame; `|` splits keywords
    return Burst(group=group, keys=tuple(f.key for f in cluster), best=best)
