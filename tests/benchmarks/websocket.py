"""WebSocket benchmark: 10,000 URL images through `process --serve-ws` with 50 clients watching.

The same job runs twice against the fault-free fake (tests/fault_server.py): once with no
WebSocket, once with `--serve-ws` and 50 clients connected before the first photo ends, 49
reading every message and one that never reads a byte. Wall and CPU time are the CLI process's
own (wait4).

    python tests/benchmarks/websocket.py [--images 10000] [--latency 1.0] [--clients 50]

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
from throughput import ROOT, start_fake, write_manifest


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


async def run(command: list[str], env: dict[str, str], clients: int) -> dict[str, float]:
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seen: list[int] = []
    if clients:
        assert child.stderr is not None
        line = await asyncio.to_thread(child.stderr.readline)
        seen, silent = await watch(line.split("live progress: ")[1].strip(), clients)
        silent.close()
    _, status, usage = await asyncio.to_thread(os.wait4, child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"kullbatch exited {os.waitstatus_to_exitcode(status)}")
    return {
        "wall": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "messages": min(seen) if seen else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    fake, port = start_fake(args.latency)
    try:
        with tempfile.TemporaryDirectory() as folder:
            manifest = write_manifest(Path(folder), args.images)
            env = {
                **os.environ,
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
                "KULLBATCH_DB": str(Path(folder) / "bench.db"),
            }
            cli = [sys.executable, "-m", "kullbatch", "process", str(manifest)]
            cli += ["--provider", "openai", "--quiet"]
            alone = asyncio.run(run(cli, env, 0))
            ws = ["--serve-ws", "127.0.0.1:0", "--ws-token", "bench"]
            watched = asyncio.run(run([*cli, *ws], env, args.clients))
    finally:
        fake.terminate()
        fake.wait()
    print(f"{args.images} URL images, fake latency {args.latency:.1f} s")
    print(f"{'':34}{'wall s':>9}{'CPU s':>9}")
    print(f"{'no WebSocket':34}{alone['wall']:9.2f}{alone['cpu']:9.2f}")
    name = f"{args.clients} clients (1 never reading)"
    print(f"{name:34}{watched['wall']:9.2f}{watched['cpu']:9.2f}")
    print(f"fewest messages a reading client got: {watched['messages']}")
    print(f"with clients / without: wall {watched['wall'] / alone['wall']:.2f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
