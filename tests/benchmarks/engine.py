"""Engine benchmark: N images through the BatchProcessor and the real store, progress off.

The provider is an in-process fake that answers after a fixed latency, so the figures are the
engine's own cost (scheduling, retries bookkeeping, events, SQLite writes), not HTTP's.

    python tests/benchmarks/engine.py [--images 10000] [--latency 1.0]

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kullbatch.models import Answer, ImageInput, PreparedImage, Prompt, Rating, Usage
from kullbatch.providers.base import Capabilities
from kullbatch.run.engine import BatchProcessor, EngineOptions
from kullbatch.run.retry import quiet_stamina
from kullbatch.store.database import Store
from kullbatch.store.rows import NewJob

RATING = Rating(starRating=4, colorLabel="green", title="t", description="d", tags=["a"])


class LatencyProvider:
    name = "bench"
    model = "bench-1"
    capabilities = Capabilities()

    def __init__(self, latency: float) -> None:
        self.latency = latency

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        await asyncio.sleep(self.latency)
        return Answer(RATING, Usage(100, 20))


async def main(count: int, latency: float, db: Path) -> None:
    quiet_stamina()
    images = [
        ImageInput(id=f"img{i}", filename=f"{i}.jpg", url=f"https://example.test/{i}.jpg")
        for i in range(count)
    ]
    store = await Store.open(db)
    job = NewJob("batch_0_bench0", "bench", "shoot", "bench", "bench-1", "fast", "p", None, "x", {})
    t0, c0 = time.perf_counter(), time.process_time()
    await store.create_job(job, images)
    assert await store.claim(await store.get_job(job.id))
    store.start_writer()
    t1, c1 = time.perf_counter(), time.process_time()
    processor = BatchProcessor(
        job_id=job.id,
        provider=LatencyProvider(latency),
        prompt=Prompt("rate"),
        store=store,
        options=EngineOptions(),
        subscribers=[store.handle],
    )
    outcome = await processor.run(images, total=count)
    await store.finish_job(job.id, outcome.state, outcome.error)
    await store.close()
    t2, c2 = time.perf_counter(), time.process_time()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert outcome.rated == count, outcome
    print(f"images               {count}")
    print(f"latency              {latency:.2f} s (x2: the probe goes alone first)")
    print(f"create job (SQLite)  {t1 - t0:.2f} s wall, {c1 - c0:.2f} s CPU")
    print(
        f"run                  {t2 - t1:.2f} s wall ({t2 - t1 - 2 * latency:.2f} s beyond 2x latency)"
    )
    print(f"run CPU              {c2 - c1:.2f} s, {(c2 - c1) / count * 1000:.3f} ms per image")
    print(f"total CPU            {c2 - c0:.2f} s, {(c2 - c0) / count * 1000:.3f} ms per image")
    print(f"peak RSS             {rss_mb:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(main(args.images, args.latency, Path(folder) / "bench.db"))
