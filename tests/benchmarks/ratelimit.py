"""Rate-limit benchmark: 600 images against a 1,200 requests-per-minute limit (floor 30 s).

The fake (tests/fault_server.py) enforces 1,200 RPM the way providers do, over short windows
(20 requests in any second), answers the excess with OpenAI's 429 and an accurate
`retry-after-ms`, and reports `x-ratelimit-*` per minute on every answer. The same job runs
through the real engine, store and OpenAI adapter on two sides: A with the gate, B naive (the
gate replaced by one that never waits, so only the per-image schedules act). Each run is a
process of its own with a fresh fake process; the sides alternate (A B, B A, ...); both are
kullbatch, so both run under the same GC (kullbatch's BatchGC, or `--gc default` for Python's).

    python tests/benchmarks/ratelimit.py [--photos 600] [--repeats 3] [--rpm 1200]
                                         [--latency 0.2] [--gc batch|default]

Target: wall under 1.15x the floor, 429 answers under 5 % of images.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fair


def naive_gate() -> type:
    """The naive engine's gate: every send goes at once, whatever the provider said. It is
    kullbatch's Gate (so it answers whatever the engine asks of a gate) that never waits or
    holds anyone; only the per-image retry schedules act."""
    from kullbatch.run.ratelimit import Gate  # noqa: PLC0415 - the child's imports

    class NoGate(Gate):
        async def wait(self, *args: object, **kwargs: object) -> bool:
            return True

        def hold(self, seconds: float) -> None:
            pass

    return NoGate


# --- one job, in a child process: `ratelimit.py --side gated|naive --base-url URL` ----------


async def run_job(count: int, base_url: str, db: Path) -> float:
    from kullbatch.manifest import Manifest  # noqa: PLC0415 - the child's imports
    from kullbatch.models import ImageInput  # noqa: PLC0415
    from kullbatch.service import jobs  # noqa: PLC0415
    from kullbatch.store.database import Store  # noqa: PLC0415

    images = [
        ImageInput(id=f"img{i}", filename=f"img{i}.jpg", url=f"https://photos.test/img{i}.jpg")
        for i in range(count)
    ]
    env = {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": base_url}
    store = await Store.open(db)
    manifest = Manifest(db, "bench", images)
    settings = jobs.ProcessSettings(provider="openai")
    job = await jobs.create_job(store, manifest, settings, env)
    started = time.perf_counter()
    outcome = await jobs.run_job(store, job, env)
    wall = time.perf_counter() - started
    await store.close()
    assert outcome.rated == count, outcome
    return wall


def child(args: argparse.Namespace) -> None:
    from kullbatch.run import engine, runtime  # noqa: PLC0415

    admin = logging.getLogger("kullbatch.admin")  # thousands of naive 429s: not on the screen
    admin.addHandler(logging.NullHandler())
    admin.propagate = False
    fair.switch_gc(args.gc)
    if args.side == "naive":
        engine.Gate = runtime.Gate = naive_gate()  # the engine's and the runtime's (per account)
    with tempfile.TemporaryDirectory() as folder:
        wall = asyncio.run(run_job(args.photos, args.base_url, Path(folder) / "bench.db"))
    fair.print_report({"job_wall": wall})


# --- the comparison -------------------------------------------------------------------------


def fake_flags(args: argparse.Namespace) -> list[str]:
    per_second = args.rpm // 60
    return ["--latency", str(args.latency), "--rpm-limit", str(per_second), "--window", "1.0"]


def run_side(args: argparse.Namespace, side: str) -> fair.Figures:
    floor = args.photos / (args.rpm / 60)
    with fair.fresh_fake(*fake_flags(args)) as fake:
        command = [sys.executable, __file__, "--side", side, "--base-url", fake.base_url]
        command += ["--photos", str(args.photos), "--gc", args.gc]
        process, out = fair.run_process(command, capture=True)
    wall = fair.child_report(out)["job_wall"]
    limited = fake.stats["outcomes"].get("window_429", 0)
    return {
        "wall": wall,
        "x_floor": wall / floor,
        "429s": limited,
        "429s_per_image": limited / args.photos,
        "requests": fake.stats["requests"],
        "cpu": process["cpu"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fair.add_arguments(parser, photos=600, repeats=3)
    parser.add_argument("--rpm", type=int, default=1200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--side", choices=("gated", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    fair.check_repeats(parser, args.repeats, comparison=True)
    gated = fair.Side("A", "with gate", lambda _: run_side(args, "gated"))
    naive = fair.Side("B", "naive", lambda _: run_side(args, "naive"))
    with_gate, without = fair.alternate(gated, naive, args.repeats)
    floor = args.photos / (args.rpm / 60)
    print(
        f"{args.photos} images, limit {args.rpm} RPM ({args.rpm // 60} per second), "
        f"latency {args.latency} s, floor {floor:.1f} s"
    )
    fair.how(
        fair.describe_order(args.repeats),
        "each run a process of its own; wall: the job's run (after start-up and job creation); "
        "CPU: the whole process's",
        "fake: " + fair.describe_fake("tests/fault_server.py process"),
        "GC: " + fair.describe_gc(args.gc),
    )
    columns = [
        fair.Column("wall", "wall s", ".1f"),
        fair.Column("x_floor", "x floor"),
        fair.Column("429s", "429s", ".0f"),
        fair.Column("429s_per_image", "429s/image", ".2f"),
        fair.Column("requests", "requests", ".0f"),
        fair.Column("cpu", "CPU s", ".1f"),
    ]
    ratios = fair.paired_ratios(with_gate, without, ["wall", "x_floor", "cpu"])
    rows = [("A with gate", with_gate), ("B naive", without)]
    fair.table(columns, rows, ("A / B", ratios))
    print("target: A's wall < 1.15x floor, A's 429s < 5 % of images (0.05 per image)")


if __name__ == "__main__":
    main()
