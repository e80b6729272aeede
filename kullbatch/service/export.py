"""Results writers: JSON, JSON Lines, CSV for scripts; XMP sidecars for photo software.

Every writer takes items in manifest order and writes as it iterates, so 10,000 images cost
10,000 small writes, never one big string built up piece by piece.

Per-image objects (JSON, JSON Lines):
- rated:   imageId, filename, starRating, colorLabel, title, description, tags, issues,
           provider, model, group (the burst; null when alone), bestInGroup, score (0-100;
           null for results stored before it existed), cached, groupRank and groupReason
           (`--compare-bursts`; null when not compared)
- failed:  imageId, filename, error
- pending: imageId, filename, status="pending" (the job has not reached the image yet)
and every one inputTokens, outputTokens, costUsd (null when the model has no price), which add
up to the job's `usage` and `costUsd`, then photographerRating (-1..5 set in the dashboard;
null when untouched) and kept (`results --keep`; null when no keep target was asked).
`cached` is true for a rating copied from an earlier one (the result cache): no request was
sent, and it cost nothing. With `--compare-bursts` the job's usage also holds the comparisons'
tokens, which are no one photo's (`Store.comparisons`).

CSV has one row per image with a fixed header (the JSON fields, `tier` last); a pending
image has only imageId, filename and its (zero) tokens and cost.
Open CSV files with ``newline=""``; rows end in CRLF as RFC 4180 says.

XMP (``results --format xmp``) lives in `kullbatch.catalogue`: sidecars named the Adobe or the
darktable way, or the packet embedded in JPEG, TIFF, PNG and DNG files.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

from kullbatch.catalogue import (
    SidecarError,
    XmpOptions,
    XmpReport,
    write_atomically,
    write_xmp,
    xmp_targets,
)
from kullbatch.models import ItemRecord, ItemState, JobStatus

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = [
    "CSV_HEADER",
    "SidecarError",
    "Written",
    "XmpOptions",
    "XmpReport",
    "result_object",
    "results_document",
    "write_csv",
    "write_json",
    "write_jsonl",
    "write_xmp",
    "xmp_targets",
]

CSV_HEADER = (
    "imageId",
    "filename",
    "starRating",
    "colorLabel",
    "title",
    "description",
    "tags",
    "error",
    "provider",
    "model",
    "inputTokens",
    "outputTokens",
    "costUsd",
    "issues",
    "group",
    "bestInGroup",
    "cached",
    "score",
    "photographerRating",
    "kept",
    "groupRank",
    "groupReason",
    "tier",
)

# --- JSON, JSON Lines, CSV -------------------------------------------------------------------


def _cost(item: ItemRecord) -> dict[str, Any]:
    """The photo's stored tokens and their price (None: the model has no price)."""
    usage = item.usage
    return {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "costUsd": item.cost_usd,
    }


def _culled(item: ItemRecord) -> dict[str, Any]:
    """The photographer's own stars (None: untouched) and the keep target's choice (None: no
    `--keep` asked), on every image."""
    return {"photographerRating": item.photographer_rating, "kept": item.kept}


def result_object(item: ItemRecord) -> dict[str, Any]:
    """One image's entry in `results`: its rating, its error, or that it is still pending,
    with the tokens it used and their cost."""
    head: dict[str, Any] = {"imageId": item.image.id, "filename": item.image.filename}
    if item.state is ItemState.RATED and item.rating is not None:
        who = {"provider": item.provider, "model": item.model, "tier": item.pricing}
        burst = {"group": item.group, "bestInGroup": item.best_in_group} | _compared(item)
        return (
            head
            | item.rating.model_dump()
            | who
            | _cost(item)
            | burst
            | _cached(item)
            | _culled(item)
        )
    if item.state is ItemState.FAILED:
        return head | {"error": item.error or "failed"} | _cost(item) | _culled(item)
    return head | {"status": ItemState.PENDING.value} | _cost(item) | _culled(item)


def _cached(item: ItemRecord) -> dict[str, Any]:
    """Whether the rating was copied from an earlier one (the result cache): no request, free."""
    return {"cached": item.cached}


def _document_head(status: JobStatus) -> dict[str, Any]:
    return {"jobId": status.jobId}


def _document_tail(status: JobStatus) -> dict[str, Any]:
    return {
        "totalImages": status.totalImages,
        "processedImages": status.processedImages,
        "failedImages": status.failedImages,
        "completedAt": status.completedAt,
    }


def results_document(status: JobStatus, items: Iterable[ItemRecord]) -> dict[str, Any]:
    """The results object of DESIGN.md (GET /api/batch/results/:jobId, `results --format json`)."""
    results = [result_object(item) for item in items]
    return _document_head(status) | {"results": results} | _document_tail(status)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def write_json(status: JobStatus, items: Iterable[ItemRecord], out: TextIO) -> None:
    """The results document, one image per line, streamed; equal to `results_document`."""
    out.write("{\n")
    out.writelines(f"  {_dumps(k)}: {_dumps(v)},\n" for k, v in _document_head(status).items())
    out.write('  "results": [')
    empty = True
    for item in items:
        out.write("\n    " if empty else ",\n    ")
        out.write(_dumps(result_object(item)))
        empty = False
    out.write("]" if empty else "\n  ]")
    out.writelines(f",\n  {_dumps(k)}: {_dumps(v)}" for k, v in _document_tail(status).items())
    out.write("\n}\n")


def write_jsonl(status: JobStatus, items: Iterable[ItemRecord], out: TextIO) -> None:
    """One result object per line, in manifest order (the job's fields are in `status --json`)."""
    del status  # the same signature as the other writers; each line stands alone
    for item in items:
        out.write(_dumps(result_object(item)))
        out.write("\n")


def _csv_row(item: ItemRecord) -> tuple[object, ...]:
    cost = _cost(item)
    tail = (
        cost["inputTokens"],
        cost["outputTokens"],
        "" if item.cost_usd is None else cost["costUsd"],
    )
    return (
        *_csv_rating(item),
        *tail,
        *_csv_culling(item),
        *_csv_cached(item),
        *_csv_keep(item),
        *_csv_compared(item),
        *_csv_tier(item),
    )


def _csv_cached(item: ItemRecord) -> tuple[object, ...]:
    """cached: for rated photos only, as issues, group and bestInGroup are."""
    if item.state is not ItemState.RATED or item.rating is None:
        return ("",)
    return ("true" if item.cached else "false",)


def _csv_keep(item: ItemRecord) -> tuple[object, ...]:
    """score, photographerRating, kept: empty when there is none."""
    score = item.rating.score if item.rating is not None else None
    kept = "" if item.kept is None else str(item.kept).lower()
    rating = item.photographer_rating
    return ("" if score is None else score, "" if rating is None else rating, kept)


def _compared(item: ItemRecord) -> dict[str, Any]:
    """--compare-bursts: the frame's place in its burst (1 = best; null when not compared)
    and the comparison's reason, on every frame of the burst."""
    return {"groupRank": item.group_rank, "groupReason": item.group_reason}


def _csv_compared(item: ItemRecord) -> tuple[object, ...]:
    """groupRank, groupReason: empty when the frame was not compared."""
    rank = "" if item.group_rank is None else item.group_rank
    return (rank, item.group_reason or "")


def _csv_tier(item: ItemRecord) -> tuple[object, ...]:
    """tier (standard, flex or batch): for rated photos only, as in JSON."""
    if item.state is not ItemState.RATED or item.rating is None:
        return ("",)
    return (item.pricing,)


def _csv_culling(item: ItemRecord) -> tuple[object, ...]:
    """issues, group, bestInGroup: for rated photos only."""
    if item.state is not ItemState.RATED or item.rating is None:
        return ("", "", "")
    best = "true" if item.best_in_group else "false"
    return (";".join(item.rating.issues), item.group or "", best)


def _csv_rating(item: ItemRecord) -> tuple[object, ...]:
    head = (item.image.id, item.image.filename)
    if item.state is ItemState.RATED and item.rating is not None:
        rating = item.rating
        tags = ";".join(rating.tags)
        return (
            *head,
            rating.starRating,
            rating.colorLabel,
            rating.title,
            rating.description,
            tags,
            "",
            item.provider or "",
            item.model or "",
        )
    if item.state is ItemState.FAILED:
        return (*head, "", "", "", "", "", item.error or "failed", "", "")
    return (*head, "", "", "", "", "", "", "", "")


def write_csv(status: JobStatus, items: Iterable[ItemRecord], out: TextIO) -> None:
    """One row per image in manifest order, tags joined by `;`; open `out` with newline=""."""
    del status
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    writer.writerows(_csv_row(item) for item in items)


@dataclass(frozen=True, slots=True)
class Written:
    """What `write_results` wrote: a count and where (None for stdout; for XMP, which files and
    one line per photo that could not be written)."""

    count: int
    target: Path | None
    sidecars: tuple[Path, ...] = ()
    embedded: tuple[Path, ...] = ()
    failures: tuple[str, ...] = ()
    kept: int | None = None  # `results --keep`: photos kept (None: no keep target)
    rated: int = 0  # photos with a rating


def _kept(items: list[ItemRecord], written: Written) -> Written:
    """`written` with the keep target's count, when one was asked."""
    if all(item.kept is None for item in items):
        return written
    rated = sum(1 for item in items if item.state is ItemState.RATED)
    return replace(written, kept=sum(1 for item in items if item.kept), rated=rated)


_TEXT_WRITERS = {"json": write_json, "jsonl": write_jsonl, "csv": write_csv}


def write_results(
    fmt: str,
    status: JobStatus,
    items: list[ItemRecord],
    output: Path | None,
    xmp: XmpOptions | None = None,
) -> Written:
    """Any format to stdout, a file (written whole, then renamed into place) or XMP."""
    if fmt == "xmp":
        report = write_xmp(items, output, xmp)
        count = len(report.written)
        written = Written(count, output, report.sidecars, report.embedded, report.failures)
        return _kept(items, written)
    writer = _TEXT_WRITERS[fmt]
    if output is None:
        writer(status, items, sys.stdout)
        sys.stdout.flush()
        return _kept(items, Written(len(items), None))
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO(newline="")
    writer(status, items, buffer)
    write_atomically(output, buffer.getvalue())
    return _kept(items, Written(len(items), output))
