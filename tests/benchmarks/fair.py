"""What makes a comparison in this folder fair; every benchmark here measures through it.

A comparison runs two sides, A and B, under the same conditions:

- the order alternates, A B, B A, A B, ..., so that a drift in the machine's speed (other
  work, the CPU's clock, a warm page cache) falls on both sides alike;
- at least three repeats; each side's figures are reported as the median and the range
  (min-max), and the ratio A/B is taken pair by pair (run i of A over run i of B, the two
  neighbours in time) and reported the same way;
- a fresh fake provider for every run (`fresh_fake`), started before the run and stopped after
  it, never one warm server shared by both sides or reused by the second;
- the same garbage-collector settings on both sides. While a job runs, kullbatch's runtime
  applies `BatchGC` (gc.freeze(), then higher thresholds; Python's settings back at the end).
  A side that is not kullbatch (the bare aiohttp client) does the same at the same point,
  around its requests (`gc_while_running`: BatchGC's steps with BatchGC's thresholds, checked
  against the class by `check_gc_replica` before a comparison, without importing kullbatch's
  runtime into the bare client). With `--gc default` both sides run at Python's default
  instead: kullbatch's `BatchGC` is switched off (`switch_gc`, `kullbatch_command`) and the
  bare client does nothing;
- where a figure belongs to a process (peak RSS, CPU), each run is a process of its own, and
  its wall, CPU (user + system) and peak RSS are the operating system's accounting of that
  child (`run_process`, wait4).

Each benchmark prints, above its figures, how they were measured (`how`).

`python tests/benchmarks/fair.py kullbatch-default-gc ARGS...` runs `kullbatch ARGS...` with
`BatchGC` switched off: the kullbatch side of `--gc default`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import resource
import runpy
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FAIR = Path(__file__).resolve()
DASH = "\N{EN DASH}"
MIN_REPEATS = 3  # for a comparison
GC_MODES = ("batch", "default")

Figures = dict[str, float]


# --- arguments ------------------------------------------------------------------------------


def add_arguments(
    parser: argparse.ArgumentParser, *, photos: int, repeats: int, gc_option: bool = True
) -> None:
    """`--photos N` (alias `--images N`), `--repeats N` and, where it applies, `--gc MODE`."""
    parser.add_argument("--photos", "--images", dest="photos", type=int, default=photos)
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"runs per side (default {repeats})"
    )
    if gc_option:
        parser.add_argument(
            "--gc",
            choices=GC_MODES,
            default="batch",
            help="batch: kullbatch's BatchGC on every side (as a job runs); "
            "default: Python's default GC on every side",
        )


def check_repeats(parser: argparse.ArgumentParser, repeats: int, *, comparison: bool) -> None:
    least = MIN_REPEATS if comparison else 1
    if repeats < least:
        parser.error(f"--repeats must be at least {least}")


# --- the garbage collector ----------------------------------------------------------------


def batch_gc_class() -> Any:
    from kullbatch.run.runtime import BatchGC  # noqa: PLC0415 - children import what they need

    return BatchGC


def batch_gc_thresholds() -> tuple[int, int, int]:
    return tuple(batch_gc_class().THRESHOLDS)


def describe_gc(mode: str, *, bare_side: bool = False) -> str:
    if mode == "default":
        return "Python's default on every side (kullbatch's BatchGC switched off)"
    what = (
        f"kullbatch's BatchGC (gc.freeze(), thresholds {batch_gc_thresholds()}) "
        "from the job's start to its end"
    )
    if bare_side:
        return what + "; the bare client does the same around its requests (its session open)"
    return what + " (every side is kullbatch)"


@contextlib.contextmanager
def gc_while_running(thresholds: Sequence[int] | None) -> Iterator[None]:
    """What BatchGC does around a job, for a side that is not kullbatch's runtime: freeze what
    is alive, raise the thresholds; then Python's settings back. It does not import the runtime
    (a bare client stays bare); `check_gc_replica` holds it to BatchGC. None: nothing."""
    if thresholds is None:
        yield
        return
    saved = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


def check_gc_replica() -> None:
    """`gc_while_running` does what kullbatch's BatchGC does, or the benchmark stops."""

    def effect(enter: Callable[[], object], exit_: Callable[[], object]) -> tuple[object, ...]:
        before = gc.get_threshold(), gc.get_freeze_count()
        enter()
        inside = gc.get_threshold(), gc.get_freeze_count() > 0
        exit_()
        return before, inside, (gc.get_threshold(), gc.get_freeze_count())

    real = batch_gc_class()()
    replica = gc_while_running(batch_gc_thresholds())
    if effect(real.enter, real.exit) != effect(
        replica.__enter__, lambda: replica.__exit__(None, None, None)
    ):
        raise SystemExit("kullbatch's BatchGC changed: make fair.gc_while_running match it")


def raise_open_file_limit() -> None:
    """As kullbatch's runtime does: the soft limit on open files up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@contextlib.contextmanager
def batch_gc(mode: str) -> Iterator[None]:
    """kullbatch's own BatchGC around a job run without the runtime (the engine alone)."""
    if mode == "default":
        yield
        return
    settings = batch_gc_class()()
    settings.enter()
    try:
        yield
    finally:
        settings.exit()


def bare_gc_argument(mode: str) -> str:
    """What a bare client's process is told to do (`gc_from_argument`): checked first."""
    if mode == "default":
        return "none"
    check_gc_replica()
    return ",".join(str(value) for value in batch_gc_thresholds())


def gc_from_argument(argument: str) -> tuple[int, ...] | None:
    return None if argument == "none" else tuple(int(value) for value in argument.split(","))


def switch_gc(mode: str) -> None:
    """In a process that runs kullbatch: with `default`, its BatchGC changes nothing."""
    if mode == "default":
        batch_gc = batch_gc_class()
        batch_gc.enter = lambda self: None
        batch_gc.exit = lambda self: None


def kullbatch_command(mode: str) -> list[str]:
    """The command line that starts the CLI (`kullbatch ...`) under the GC mode."""
    if mode == "default":
        return [sys.executable, str(FAIR), "kullbatch-default-gc"]
    return [sys.executable, "-m", "kullbatch"]


# --- the fake provider ----------------------------------------------------------------------


@dataclass
class Fake:
    port: int
    stats: dict[str, Any] = field(default_factory=dict)  # filled in when it stops

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@contextlib.contextmanager
def fresh_fake(*flags: str) -> Iterator[Fake]:
    """A new tests/fault_server.py process for one run; its stats when it has stopped."""
    key = ["--api-key", "sk-bench"]  # the key the benchmarks' jobs send
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_server", "--port", "0", *key, *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.strip():
        server.kill()
        server.wait()
        raise SystemExit("the fake provider did not start")
    fake = Fake(int(line))
    try:
        yield fake
    finally:
        server.terminate()
        rest, _ = server.communicate(timeout=60)
        lines = rest.strip().splitlines()
        if lines:
            fake.stats = json.loads(lines[-1])


def write_url_manifest(folder: Path, count: int) -> Path:
    """A shoot of `count` URL images (the fake answers each by its URL)."""
    images = [
        {"id": f"img{i}", "filename": f"img{i}.jpg", "url": f"https://photos.test/img{i}.jpg"}
        for i in range(count)
    ]
    path = folder / "shoot.json"
    path.write_text(json.dumps({"shootId": "bench", "images": images}))
    return path


def describe_fake(where: str) -> str:
    return f"a fresh {where} for every run, stopped after it (none shared between runs or sides)"


# --- running and timing ---------------------------------------------------------------------


def run_process(
    command: Sequence[str], env: Mapping[str, str] | None = None, *, capture: bool = False
) -> tuple[Figures, str]:
    """Run a child to its end: its own wall, CPU (user + system) and peak RSS (wait4)."""
    started = time.perf_counter()
    child = subprocess.Popen(
        list(command),
        cwd=ROOT,
        env=None if env is None else dict(env),
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        text=True,
    )
    out = child.stdout.read() if child.stdout is not None else ""
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.stdout is not None:
        child.stdout.close()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:5])} ... exited {child.returncode}")
    figures = {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
    }
    return figures, out


def child_report(out: str) -> dict[str, Any]:
    """The JSON object a child printed as its last line."""
    return json.loads(out.strip().splitlines()[-1])


def print_report(report: Mapping[str, Any]) -> None:
    """A child's side of `child_report`."""
    print(json.dumps(report), flush=True)


def describe_process() -> str:
    return "each run a process of its own (wall, CPU = user + system, peak RSS: that process's)"


@dataclass(frozen=True)
class Side:
    letter: str  # "A" or "B"
    label: str
    run: Callable[[int], Figures]  # repeat number -> figures


def _note(side: Side, repeat: int, repeats: int, figures: Figures) -> None:
    shown = ", ".join(f"{key} {value:.4g}" for key, value in figures.items())
    print(f"  run {repeat + 1}/{repeats} {side.letter} {side.label}: {shown}", file=sys.stderr)


def order(repeats: int) -> list[tuple[int, int]]:
    """(first, second) side index per repeat: A B, B A, A B, ..."""
    return [(0, 1) if repeat % 2 == 0 else (1, 0) for repeat in range(repeats)]


def alternate(a: Side, b: Side, repeats: int) -> tuple[list[Figures], list[Figures]]:
    """Each side `repeats` times in alternating order; run i of A and run i of B are a pair."""
    sides = (a, b)
    runs: tuple[list[Figures], list[Figures]] = ([], [])
    for repeat, pair in enumerate(order(repeats)):
        for index in pair:
            figures = sides[index].run(repeat)
            runs[index].append(figures)
            _note(sides[index], repeat, repeats, figures)
    return runs


def repeat(side: Side, repeats: int) -> list[Figures]:
    """One side alone (not a comparison), `repeats` times."""
    runs = []
    for number in range(repeats):
        runs.append(side.run(number))
        _note(side, number, repeats, runs[-1])
    return runs


def paired_ratios(a: list[Figures], b: list[Figures], keys: Sequence[str]) -> list[Figures]:
    return [
        {key: x[key] / y[key] if y[key] else math.nan for key in keys}
        for x, y in zip(a, b, strict=True)
    ]


def describe_order(repeats: int, *, sides: int = 2) -> str:
    if sides == 1:
        return f"{repeats} runs, one after another"
    shown = ", ".join(" ".join("AB"[i] for i in pair) for pair in order(repeats))
    return (
        f"{repeats} runs per side, order alternated ({shown}); ratios A/B taken pair by pair "
        "(run i of A over run i of B)"
    )


# --- reporting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def format(self, spec: str = ".2f", unit: str = "") -> str:
        if self.low == self.high:
            return f"{self.median:{spec}}{unit}"
        return f"{self.median:{spec}}{unit} [{self.low:{spec}}{DASH}{self.high:{spec}}]"


def spread(runs: Sequence[Figures], key: str) -> Spread:
    return Spread.of([run[key] for run in runs])


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    spec: str = ".2f"


def how(*lines: str) -> None:
    """How the figures below were measured: one line per fact."""
    print("how: " + lines[0])
    for line in lines[1:]:
        print("     " + line)
    print(f"cells: median [min{DASH}max] over the runs")


def table(
    columns: Sequence[Column],
    rows: Sequence[tuple[str, Sequence[Figures]]],
    ratio: tuple[str, Sequence[Figures]] | None = None,
) -> None:
    """One line per side (each cell the median and the range), then the paired ratios."""
    cells = [
        [name, *(spread(runs, column.key).format(column.spec) for column in columns)]
        for name, runs in rows
    ]
    if ratio is not None:
        name, ratios = ratio
        cells.append(
            [
                name,
                *(
                    spread(ratios, column.key).format(".2f", "x") if column.key in ratios[0] else ""
                    for column in columns
                ),
            ]
        )
    header = ["", *(column.title for column in columns)]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    for line in [header, *cells]:
        first = line[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True))
        print("  ".join([first, *rest]))


# --- `python fair.py kullbatch-default-gc ARGS...` ------------------------------------------


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] != "kullbatch-default-gc":
        raise SystemExit(__doc__)
    switch_gc("default")
    sys.argv = ["kullbatch", *sys.argv[2:]]
    runpy.run_module("kullbatch", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
