"""The tables a user asks for: `kullbatch jobs` and `kullbatch providers`, printed on stdout.

`render_jobs` fits the jobs table to the console (80 columns in a pipe): job id, status and
counts are never cut; optional columns are dropped or shortened first. `render_providers` lists
every provider, a block each, and whether its key is set, never the key itself. The live
display and the end-of-job summary stay in `kullbatch.cli.progress`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.table import Table
from rich.text import Text

from kullbatch.cli.progress import styled_state
from kullbatch.models import JobState, Mode
from kullbatch.pricing.prices import cost_text

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from rich.console import Console

    from kullbatch.models import JobStatus
    from kullbatch.providers import ProviderSpec
    from kullbatch.service.export import Written

__all__ = ["render_jobs", "render_providers"]


def render_jobs(statuses: Sequence[JobStatus], console: Console) -> None:
    """The jobs as a table as wide as the console (80 columns in a pipe) allows.

    Job id, status and counts are never cut: the created time goes first, then the provider,
    then the shoot id is shortened with an ellipsis, then dropped. Narrower than the four
    figures, each job is one line that wraps instead.
    """
    if not statuses:
        console.print("no jobs yet: run `kullbatch process SOURCE`")
        return
    for optional in _JOB_LAYOUTS:
        table = _jobs_table(statuses, optional)
        if _natural_width(table, console) <= console.width:
            console.print(table)
            return
    bare = _natural_width(_jobs_table(statuses, ()), console)
    least = _jobs_table(statuses, ("shoot",), shoot_width=_SHOOT_MIN)
    gap = _natural_width(least, console) - bare - _SHOOT_MIN
    room = console.width - bare - gap
    if room >= _SHOOT_MIN:
        console.print(_jobs_table(statuses, ("shoot",), shoot_width=room))
    elif bare <= console.width:
        console.print(_jobs_table(statuses, ()))
    else:
        _print_job_lines(statuses, console)


def _print_job_lines(statuses: Sequence[JobStatus], console: Console) -> None:
    """One line a job, figures aligned; the terminal wraps a long line, nothing is cut."""
    state_width = max(len(status.status.value) for status in statuses)
    rated_width = max(len(_rated_text(status)) for status in statuses)
    for status in statuses:
        line = Text(f"{status.jobId}  ")
        line.append_text(styled_state(status.status))
        line.append(" " * (state_width - len(status.status.value)))
        line.append(f"  {_rated_text(status):>{rated_width}} rated  {status.failedImages} failed")
        console.print(line, soft_wrap=True)


_JOB_COLUMNS = ("job", "shoot", "provider", "status", "rated", "failed", "created")
_OPTIONAL_COLUMNS = frozenset({"shoot", "provider", "created"})
# Optional columns of `kullbatch jobs`, most to fewest; job, status, rated, failed always show.
_JOB_LAYOUTS: tuple[tuple[str, ...], ...] = (
    ("shoot", "provider", "created"),
    ("shoot", "provider"),
    ("shoot",),
)
_SHOOT_MIN = 6  # a shoot id cut shorter than this says nothing; drop the column instead


def _natural_width(table: Table, console: Console) -> int:
    """How wide `table` draws when nothing is cut."""
    return console.measure(table, options=console.options.update_width(10_000)).maximum


def _rated_text(status: JobStatus) -> str:
    return f"{status.processedImages}/{status.totalImages}"


def _jobs_table(
    statuses: Sequence[JobStatus], optional: Sequence[str], shoot_width: int | None = None
) -> Table:
    """The jobs table with the optional columns named (`shoot`, `provider`, `created`)."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    shown = [name for name in _JOB_COLUMNS if name in optional or name not in _OPTIONAL_COLUMNS]
    for name in shown:
        header = "created (UTC)" if name == "created" else name
        table.add_column(header, no_wrap=True, justify="right" if name == "failed" else "left")
    for status in statuses:
        shoot = Text(status.shootId)
        if shoot_width is not None:
            shoot.truncate(shoot_width, overflow="ellipsis")
        cells: dict[str, str | Text] = {
            "job": status.jobId,
            "shoot": shoot,
            "provider": status.providerId,
            "status": styled_state(status.status),
            "rated": _rated_text(status),
            "failed": str(status.failedImages),
            "created": status.createdAt[:16].replace("T", " "),
        }
        table.add_row(*(cells[name] for name in shown))
    return table


def render_providers(
    specs: Sequence[ProviderSpec], env: Mapping[str, str], console: Console
) -> None:
    """Which providers exist and whether each key is set; never the key itself.

    One block per provider, a line per fact, so that nothing is cut at 80 columns (a table's
    five columns cut every variable name): narrower still, the terminal wraps a long line.
    """
    for index, spec in enumerate(specs):
        if index:
            console.print()
        head = Text(spec.name, style="bold")
        if spec.aliases:
            head.append(f" (alias {', '.join(spec.aliases)})")
        console.print(head, soft_wrap=True)
        for label, value in _provider_facts(spec, env):
            line = Text(f"  {label:<{_FACT_WIDTH}}  ")
            line.append_text(value)
            console.print(line, soft_wrap=True)


_FACT_WIDTH = len("default model")


def _provider_facts(spec: ProviderSpec, env: Mapping[str, str]) -> list[tuple[str, Text]]:
    if not spec.key_vars:
        key = Text("not needed")
    elif spec.key_is_set(env):
        key = Text("set", style="green")
        key.append(f" ({' or '.join(v for v in spec.key_vars if env.get(v))})")
    elif spec.key_optional:
        key = Text(f"optional: {' or '.join(spec.key_vars)}")
    else:
        key = Text("missing", style="red")
        key.append(f": {' or '.join(spec.key_vars)}")
    return [
        ("default model", Text(spec.default_model)),
        ("API key", key),
        ("base URL", Text(" or ".join(spec.base_url_vars) or "-")),
        ("economy", Text("batch API" if spec.economy else "-")),
    ]


def status_lines(current: JobStatus) -> list[str]:
    """`kullbatch status` in words: counts and ETA, the error, the provider's batches, what next."""
    eta = f", ETA {current.eta} s" if current.eta is not None else ""
    head = (
        f"{current.jobId} {current.status.value}: {current.processedImages}/"
        f"{current.totalImages} rated, {current.failedImages} failed "
        f"({current.progress:.0%}){eta}"
    )
    lines = [head, f"  {cost_text(current)}"]
    if current.cachedImages:
        lines.append(f"  {current.cachedImages} from cache (not sent, no cost)")
    if current.mode is Mode.FLEX or current.budgetUsd is not None:
        lines.append(f"  {tiers_text(current)}")
    if current.error:
        lines.append(f"  {current.error}")
    for batch in current.providerBatches:
        counts = ", ".join(f"{n} {name}" for name, n in batch.counts.items() if n)
        lines.append(
            f"  {current.providerId} batch {batch.id or '(no id yet)'}: {batch.state}, "
            f"{batch.requests} photos" + (f" ({counts})" if counts else "")
        )
    if current.status is JobState.INTERRUPTED:
        lines.append(f"  resume it with: kullbatch resume {current.jobId}")
    elif current.status is JobState.PAUSED:
        lines.append(f"  go on with: kullbatch resume {current.jobId} --budget MORE_USD")
    elif current.status is JobState.SUBMITTED:
        lines.append("  the provider is working; collect the results with:")
        lines.append(f"  kullbatch resume {current.jobId}")
    return lines


def tiers_text(current: JobStatus) -> str:
    """`12 flex, 3 standard; flex saved $0.0123; budget $5.00`: tiers, savings, ceiling."""
    tiers = ", ".join(f"{n} {tier}" for tier, n in sorted(current.tiers.items())) or "none rated"
    parts = [f"photos by tier: {tiers}"]
    if current.flexSavedUsd is not None:
        parts.append(f"flex saved ${current.flexSavedUsd:,.4f}")
    if current.budgetUsd is not None:
        parts.append(f"budget ${current.budgetUsd:,.2f}")
    return "; ".join(parts)


def xmp_report(written: Written) -> list[str]:
    """`results --format xmp` in words: one line per photo that failed, then what was written."""
    lines = [f"kullbatch: error: {failure}" for failure in written.failures]
    embedded = f", embedded XMP in {len(written.embedded)} photos" if written.embedded else ""
    failed = f"; {len(written.failures)} photos failed" if written.failures else ""
    lines.append(f"wrote {len(written.sidecars)} XMP sidecars{embedded}{failed}")
    return lines
