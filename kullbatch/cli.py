"""The `kullbatch` command: parse, call one service function, render. No business logic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from kullbatch import jobs, server
from kullbatch.bursts import DEFAULT_DISTANCE, DEFAULT_GAP
from kullbatch.export import SidecarError
from kullbatch.images import DEFAULT_MAX_EDGE
from kullbatch.manifest import ManifestError, load_manifest
from kullbatch.models import JobState, JobStatus
from kullbatch.progress import ProgressDisplay, make_console, render_jobs, render_providers
from kullbatch.providers import PROVIDERS
from kullbatch.retry import parse_duration

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from kullbatch.economy import Stoppable
    from kullbatch.engine import JobOutcome
    from kullbatch.export import Written
    from kullbatch.models import ProgressEvent
    from kullbatch.rows import JobRow

app = typer.Typer(
    name="kullbatch",
    help=(
        "Rate a whole photo shoot with a vision model: every photo at once, retried through "
        "rate limits and outages, recorded in SQLite, exported as CSV, JSON or XMP."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="SQLite database [default: $KULLBATCH_DB, else kullbatch.db in the user data folder]",
        dir_okay=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the status object as JSON.")]


class ExportFormat(StrEnum):
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"
    XMP = "xmp"


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"kullbatch: error: {message}", err=True)
    raise typer.Exit(code)


def exit_code(state: JobState, failed: int) -> int:
    if state is JobState.COMPLETED:
        return EXIT_OK if failed == 0 else EXIT_INCOMPLETE
    return {
        JobState.FAILED: EXIT_FATAL,
        JobState.INTERRUPTED: EXIT_INTERRUPTED,
        JobState.SUBMITTED: EXIT_INTERRUPTED,  # Ctrl-C while the provider's batch works
    }.get(state, EXIT_INCOMPLETE)


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; the job-level errors every command shares become clear exits."""
    try:
        return asyncio.run(work())
    except jobs.JobNotFoundError as exc:
        fail(str(exc))
    except jobs.UsageError as exc:
        fail(str(exc))
    except (sqlite3.Error, OSError) as exc:  # a --db that is not a database, or not writable
        fail(f"database: {exc}")
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def db_path(db: Path | None) -> Path:
    return db if db is not None else jobs.default_db_path(jobs.environment())


@app.command()
def process(
    source: Annotated[
        Path,
        typer.Argument(help="A .json or .csv manifest, or a folder of photos.", show_default=False),
    ],
    provider: Annotated[
        str | None,
        typer.Option(
            help="local, openai, anthropic, gemini, grok, groq, openai-compatible, or the "
            "spec's provider-model id such as openai-gpt-5 "
            "[default: the manifest's providerId, else $KULLBATCH_PROVIDER, else local]",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model id [default: the provider's, see `providers`]")
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="Instructions sent with every photo.")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="fast (default): every photo at once, results in minutes. economy: the "
            "provider's batch API (openai, anthropic) at half the price, results within 24 h "
            "(usually under one); Ctrl-C leaves the batch running and `resume` collects it."
        ),
    ] = None,
    economy_only: Annotated[
        bool,
        typer.Option(
            "--economy-only",
            help="Economy mode: photos the batch did not finish are left failed instead of "
            "being sent again in fast mode (at full price).",
        ),
    ] = False,
    shoot_id: Annotated[str | None, typer.Option(help="Shoot id [default: manifest's]")] = None,
    db: DbOption = None,
    max_retry_time: Annotated[
        str, typer.Option(help="How long each photo is retried: e.g. 90s, 10m, 6h.")
    ] = "6h",
    concurrency: Annotated[
        int, typer.Option(min=0, help="Requests in flight at most; 0 sends every photo at once.")
    ] = 0,
    rpm: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="A known requests-per-minute limit: sends are paced under it "
            "[default: learned from the provider's headers and 429s]",
            show_default=False,
        ),
    ] = None,
    fallback: Annotated[
        list[str] | None,
        typer.Option(
            "--fallback",
            help="Another provider (P or P:MODEL) for photos the first cannot rate: still failing "
            "after --fallback-after, refused, or the provider down (bad key, no credit). "
            "Repeat for more, tried in order.",
            show_default=False,
        ),
    ] = None,
    fallback_after: Annotated[
        str, typer.Option(help="Retrying on one provider before the next one gets the photo.")
    ] = "10m",
    max_edge: Annotated[
        int, typer.Option(min=64, help="Local photos are downscaled to this long edge (px).")
    ] = DEFAULT_MAX_EDGE,
    rubric: Annotated[
        str | None,
        typer.Option(
            help="How to rate: general, wedding, portrait, event, sports, landscape, product, "
            "a rubric of yours in $KULLBATCH_RUBRICS, or a .toml/.json file "
            "[default: --prompt, else the manifest's prompt, else general]",
            show_default=False,
        ),
    ] = None,
    no_groups: Annotated[
        bool, typer.Option("--no-groups", help="Do not look for bursts and near-duplicates.")
    ] = False,
    burst_gap: Annotated[
        float,
        typer.Option(min=0, help="Seconds between two frames of one burst, at most (EXIF time)."),
    ] = DEFAULT_GAP,
    burst_distance: Annotated[
        int,
        typer.Option(
            min=0, max=64, help="Bits of 64 two frames of one burst may differ in (pHash)."
        ),
    ] = DEFAULT_DISTANCE,
    json_output: JsonFlag = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the job id, as soon as it exists.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Every failed attempt on stderr too.")
    ] = False,
    serve_ws: Annotated[
        str | None,
        typer.Option(metavar="[HOST:]PORT", help="Live progress on ws://HOST:PORT/ws?token=…"),
    ] = None,
    ws_token: Annotated[
        str | None,
        typer.Option(
            help="WebSocket token [default: $KULLBATCH_TOKEN, else random]", show_default=False
        ),
    ] = None,
) -> None:
    """Rate every photo of SOURCE; exits 0 all rated, 1 some failed or cancelled, 2 bad input,
    3 fatal provider error (key, model, credit), 130 interrupted (resume finishes it)."""
    try:
        retry_seconds = parse_duration(max_retry_time)
    except ValueError as exc:
        fail(f"--max-retry-time: {exc}")
    try:
        fallback_seconds = parse_duration(fallback_after)
    except ValueError as exc:
        fail(f"--fallback-after: {exc}")
    try:
        manifest = load_manifest(source)
    except ManifestError as exc:
        fail(str(exc))
    try:
        ws_address = None if serve_ws is None else server.parse_address(serve_ws)
    except ValueError as exc:
        fail(f"--serve-ws: {exc}")
    settings = jobs.ProcessSettings(
        provider=provider,
        model=model,
        prompt=prompt,
        system_prompt=system_prompt,
        mode=mode,
        shoot_id=shoot_id,
        max_retry_time=retry_seconds,
        concurrency=concurrency,
        rpm=rpm,
        max_edge=max_edge,
        economy_only=economy_only,
        fallbacks=tuple(fallback or ()),
        fallback_after=fallback_seconds,
        rubric=rubric,
        groups=not no_groups,
        burst_gap=burst_gap,
        burst_distance=burst_distance,
    )
    database = db_path(db)
    jobs.configure_admin_log(database, verbose=verbose)

    async def work() -> int:
        async with jobs.Service.open(database) as service:
            job = await service.create(manifest, settings)
            if quiet:
                typer.echo(job.id)
            if ws_address is None:
                return await _run_and_report(service, job, json_output=json_output, quiet=quiet)
            host, port = ws_address
            token = ws_token or jobs.environment().get("KULLBATCH_TOKEN") or server.new_token()
            async with server.serve_progress(host, port, token) as served:
                typer.echo(f"live progress: {served.url}", err=True)
                return await _run_and_report(
                    service, job, json_output=json_output, quiet=quiet, extra=[served.hub.handle]
                )

    try:
        code = run(work)
    finally:
        jobs.close_admin_log()
    raise typer.Exit(code)


async def _run_and_report(
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
        outcome = await _run_with_signals(service, job, [*shown, *extra])
    finally:
        display.stop()
    status = await service.status(job.id)
    if not quiet:
        bursts = await service.burst_counts(job.id)
        display.print_summary(status, time.monotonic() - started, bursts=bursts)
    if json_output:
        print_json(status.model_dump(mode="json"))
    return exit_code(outcome.state, outcome.failed)


async def _run_with_signals(
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


@app.command()
def resume(
    job_id: Annotated[str, typer.Argument(help="The job to finish.", show_default=False)],
    db: DbOption = None,
    json_output: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Failed attempts on stderr.")
    ] = False,
) -> None:
    """Finish an interrupted, cancelled or partly failed job: only photos without a stored
    result are sent."""
    database = db_path(db)
    jobs.configure_admin_log(database, verbose=verbose)

    async def work() -> int:
        async with jobs.Service.open(database) as service:
            job = await service.prepare_resume(job_id)
            return await _run_and_report(service, job, json_output=json_output, quiet=quiet)

    try:
        code = run(work)
    finally:
        jobs.close_admin_log()
    raise typer.Exit(code)


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="The job id.", show_default=False)],
    db: DbOption = None,
    json_output: JsonFlag = False,
    watch: Annotated[bool, typer.Option(help="Refresh every 2 s until the job ends.")] = False,
) -> None:
    """Show a job's progress: counts, ETA, and whether it is still running."""

    async def work() -> JobStatus:
        async with jobs.Service.open(db_path(db)) as service:
            current = await service.status(job_id)
            while watch and current.status is JobState.PROCESSING:
                typer.echo(_status_line(current), err=True)
                await asyncio.sleep(2)
                current = await service.status(job_id)
            return current

    current = run(work)
    if json_output:
        print_json(current.model_dump(mode="json"))
    else:
        typer.echo(_status_line(current))
        if current.error:
            typer.echo(f"  {current.error}")
        for batch in current.providerBatches:
            counts = ", ".join(f"{n} {name}" for name, n in batch.counts.items() if n)
            typer.echo(
                f"  {current.providerId} batch {batch.id or '(file uploaded)'}: {batch.state}, "
                f"{batch.requests} photos" + (f" ({counts})" if counts else "")
            )
        if current.status is JobState.INTERRUPTED:
            typer.echo(f"  resume it with: kullbatch resume {current.jobId}")
        elif current.status is JobState.SUBMITTED:
            typer.echo(
                f"  the provider is working; collect the results: kullbatch resume {current.jobId}"
            )


def _status_line(current: JobStatus) -> str:
    eta = f", ETA {current.eta} s" if current.eta is not None else ""
    return (
        f"{current.jobId} {current.status.value}: {current.processedImages}/"
        f"{current.totalImages} rated, {current.failedImages} failed "
        f"({current.progress:.0%}){eta}"
    )


@app.command()
def results(
    job_id: Annotated[str, typer.Argument(help="The job id.", show_default=False)],
    output_format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="json, jsonl, csv or xmp sidecars.")
    ] = ExportFormat.JSON,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write [default: stdout]; for xmp a folder [default: beside each photo].",
        ),
    ] = None,
    reject_duplicates: Annotated[
        bool,
        typer.Option(
            "--reject-duplicates",
            help="xmp: write the frames of a burst other than its best as rejected (-1).",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Export a job's ratings in manifest order; failed photos carry their error."""

    async def work() -> Written:
        async with jobs.Service.open(db_path(db)) as service:
            return await service.export(
                job_id, output_format.value, output, reject_duplicates=reject_duplicates
            )

    try:
        written = run(work)
    except (SidecarError, OSError) as exc:
        what = "XMP sidecars" if output_format is ExportFormat.XMP else output_format.value.upper()
        fail(f"{what}: {exc}")
    if output_format is ExportFormat.XMP:
        typer.echo(f"wrote {written.count} XMP sidecars", err=True)
    elif written.target is not None:
        typer.echo(f"wrote {written.count} results to {written.target}", err=True)


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job id.", show_default=False)],
    db: DbOption = None,
) -> None:
    """Stop a running job (from another terminal); stored results are kept."""

    async def work() -> str:
        async with jobs.Service.open(db_path(db)) as service:
            return await service.cancel(job_id)

    typer.echo(run(work))


@app.command(name="jobs")
def list_jobs(db: DbOption = None, json_output: JsonFlag = False) -> None:
    """List recent jobs, newest first."""

    async def work() -> list[JobStatus]:
        async with jobs.Service.open(db_path(db)) as service:
            return await service.statuses()

    statuses = run(work)
    if json_output:
        print_json([s.model_dump(mode="json") for s in statuses])
    else:
        render_jobs(statuses, make_console(stdout=True))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address; off loopback a token is required.")] = (
        server.DEFAULT_HOST
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port, 0 for any.")] = 8787,
    token: Annotated[
        str | None,
        typer.Option(
            help="API and WebSocket token [default: $KULLBATCH_TOKEN, else random]",
            show_default=False,
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="Folder requests may name photos in by path.", file_okay=False),
    ] = None,
    db: DbOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Failed attempts on stderr.")] = (
        False
    ),
) -> None:
    """Serve the REST API under /api/batch/, live progress on /ws and a dashboard at /,
    running every job in this one process until Ctrl-C (running jobs stop interrupted)."""
    try:
        chosen = server.choose_token(token, jobs.environment(), host)
    except ValueError as exc:
        fail(str(exc))
    settings = server.ServeSettings(host=host, port=port, token=chosen, root=root)
    database = db_path(db)
    jobs.configure_admin_log(database, verbose=verbose)
    say = lambda url: typer.echo(f"kullbatch serving {database}: open {url}", err=True)  # noqa: E731
    try:
        run(lambda: server.run_server(database, settings, announce=say))
    finally:
        jobs.close_admin_log()


@app.command()
def providers() -> None:
    """List providers, their default models, and whether their API key is set."""
    render_providers(list(PROVIDERS.values()), jobs.environment(), make_console(stdout=True))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before a job exists (e.g. while a big folder is read)
        sys.exit(EXIT_INTERRUPTED)
