"""`kullbatch agreement JOBID`: the job's stars against the photographer's own."""

from __future__ import annotations

from pathlib import Path  # noqa: TC003  (typer reads the annotations at run time)
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kullbatch.catalogue import SidecarError
from kullbatch.cli.exits import fail, run
from kullbatch.cli.options import DbOption  # noqa: TC001  (typer reads it at run time)
from kullbatch.cli.terminal import print_json
from kullbatch.service import agreement as agreeing
from kullbatch.service import jobs, paths
from kullbatch.service.keep import KeepTarget, parse_keep

if TYPE_CHECKING:
    from kullbatch.service.export import Written

__all__ = ["agreement", "keep_line", "keep_target"]


def keep_target(value: str | None) -> KeepTarget | None:
    """`--keep`'s value, or exit 2 naming what is wrong with it."""
    if value is None:
        return None
    try:
        return parse_keep(value)
    except ValueError as exc:
        fail(str(exc))


def agreement(
    job_id: Annotated[str, typer.Argument(help="The job id.", show_default=False)],
    against: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="A folder of the photographer's XMP (IMG_0001.xmp or IMG_0001.CR3.xmp "
            "sidecars, or JPEG/TIFF/DNG files with embedded XMP), matched by file stem; "
            "then the XMP beside each photo, then the dashboard's stars.",
            show_default=False,
        ),
    ] = None,
    keep_stars: Annotated[
        int,
        typer.Option(
            min=1, max=5, help="A photo rated this or more is a keep, for precision and recall."
        ),
    ] = agreeing.DEFAULT_KEEP_STARS,
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    db: DbOption = None,
) -> None:
    """How far the job's stars are from the photographer's own (their xmp:Rating): the share
    equal and within one star, Spearman's rho, Kendall's tau-b, keep precision and recall,
    their keep rate, and the confusion table. A rejection (-1) counts as 0 stars; photos they
    left unrated are skipped. Sends nothing."""
    database = db if db is not None else paths.default_db_path(jobs.environment())

    async def work() -> dict[str, Any]:
        async with jobs.Service.open(database) as service:
            try:
                return await agreeing.agreement(service, job_id, against, keep_stars)
            except SidecarError as exc:  # a broken sidecar of the photographer's: named
                fail(str(exc))

    document = run(work)
    if json_output:
        print_json(document)
    else:
        for line in agreeing.lines(document):
            typer.echo(line)


def keep_line(written: Written) -> str | None:
    """What `results --keep` kept, for stderr; None without a keep target."""
    if written.kept is None:
        return None
    return f"kept {written.kept} of {written.rated} rated photos"
