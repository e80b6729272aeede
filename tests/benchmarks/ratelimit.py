"""Rate-limit benchmark: 600 images against a 1,200 requests-per-minute limit (floor 30 s).

The fake (tests/fault_server.py) enforces 1,200 RPM the way providers do, over short windows
(20 requests in any second), answers the excess with OpenAI's 429 and an accurate
`retry-after-ms`, and reports `x-ratelimit-*` per minute on every answer. The same job runs
twice through the real engine, store and OpenAI adapter: with the gate, and naive (the gate
replaced by one that never waits, so only the per-image schedules act).

    python tests/benchmarks/ratelimit.py [--images 600] [--rpm 1200] [--latency 0.2]

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kullbatch.manifest import Manifest
from kullbatch.models import ImageInput
from kullbatch.run import engine, runtime
from kullbatch.service import jobs
from kullbatch.store.database import Store
from tests.fault_server import FaultConfig, FaultServer, run_in_thread


class NoGate:
    """The naive engine: every send goes at once, whatever the provider said."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def hold(self, seconds: float) -> None:
        pass

    def answered(self, *args: object) -> None:
        pass

    def rate_limited(self, *args: object) -> None:
        pass

    async def wait(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def subscribe(self, listener: object) -> object:
        return lambda: None

    def limit_to(self, rpm: float) -> None:
        pass


async def run_job(count: int, base_url: str, db: Path) -> float:
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


def measure(count: int, rpm: int, latency: float, folder: Path, name: str) -> dict[str, float]:
    per_second = rpm // 60
    config = FaultConfig(latency=latency, rpm_limit=per_second, window=1.0)
    server = FaultServer(config)
    with run_in_thread(server) as base_url:
        wall = asyncio.run(run_job(count, base_url, folder / f"{name}.db"))
    limited = server.stats.outcomes.get("window_429", 0)
    return {"wall": wall, "429s": limited, "requests": server.stats.requests}


def main() -> None:
    admin = logging.getLogger("kullbatch.admin")  # thousands of naive 429s: not on the screen
    admin.addHandler(logging.NullHandler())
    admin.propagate = False
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--rpm", type=int, default=1200)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    floor = args.images / (args.rpm / 60)
    with tempfile.TemporaryDirectory() as folder:
        gated = measure(args.images, args.rpm, args.latency, Path(folder), "gated")
        engine.Gate = NoGate  # type: ignore[assignment,misc]
        runtime.Gate = NoGate  # type: ignore[assignment,misc]  # the runtime's gates per account
        naive = measure(args.images, args.rpm, args.latency, Path(folder), "naive")
    print(f"{args.images} images, limit {args.rpm} RPM (20 per second), latency {args.latency} s")
    print(f"floor {floor:.1f} s")
    print(f"{'':12}{'wall s':>9}{'x floor':>9}{'429s':>7}{'429s/image':>12}{'requests':>10}")
    for name, row in (("with gate", gated), ("naive", naive)):
        print(
            f"{name:12}{row['wall']:9.1f}{row['wall'] / floor:9.2f}{row['429s']:7.0f}"
            f"{row['429s'] / args.images:12.1%}{row['requests']:10.0f}"
        )
    print("target: wall < 1.15x floor, 429s < 5 % of images")


if __name__ == "__main__":
    main()
