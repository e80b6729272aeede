"""The terminal's view of a running job: a subscriber to the engine's ProgressEvents.

State lives in one Rich `Task`: `completed` is rated + failed, and the engine's counters travel
as task fields (`rated`, `failed`, `retrying`, `baseline`, `gate_until`) to small column classes,
the way rich's own progress module is built. `handle` only copies numbers, so it costs the same
for image 1 and image 10,000; on a terminal, Rich's `Live` redraws from that state 4 times a
second. Off a terminal (`live=False`, e.g. stderr to a log file) a plain line is printed at most
every `interval` seconds, and one last line at `stop`. The live view is two lines: the bar with
count, speed and ETA, then "retrying / failed / rate-limited: waiting" only when non-zero, so
every figure stays readable on an 80-column terminal.

Rates and ETA count only this run's images: a resumed job starts with images already rated
(`baseline`), which must not make the first seconds look impossibly fast.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Self

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Column, Table
from rich.text import Text

from kullbatch.models import EventKind, JobState, JobStatus, ProgressEvent
from kullbatch.pricing.prices import cost_text
from kullbatch.run.events import eta_seconds

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from rich.console import RenderableType


__all__ = [
    "ProgressDisplay",
    "eta_seconds",
    "format_duration",
    "make_console",
    "styled_state",
]

MAX_FAILURE_SAMPLES = 5


def format_duration(seconds: float) -> str:
    """`45 s`, `3 min 05 s`, `2 h 04 min`: short enough for a progress line."""
    whole = max(math.ceil(seconds), 0)
    if whole < 60:  # noqa: PLR2004
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:  # noqa: PLR2004
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _fixed() -> Column:
    """A figure column: never wrapped, so a narrow terminal shrinks the bar instead."""
    return Column(no_wrap=True)


def _elapsed(task: Task) -> float:
    if task.finished_time is not None:
        return task.finished_time
    return task.elapsed or 0.0


def _run_done(task: Task) -> int:
    """Images finished by this run (not counting those already done before a resume)."""
    return int(task.completed) - int(task.fields.get("baseline", 0))


def _speed(task: Task) -> float | None:
    elapsed = _elapsed(task)
    done = _run_done(task)
    if done <= 0 or elapsed <= 0:
        return None
    return done / elapsed


def _eta(task: Task) -> int | None:
    baseline = int(task.fields.get("baseline", 0))
    total = int(task.total or 0)
    return eta_seconds(_run_done(task), total - baseline, _elapsed(task))


def _gate_wait(task: Task) -> float:
    gate_until: float | None = task.fields.get("gate_until")
    if gate_until is None:
        return 0.0
    return max(gate_until - task.get_time(), 0.0)


class CountColumn(ProgressColumn):
    """`523/1000`: images ended (rated or failed) out of the shoot."""

    def render(self, task: Task) -> Text:
        return Text(f"{int(task.completed)}/{int(task.total or 0)}", style="progress.download")


class SpeedColumn(ProgressColumn):
    """`31.2 img/s` over this run so far."""

    def render(self, task: Task) -> Text:
        speed = _speed(task)
        text = "-- img/s" if speed is None else f"{speed:.1f} img/s"
        return Text(text, style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """`ETA 15 s` at this run's average pace."""

    def render(self, task: Task) -> Text:
        eta = _eta(task)
        text = "ETA --" if eta is None else f"ETA {format_duration(eta)}"
        return Text(text, style="progress.remaining")


class _NoteColumn(ProgressColumn):
    """A figure for the notes line: empty text when there is nothing to say."""

    @abstractmethod
    def render(self, task: Task) -> Text: ...


class RetryingColumn(_NoteColumn):
    """`retrying: 4`: images waiting for another attempt (progress, not errors); blank at 0."""

    def render(self, task: Task) -> Text:
        retrying = int(task.fields.get("retrying", 0))
        return Text(f"retrying: {retrying}" if retrying else "", style="yellow")


class FailedColumn(_NoteColumn):
    """`failed: 2`: images that ended without a rating; blank at 0."""

    def render(self, task: Task) -> Text:
        failed = int(task.fields.get("failed", 0))
        return Text(f"failed: {failed}" if failed else "", style="red")


def _gate_text(task: Task) -> str:
    wait = _gate_wait(task)
    if wait > 0:
        return f"rate-limited: waiting {format_duration(wait)}"
    rate: float | None = task.fields.get("gate_rate")
    if rate is not None:
        return f"paced to {rate:,.0f} requests/min"
    note: str | None = task.fields.get("batch_note")  # economy mode: the provider's batch
    return note or ""


class GateColumn(_NoteColumn):
    """`rate-limited: waiting 4 s` while the gate holds sends, else the pace it learned."""

    def render(self, task: Task) -> Text:
        return Text(_gate_text(task), style="magenta")


class _JobProgress(Progress):
    """A bar line, then a notes line (retrying, failed, rate-limit wait) when there is news.

    Two lines keep every figure readable on an 80-column terminal.
    """

    def __init__(self, *columns: ProgressColumn, notes: Sequence[_NoteColumn], **kw: Any) -> None:
        super().__init__(*columns, **kw)
        self.notes = notes

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            parts = [text for note in self.notes if (text := note.render(task))]
            if parts:
                yield Text("  ").join(parts)


class ProgressDisplay:
    """Live progress of one job on `console`, fed by `handle(event)` for every engine event."""

    def __init__(
        self,
        total: int,
        job_id: str,
        provider: str,
        console: Console,
        *,
        get_time: Callable[[], float] = time.monotonic,
        live: bool = True,
        interval: float = 5.0,
    ) -> None:
        self.job_id = job_id
        self.provider = provider
        self.console = console
        self.live = live
        self.interval = interval
        self._get_time = get_time
        self._last_line: float | None = None
        self._last_text = ""
        self._started = False
        self._failures: list[tuple[str, str]] = []
        self._progress = _JobProgress(
            TextColumn("[bold]{task.description}", table_column=_fixed()),
            BarColumn(bar_width=None),  # the bar takes what the figures leave, down to 4 cells
            CountColumn(_fixed()),
            SpeedColumn(_fixed()),
            EtaColumn(_fixed()),
            notes=(RetryingColumn(), FailedColumn(), GateColumn()),
            console=console,
            get_time=get_time,
            refresh_per_second=4,
            redirect_stdout=False,  # stdout carries `--json` and `--quiet` output, untouched
            disable=not live,
        )
        self._task = self._progress.add_task(
            provider,
            total=total,
            rated=0,
            failed=0,
            retrying=0,
            baseline=0,
            gate_until=None,
            gate_rate=None,
        )

    @property
    def task(self) -> Task:
        """The plain-data state the columns render (read-only use)."""
        return self._progress.tasks[0]

    def render(self) -> RenderableType:
        """The current frame, as `Live` draws it (tests print it to a string)."""
        return self._progress.get_renderable()

    def start(self) -> None:
        """Show the live bar (live mode) and start the clock for rate and ETA."""
        if self._started:
            return
        self._started = True
        self._last_line = self._get_time()
        self._progress.reset(self._task, start=True, completed=int(self.task.completed))
        self._progress.start()

    def stop(self) -> None:
        """Leave the last frame on screen (live mode) or print the final line."""
        if not self._started:
            return
        self._started = False
        if self.live:
            self._progress.refresh()
            self._progress.stop()
        elif self.line() != self._last_text:
            self._print_line()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def handle(self, event: ProgressEvent) -> None:
        """Copy the engine's counters into the task; O(1), never renders in live mode."""
        fields: dict[str, Any] = {
            "rated": event.rated,
            "failed": event.failed,
            "retrying": event.retrying,
        }
        if event.kind is EventKind.STARTED:
            fields["baseline"] = event.rated + event.failed
        elif event.kind is EventKind.GATE:
            until = self._get_time() + event.wait
            fields["gate_until"] = max(until, self.task.fields.get("gate_until") or until)
            fields["gate_rate"] = event.rate
        elif event.kind is EventKind.ENDED:
            fields["gate_until"] = None
        elif event.kind is EventKind.BATCH:
            fields["batch_note"] = event.note
        elif event.kind is EventKind.NOTE:  # a provider down, the job moving on: say it once
            self.console.print(f"kullbatch: {event.note}", markup=False, highlight=False)
        elif event.kind is EventKind.FAILED and len(self._failures) < MAX_FAILURE_SAMPLES:
            self._failures.append((event.image_id or "?", event.error or "failed"))
        self._progress.update(
            self._task, total=event.total, completed=event.rated + event.failed, **fields
        )
        if not self.live:
            self._maybe_print_line()

    def _maybe_print_line(self) -> None:
        now = self._get_time()
        if self._last_line is None:
            self._last_line = now
        elif now - self._last_line >= self.interval:
            self._last_line = now
            self._print_line()

    def _print_line(self) -> None:
        self._last_text = self.line()
        self.console.print(self._last_text, markup=False, highlight=False, soft_wrap=True)

    def line(self) -> str:
        """`[kullbatch] <job> 523/1000 rated, 2 failed, 4 retrying, 31.2 img/s, ETA 15 s`."""
        task = self.task
        fields = task.fields
        parts = [
            f"[kullbatch] {self.job_id} {fields['rated']}/{int(task.total or 0)} rated",
            f"{fields['failed']} failed",
            f"{fields['retrying']} retrying",
        ]
        speed = _speed(task)
        parts.append("-- img/s" if speed is None else f"{speed:.1f} img/s")
        eta = _eta(task)
        parts.append("ETA --" if eta is None else f"ETA {format_duration(eta)}")
        if gate := _gate_text(task):
            parts.append(gate)
        return ", ".join(parts)

    def summary(
        self,
        status: JobStatus,
        elapsed: float,
        bursts: tuple[int, int] | None = None,
        env_vars: Sequence[str] = (),
    ) -> Table:
        """The end-of-job table: counts, time, speed, bursts, and the commands to run next;
        `env_vars` are the variables the fatal error that stopped the job names."""
        table = Table(title=f"kullbatch {status.jobId}", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        done = status.processedImages + status.failedImages
        run_done = done - int(self.task.fields.get("baseline", 0))
        speed = run_done / elapsed if elapsed > 0 and run_done > 0 else 0.0
        table.add_row("Job", status.jobId)
        table.add_row("Provider", status.providerId or self.provider)
        table.add_row("Status", styled_state(status.status))
        table.add_row("Rated", f"{status.processedImages} of {status.totalImages}")
        if status.cachedImages:
            table.add_row("Cached", f"{status.cachedImages} from cache (not sent, no cost)")
        table.add_row("Failed", _failed_text(status.failedImages))
        table.add_row("Time", format_duration(elapsed))
        table.add_row("Speed", f"{speed:.1f} img/s")
        table.add_row(
            "Cost", Text(cost_text(status), style="" if status.costUsd is not None else "yellow")
        )
        if bursts is not None and bursts[0]:
            moments, duplicates = bursts
            table.add_row(
                "Bursts",
                f"{moments} {'moment' if moments == 1 else 'moments'} in bursts, "
                f"{duplicates} {'duplicate' if duplicates == 1 else 'duplicates'} besides "
                "their best frames",
            )
        if status.error:
            table.add_row("Error", Text(status.error, style="red"))
        for index, (image_id, error) in enumerate(self._failures):
            label = "Failures" if index == 0 else ""
            table.add_row(label, Text(f"{image_id}: {error}", style="red"))
        has_bursts = bool(bursts and bursts[0])
        for label, step in _next_steps(status, bursts=has_bursts, env_vars=env_vars):
            table.add_row(label, Text(step, style="yellow" if label == "Fix" else "cyan"))
        return table

    def print_summary(
        self,
        status: JobStatus,
        elapsed: float,
        bursts: tuple[int, int] | None = None,
        env_vars: Sequence[str] = (),
    ) -> None:
        """Print `summary` on the display's console."""
        self.console.print(self.summary(status, elapsed, bursts, env_vars))


def _failed_text(failed: int) -> Text:
    return Text(str(failed), style="red" if failed else "")


def styled_state(state: JobState) -> Text:
    styles = {JobState.COMPLETED: "green", JobState.FAILED: "red", JobState.CANCELLED: "yellow"}
    return Text(state.value, style=styles.get(state, "yellow"))


def _next_steps(
    status: JobStatus, bursts: bool = False, env_vars: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """What to type next: the results if there are any, and how to finish what is left.

    A job a fatal error stopped before rating anything has no results to offer: the next steps
    are fixing the cause (the variables to check, `env_vars`, when the error had any) and
    `resume`.
    """
    job = status.jobId
    steps: list[tuple[str, str]] = []
    if status.processedImages or status.status is not JobState.FAILED:
        steps.append(("Results", f"kullbatch results {job} --format csv --output ratings.csv"))
    if status.processedImages:
        steps.append(("Sidecars", f"kullbatch results {job} --format xmp"))
        if bursts:
            steps.append(("Cull", f"kullbatch results {job} --format xmp --reject-duplicates"))
    if status.status is JobState.FAILED:
        names = " or ".join(env_vars)
        fix = f"set {names} in the environment" if names else "the problem that stopped the job"
        steps.append(("Fix", fix))
        steps.append(("Resume", f"kullbatch resume {job}"))
    elif status.status is JobState.INTERRUPTED:
        steps.append(("Resume", f"kullbatch resume {job}"))
    elif status.status is JobState.PAUSED:  # the budget was reached
        steps.append(("Go on", f"kullbatch resume {job} --budget MORE_USD"))
    elif status.status is JobState.SUBMITTED:
        steps.append(("Come back", f"kullbatch resume {job}  (the provider keeps working)"))
        steps.append(("Watch", f"kullbatch status {job}"))
    elif status.status is JobState.PROCESSING:
        steps.append(("Watch", f"kullbatch status {job} --watch"))
    return steps


class _Console(Console):
    """A console whose closed pipe (`| head`) ends the command like any other write to it
    (`kullbatch.cli.exits`), not with Rich's own exit status."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def make_console(*, stdout: bool = False) -> Console:
    """Progress and logs go to stderr; tables a user asked for go to stdout."""
    return _Console(stderr=not stdout, highlight=False)
