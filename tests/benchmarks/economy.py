"""Economy benchmark: a 1,000-photo economy job through the local fake of OpenAI's Batch API.

The photos are real JPEG files (seeded noise, so they do not compress to nothing); kullbatch
prepares each one as fast mode would, packs the request bodies into JSONL files under the
provider's limits, uploads them, polls the batches and stores the answers. The fake
(tests/fake_batch_openai.py) runs in the same process on 127.0.0.1 and records every request,
so "no per-photo requests" is counted on the wire.

    python tests/benchmarks/economy.py [--images 1000] [--edge 640] [--file-mb 200]

`--file-mb` lowers the per-file limit (OpenAI's is 200 MB) to show the split by bytes.
Checks: every photo rated with its own answer, zero per-photo requests.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from aiohttp import web  # noqa: E402
from fake_batch_openai import KEY, FakeOpenAIBatches  # noqa: E402
from fake_batch_shared import rating_for  # noqa: E402
from PIL import Image  # noqa: E402

from kullbatch.manifest import manifest_from_document  # noqa: E402
from kullbatch.models import Rating  # noqa: E402
from kullbatch.providers.batch import openai as batch_openai  # noqa: E402
from kullbatch.providers.batch.clients import OpenAIBatches  # noqa: E402
from kullbatch.providers.batch.common import Limits  # noqa: E402
from kullbatch.service import jobs  # noqa: E402


def make_photos(folder: Path, count: int, edge: int) -> list[dict[str, str]]:
    rng = random.Random(7)
    tile = Image.frombytes("RGB", (edge, edge * 3 // 4), rng.randbytes(edge * edge * 3 // 4 * 3))
    entries = []
    for n in range(count):
        path = folder / f"IMG_{n:05d}.jpg"
        tile.rotate(n % 360).save(path, quality=90)
        entries.append({"id": f"img{n:05d}", "filename": path.name, "path": path.name})
    return entries


async def run(count: int, edge: int, file_mb: int) -> None:
    fake = FakeOpenAIBatches(seed=11)
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    OpenAIBatches.limits = Limits(batch_openai.MAX_REQUESTS, file_mb * 1024 * 1024)
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url, "KULLBATCH_ECONOMY_POLL": "0.2"}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            document = {"shootId": "economy-bench", "images": make_photos(folder, count, edge)}
            manifest = manifest_from_document(document, base=folder)
            async with jobs.Service.open(folder / "bench.db", env) as service:
                settings = jobs.ProcessSettings(provider="openai", mode="economy")
                job = await service.create(manifest, settings)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                outcome = await service.run(job)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                _, items = await service.results(job.id)
    finally:
        await runner.cleanup()
    right = sum(item.rating == Rating(**rating_for(item.image.id)) for item in items if item.rating)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{count} photos ({edge} px JPEG), economy mode, OpenAI Batch API fake, {file_mb} MB files"
    )
    print(f"job {outcome.state.value}: {outcome.rated} rated, {outcome.failed} failed; "
          f"{right}/{count} answers are the photo's own")  # fmt: skip
    print(f"provider batches: {fake.batch_creates}, files uploaded: {len(fake.uploads)} "
          f"({fake.bytes_uploaded / 1e6:.1f} MB), per-photo requests: {fake.per_photo_requests()}")  # fmt: skip
    print(f"wall {wall:.1f} s (polls every 0.2-2.4 s), CPU {cpu:.1f} s, peak RSS {rss:.0f} MB "
          "(this process holds the fake's files too)")  # fmt: skip
    if right != count or fake.per_photo_requests():
        raise SystemExit("FAILED: a photo without its own answer, or a per-photo request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--edge", type=int, default=640)
    parser.add_argument("--file-mb", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.images, args.edge, args.file_mb))


if __name__ == "__main__":
    main()
