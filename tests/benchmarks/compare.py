"""Burst comparison benchmark: the cost and time `--compare-bursts` adds to a shoot.

N photos (default 1,000): a third of them in bursts of three frames 0.3 s apart (shifted and
blurred copies of an example photo), the rest single frames a minute apart. The shoot goes
through the OpenAI adapter against the local chat-completions fake (which counts usage from
each request's images, as OpenAI's patch rule does: tests/fake_usage.py) on two sides: A with
`--compare-bursts`, B without; each side `--repeats` times, alternating (A B, B A, ...), each
run with a fresh database, in this process. Cost is priced with kullbatch's price table for the
job's model; the time the fake takes to answer is the fake's, not OpenAI's (a real comparison
takes seconds: the requests go out at once, up to 16 bursts at a time).

    python tests/benchmarks/compare.py [--photos 1000] [--repeats 3]

It prints the comparisons' requests, images, tokens and cost, the share of the job's cost
they add, and the wall time with and without.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from aiohttp import web  # noqa: E402
from fake_openai_server import FakeChatServer  # noqa: E402

from kullbatch.manifest import load_manifest  # noqa: E402
from kullbatch.models import Usage  # noqa: E402
from kullbatch.service import jobs  # noqa: E402
from tests.burst_shoot import Shot, make_shoot  # noqa: E402

KEY = "sk-bench-key"
SOURCES = [
    "01_harbour_sharp",
    "02_city_skyline_sharp",
    "03_portrait_sharp",
    "05_market_street_sharp",
]


def shots(count: int) -> list[Shot]:
    """A third of `count` in bursts of three, the rest alone; moments a minute apart."""
    bursts = count // 9  # bursts of three: a third of the photos
    found: list[Shot] = []
    minute = 0
    for n in range(bursts):
        source = SOURCES[n % len(SOURCES)]
        for frame in range(3):
            stamp = f"{10 + minute // 60:02d}:{minute % 60:02d}:0{frame}.{frame * 3}0"
            found.append(
                Shot(f"b{n}_{frame}", source, shift=2 * frame, blur=1.5 * frame, time=stamp)
            )
        minute += 1
    for n in range(count - len(found)):
        stamp = f"{10 + minute // 60:02d}:{minute % 60:02d}:30.00"
        found.append(Shot(f"s{n}", SOURCES[n % len(SOURCES)], time=stamp))
        minute += 1
    return found


async def start_fake() -> tuple[FakeChatServer, web.AppRunner]:
    fake = FakeChatServer(api_key=KEY)
    fake.count_usage = True
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", fake._chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.base_url = f"http://127.0.0.1:{port}"
    return fake, runner


async def one_run(manifest_path: Path, db: Path, *, compare: bool) -> dict[str, Any]:
    """One job on a fresh fake: wall time, the job's cost, the comparisons' figures."""
    fake, runner = await start_fake()
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": f"{fake.base_url}/v1"}
    try:
        manifest = load_manifest(manifest_path)
        async with jobs.Service.open(db, env) as service:
            job = await service.create(
                manifest, jobs.ProcessSettings(provider="openai", compare_bursts=compare)
            )
            started = time.perf_counter()
            await service.run(job)
            wall = time.perf_counter() - started
            status = await service.status(job.id)
            spent = await service.store.comparisons.usage(job.id)
            requests = await service.store.comparisons.requests(job.id)
            prices = service.prices()
    finally:
        await runner.cleanup()
    price = prices.price("openai", job.model)
    compared_in = sum(s.input_tokens for s in spent)
    compared_out = sum(s.output_tokens for s in spent)
    usd = 0.0
    if price is not None:
        usd = price.cost(Usage(compared_in, compared_out))
    return {
        "wall": wall,
        "cost": status.costUsd or 0.0,
        "model": job.model,
        "requests": requests,
        "images": sum(len(frames) for frames in fake.comparisons),
        "in": compared_in,
        "out": compared_out,
        "compare_usd": usd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_shoot(folder / "shoot", shots(args.photos))
        runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for n in range(args.repeats):
            for compare in (True, False) if n % 2 == 0 else (False, True):
                db = folder / f"{'a' if compare else 'b'}{n}.db"
                runs[compare].append(asyncio.run(one_run(manifest, db, compare=compare)))
    with_, without = runs[True], runs[False]
    first = with_[0]
    wall_a = statistics.median(r["wall"] for r in with_)
    wall_b = statistics.median(r["wall"] for r in without)
    cost_a, cost_b = first["cost"], without[0]["cost"]
    print(
        f"{args.photos} photos, {args.photos // 9 * 3} in {args.photos // 9} bursts of three; "
        f"openai {first['model']} on the local fake (usage counted from the images); "
        f"{args.repeats} runs per side, alternating, a fresh database and fake per run"
    )
    print(
        f"--compare-bursts: {first['requests']} requests, {first['images']} images, "
        f"{first['in']:,} in + {first['out']:,} out tokens = ${first['compare_usd']:.4f}"
    )
    print(
        f"job cost: ${cost_b:.4f} without, ${cost_a:.4f} with (+{(cost_a - cost_b) / cost_b:.1%})"
        if cost_b
        else "job cost: no price for the model"
    )
    print(
        f"wall (median): {wall_b:.2f} s without, {wall_a:.2f} s with "
        f"(+{wall_a - wall_b:.2f} s, {wall_a / wall_b - 1:+.1%}); the fake answers at once"
    )


if __name__ == "__main__":
    main()
