"""Grouping benchmark: what finding bursts adds to a local-rater job.

N photos (the 19 example photos repeated, each entry its own id, their EXIF times removed so
that the repeats do not make bursts of hundreds of identical frames: file order then pairs
only the example's own three-frame burst) go through
`kullbatch process --provider local` twice, once with `--no-groups` and once with grouping,
each in a fresh database, alternating `--repeats` times (default 2) so that a change in the
machine's load falls on both; the figures are the ratios of the fastest wall times and of the
least CPU times (user + system of the child process). Then one run in this process counts the
CPU of the two grouping steps as a share of the job's, the steadier figure. With grouping
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
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from kullbatch.cli.app import app  # noqa: E402
from kullbatch.media import bursts  # noqa: E402
from kullbatch.media.bursts import GroupingOptions  # noqa: E402
from kullbatch.models import ItemRecord  # noqa: E402
from kullbatch.service import jobs  # noqa: E402
from kullbatch.service.culling import find_bursts  # noqa: E402
from kullbatch.store.database import Store  # noqa: E402

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


def grouping_share(source: Path, db: Path) -> tuple[float, float, float]:
    """One job run in this process with grouping, the CPU of the two grouping steps counted:
    (job CPU s, fingerprinting CPU s, after-run grouping CPU s). The host's speed moves the
    end-to-end figures by up to 15 % between identical runs; it moves a share of one run's
    CPU far less. The fingerprint is counted in thread CPU time, in the worker threads that
    prepare the photos."""
    spent = {"fingerprint": 0, "after": 0}
    lock = threading.Lock()
    real_fingerprint, real_group_job = bursts.fingerprint, jobs.group_job

    def counted_fingerprint(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time_ns()
        found = real_fingerprint(*args, **kwargs)
        with lock:
            spent["fingerprint"] += time.thread_time_ns() - started
        return found

    async def counted_group_job(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time_ns()
        found = await real_group_job(*args, **kwargs)
        spent["after"] += time.process_time_ns() - started
        return found

    bursts.fingerprint = counted_fingerprint  # type: ignore[assignment]
    jobs.group_job = counted_group_job  # type: ignore[assignment]
    started = time.process_time()
    try:
        app(["process", str(source), "--provider", "local", "--quiet", "--db", str(db)],
            standalone_mode=False)  # fmt: skip
    finally:
        bursts.fingerprint, jobs.group_job = real_fingerprint, real_group_job
    return time.process_time() - started, spent["fingerprint"] / 1e9, spent["after"] / 1e9


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
        job_cpu, hashing, after = grouping_share(source, folder / "share.db")
    without, with_groups = min(w for w, _ in withouts), min(w for w, _ in withs)
    cpu_without, cpu_with = min(c for _, c in withouts), min(c for _, c in withs)
    print(f"{count} photos, local rater, fastest of {arguments.repeats}: {without:.1f} s without"
          f" grouping, {with_groups:.1f} s with")  # fmt: skip
    print(f"grouping adds {with_groups / without - 1:+.1%} wall,"
          f" {cpu_with / cpu_without - 1:+.1%} CPU (target at most +10 %)")  # fmt: skip
    print(f"one run in-process: {job_cpu:.1f} s CPU; fingerprints {hashing:.1f} s"
          f" ({hashing / job_cpu:.1%}, {hashing / count * 1000:.2f} ms per photo),"
          f" after-run grouping {after:.2f} s ({after / job_cpu:.1%})")  # fmt: skip
    print(f"after-run step on the stored fingerprints: {after_run:.2f} s"
          f" ({after_run / count * 1000:.3f} ms per photo)")  # fmt: skip
    print(f"the same, decoding every photo again: {slow_path:.1f} s"
          f" ({slow_path / count * 1000:.2f} ms per photo)")  # fmt: skip


if __name__ == "__main__":
    main()
