"""Running a job in a terminal: the live display, Ctrl-C, the summary and the exit code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import TYPE_CHECKING

from kullbatch.cli.progress import ProgressDisplay, make_console
from kullbatch.models import JobState

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kullbatch.models import ProgressEvent
    from kullbatch.run.economy import Stoppable
    from kullbatch.run.engine import JobOutcome
    from kullbatch.service import jobs
    from kullbatch.store.rows import JobRow

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def exit_code(state: JobState, failed: int) -> int:
    if state is JobState.COMPLETED:
        return EXIT_OK if failed == 0 else EXIT_INCOMPLETE
    return {
        JobState.FAILED: EXIT_FATAL,
        JobState.INTERRUPTED: EXIT_INTERRUPTED,
        JobState.SUBMITTED: EXIT_INTERRUPTED,  # Ctrl-C while the provider's batch works
    }.get(state, EXIT_INCOMPLETE)


def print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


async def run_and_report(
    service: jobs.Service,
    job: JobRow,
    *,
    json_output: bool,
    quiet: bool,
    extra: Sequence[Callable[[ProgressEvent], None]] = (),
) -> int:
    console = make_console()
    display = ProgressDisplay(
        job.total_images, job.id, job.provider_id, console, live=console.is_terminal
    )
    started = time.monotonic()
    if not quiet:
        display.start()
    try:
        shown = [] if quiet else [display.handle]
        outcome = await run_with_signals(service, job, [*shown, *extra])
    finally:
        display.stop()
    status = await service.status(job.id)
    if not quiet:
        bursts = await service.burst_counts(job.id)
        elapsed = time.monotonic() - started
        display.print_summary(status, elapsed, bursts=bursts, env_vars=outcome.env_vars)
    if json_output:
        print_json(status.model_dump(mode="json"))
    return exit_code(outcome.state, outcome.failed)


async def run_with_signals(
    service: jobs.Service, job: JobRow, subscribers: list[Callable[..., None]]
) -> JobOutcome:
    """Ctrl-C (and SIGTERM) stop in-flight work and mark the job interrupted."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_processor(processor: Stoppable) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, processor.interrupt)
                installed.append(sig)

    try:
        return await service.run(job, subscribers=subscribers, on_processor=on_processor)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
