"""Grouping benchmark: what finding bursts adds to a local-rater job.

N photos (the 19 example photos repeated, each entry its own id, their EXIF times removed so
that the repeats do not make bursts of hundreds of identical frames: file order then pairs
only the example's own three-frame burst) go through
`kullbatch process --provider local` twice, once with `--no-groups` and once with grouping,
each in a fresh database; the figure is the ratio of the two wall times. The grouping step
(hash and focus measure of every prepared photo, then grouping) is also timed alone.

    python tests/benchmarks/grouping.py [--images 10000]

Target: grouping adds no more than 10 % to the job.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from kullbatch.culling import GroupingOptions, find_bursts  # noqa: E402
from kullbatch.models import ImageInput, ItemRecord, ItemState, Rating, Usage  # noqa: E402

EXAMPLES = sorted((ROOT / "examples" / "photos").glob("*.jpg"))
PHOTOS: list[Path] = []


def without_exif(folder: Path) -> None:
    for source in EXAMPLES:
        target = folder / source.name
        with Image.open(source) as opened:
            opened.save(target, "JPEG", quality=85)
        PHOTOS.append(target)


def manifest(folder: Path, count: int) -> Path:
    images = [
        {
            "id": f"img{n:05d}",
            "filename": PHOTOS[n % len(PHOTOS)].name,
            "path": str(PHOTOS[n % len(PHOTOS)]),
        }
        for n in range(count)
    ]
    path = folder / "shoot.json"
    path.write_text(json.dumps({"shootId": "bench", "images": images}), encoding="utf-8")
    return path


def job_seconds(source: Path, db: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kullbatch", "process", str(source), "--provider", "local",
         "--db", str(db), "--quiet", *extra],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return time.perf_counter() - started


def grouping_seconds(count: int) -> float:
    rating = Rating(starRating=3, colorLabel="none", title="", description="", tags=[])
    items = [
        ItemRecord(n, ImageInput(id=f"i{n}", filename="x.jpg", path=PHOTOS[n % len(PHOTOS)]),
                   ItemState.RATED, 1, None, rating, Usage())
        for n in range(count)
    ]  # fmt: skip
    started = time.perf_counter()
    find_bursts(items, GroupingOptions())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    count = parser.parse_args().images
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        without_exif(folder)
        source = manifest(folder, count)
        without = job_seconds(source, folder / "a.db", "--no-groups")
        with_groups = job_seconds(source, folder / "b.db")
        alone = grouping_seconds(count)
    print(
        f"{count} photos, local rater: {without:.1f} s without grouping, {with_groups:.1f} s with"
    )
    print(f"grouping adds {with_groups / without - 1:+.1%} (target at most +10 %)")
    print(f"grouping step alone: {alone:.1f} s ({alone / count * 1000:.2f} ms per photo)")


if __name__ == "__main__":
    main()
