"""Throughput benchmark: 10,000 URL images through the real CLI, beside a bare aiohttp client.

Both run as separate processes against the same fault-free fake (tests/fault_server.py, OpenAI
chat completions, fixed latency), so wall time, CPU time and peak RSS are each process's own
(from wait4). The bare client fires the same requests with asyncio.gather and keeps nothing:
it is the floor for what the HTTP itself costs.

    python tests/benchmarks/throughput.py [--images 10000] [--latency 1.0]
    python tests/benchmarks/throughput.py --images 100000 --rpm-limit 30000

With `--rpm-limit`, the fake enforces (and announces in `x-ratelimit-*`) that many requests per
minute, so the job is paced: the floor is images / limit minutes, the bare client (which would
only collect 429s) is skipped, and the figure that matters is peak RSS, which must follow what
is in flight, not the shoot's size (target: 100,000 photos under 500 MB, wall near the floor).

Targets (2 cores): kullbatch wall <= 1.25x the bare client's and under 12 s; CPU <= 1.3x the
bare client's; peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_fake(latency: float, rpm_limit: int | None = None) -> tuple[subprocess.Popen[str], int]:
    limit = [] if rpm_limit is None else ["--rpm-limit", str(rpm_limit)]
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fault_server",
            "--port",
            "0",
            "--latency",
            str(latency),
            *limit,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    return fake, int(fake.stdout.readline())


def measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run a process to the end; its own wall, CPU and peak RSS."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{command[2:4]} exited {code}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
    }


def write_manifest(folder: Path, count: int) -> Path:
    images = [
        {"id": f"img{i}", "filename": f"img{i}.jpg", "url": f"https://photos.test/img{i}.jpg"}
        for i in range(count)
    ]
    path = folder / "shoot.json"
    path.write_text(json.dumps({"shootId": "bench", "images": images}))
    return path


# --- the bare client (run as its own process: `throughput.py --bare PORT N`) -------------------


async def bare_client(port: int, count: int) -> None:
    import aiohttp  # noqa: PLC0415 - only the child process needs these

    from kullbatch.models import Prompt  # noqa: PLC0415
    from kullbatch.providers._chat import build_body, json_schema_format  # noqa: PLC0415
    from kullbatch.providers.base import DEFAULT_PROMPT  # noqa: PLC0415

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
                json.loads(await response.read())

        await asyncio.gather(*(one(i) for i in range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--rpm-limit", type=int, default=None)
    parser.add_argument("--bare", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        asyncio.run(bare_client(*args.bare))
        return
    fake, port = start_fake(args.latency, args.rpm_limit)
    try:
        with tempfile.TemporaryDirectory() as folder:
            manifest = write_manifest(Path(folder), args.images)
            env = {
                **os.environ,
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
                "KULLBATCH_DB": str(Path(folder) / "bench.db"),
            }
            bare = None
            if args.rpm_limit is None:
                bare_cmd = [sys.executable, __file__, "--bare", str(port), str(args.images)]
                bare = measure(bare_cmd, env)
            cli = [sys.executable, "-m", "kullbatch", "process", str(manifest)]
            ours = measure([*cli, "--provider", "openai", "--quiet"], env)
    finally:
        fake.terminate()
        fake.wait()
    if bare is None:
        assert args.rpm_limit is not None
        report_paced(args.images, args.latency, args.rpm_limit, ours)
    else:
        report(args.images, args.latency, bare, ours)


def report_paced(count: int, latency: float, rpm: int, ours: dict[str, float]) -> None:
    floor = count / rpm * 60
    print(f"{count} URL images, fake latency {latency:.1f} s, limit {rpm} requests/min")
    print(
        f"kullbatch process: wall {ours['wall']:.1f} s ({ours['wall'] / floor:.2f}x the "
        f"{floor:.0f} s floor), CPU {ours['cpu']:.1f} s, peak RSS {ours['rss_mb']:.0f} MB "
        "(target < 500 MB)"
    )


def report(count: int, latency: float, bare: dict[str, float], ours: dict[str, float]) -> None:
    print(f"{count} URL images, fake latency {latency:.1f} s, no faults")
    print(f"{'':22}{'wall s':>9}{'CPU s':>9}{'CPU ms/img':>12}{'peak RSS MB':>13}")
    for name, row in (("bare aiohttp gather", bare), ("kullbatch process", ours)):
        per_image = row["cpu"] / count * 1000
        print(f"{name:22}{row['wall']:9.2f}{row['cpu']:9.2f}{per_image:12.3f}{row['rss_mb']:13.0f}")
    print(
        f"kullbatch / bare: wall {ours['wall'] / bare['wall']:.2f}x (target <= 1.25x, < 12 s), "
        f"CPU {ours['cpu'] / bare['cpu']:.2f}x (target <= 1.3x), RSS target < 300 MB"
    )


if __name__ == "__main__":
    main()
