"""WebSocket benchmark: 10,000 URL images through `process --serve-ws` with 50 clients watching.

The same job runs on two sides against the fault-free fake (tests/fault_server.py): A with
`--serve-ws` and 50 clients connected before the first photo ends, 49 reading every message and
one that never reads a byte; B with no WebSocket. Each run is a CLI process of its own with a
fresh fake process and a fresh database; the sides alternate (A B, B A, ...). Wall and CPU time
are the CLI process's own (wait4); the clients run in this process, beside it, on A's runs only.
Both sides are kullbatch, under the same GC (its BatchGC, or `--gc default` for Python's).

    python tests/benchmarks/websocket.py [--photos 10000] [--repeats 3] [--latency 1.0]
                                         [--clients 50] [--gc batch|default]

Target: with the clients, wall time no more than 10 % over the run without them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fair


async def watch(url: str, clients: int) -> tuple[list[int], asyncio.StreamWriter]:
    """Connect `clients - 1` readers and one socket that never reads; read until the end."""
    host, port = url.split("//")[1].split("/", maxsplit=1)[0].split(":")
    _, silent = await asyncio.open_connection(host, int(port))
    silent.write(
        f"GET /{url.split('/', 3)[3]} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    async with aiohttp.ClientSession() as session:

        async def one() -> int:
            seen = 0
            async with session.ws_connect(url) as ws:
                async for _ in ws:
                    seen += 1
            return seen

        return await asyncio.gather(*(one() for _ in range(clients - 1))), silent


async def run(command: list[str], env: dict[str, str], clients: int) -> fair.Figures:
    started = time.perf_counter()
    child = subprocess.Popen(
        command,
        cwd=fair.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    seen: list[int] = []
    first = ""
    if clients:
        first = await asyncio.to_thread(child.stderr.readline)
    # the rest of stderr is read as it comes, on both sides alike
    rest = asyncio.ensure_future(asyncio.to_thread(child.stderr.read))
    if clients:
        if "live progress: " not in first:
            raise SystemExit(f"kullbatch printed no WebSocket address:\n{first}{await rest}")
        seen, silent = await watch(first.split("live progress: ")[1].strip(), clients)
        silent.close()
    _, status, usage = await asyncio.to_thread(os.wait4, child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    printed = first + await rest
    child.stderr.close()
    if child.returncode != 0:
        raise SystemExit(f"kullbatch exited {child.returncode}:\n{printed}")
    return {
        "wall": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "messages": min(seen) if seen else 0,
    }


def run_side(args: argparse.Namespace, manifest: Path, name: str, clients: int) -> fair.Figures:
    db = manifest.parent / f"{name}.db"
    with fair.fresh_fake("--latency", str(args.latency)) as fake:
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": fake.base_url,
            "KULLBATCH_DB": str(db),
        }
        cli = [*fair.kullbatch_command(args.gc), "process", str(manifest)]
        cli += ["--provider", "openai", "--quiet"]
        if clients:
            cli += ["--serve-ws", "127.0.0.1:0", "--ws-token", "bench"]
        figures = asyncio.run(run(cli, env, clients))
    for leftover in manifest.parent.glob(f"{db.name}*"):
        leftover.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fair.add_arguments(parser, photos=10_000, repeats=3)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    fair.check_repeats(parser, args.repeats, comparison=True)
    with tempfile.TemporaryDirectory() as folder:
        manifest = fair.write_url_manifest(Path(folder), args.photos)
        watched = fair.Side(
            "A",
            f"{args.clients} clients",
            lambda n: run_side(args, manifest, f"watched{n}", args.clients),
        )
        alone = fair.Side("B", "no WebSocket", lambda n: run_side(args, manifest, f"alone{n}", 0))
        with_clients, without = fair.alternate(watched, alone, args.repeats)
    print(f"{args.photos} URL images, fake latency {args.latency:.1f} s")
    fair.how(
        fair.describe_order(args.repeats),
        "each run a CLI process of its own (wall, CPU, peak RSS: that process's); "
        "A's clients run in the benchmark's process",
        "fake: " + fair.describe_fake("tests/fault_server.py process"),
        "GC: " + fair.describe_gc(args.gc),
    )
    columns = [
        fair.Column("wall", "wall s"),
        fair.Column("cpu", "CPU s"),
        fair.Column("rss_mb", "peak RSS MB", ".0f"),
    ]
    rows = [
        (f"A {args.clients} clients (1 never reading)", with_clients),
        ("B no WebSocket", without),
    ]
    ratios = fair.paired_ratios(with_clients, without, ["wall", "cpu", "rss_mb"])
    fair.table(columns, rows, ("A / B", ratios))
    fewest = min(run["messages"] for run in with_clients)
    print(f"fewest messages a reading client got in any run: {fewest:.0f}")
    print("target: wall A/B <= 1.10x")


if __name__ == "__main__":
    main()
