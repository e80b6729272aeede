"""Grouping benchmark: what finding bursts adds to a local-rater job.

N photos (the 19 example photos repeated, each entry its own id, their EXIF times removed so
that the repeats do not make bursts of hundreds of identical frames: file order then pairs
only the example's own three-frame burst) go through
`kullbatch process --provider local` twice, once with `--no-groups` and once with grouping,
each in a fresh database, alternating `--repeats` times (default 2) so that a change in the
machine's load falls on both; the figures are the ratios of the fastest wall times and of the
least CPU time (user + system of the child process, which load disturbs less). With grouping
the engine hashes each photo while preparing it, and after the run groups the stored
fingerprints; that after-run step is also timed alone, and so is the slow path it replaces
(decoding every photo again, as for photos rated without a fingerprint).

    python tests/benchmarks/grouping.py [--images 10000] [--repeats 2]

Target: grouping adds no more than 10 % to the job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from kullbatch.culling import GroupingOptions, find_bursts  # noqa: E402
from kullbatch.images import DEFAULT_MAX_EDGE, encode_file  # noqa: E402
from kullbatch.models import ItemRecord  # noqa: E402
from kullbatch.store import Store  # noqa: E402

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


def job_seconds(source: Path, db: Path, *extra: str) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one `process` run in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kullbatch", "process", str(source), "--provider", "local",
         "--db", str(db), "--quiet", *extra],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def stored_items(db: Path) -> list[ItemRecord]:
    async def read() -> list[ItemRecord]:
        store = await Store.open(db)
        try:
            (job,) = await store.list_jobs()
            return await store.items(job.id)
        finally:
            await store.close()

    return asyncio.run(read())


def fingerprint_ms(repeats: int = 8) -> tuple[float, float]:
    """CPU ms per photo to prepare the example photos without and with the fingerprint, the
    least of `repeats` interleaved rounds: the hashing's own cost, which the host's noise
    (the job figures above can move by 15 % between identical runs) does not blur."""
    rounds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for fingerprint in (False, True):
            started = time.process_time()
            for photo in PHOTOS:
                encode_file(photo, DEFAULT_MAX_EDGE, fingerprint)
            rounds[fingerprint].append((time.process_time() - started) / len(PHOTOS) * 1000)
    return min(rounds[False]), min(rounds[True])


def grouping_seconds(items: list[ItemRecord]) -> float:
    started = time.perf_counter()
    find_bursts(items, GroupingOptions())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    count = arguments.images
    withouts: list[tuple[float, float]] = []
    withs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        without_exif(folder)
        source = manifest(folder, count)
        for run in range(arguments.repeats):
            withouts.append(job_seconds(source, folder / f"a{run}.db", "--no-groups"))
            withs.append(job_seconds(source, folder / f"b{run}.db"))
            (wall_a, cpu_a), (wall_b, cpu_b) = withouts[-1], withs[-1]
            print(f"run {run + 1}: {wall_a:.1f} s wall, {cpu_a:.1f} s CPU without grouping;"
                  f" {wall_b:.1f} s wall, {cpu_b:.1f} s CPU with ({wall_b / wall_a - 1:+.1%} wall,"
                  f" {cpu_b / cpu_a - 1:+.1%} CPU)")  # fmt: skip
        items = stored_items(folder / "b0.db")
        after_run = grouping_seconds(items)
        slow_path = grouping_seconds([replace(item, fingerprint=None) for item in items])
        plain, hashed = fingerprint_ms()
    without, with_groups = min(w for w, _ in withouts), min(w for w, _ in withs)
    cpu_without, cpu_with = min(c for _, c in withouts), min(c for _, c in withs)
    print(f"{count} photos, local rater, fastest of {arguments.repeats}: {without:.1f} s without"
          f" grouping, {with_groups:.1f} s with")  # fmt: skip
    print(f"grouping adds {with_groups / without - 1:+.1%} wall,"
          f" {cpu_with / cpu_without - 1:+.1%} CPU (target at most +10 %)")  # fmt: skip
    per_photo = cpu_without / count * 1000
    print(f"preparing a photo: {plain:.2f} ms CPU, {hashed:.2f} ms with its fingerprint:"
          f" +{hashed - plain:.2f} ms, {(hashed - plain) / per_photo:+.1%} of the job's"
          f" {per_photo:.1f} ms CPU per photo")  # fmt: skip
    print(f"after-run step on the stored fingerprints: {after_run:.2f} s"
          f" ({after_run / count * 1000:.3f} ms per photo)")  # fmt: skip
    print(f"the same, decoding every photo again: {slow_path:.1f} s"
          f" ({slow_path / count * 1000:.2f} ms per photo)")  # fmt: skip


if __name__ == "__main__":
    main()
