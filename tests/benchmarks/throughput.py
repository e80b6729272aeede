"""Throughput benchmark: 10,000 URL images through the real CLI, beside a bare aiohttp client.

A: `kullbatch process --provider openai`; B: a bare aiohttp client that fires the same requests
(the very bodies kullbatch's OpenAI adapter sends) with asyncio.gather and keeps nothing, the
floor for what the HTTP itself costs. Both are processes of their own, so wall, CPU and peak
RSS are each process's own (wait4), start-up included. Every run gets a fresh fault-free fake
(tests/fault_server.py, fixed latency, its own process); the sides alternate (A B, B A, ...);
both run under the same GC settings (see fair.py): by default kullbatch's BatchGC, which the
bare client applies the same way around its requests; with `--gc default`, Python's default
on both. The bare client also lifts its open-file limit as kullbatch does.

    python tests/benchmarks/throughput.py [--photos 10000] [--repeats 3] [--latency 1.0]
                                          [--gc batch|default]
    python tests/benchmarks/throughput.py --photos 100000 --rpm-limit 30000 [--repeats 3]

With `--rpm-limit`, the fake enforces (and announces in `x-ratelimit-*`) that many requests per
minute, so the job is paced: the floor is photos / limit minutes, the bare client (which would
only collect 429s) is skipped, kullbatch alone runs `--repeats` times (a fresh fake each), and
the figure that matters is peak RSS, which must follow what is in flight, not the shoot's size
(target: 100,000 photos under 500 MB, wall near the floor).

Targets (2 cores): kullbatch wall <= 1.25x the bare client's and under 12 s; CPU <= 1.3x the
bare client's; peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fair

# --- the bare client (run as its own process: `throughput.py --bare PORT`) -------------------


async def bare_client(port: int, count: int, thresholds: tuple[int, ...] | None) -> None:
    import aiohttp  # noqa: PLC0415 - only the child process needs these

    from kullbatch.models import Prompt  # noqa: PLC0415
    from kullbatch.providers._chat import build_body, json_schema_format  # noqa: PLC0415
    from kullbatch.providers.base import DEFAULT_PROMPT  # noqa: PLC0415

    fair.raise_open_file_limit()  # as kullbatch's runtime does: one socket per request in flight
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            # the very body kullbatch's OpenAI adapter sends, so both make the same requests
            body = build_body(
                model="gpt-5.4-mini",
                prompt=Prompt(DEFAULT_PROMPT),
                image_url=f"https://photos.test/img{i}.jpg",
                response_format=json_schema_format(strict=True),
                detail="auto",
            )
            headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
            payload = json.dumps(body).encode()
            async with session.post(url, data=payload, headers=headers) as response:
                response.raise_for_status()
                json.loads(await response.read())

        # where kullbatch's runtime applies BatchGC: session open, around the job's requests
        with fair.gc_while_running(thresholds):
            await asyncio.gather(*(one(i) for i in range(count)))


# --- one run of each side ---------------------------------------------------------------------


def fake_flags(args: argparse.Namespace) -> list[str]:
    limit = [] if args.rpm_limit is None else ["--rpm-limit", str(args.rpm_limit)]
    return ["--latency", str(args.latency), *limit]


def with_per_image(figures: fair.Figures, count: int) -> fair.Figures:
    return {**figures, "cpu_ms": figures["cpu"] / count * 1000}


def run_kullbatch(args: argparse.Namespace, manifest: Path, repeat: int) -> fair.Figures:
    db = manifest.parent / f"bench{repeat}.db"
    with fair.fresh_fake(*fake_flags(args)) as fake:
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": fake.base_url,
            "KULLBATCH_DB": str(db),
        }
        command = [*fair.kullbatch_command(args.gc), "process", str(manifest)]
        figures, _ = fair.run_process([*command, "--provider", "openai", "--quiet"], env)
    for leftover in manifest.parent.glob(f"{db.name}*"):
        leftover.unlink()
    return with_per_image(figures, args.photos)


def run_bare(args: argparse.Namespace) -> fair.Figures:
    with fair.fresh_fake(*fake_flags(args)) as fake:
        command = [sys.executable, __file__, "--bare", str(fake.port)]
        command += ["--photos", str(args.photos), "--bare-gc", fair.bare_gc_argument(args.gc)]
        figures, _ = fair.run_process(command)
    return with_per_image(figures, args.photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fair.add_arguments(parser, photos=10_000, repeats=3)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--rpm-limit", type=int, default=None)
    parser.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--bare-gc", default="none", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        asyncio.run(bare_client(args.bare, args.photos, fair.gc_from_argument(args.bare_gc)))
        return
    paced = args.rpm_limit is not None
    fair.check_repeats(parser, args.repeats, comparison=not paced)
    with tempfile.TemporaryDirectory() as folder:
        manifest = fair.write_url_manifest(Path(folder), args.photos)
        ours = fair.Side("A", "kullbatch process", lambda n: run_kullbatch(args, manifest, n))
        if paced:
            report_paced(args, fair.repeat(ours, args.repeats))
            return
        bare = fair.Side("B", "bare aiohttp gather", lambda _: run_bare(args))
        report(args, *fair.alternate(ours, bare, args.repeats))


def report_paced(args: argparse.Namespace, runs: list[fair.Figures]) -> None:
    floor = args.photos / args.rpm_limit * 60
    for run in runs:
        run["x_floor"] = run["wall"] / floor
    print(
        f"{args.photos} URL images, fake latency {args.latency:.1f} s, limit {args.rpm_limit} "
        f"requests/min (floor {floor:.0f} s)"
    )
    fair.how(
        fair.describe_order(args.repeats, sides=1) + " (kullbatch alone: no comparison)",
        fair.describe_process(),
        "fake: "
        + fair.describe_fake("tests/fault_server.py process enforcing and announcing the limit"),
        "GC: " + fair.describe_gc(args.gc),
    )
    columns = [
        fair.Column("wall", "wall s", ".1f"),
        fair.Column("x_floor", "x floor"),
        fair.Column("cpu", "CPU s", ".1f"),
        fair.Column("rss_mb", "peak RSS MB", ".0f"),
    ]
    fair.table(columns, [("kullbatch process", runs)])
    print("target: peak RSS < 500 MB, wall near the floor")


def report(args: argparse.Namespace, ours: list[fair.Figures], bare: list[fair.Figures]) -> None:
    print(f"{args.photos} URL images, fake latency {args.latency:.1f} s, no faults")
    fair.how(
        fair.describe_order(args.repeats),
        fair.describe_process(),
        "fake: " + fair.describe_fake("tests/fault_server.py process"),
        "GC: " + fair.describe_gc(args.gc, bare_side=True),
    )
    columns = [
        fair.Column("wall", "wall s"),
        fair.Column("cpu", "CPU s"),
        fair.Column("cpu_ms", "CPU ms/img", ".3f"),
        fair.Column("rss_mb", "peak RSS MB", ".0f"),
    ]
    ratios = fair.paired_ratios(ours, bare, ["wall", "cpu", "cpu_ms", "rss_mb"])
    rows = [("A kullbatch process", ours), ("B bare aiohttp gather", bare)]
    fair.table(columns, rows, ("A / B", ratios))
    print("targets: wall A/B <= 1.25x and A < 12 s, CPU A/B <= 1.3x, A's peak RSS < 300 MB")


if __name__ == "__main__":
    main()
