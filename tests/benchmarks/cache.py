"""Cache benchmark: how long finding a photo's earlier rating takes with 100,000 stored rows.

A database is made with `--rows` rated photos (each with its own cache key, as a run stores
them), through kullbatch's own schema and index. Then `--lookups` keys, half stored and half
not, are looked up one by one through `store.cache.CacheRecords.find` (what the engine does
per photo), and all at once through `find_many` (what a batched lookup would do); the same
one-by-one lookups on a database of `--small` rows show whether the time grows with the table.
A lookup that bypasses the index (`+cache_key`) is timed on a few keys for contrast, and the
query plan is printed. One process, one run: figures are per lookup.

With `--photos N`, a shoot of N real JPEG files also goes through the OpenAI fake
(tests/fake_openai_server.py, in this process): a first run with the cache (every photo
missed: read, hashed, looked up, then sent) against one with `--no-cache`, then the shoot's
renamed copies (every photo found: nothing sent). Wall time each, and the requests counted.

    python tests/benchmarks/cache.py [--rows 100000] [--small 1000] [--lookups 2000]
                                     [--photos 0] [--edge 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kullbatch.store.cache import LOOKUP_SQL
from kullbatch.store.database import Store

RATING = (
    '{"starRating": 4, "colorLabel": "green", "title": "A title", "description": "A sentence.",'
    ' "tags": ["a", "b"], "issues": []}'
)


def key(n: int) -> str:
    return hashlib.sha256(f"photo-{n}".encode()).hexdigest()


async def make_db(path: Path, rows: int) -> None:
    """The schema by kullbatch's migrations, then `rows` rated photos of one job."""
    store = await Store.open(path)
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO batch_jobs (id, user_id, shoot_id, provider_id, model, status,"
            " total_images, prompt, source, created_at) VALUES"
            " ('job', 'bench', 'bench', 'openai', 'gpt-5.4-mini', 'completed', ?, 'p', 's', 'now')",
            (rows,),
        )
        db.executemany(
            "INSERT INTO batch_items (job_id, position, image_id, image, status, result,"
            " created_at, cache_key) VALUES ('job', ?, ?, '{}', 'rated', ?, 'now', ?)",
            ((n, f"img{n}", RATING, key(n)) for n in range(rows)),
        )


async def time_lookups(path: Path, keys: list[str]) -> dict[str, float]:
    """Microseconds per lookup, one by one and all at once, through kullbatch's store."""
    store = await Store.open(path)
    try:
        found = 0
        each: list[float] = []
        for wanted in keys:
            started = time.perf_counter()
            found += await store.cache.find(wanted) is not None
            each.append(time.perf_counter() - started)
        started = time.perf_counter()
        many = await store.cache.find_many(keys)
        batched = time.perf_counter() - started
    finally:
        await store.close()
    assert found == len(many) == len(keys) // 2, (found, len(many))
    return {
        "median_us": statistics.median(each) * 1e6,
        "p99_us": sorted(each)[int(len(each) * 0.99)] * 1e6,
        "batched_us": batched / len(keys) * 1e6,
    }


def time_unindexed(path: Path, keys: list[str]) -> float:
    """Microseconds per lookup when SQLite may not use the index (a full scan)."""
    scan = LOOKUP_SQL.replace("WHERE cache_key", "WHERE +cache_key")
    with sqlite3.connect(path) as db:
        started = time.perf_counter()
        for wanted in keys:
            db.execute(scan, (wanted, "rated")).fetchone()
        return (time.perf_counter() - started) / len(keys) * 1e6


def plan(path: Path) -> str:
    with sqlite3.connect(path) as db:
        rows = db.execute(f"EXPLAIN QUERY PLAN {LOOKUP_SQL}", ("k", "rated")).fetchall()
    return "; ".join(str(row[-1]) for row in rows)


def lookup_keys(rows: int, count: int) -> list[str]:
    """Half of them stored (spread over the table), half never stored."""
    half = count // 2
    stored = [key(n * max(1, rows // half) % rows) for n in range(half)]
    return stored + [key(rows + n) for n in range(count - half)]


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kullbatch-cache-bench-") as folder:
        results = {}
        for rows in (args.small, args.rows):
            path = Path(folder) / f"{rows}.db"
            started = time.perf_counter()
            await make_db(path, rows)
            made = time.perf_counter() - started
            figures = await time_lookups(path, lookup_keys(rows, args.lookups))
            figures["scan_us"] = time_unindexed(path, lookup_keys(rows, 20))
            results[rows] = figures
            print(f"{rows:>9,} rows (made in {made:.1f} s): plan: {plan(path)}")
        for rows, figures in results.items():
            print(
                f"{rows:>9,} rows: find {figures['median_us']:.0f} us median, "
                f"{figures['p99_us']:.0f} us p99; find_many {figures['batched_us']:.1f} us a key; "
                f"without the index {figures['scan_us']:,.0f} us"
            )
        small, big = results[args.small], results[args.rows]
        print(
            f"find at {args.rows:,} rows / at {args.small:,}: {big['median_us'] / small['median_us']:.2f}x"
        )


async def shoot_runs(photos: int, edge: int, folder: Path) -> None:
    """The same shoot sent with and without the cache, then its copies found in it."""
    import random  # noqa: PLC0415
    import shutil  # noqa: PLC0415

    from aiohttp.test_utils import TestServer  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fake_openai_server import FakeChatServer  # noqa: PLC0415

    from kullbatch.manifest import manifest_from_document  # noqa: PLC0415
    from kullbatch.service import jobs  # noqa: PLC0415

    rng = random.Random(7)
    tile = Image.frombytes("RGB", (edge, edge * 3 // 4), rng.randbytes(edge * edge * 3 // 4 * 3))
    shoot, copies = Path(folder) / "shoot", Path(folder) / "copies"
    shoot.mkdir()
    copies.mkdir()
    for n in range(photos):
        # each photo its own angle (n % 360 would repeat past 360 photos: copies, not misses)
        tile.rotate(n * 360 / photos).save(shoot / f"IMG_{n:05d}.jpg", quality=90)
        shutil.copy(shoot / f"IMG_{n:05d}.jpg", copies / f"renamed_{n:05d}.jpg")
    servers: list[TestServer] = []

    async def serve(app: Any, host: str) -> TestServer:
        server = TestServer(app, host=host)
        await server.start_server()
        servers.append(server)
        return server

    fake = await FakeChatServer(api_key="sk-bench").start(serve)
    env = {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": f"{fake.base_url}/v1"}

    async def one(name: str, source: Path, db: Path, *, cache: bool) -> None:
        entries = [
            {"id": p.stem, "filename": p.name, "path": str(p)} for p in sorted(source.iterdir())
        ]
        shot = manifest_from_document({"shootId": name, "images": entries}, base=source)
        settings = jobs.ProcessSettings(provider="openai", cache=cache, groups=False)
        before = len(fake.requests)
        async with jobs.Service.open(db, env) as service:
            job = await service.create(shot, settings)
            started = time.perf_counter()
            outcome = await service.run(job)
            took = time.perf_counter() - started
            status = await service.status(job.id)
        sent = len(fake.requests) - before
        print(
            f"{name:<28} {took:6.2f} s  {outcome.rated:>6} rated, {sent:>6} sent, "
            f"{status.cachedImages:>6} from cache"
        )

    try:
        await one("first run, --no-cache", shoot, Path(folder) / "a.db", cache=False)
        await one("first run, cache (misses)", shoot, Path(folder) / "b.db", cache=True)
        await one("renamed copies (all hits)", copies, Path(folder) / "b.db", cache=True)
    finally:
        for server in servers:
            await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--lookups", type=int, default=2_000)
    parser.add_argument("--photos", type=int, default=0, help="also run a shoot of N photos")
    parser.add_argument("--edge", type=int, default=1024, help="the photos' long edge (px)")
    args = parser.parse_args()
    asyncio.run(main_async(args))
    if args.photos:
        with tempfile.TemporaryDirectory(prefix="kullbatch-cache-shoot-") as folder:
            asyncio.run(shoot_runs(args.photos, args.edge, Path(folder)))


if __name__ == "__main__":
    main()
