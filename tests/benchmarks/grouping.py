"""Grouping benchmark: what finding bursts adds to a local-rater job.

N photos (the 19 example photos repeated, each entry its own id, their EXIF times removed so
that the repeats do not make bursts of hundreds of identical frames: file order then pairs
only the example's own three-frame burst) go through `kullbatch process --provider local` on
two sides: A with grouping, B with `--no-groups`. Each run is a process of its own with a
fresh database; the sides alternate (A B, B A, ...) `--repeats` times, so that a change in the
machine's load falls on both; the figures are each side's median and range and the ratio A/B
taken pair by pair. No fake: the local rater runs in the process. Both sides are kullbatch, so
both run under the same GC (its BatchGC, or Python's with `--gc default`).

Then one run in this process counts the CPU of the two grouping steps as a share of the job's,
the steadier figure. With grouping the engine hashes each photo while preparing it, and after
the run groups the stored fingerprints; that after-run step is also timed alone, and so is the
slow path it replaces (decoding every photo again, as for photos rated without a fingerprint).

    python tests/benchmarks/grouping.py [--photos 1000] [--repeats 3] [--gc batch|default]

Target: grouping adds no more than 10 % to the job.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fair
from PIL import Image

from kullbatch.cli.app import app
from kullbatch.media import bursts
from kullbatch.models import GroupingOptions, ItemRecord
from kullbatch.service import jobs
from kullbatch.service.culling import find_bursts
from kullbatch.store.database import Store

EXAMPLES = sorted((fair.ROOT / "examples" / "photos").glob("*.jpg"))


def without_exif(folder: Path) -> list[Path]:
    photos = []
    for source in EXAMPLES:
        target = folder / source.name
        with Image.open(source) as opened:
            opened.save(target, "JPEG", quality=85)
        photos.append(target)
    return photos


def manifest(folder: Path, photos: list[Path], count: int) -> Path:
    images = [
        {
            "id": f"img{n:05d}",
            "filename": photos[n % len(photos)].name,
            "path": str(photos[n % len(photos)]),
        }
        for n in range(count)
    ]
    path = folder / "shoot.json"
    path.write_text(json.dumps({"shootId": "bench", "images": images}), encoding="utf-8")
    return path


def job_run(source: Path, db: Path, gc_mode: str, *extra: str) -> fair.Figures:
    """Wall, CPU (user + system) and peak RSS of one `process` run in a child process."""
    command = [*fair.kullbatch_command(gc_mode), "process", str(source), "--provider", "local"]
    command += ["--no-cache"]  # the repeats are copies: with the cache, only 19 would be rated
    figures, _ = fair.run_process([*command, "--db", str(db), "--quiet", *extra])
    return figures


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
        command = ["process", str(source), "--provider", "local", "--quiet", "--db", str(db)]
        command += ["--no-cache"]
        with contextlib.redirect_stdout(io.StringIO()):  # the job's id: not a figure
            app(command, standalone_mode=False)
    finally:
        bursts.fingerprint, jobs.group_job = real_fingerprint, real_group_job
    return time.process_time() - started, spent["fingerprint"] / 1e9, spent["after"] / 1e9


def grouping_seconds(items: list[ItemRecord]) -> float:
    started = time.perf_counter()
    find_bursts(items, GroupingOptions())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fair.add_arguments(parser, photos=1000, repeats=3)
    args = parser.parse_args()
    fair.check_repeats(parser, args.repeats, comparison=True)
    count = args.photos
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = manifest(folder, without_exif(folder), count)
        grouped = fair.Side(
            "A", "with grouping", lambda n: job_run(source, folder / f"a{n}.db", args.gc)
        )
        plain = fair.Side(
            "B",
            "--no-groups",
            lambda n: job_run(source, folder / f"b{n}.db", args.gc, "--no-groups"),
        )
        withs, withouts = fair.alternate(grouped, plain, args.repeats)
        items = stored_items(folder / "a0.db")
        after_run = grouping_seconds(items)
        slow_path = grouping_seconds([replace(item, fingerprint=None) for item in items])
        fair.switch_gc(args.gc)  # the in-process run below: the same GC as the runs above
        job_cpu, hashing, after = grouping_share(source, folder / "share.db")
    print(f"{count} photos (the 19 examples repeated, EXIF times removed), local rater")
    fair.how(
        fair.describe_order(args.repeats),
        fair.describe_process() + "; a fresh database per run",
        "fake: none (the local rater runs in the job's process)",
        "GC: " + fair.describe_gc(args.gc),
    )
    columns = [
        fair.Column("wall", "wall s", ".1f"),
        fair.Column("cpu", "CPU s", ".1f"),
        fair.Column("rss_mb", "peak RSS MB", ".0f"),
    ]
    ratios = fair.paired_ratios(withs, withouts, ["wall", "cpu", "rss_mb"])
    rows = [("A with grouping", withs), ("B --no-groups", withouts)]
    fair.table(columns, rows, ("A / B", ratios))
    wall, cpu = fair.spread(ratios, "wall"), fair.spread(ratios, "cpu")
    print(
        f"grouping adds {wall.median - 1:+.1%} wall [{wall.low - 1:+.1%}{fair.DASH}"
        f"{wall.high - 1:+.1%}], {cpu.median - 1:+.1%} CPU [{cpu.low - 1:+.1%}{fair.DASH}"
        f"{cpu.high - 1:+.1%}] (target at most +10 %)"
    )
    print("then one run in this process, with grouping (how: after the comparison, once, same GC):")
    print(
        f"  {job_cpu:.1f} s CPU; fingerprints {hashing:.1f} s ({hashing / job_cpu:.1%}, "
        f"{hashing / count * 1000:.2f} ms per photo), after-run grouping {after:.2f} s "
        f"({after / job_cpu:.1%})"
    )
    print(
        f"after-run step on the stored fingerprints (run A1's, timed once): {after_run:.2f} s "
        f"({after_run / count * 1000:.3f} ms per photo)"
    )
    print(
        f"the same, decoding every photo again (timed once): {slow_path:.1f} s "
        f"({slow_path / count * 1000:.2f} ms per photo)"
    )


if __name__ == "__main__":
    main()
