"""Economy benchmark: a 1,000-photo economy job through the local fake of OpenAI's Batch API.

The photos are real JPEG files (seeded noise, so they do not compress to nothing), made once
and shared by every run; kullbatch prepares each one as fast mode would, packs the request
bodies into JSONL files under the provider's limits, uploads them, polls the batches and stores
the answers. The fake (tests/fake_batch_openai.py) runs in the job's process on 127.0.0.1 and
records every request, so "no per-photo requests" is counted on the wire. Each run is a
process of its own with a fresh fake and database, `--repeats` times (median and range). Not a
comparison: one side. The GC is the job's (kullbatch's BatchGC), or Python's with `--gc default`.

    python tests/benchmarks/economy.py [--photos 1000] [--repeats 3] [--edge 640]
                                       [--file-mb 200] [--gc batch|default]

`--file-mb` lowers the per-file limit (OpenAI's is 200 MB) to show the split by bytes.
Checks: every photo rated with its own answer, zero per-photo requests, in every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fair

sys.path.insert(0, str(fair.ROOT / "tests"))


def make_photos(folder: Path, count: int, edge: int) -> Path:
    """The photos and a manifest document naming them; returns the document's path.

    Each photo is noise (so its file has a real photo's size) around a colour of its own: the
    fake rates what it sees (the mean colour, `fake_batch_shared.photo_key`), so every photo
    has its own answer and one sent under another's id is caught.
    """
    from PIL import Image, ImageChops  # noqa: PLC0415

    rng = random.Random(7)
    size = (edge, edge * 3 // 4)
    noise = Image.frombytes(
        "RGB", size, bytes(b % 41 for b in rng.randbytes(size[0] * size[1] * 3))
    )
    entries = []
    for n in range(count):
        path = folder / f"IMG_{n:05d}.jpg"
        colour = tuple(30 + (n // 20**k) % 20 * 10 for k in range(3))  # 8,000 distinct
        ImageChops.add(Image.new("RGB", size, colour), noise, offset=-20).save(path, quality=90)
        entries.append({"id": f"img{n:05d}", "filename": path.name, "path": path.name})
    document = folder / "shoot.json"
    document.write_text(json.dumps({"shootId": "economy-bench", "images": entries}))
    return document


async def one_run(document: Path, file_mb: int, db: Path) -> dict[str, float]:
    """One job in this process, the fake beside it (the child's side)."""
    from aiohttp import web  # noqa: PLC0415 - the child's imports
    from fake_batch_openai import KEY, FakeOpenAIBatches  # noqa: PLC0415
    from fake_batch_shared import expected_rating  # noqa: PLC0415

    from kullbatch.manifest import manifest_from_document  # noqa: PLC0415
    from kullbatch.models import Rating  # noqa: PLC0415
    from kullbatch.providers.batch import openai as batch_openai  # noqa: PLC0415
    from kullbatch.providers.batch.common import Limits  # noqa: PLC0415
    from kullbatch.service import jobs  # noqa: PLC0415

    fake = FakeOpenAIBatches(seed=11)
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    batch_openai.OpenAIBatchClient.limits = Limits(batch_openai.MAX_REQUESTS, file_mb * 1024 * 1024)
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url, "KULLBATCH_ECONOMY_POLL": "0.2"}
    try:
        manifest = manifest_from_document(json.loads(document.read_text()), base=document.parent)
        async with jobs.Service.open(db, env) as service:
            settings = jobs.ProcessSettings(provider="openai", mode="economy")
            job = await service.create(manifest, settings)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            outcome = await service.run(job)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            _, items = await service.results(job.id)
    finally:
        await runner.cleanup()
    right = sum(
        item.rating == Rating(**expected_rating(document.parent / item.image.filename))
        for item in items
        if item.rating
    )
    return {
        "wall": wall,
        "cpu": cpu,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rated": outcome.rated,
        "failed": outcome.failed,
        "right": right,
        "batches": fake.batch_creates,
        "files": len(fake.uploads),
        "uploaded_mb": fake.bytes_uploaded / 1e6,
        "per_photo_requests": fake.per_photo_requests(),
    }


def run_child(args: argparse.Namespace, document: Path) -> fair.Figures:
    command = [sys.executable, __file__, "--child", str(document), "--file-mb", str(args.file_mb)]
    command += ["--gc", args.gc]
    _, out = fair.run_process(command, capture=True)
    return fair.child_report(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fair.add_arguments(parser, photos=1000, repeats=3)
    parser.add_argument("--edge", type=int, default=640)
    parser.add_argument("--file-mb", type=int, default=200)
    parser.add_argument("--child", type=Path, metavar="SHOOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fair.switch_gc(args.gc)
        with tempfile.TemporaryDirectory() as folder:
            db = Path(folder) / "bench.db"
            fair.print_report(asyncio.run(one_run(args.child, args.file_mb, db)))
        return
    fair.check_repeats(parser, args.repeats, comparison=False)
    with tempfile.TemporaryDirectory() as folder:
        document = make_photos(Path(folder), args.photos, args.edge)
        side = fair.Side("A", "economy job", lambda _: run_child(args, document))
        runs = fair.repeat(side, args.repeats)
    print(
        f"{args.photos} photos ({args.edge} px JPEG), economy mode, OpenAI Batch API fake, "
        f"{args.file_mb} MB files"
    )
    fair.how(
        fair.describe_order(args.repeats, sides=1) + " (no comparison)",
        "each run a process of its own, the fake in it; wall and CPU: the job's run "
        "(polls every 0.2-2.4 s); peak RSS: the process's, the fake's files included",
        "fake: " + fair.describe_fake("tests/fake_batch_openai.py (in the job's process)"),
        "GC: " + fair.describe_gc(args.gc),
    )
    columns = [
        fair.Column("wall", "wall s", ".1f"),
        fair.Column("cpu", "CPU s", ".1f"),
        fair.Column("rss_mb", "peak RSS MB", ".0f"),
        fair.Column("batches", "batches", ".0f"),
        fair.Column("files", "files", ".0f"),
        fair.Column("uploaded_mb", "uploaded MB", ".1f"),
        fair.Column("per_photo_requests", "per-photo requests", ".0f"),
    ]
    fair.table(columns, [("economy job", runs)])
    wrong = [run for run in runs if run["right"] != args.photos or run["per_photo_requests"]]
    worst = min(run["right"] for run in runs)
    outcomes = ", ".join(f"{run['rated']:.0f}/{run['failed']:.0f}" for run in runs)
    print(f"answers that are the photo's own: {worst:.0f}/{args.photos} in the worst run")
    print(f"rated/failed per run: {outcomes}")
    if wrong:
        raise SystemExit("FAILED: a photo without its own answer, or a per-photo request")


if __name__ == "__main__":
    main()
