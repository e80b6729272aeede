"""Studio benchmark: many users posting a shoot each, at once, to one `kullbatch serve`.

One `kullbatch serve --users FILE` process (a fresh database) and one fresh fault-free fake
provider process (tests/fault_server.py, which checks the key). Every user connects their
WebSocket with their own token, then all post a job of `--photos` URL images at the same moment;
each reads their WebSocket until their own job ends. The run checks that every job completed
with every photo rated, and that no user heard a single message about another user's job.

    python tests/benchmarks/studio.py [--users 20] [--photos 500] [--latency 1.0]

Prints the wall time from the first post to the last job's end, photos per second, the
messages each user received (min / max), messages about others' jobs (must be 0) and the
server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fair

KEY = "sk-bench"  # the key tests/fault_server.py is started with by `fair.fresh_fake`


def images(user: str, count: int) -> list[dict[str, str]]:
    return [
        {
            "id": f"{user}-{i}",
            "filename": f"{user}-{i}.jpg",
            "url": f"https://photos.test/{user}-{i}.jpg",
        }
        for i in range(count)
    ]


async def one_user(
    session: aiohttp.ClientSession, base: str, name: str, token: str, photos: int, go: asyncio.Event
) -> dict[str, Any]:
    """Connect, wait for the start, post, then read the WebSocket until this job ends."""
    ws_url = base.replace("http://", "ws://") + f"/ws?token={token}"
    heard: dict[str, int] = {}
    async with session.ws_connect(ws_url, max_msg_size=0) as ws:
        await go.wait()
        body = {"shootId": name, "providerId": "openai", "images": images(name, photos)}
        async with session.post(
            f"{base}/api/batch/process", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as answer:
            posted = await answer.json()
            assert answer.status == 202, posted
        job_id = posted["jobId"]
        async for message in ws:
            data = json.loads(message.data)["data"]
            heard[data["jobId"]] = heard.get(data["jobId"], 0) + 1
            if data["jobId"] == job_id and data["status"] != "processing":
                break
        ended = time.perf_counter()
    async with session.get(
        f"{base}/api/batch/status/{job_id}", headers={"Authorization": f"Bearer {token}"}
    ) as answer:
        status = await answer.json()
    foreign = sum(count for other, count in heard.items() if other != job_id)
    return {
        "job": job_id,
        "status": status,
        "messages": heard.get(job_id, 0),
        "foreign": foreign,
        "ended": ended,
    }


async def drive(
    base: str, users: dict[str, str], photos: int
) -> tuple[float, list[dict[str, Any]]]:
    go = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        tasks = [
            asyncio.create_task(one_user(session, base, name, token, photos, go))
            for name, token in users.items()
        ]
        await asyncio.sleep(0.5)  # every WebSocket connected before the first post
        started = time.perf_counter()
        go.set()
        results = await asyncio.gather(*tasks)
    return started, results


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--latency", type=float, default=1.0, help="the fake's answer time (s)")
    args = parser.parse_args()
    fair.raise_open_file_limit()
    users = {f"user{n:02d}": secrets.token_urlsafe(18) for n in range(args.users)}
    with (
        tempfile.TemporaryDirectory() as folder,
        fair.fresh_fake("--latency", str(args.latency)) as fake,
    ):
        users_file = Path(folder) / "users.json"
        users_file.write_text(
            json.dumps({"users": [{"name": n, "token": t} for n, t in users.items()]})
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KULLBATCH_", "OPENAI"))}
        env |= {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": KEY}
        command = [*fair.kullbatch_command("batch"), "serve", "--port", "0"]
        serve = subprocess.Popen(
            [*command, "--users", str(users_file), "--db", str(Path(folder) / "k.db")],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert serve.stderr is not None
            line = serve.stderr.readline()
            if "open http://" not in line:
                raise SystemExit(f"serve did not start: {line}{serve.stderr.read()}")
            base = line.split("open ", 1)[1].split("/?", 1)[0]
            started, results = asyncio.run(drive(base, users, args.photos))
            rss = peak_rss_mb(serve.pid)
        finally:
            serve.terminate()
            serve.wait(timeout=60)
    wall = max(r["ended"] for r in results) - started
    total = args.users * args.photos
    complete = all(
        r["status"]["status"] == "completed" and r["status"]["processedImages"] == args.photos
        for r in results
    )
    foreign = sum(r["foreign"] for r in results)
    messages = [r["messages"] for r in results]
    print(f"users: {args.users}, photos each: {args.photos}, fake latency: {args.latency} s")
    print(f"all jobs completed, every photo rated: {complete}")
    print(f"wall (first post to last end): {wall:.2f} s; {total / wall:.0f} photos/s")
    print(f"messages per user: min {min(messages)}, max {max(messages)}")
    print(f"messages about another user's job: {foreign}")
    print(f"server peak RSS: {rss:.0f} MB" if rss is not None else "server peak RSS: n/a")
    if not complete or foreign:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
