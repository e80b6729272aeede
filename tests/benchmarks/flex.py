"""Flex benchmark: N photos in flex mode with a share of flex refusals, against fast mode.

Both sides run the real engine (`BatchProcessor`), the real store and, on the flex side, flex
mode's provider (`run.flex.FlexProvider`: the flex tier, refusals retried on the rate-limit
schedule without slowing the gate, the standard tier after `--flex-wait`). The provider is an
in-process fake named openai/gpt-5.4-mini (so the package's price table prices it): it answers
after `--latency` seconds; at the flex tier it turns away `--refusals` of the requests (each
one independently, so a retry may be refused again) after `--refusal-latency` seconds, as a
full flex tier answers at once. Cost is what the store's usage costs at each answer's tier.
Each run is a process of its own; the sides alternate (A flex, B fast).

    python tests/benchmarks/flex.py [--photos 10000] [--repeats 3] [--latency 1.0]
                                    [--refusals 0.2] [--refusal-latency 0.05] [--flex-wait 900]

Target (issue 22): a 10,000-photo flex run with 20 % refusals within 1.2x of a fast run's
time, at half its cost. The rate-limit schedule's first wait is a second: the ratio of times
depends on how long an answer takes (`--latency`), since a refused photo waits about a second
more than an answered one, and on `--flex-wait`: with 20 % refusals, one photo in 10,000 is
refused six times in a row (1+2+4+8+16+32 s of waits) unless `--flex-wait` sends it at the
standard tier sooner.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fair

from kullbatch.errors import FlexUnavailable
from kullbatch.models import Answer, ImageInput, JobOptions, PreparedImage, Prompt, Rating, Usage
from kullbatch.pricing import prices as pricing
from kullbatch.providers.base import Capabilities
from kullbatch.run.engine import BatchProcessor, EngineOptions
from kullbatch.run.flex import flex_provider
from kullbatch.run.retry import quiet_stamina
from kullbatch.store.database import Store
from kullbatch.store.rows import NewJob

RATING = Rating(starRating=4, colorLabel="green", title="t", description="d", tags=["a"])
USAGE = Usage(1500, 90)  # about a 1568 px photo on gpt-5.4-mini, and a rating


class TieredProvider:
    """openai/gpt-5.4-mini in process: an answer after `latency`; at the flex tier, a share
    of requests refused after `refusal_latency`."""

    name = "openai"
    model = "gpt-5.4-mini"
    capabilities = Capabilities()
    service_tier: str | None = None

    def __init__(self, latency: float, refusals: float, refusal_latency: float) -> None:
        self.latency = latency
        self.refusals = refusals
        self.refusal_latency = refusal_latency
        self.refused = [0]  # shared with the flex tier's copy of this provider
        self.rng = random.Random(22)

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        if self.service_tier == "flex" and self.rng.random() < self.refusals:
            await asyncio.sleep(self.refusal_latency)
            self.refused[0] += 1
            raise FlexUnavailable("openai HTTP 429: Resource Unavailable", status=429)
        await asyncio.sleep(self.latency)
        return Answer(RATING, USAGE)


async def one_run(args: argparse.Namespace, db: Path) -> dict[str, float]:
    """One run in this process (the child's side): flex or fast."""
    quiet_stamina()
    count = args.photos
    images = [
        ImageInput(id=f"img{i}", filename=f"{i}.jpg", url=f"https://example.test/{i}.jpg")
        for i in range(count)
    ]
    store = await Store.open(db)
    mode = "flex" if args.side == "flex" else "fast"
    job = NewJob(
        "batch_0_flex00", "bench", "s", "openai", "gpt-5.4-mini", mode, "p", None, "x", JobOptions()
    )
    await store.create_job(job, images)
    assert await store.claim(await store.get_job(job.id))
    store.start_writer()
    standard = TieredProvider(args.latency, args.refusals, args.refusal_latency)
    loop = asyncio.get_running_loop()
    wait = args.flex_wait
    provider = standard if mode == "fast" else flex_provider(standard, wait=wait, clock=loop.time)
    t0, c0 = time.perf_counter(), time.process_time()
    with fair.batch_gc(args.gc):
        processor = BatchProcessor(
            job_id=job.id,
            provider=provider,
            prompt=Prompt("rate"),
            store=store,
            sink=store,
            options=EngineOptions(),
        )
        outcome = await processor.run(images, total=count)
    await store.finish_job(job.id, outcome.state, outcome.error)
    t1, c1 = time.perf_counter(), time.process_time()
    groups = await store.tallies.usage(job.id)
    await store.close()
    assert outcome.rated == count, outcome
    cost = pricing.job_cost(pricing.load_prices({}), groups, "openai", "gpt-5.4-mini").usd
    return {
        "wall": t1 - t0,
        "cpu_ms": (c1 - c0) / count * 1000,
        "cost": cost or 0.0,
        "refused": float(standard.refused[0]),
    }


def run_child(args: argparse.Namespace, side: str) -> fair.Figures:
    command = [sys.executable, __file__, "--child", side, "--photos", str(args.photos)]
    command += ["--latency", str(args.latency), "--refusals", str(args.refusals)]
    command += ["--refusal-latency", str(args.refusal_latency), "--gc", args.gc]
    command += ["--flex-wait", str(args.flex_wait)]
    _, out = fair.run_process(command, capture=True)
    return fair.child_report(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fair.add_arguments(parser, photos=10_000, repeats=3)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per answer")
    parser.add_argument("--refusals", type=float, default=0.2, help="share of flex refusals")
    parser.add_argument("--refusal-latency", type=float, default=0.05)
    parser.add_argument(
        "--flex-wait", type=float, default=900.0, help="seconds, as --flex-wait (default 15m)"
    )
    parser.add_argument("--child", dest="side", choices=["flex", "fast"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side is not None:
        with tempfile.TemporaryDirectory() as folder:
            fair.print_report(asyncio.run(one_run(args, Path(folder) / "bench.db")))
        return
    fair.check_repeats(parser, args.repeats, comparison=True)
    flex = fair.Side("A", "flex", lambda _: run_child(args, "flex"))
    fast = fair.Side("B", "fast", lambda _: run_child(args, "fast"))
    flex_runs, fast_runs = fair.alternate(flex, fast, args.repeats)
    print(
        f"{args.photos} photos, answers after {args.latency:.2f} s, "
        f"{args.refusals:.0%} of flex requests refused after {args.refusal_latency:.2f} s, "
        f"--flex-wait {args.flex_wait:g}s"
    )
    fair.how(
        fair.describe_order(args.repeats),
        "each run a process of its own; times from inside it (perf_counter, process_time)",
        "fake: in-process openai/gpt-5.4-mini, priced by the package's table at each tier",
        "GC: " + fair.describe_gc(args.gc),
    )
    columns = [
        fair.Column("wall", "run wall s"),
        fair.Column("cpu_ms", "CPU ms/photo", ".3f"),
        fair.Column("cost", "cost USD", ".4f"),
        fair.Column("refused", "flex refusals", ".0f"),
    ]
    ratios = fair.paired_ratios(flex_runs, fast_runs, ["wall", "cpu_ms", "cost"])
    fair.table(columns, [("A flex", flex_runs), ("B fast", fast_runs)], ("A/B", ratios))
    print("target: A/B wall within 1.2x, cost 0.50x")


if __name__ == "__main__":
    main()
