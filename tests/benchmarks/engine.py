"""Engine benchmark: N images through the BatchProcessor and the real store, progress off.

The provider is an in-process fake that answers after a fixed latency, so the figures are the
engine's own cost (scheduling, retries bookkeeping, events, SQLite writes), not HTTP's. Each
run is a process of its own (a fresh fake, store and heap; peak RSS is that run's), repeated
`--repeats` times; the figures are the median and the range. Not a comparison: one side.
The GC is set as a job's runtime sets it (kullbatch's BatchGC from the claim to the end of
the run), or left at Python's default with `--gc default`.

    python tests/benchmarks/engine.py [--photos 10000] [--repeats 5] [--latency 1.0]
                                      [--gc batch|default] [--budget USD]

`--budget USD` admits every photo through a `--budget` ceiling (a far one does not bind: the
figures then show what admission costs when the budget allows everything at once).

Targets (2 cores): wall under latency + 5 s, under 0.5 ms CPU per image, under 250 MB RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fair

from kullbatch.models import Answer, ImageInput, JobOptions, PreparedImage, Prompt, Rating, Usage
from kullbatch.providers.base import Capabilities
from kullbatch.run.budget import Budget
from kullbatch.run.engine import BatchProcessor, EngineOptions
from kullbatch.run.retry import quiet_stamina
from kullbatch.store.database import Store
from kullbatch.store.rows import NewJob

RATING = Rating(starRating=4, colorLabel="green", title="t", description="d", tags=["a"], score=80)


class LatencyProvider:
    name = "bench"
    model = "bench-1"
    capabilities = Capabilities()

    def __init__(self, latency: float) -> None:
        self.latency = latency

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        await asyncio.sleep(self.latency)
        return Answer(RATING, Usage(100, 20))


async def one_run(
    count: int, latency: float, db: Path, gc_mode: str, budget: float | None = None
) -> dict[str, float]:
    """One run in this process (the child's side)."""
    quiet_stamina()
    images = [
        ImageInput(id=f"img{i}", filename=f"{i}.jpg", url=f"https://example.test/{i}.jpg")
        for i in range(count)
    ]
    store = await Store.open(db)
    job = NewJob(
        "batch_0_bench0", "bench", "shoot", "bench", "bench-1", "fast", "p", None, "x", JobOptions()
    )
    t0, c0 = time.perf_counter(), time.process_time()
    await store.create_job(job, images)
    assert await store.claim(await store.get_job(job.id))
    store.start_writer()
    t1, c1 = time.perf_counter(), time.process_time()
    with fair.batch_gc(gc_mode):  # where the runtime applies it: claimed, until the end
        processor = BatchProcessor(
            job_id=job.id,
            provider=LatencyProvider(latency),
            prompt=Prompt("rate"),
            store=store,
            sink=store,
            options=EngineOptions(),
            budget=None if budget is None else Budget(budget, spent=0.0, estimate=1e-4, cost=_cost),
        )
        outcome = await processor.run(images, total=count)
    await store.finish_job(job.id, outcome.state, outcome.error)
    await store.close()
    t2, c2 = time.perf_counter(), time.process_time()
    assert outcome.rated == count, outcome
    return {
        "create_wall": t1 - t0,
        "create_cpu": c1 - c0,
        "run_wall": t2 - t1,
        "beyond": t2 - t1 - 2 * latency,
        "run_cpu_ms": (c2 - c1) / count * 1000,
        "total_cpu_ms": (c2 - c0) / count * 1000,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _cost(answer: Answer, provider: str, model: str) -> float:
    del provider, model
    return (answer.usage.input_tokens + answer.usage.output_tokens) / 1e6


def run_child(args: argparse.Namespace) -> fair.Figures:
    command = [sys.executable, __file__, "--child", "--photos", str(args.photos)]
    if args.budget is not None:
        command += ["--budget", str(args.budget)]
    command += ["--latency", str(args.latency), "--gc", args.gc]
    _, out = fair.run_process(command, capture=True)
    return fair.child_report(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fair.add_arguments(parser, photos=10_000, repeats=5)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--budget", type=float, default=None, help="a --budget ceiling in USD")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as folder:
            db = Path(folder) / "bench.db"
            figures = one_run(args.photos, args.latency, db, args.gc, args.budget)
            fair.print_report(asyncio.run(figures))
        return
    fair.check_repeats(parser, args.repeats, comparison=False)
    runs = fair.repeat(fair.Side("A", "engine", lambda _: run_child(args)), args.repeats)
    print(
        f"{args.photos} images, in-process fake at {args.latency:.2f} s (x2: the probe goes first)"
    )
    fair.how(
        fair.describe_order(args.repeats, sides=1) + " (the engine alone: no comparison)",
        "each run a process of its own; times from inside it (perf_counter, process_time)",
        "fake: an in-process provider answering after the latency, new in every run",
        "GC: " + fair.describe_gc(args.gc),
    )
    columns = [
        fair.Column("create_wall", "create job s"),
        fair.Column("run_wall", "run wall s"),
        fair.Column("beyond", "beyond 2x latency s"),
        fair.Column("run_cpu_ms", "run CPU ms/img", ".3f"),
        fair.Column("total_cpu_ms", "total CPU ms/img", ".3f"),
        fair.Column("rss_mb", "peak RSS MB", ".0f"),
    ]
    fair.table(columns, [("engine + SQLite store", runs)])
    print("targets: run wall < latency + 5 s, < 0.5 ms CPU per image, peak RSS < 250 MB")


if __name__ == "__main__":
    main()
