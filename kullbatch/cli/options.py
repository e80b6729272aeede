"""The `kullbatch` command's shared options and choices, so that `cli` keeps to its commands."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kullbatch.models import DEFAULT_DISTANCE, DEFAULT_GAP, Mode

__all__ = ["DEFAULT_DISTANCE", "DEFAULT_GAP"]


class ExportFormat(StrEnum):
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"
    XMP = "xmp"


ResumeModeOption = Annotated[
    Mode | None,
    typer.Option(
        help="fast: an economy or flex job's remaining photos go now, at the list price "
        "[default: the job's own mode: an economy job gets new batches]",
    ),
]


class SidecarStyleChoice(StrEnum):
    ADOBE = "adobe"
    DARKTABLE = "darktable"


DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="SQLite database [default: $KULLBATCH_DB, else kullbatch.db in the user data folder]",
        dir_okay=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the status object as JSON.")]

RubricOption = Annotated[
    str | None,
    typer.Option(
        help="How to rate: general, wedding, portrait, event, sports, landscape, product, "
        "a rubric of yours in $KULLBATCH_RUBRICS, or a .toml/.json file "
        "[default: --prompt, else the manifest's prompt, else general]",
        show_default=False,
    ),
]

NoGroupsFlag = Annotated[
    bool, typer.Option("--no-groups", help="Do not look for bursts and near-duplicates.")
]

CompareBurstsFlag = Annotated[
    bool,
    typer.Option(
        "--compare-bursts",
        help="After rating, send each burst's frames (up to 8, most stars first) together in "
        "one request and let the model pick the best (eyes open, in focus, expression, no "
        "motion blur): it sets bestInGroup, groupRank and groupReason. Sent in fast mode, "
        "after an economy job's batches too; local keeps its sharpness pick.",
    ),
]

BurstGapOption = Annotated[
    float,
    typer.Option(min=0, help="Seconds between two frames of one burst, at most (EXIF time)."),
]

BurstDistanceOption = Annotated[
    int,
    typer.Option(min=0, max=64, help="Bits of 64 two frames of one burst may differ in (pHash)."),
]

DryRunFlag = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Send nothing and create no job: print the photo count, the estimated tokens "
        "and the price in fast and economy mode; photos rated before in --db count as free.",
    ),
]

EmbedFlag = Annotated[
    bool,
    typer.Option(
        "--embed",
        help="xmp: write into JPEG, TIFF, PNG and DNG files themselves (Lightroom reads only "
        "their embedded XMP); RAW files still get sidecars.",
    ),
]

SidecarStyleOption = Annotated[
    SidecarStyleChoice,
    typer.Option(
        "--sidecar-style",
        help="xmp: adobe names sidecars IMG_0001.xmp (Lightroom, Capture One, Bridge); "
        "darktable names them IMG_0001.CR3.xmp (darktable, digiKam).",
    ),
]

RejectDuplicatesFlag = Annotated[
    bool,
    typer.Option(
        "--reject-duplicates",
        help="xmp: write the frames of a burst other than its best as rejected (-1).",
    ),
]

NoCacheFlag = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Send every photo, even one already rated in this database with the same "
        "content, provider, model, --max-edge and prompt (by default its rating is copied, "
        "free, and marked cached).",
    ),
]

KeepOption = Annotated[
    str | None,
    typer.Option(
        "--keep",
        metavar="N|P%",
        help="Keep N photos (or P % of the rated ones), as a cull to a delivery count: each "
        "burst offers only its best frame; photos are taken by stars, then score, then "
        "sharpness. Every format gets `kept`; xmp writes the others rejected (-1). Sends nothing.",
        show_default=False,
    ),
]

BudgetOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Spend at most this many USD on the whole job (across resumes): photos are sent "
        "only while what was spent plus what is in flight fits; then the job pauses (exit 1) "
        "and `resume JOBID --budget MORE` goes on. With --dry-run: does the shoot fit?",
        show_default=False,
    ),
]

OverwriteRatingsFlag = Annotated[
    bool,
    typer.Option(
        "--overwrite-ratings",
        help="xmp: replace a rating the photographer set (an xmp:Rating kullbatch did not "
        "write) with kullbatch's stars. Without it theirs is kept and ours goes beside it, "
        "in kullbatch:Rating.",
    ),
]

FlexWaitOption = Annotated[
    str | None,
    typer.Option(
        help="Flex mode: a photo the flex tier keeps refusing for this long (e.g. 15m) is "
        "sent at the standard tier, at the list price, at that moment. Shorter: the run ends "
        "nearer fast mode's time (10s: about 1.2x), a few photos at the list price. "
        "Default: the manifest's flexWait, else 15m.",
    ),
]
