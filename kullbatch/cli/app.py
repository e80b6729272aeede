"""The `kullbatch` command: parse, call one service function, render. No business logic."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path  # noqa: TC003  (typer reads the annotations at run time)
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from kullbatch.cli.agreement import agreement, keep_line, keep_target
from kullbatch.cli.exits import QuietPipeGroup, fail, failed, run
from kullbatch.cli.options import (
    DEFAULT_DISTANCE,
    DEFAULT_GAP,
    BudgetOption,
    BurstDistanceOption,
    BurstGapOption,
    CompareBurstsFlag,
    DbOption,
    DryRunFlag,
    EmbedFlag,
    ExportFormat,
    FlexWaitOption,
    JsonFlag,
    KeepOption,
    NoCacheFlag,
    NoGroupsFlag,
    OverwriteRatingsFlag,
    RejectDuplicatesFlag,
    ResumeModeOption,
    RubricOption,
    SidecarStyleChoice,
    SidecarStyleOption,
)
from kullbatch.cli.progress import make_console
from kullbatch.cli.serve import serve
from kullbatch.cli.tables import render_jobs, render_providers, status_lines, xmp_report
from kullbatch.cli.terminal import (
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    print_json,
    run_and_report,
)
from kullbatch.errors import KullbatchError
from kullbatch.manifest import load_manifest
from kullbatch.models import DEFAULT_MAX_EDGE, JobState, JobStatus, parse_duration
from kullbatch.providers import PROVIDERS
from kullbatch.service import dryrun, jobs, paths
from kullbatch.service.settings import ProcessSettings
from kullbatch.web import server

if TYPE_CHECKING:
    from kullbatch.manifest import Manifest
    from kullbatch.service.export import Written

app = typer.Typer(
    name="kullbatch",
    help=(
        "Rate a whole photo shoot with a vision model: every photo at once, retried through "
        "rate limits and outages, recorded in SQLite, exported as CSV, JSON or XMP."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=QuietPipeGroup,  # `| head` ends any command quietly
)


def db_path(db: Path | None) -> Path:
    return db if db is not None else paths.default_db_path(jobs.environment())


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
            "(usually under one); Ctrl-C leaves the batch running and `resume` collects it. "
            "flex (openai, gemini, groq): as fast, at the provider's flex tier (about half "
            "the price, answers in minutes, refusals retried)."
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
    rubric: RubricOption = None,
    no_groups: NoGroupsFlag = False,
    compare_bursts: CompareBurstsFlag = False,
    burst_gap: BurstGapOption = DEFAULT_GAP,
    burst_distance: BurstDistanceOption = DEFAULT_DISTANCE,
    no_cache: NoCacheFlag = False,
    json_output: JsonFlag = False,
    dry_run: DryRunFlag = False,
    budget: BudgetOption = None,
    flex_wait: FlexWaitOption = None,
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
        flex_seconds = None if flex_wait is None else parse_duration(flex_wait)
    except ValueError as exc:
        fail(f"--flex-wait: {exc}")
    try:
        manifest = load_manifest(source)
    except KullbatchError as exc:
        failed(exc)
    try:
        ws_address = None if serve_ws is None else server.parse_address(serve_ws)
    except ValueError as exc:
        fail(f"--serve-ws: {exc}")
    settings = ProcessSettings(
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
        compare_bursts=compare_bursts,
        burst_gap=burst_gap,
        burst_distance=burst_distance,
        cache=not no_cache,
        budget=budget,
        flex_wait=flex_seconds,
    )
    database = db_path(db)
    if dry_run:
        _dry_run(manifest, settings, json_output=json_output, db=database)
    paths.configure_admin_log(database, verbose=verbose)

    async def work() -> int:
        async with jobs.Service.open(database) as service:
            job = await service.create(manifest, settings)
            if quiet:
                typer.echo(job.id)
            if ws_address is None:
                return await run_and_report(service, job, json_output=json_output, quiet=quiet)
            host, port = ws_address
            token = ws_token or jobs.environment().get("KULLBATCH_TOKEN") or server.new_token()
            async with server.serve_progress(host, port, token) as served:
                typer.echo(f"live progress: {served.url}", err=True)
                return await run_and_report(
                    service, job, json_output=json_output, quiet=quiet, extra=[served.hub.handle]
                )

    try:
        code = run(work)
    finally:
        paths.close_admin_log()
    raise typer.Exit(code)


def _dry_run(
    manifest: Manifest, settings: ProcessSettings, *, json_output: bool, db: Path
) -> NoReturn:
    estimate = run(lambda: dryrun.estimate(manifest, settings, jobs.environment(), db))
    if json_output:
        print_json(estimate.document())
    else:
        typer.echo("\n".join(estimate.lines()))
    raise typer.Exit(EXIT_OK)


@app.command()
def resume(
    job_id: Annotated[str, typer.Argument(help="The job to finish.", show_default=False)],
    db: DbOption = None,
    json_output: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Failed attempts on stderr.")
    ] = False,
    mode: ResumeModeOption = None,
    budget: BudgetOption = None,
) -> None:
    """Finish an interrupted, cancelled or partly failed job: only photos without a stored
    result are sent."""
    database = db_path(db)
    paths.configure_admin_log(database, verbose=verbose)

    async def work() -> int:
        async with jobs.Service.open(database) as service:
            wanted = None if mode is None else mode.value
            job = await service.prepare_resume(job_id, wanted, budget)
            return await run_and_report(service, job, json_output=json_output, quiet=quiet)

    try:
        code = run(work)
    finally:
        paths.close_admin_log()
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
            while watch and (
                current.status is JobState.PROCESSING
                or (current.status is JobState.SUBMITTED and await service.is_live(job_id))
            ):
                typer.echo(status_lines(current)[0], err=True)
                await asyncio.sleep(2)
                current = await service.status(job_id)
            return current

    current = run(work)
    if json_output:
        print_json(current.model_dump(mode="json"))
    else:
        for line in status_lines(current):
            typer.echo(line)


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
    embed: EmbedFlag = False,
    sidecar_style: SidecarStyleOption = SidecarStyleChoice.ADOBE,
    reject_duplicates: RejectDuplicatesFlag = False,
    db: DbOption = None,
    keep: KeepOption = None,
    overwrite_ratings: OverwriteRatingsFlag = False,
) -> None:
    """Export a job's ratings in manifest order; failed photos carry their error."""
    target = keep_target(keep)
    xmp_only = {
        "--embed": embed,
        "--sidecar-style": sidecar_style != "adobe",
        "--reject-duplicates": reject_duplicates,
        "--overwrite-ratings": overwrite_ratings,
    }
    if output_format is not ExportFormat.XMP and any(xmp_only.values()):
        given = [flag for flag, used in xmp_only.items() if used]
        verb = "goes" if len(given) == 1 else "go"
        fail(f"{' and '.join(given)} {verb} with --format xmp, not --format {output_format.value}")

    async def work() -> Written:
        async with jobs.Service.open(db_path(db)) as service:
            try:
                return await service.export(
                    job_id,
                    output_format.value,
                    output,
                    embed=embed,
                    sidecar_style=sidecar_style.value,
                    reject_duplicates=reject_duplicates,
                    keep=target,
                    overwrite_ratings=overwrite_ratings,
                )
            except BrokenPipeError:
                raise
            except OSError as exc:  # the file or folder asked for (not the database)
                what = "XMP" if output_format is ExportFormat.XMP else output_format.value.upper()
                fail(f"{what}: {exc}")

    written = run(work)
    if (kept := keep_line(written)) is not None:
        typer.echo(kept, err=True)
    if output_format is ExportFormat.XMP:
        for line in xmp_report(written):  # a line per photo that failed, then the summary
            typer.echo(line, err=True)
        if written.failures:
            raise typer.Exit(EXIT_INCOMPLETE)
    elif written.target is not None:
        typer.echo(f"wrote {written.count} results to {written.target}", err=True)


app.command()(agreement)


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


app.command()(serve)


@app.command()
def providers() -> None:
    """List providers, their default models, and whether their API key is set."""
    render_providers(list(PROVIDERS.values()), jobs.environment(), make_console(stdout=True))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before a job exists (e.g. while a big folder is read)
        sys.exit(EXIT_INTERRUPTED)
