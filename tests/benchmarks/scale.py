"""The 100,000-photo job as a user runs it: wall against the floor, RSS over time, CPU per photo.

A: `kullbatch process SHOOT.json --provider openai --quiet` on a URL manifest of `--photos`
photos, against a fake OpenAI (tests/fault_server.py) that enforces and announces
`--rpm-limit` requests a minute (default 30,000) and answers after `--latency` seconds
(default 2): the floor is photos / limit minutes (200 s for 100,000). The child marks when each
step begins (reading the manifest, creating the job, the run, grouping, the summary), and its
RSS is sampled every `--sample` seconds, so the peak is reported with the step it came in.

B: a bare aiohttp client, paced as kullbatch's gate paces (0.95x the limit) against the same
kind of fake (fresh), the same bodies as kullbatch's OpenAI adapter sends (a 429 is waited out as its hint says and sent
again), keeping nothing: what the HTTP itself costs per request. Both sides are processes of
their own, alternated (A B, B A, ...), a fresh fake each run, the same GC settings (fair.py).

    python tests/benchmarks/scale.py [--photos 100000] [--repeats 3] [--rpm-limit 30000]
                                     [--latency 2] [--sample 0.5] [--gc batch|default]

Targets: peak RSS under 300 MB from start to exit; CPU per photo <= the bare client's CPU per
request; wall <= 1.1x the floor. `--repeats 1` runs one pair (no spread; quick check only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import runpy
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fair

THROUGHPUT = Path(__file__).resolve().parent / "throughput.py"
STEPS = ("manifest", "create", "run", "grouping", "summary")
MARKS_ENV = "KULLBATCH_SCALE_MARKS"


# --- the kullbatch child: the CLI with a mark at the start of each step -----------------------


def kullbatch_child(gc_mode: str, argv: list[str]) -> None:
    """Run `kullbatch ARGV` with each step's start written to $KULLBATCH_SCALE_MARKS."""
    from kullbatch.cli import app  # noqa: PLC0415 - only the child process imports kullbatch
    from kullbatch.run.runtime import Runtime  # noqa: PLC0415
    from kullbatch.service import jobs  # noqa: PLC0415

    marks = Path(os.environ[MARKS_ENV]).open("a", buffering=1)  # noqa: SIM115 - open to exit

    def mark(step: str) -> None:
        marks.write(f"{step} {time.time()}\n")

    def before(step: str, function: Any) -> Any:
        async def marked(*args: Any, **kwargs: Any) -> Any:
            mark(step)
            return await function(*args, **kwargs)

        return marked

    load = app.load_manifest

    def loading(source: Path) -> Any:
        mark("manifest")
        return load(source)

    app.load_manifest = loading
    jobs.Service.create = before("create", jobs.Service.create)  # type: ignore[method-assign]
    Runtime.run_job = before("run", Runtime.run_job)  # type: ignore[method-assign]
    group = jobs.group_job

    async def grouping(*args: Any, **kwargs: Any) -> Any:
        mark("grouping")
        try:
            return await group(*args, **kwargs)
        finally:
            mark("summary")

    jobs.group_job = grouping
    fair.switch_gc(gc_mode)
    sys.argv = ["kullbatch", *argv]
    runpy.run_module("kullbatch", run_name="__main__", alter_sys=True)


# --- the bare client: paced at the limit, as kullbatch is ------------------------------------


async def bare_paced(port: int, count: int, rpm: float, thresholds: tuple[int, ...] | None) -> None:
    import aiohttp  # noqa: PLC0415 - only the child process needs these

    from kullbatch.models import Prompt  # noqa: PLC0415
    from kullbatch.providers._chat import build_body, json_schema_format  # noqa: PLC0415
    from kullbatch.providers.base import DEFAULT_PROMPT  # noqa: PLC0415

    fair.raise_open_file_limit()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
    refused = 0
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:

        async def one(i: int) -> None:
            nonlocal refused
            body = build_body(
                model="gpt-5.4-mini",
                prompt=Prompt(DEFAULT_PROMPT),
                image_url=f"https://photos.test/img{i}.jpg",
                response_format=json_schema_format(strict=True),
                detail="auto",
            )
            payload = json.dumps(body).encode()
            while True:
                async with session.post(url, data=payload, headers=headers) as response:
                    data = await response.read()
                    if response.status != 429:
                        response.raise_for_status()
                        json.loads(data)
                        return
                    refused += 1
                    wait = float(response.headers.get("retry-after-ms", "1000")) / 1000
                await asyncio.sleep(wait)

        loop = asyncio.get_running_loop()
        interval = 60.0 / rpm
        with fair.gc_while_running(thresholds):
            started = loop.time()
            tasks: list[asyncio.Task[None]] = []
            sent = 0
            while sent < count:
                due = min(count, int((loop.time() - started) / interval) + 1)
                tasks.extend(asyncio.create_task(one(i)) for i in range(sent, due))
                sent = due
                await asyncio.sleep(interval)
            await asyncio.gather(*tasks)
    fair.print_report({"refused": refused})


# --- one run of each side ---------------------------------------------------------------------


class Sampler:
    """RSS of a process every `every` seconds, from /proc, on a thread of its own."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.samples: list[tuple[float, float]] = []  # (time.time(), MB)
        self._stop = threading.Event()

    def follow(self, pid: int) -> None:
        status = Path(f"/proc/{pid}/status")
        while not self._stop.is_set():
            try:
                text = status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.append((time.time(), int(line.split()[1]) / 1024))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()


def run_sampled(command: list[str], env: dict[str, str], every: float) -> tuple[Any, Sampler]:
    """fair.run_process, with the child's RSS sampled while it runs."""
    sampler = Sampler(every)
    real_popen = fair.subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> Any:
        child = real_popen(*args, **kwargs)
        threading.Thread(target=sampler.follow, args=(child.pid,), daemon=True).start()
        return child

    fair.subprocess.Popen = popen  # type: ignore[misc]
    try:
        figures, _ = fair.run_process(command, env)
    finally:
        fair.subprocess.Popen = real_popen  # type: ignore[misc]
        sampler.stop()
    return figures, sampler


def step_at(marks: list[tuple[str, float]], when: float) -> str:
    step = "start"
    for name, at in marks:
        if at <= when:
            step = name
    return step


def run_kullbatch(args: argparse.Namespace, manifest: Path, repeat: int) -> fair.Figures:
    folder = manifest.parent
    db, marks_file = folder / f"scale{repeat}.db", folder / f"marks{repeat}.txt"
    limit = ["--latency", str(args.latency), "--rpm-limit", str(args.rpm_limit)]
    with fair.fresh_fake(*limit) as fake:
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": fake.base_url,
            "KULLBATCH_DB": str(db),
            MARKS_ENV: str(marks_file),
        }
        command = [sys.executable, __file__, "--kullbatch-child", args.gc, "--"]
        command += ["process", str(manifest), "--provider", "openai", "--quiet"]
        figures, sampler = run_sampled(command, env, args.sample)
    marks = [
        (line.split()[0], float(line.split()[1]))
        for line in marks_file.read_text().split("\n")
        if line
    ]
    for leftover in [*folder.glob(f"{db.name}*"), marks_file]:
        leftover.unlink()
    by_step: dict[str, float] = {}
    for when, mb in sampler.samples:
        step = step_at(marks, when)
        by_step[step] = max(by_step.get(step, 0.0), mb)
    peak_at = max(sampler.samples, key=lambda s: s[1])[0] if sampler.samples else 0.0
    floor = args.photos / args.rpm_limit * 60
    figures = {
        **figures,
        "x_floor": figures["wall"] / floor,
        "cpu_ms": figures["cpu"] / args.photos * 1000,
        "429s": float(fake.stats.get("outcomes", {}).get("window_429", 0)),
    }
    steps = ", ".join(f"{step} {mb:.0f}" for step, mb in by_step.items())
    begun = sampler.samples[0][0] if sampler.samples else 0.0
    starts = ", ".join(f"{step} {at - begun:.1f}" for step, at in marks)
    print(
        f"  A run {repeat + 1}: peak RSS {figures['rss_mb']:.0f} MB during "
        f"'{step_at(marks, peak_at)}'; max RSS MB by step: {steps}; steps began at (s): {starts}",
        file=sys.stderr,
    )
    PEAK_STEPS.append(step_at(marks, peak_at))
    return figures


PEAK_STEPS: list[str] = []


def kullbatch_headroom() -> float:
    """The share of an announced limit kullbatch's gate paces at: B paces there too, so both
    send the same requests (at the limit itself, B meets the fake's window edges: 429s)."""
    from kullbatch.run.ratelimit import HEADROOM  # noqa: PLC0415 - the parent reads one number

    return float(HEADROOM)


def run_bare(args: argparse.Namespace) -> fair.Figures:
    """B paced: the same photos at the same limit. B gather: throughput.py's bare client, every
    request at once against a fake without a limit, on at most `--gather-count` requests."""
    floor = args.photos / args.rpm_limit * 60
    gc_argument = fair.bare_gc_argument(args.gc)
    if args.bare_side == "gather":
        count = min(args.photos, args.gather_count)
        with fair.fresh_fake("--latency", str(args.latency)) as fake:
            command = [sys.executable, str(THROUGHPUT), "--bare", str(fake.port)]
            command += ["--photos", str(count), "--bare-gc", gc_argument]
            figures, _ = fair.run_process(command)
        return {
            **figures,
            "x_floor": math.nan,
            "cpu_ms": figures["cpu"] / count * 1000,
            "429s": 0.0,
        }
    limit = ["--latency", str(args.latency), "--rpm-limit", str(args.rpm_limit)]
    with fair.fresh_fake(*limit) as fake:
        command = [sys.executable, __file__, "--bare", str(fake.port), "--photos", str(args.photos)]
        pace = args.rpm_limit * kullbatch_headroom()  # the pace kullbatch's gate keeps
        command += ["--bare-pace", str(pace), "--bare-gc", gc_argument]
        figures, out = fair.run_process(command, capture=True)
    return {
        **figures,
        "x_floor": figures["wall"] / floor,
        "cpu_ms": figures["cpu"] / args.photos * 1000,
        "429s": float(fair.child_report(out)["refused"]),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--kullbatch-child":
        kullbatch_child(sys.argv[2], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fair.add_arguments(parser, photos=100_000, repeats=3)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--rpm-limit", type=int, default=30_000)
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between RSS samples")
    parser.add_argument(
        "--bare-side",
        choices=("paced", "gather"),
        default="paced",
        help="B: a bare client paced at the limit (the same photos), or throughput.py's "
        "(every request at once, no limit, --gather-count requests)",
    )
    parser.add_argument("--gather-count", type=int, default=10_000)
    parser.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--bare-gc", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--bare-pace", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        thresholds = fair.gc_from_argument(args.bare_gc)
        asyncio.run(bare_paced(args.bare, args.photos, args.bare_pace, thresholds))
        return
    fair.check_repeats(parser, args.repeats, comparison=False)
    with tempfile.TemporaryDirectory() as folder:
        manifest = fair.write_url_manifest(Path(folder), args.photos)
        ours = fair.Side("A", "kullbatch process", lambda n: run_kullbatch(args, manifest, n))
        bare = fair.Side("B", f"bare aiohttp, {args.bare_side}", lambda _: run_bare(args))
        report(args, *fair.alternate(ours, bare, args.repeats))


def report(args: argparse.Namespace, ours: list[fair.Figures], bare: list[fair.Figures]) -> None:
    floor = args.photos / args.rpm_limit * 60
    print(
        f"{args.photos} URL photos, fake latency {args.latency:.1f} s, limit {args.rpm_limit} "
        f"requests/min enforced and announced (floor {floor:.0f} s)"
    )
    fair.how(
        fair.describe_order(args.repeats)
        + ("" if args.repeats >= fair.MIN_REPEATS else " (fewer than 3: a quick check only)"),
        fair.describe_process() + f"; RSS also sampled every {args.sample} s",
        "fake: " + fair.describe_fake("tests/fault_server.py process enforcing the limit"),
        f"B: a bare aiohttp client paced as kullbatch's gate paces ({kullbatch_headroom():.2f}x "
        "the limit), the same bodies, any 429 waited out and sent again"
        if args.bare_side == "paced"
        else f"B: throughput.py's bare client, {min(args.photos, args.gather_count)} requests "
        "at once against a fake without a limit (same latency); CPU per request compared",
        "GC: " + fair.describe_gc(args.gc, bare_side=True),
    )
    columns = [
        fair.Column("wall", "wall s", ".1f"),
        fair.Column("x_floor", "x floor"),
        fair.Column("cpu", "CPU s", ".1f"),
        fair.Column("cpu_ms", "CPU ms/photo", ".3f"),
        fair.Column("rss_mb", "peak RSS MB", ".0f"),
        fair.Column("429s", "429s", ".0f"),
    ]
    ratios = fair.paired_ratios(ours, bare, ["wall", "cpu", "cpu_ms", "rss_mb"])
    rows = [("A kullbatch process", ours), (f"B bare aiohttp, {args.bare_side}", bare)]
    fair.table(columns, rows, ("A / B", ratios))
    print(f"A's peak RSS came during: {', '.join(PEAK_STEPS)}")
    print("targets: A's peak RSS < 300 MB; CPU ms/photo A/B <= 1.00x; A wall <= 1.10x the floor")


if __name__ == "__main__":
    main()
