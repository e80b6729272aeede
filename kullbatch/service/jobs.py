"""The service layer the CLI (and later the server) call: create, run, resume, cancel, report.

`Service` is what a front end holds: it opens the store, and runs jobs in one `Runtime` (the
process's HTTP session, writer and gates), started when the first job runs. Nothing above this
module opens a store or talks to a provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import logging
import os
import secrets
import string
import time
from typing import TYPE_CHECKING

from kullbatch.errors import ConflictError, FieldError, NotFoundError, UsageError
from kullbatch.models import (
    CANCELLABLE_STATES,
    CANCELLED_BY_USER,
    ItemRecord,
    JobState,
    JobStatus,
    Mode,
    ProgressEvent,
    ProviderBatch,
    TokenUsage,
)
from kullbatch.pricing import prices as pricing
from kullbatch.providers import PROVIDERS
from kullbatch.run.runtime import Runtime
from kullbatch.service import export, prompt, spending
from kullbatch.service.compare import compare_job
from kullbatch.service.culling import group_job
from kullbatch.service.keep import KeepTarget, choose
from kullbatch.service.settings import ProcessSettings, choose_provider
from kullbatch.service.status import status_of
from kullbatch.store.database import Store
from kullbatch.store.rows import JobRow, NewJob

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence
    from pathlib import Path

    from kullbatch.catalogue import SidecarStyle
    from kullbatch.manifest import Manifest
    from kullbatch.run.economy import Stoppable
    from kullbatch.run.engine import JobOutcome

admin_log = logging.getLogger("kullbatch.admin")


class JobNotFoundError(NotFoundError):
    def __init__(self, job_id: str, db: Path) -> None:
        super().__init__(f"no job {job_id!r} in {db} (see `kullbatch jobs`)")


def new_job_id(now: float | None = None) -> str:
    """`batch_<unix ms>_<6 random [a-z0-9]>`, the spec's job id."""
    millis = int((time.time() if now is None else now) * 1000)
    alphabet = string.ascii_lowercase + string.digits
    return f"batch_{millis}_{''.join(secrets.choice(alphabet) for _ in range(6))}"


async def create_job(
    store: Store,
    manifest: Manifest,
    settings: ProcessSettings,
    env: Mapping[str, str],
    user: str | None = None,
) -> JobRow:
    """Record the job and every image before the first request, in one transaction; it
    belongs to `user` (serve's), else to the local user name."""
    settings = settings.with_manifest(manifest)
    provider, model = choose_provider(settings, manifest, env)
    wanted = settings.mode or manifest.mode or Mode.FAST
    try:
        mode = Mode(wanted)
    except ValueError:
        raise FieldError(f"--mode must be {' or '.join(Mode)}, not {wanted!r}", "mode") from None
    if mode is Mode.ECONOMY and not PROVIDERS[provider].economy:
        with_batches = ", ".join(name for name, spec in PROVIDERS.items() if spec.economy)
        raise FieldError(
            f"{provider} has no batch API, so economy mode is not possible; "
            f"economy mode works with: {with_batches} (or use --mode fast)",
            "mode",
        )
    if settings.economy_only and mode is not Mode.ECONOMY:
        raise UsageError("--economy-only applies to --mode economy only")
    if mode is Mode.FLEX or settings.budget is not None:  # both need the price table
        table = pricing.load_prices(env)
        if mode is Mode.FLEX:
            spending.check_flex(provider, model, table)
        spending.check_budget(settings.budget, provider, model, table)
    if settings.compare_bursts and not settings.groups:
        raise UsageError("--compare-bursts compares the bursts grouping finds: drop --no-groups")
    composed = prompt.compose(settings, manifest, env)
    job = NewJob(
        id=new_job_id(),
        user_id=user or _user_name(),
        shoot_id=settings.shoot_id or manifest.shoot_id,
        provider_id=provider,
        model=model,
        mode=mode,
        prompt=composed.text,
        system_prompt=composed.system,
        source=str(manifest.source),
        options=settings.job_options(),
    )
    await store.create_job(job, manifest.images)
    if settings.budget is not None:
        await store.set_budget(job.id, settings.budget)
    row = await store.get_job(job.id)
    assert row is not None
    return row


def local_user_name() -> str:
    """Whom a job started from the CLI belongs to."""
    return _user_name()


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "local"


async def run_job(
    store: Store,
    job: JobRow,
    env: Mapping[str, str],
    *,
    subscribers: Sequence[Callable[[ProgressEvent], None]] = (),
    on_processor: Callable[[Stoppable], None] | None = None,
) -> JobOutcome:
    """One job in a runtime of its own (the CLI's case: one job per process)."""
    async with Runtime(store, env) as runtime:
        return await runtime.run_job(job, subscribers=subscribers, on_processor=on_processor)


async def get_job(store: Store, job_id: str) -> JobRow:
    job = await store.get_job(job_id)
    if job is None:
        raise JobNotFoundError(job_id, store.path)
    return job


async def prepare_resume(
    store: Store, job_id: str, mode: str | None = None, budget: float | None = None
) -> JobRow:
    """A job that is not running again: its failed images get another chance.

    An economy job stays in economy mode: photos its ended batches did not finish go into new
    batches. `mode="fast"` sends the rest of it at the list price instead, once no provider
    batch of it is still open (those photos would be paid for twice).
    """
    job = await get_job(store, job_id)
    if job.is_live():
        raise ConflictError(f"job {job_id} is still running (pid {job.owner_pid}); not resuming it")
    # --compare-bursts: bursts a failed or interrupted comparison left are compared again
    compare = job.options.grouping.compare and await store.comparisons.uncompared(job_id)
    if job.status is JobState.COMPLETED and job.failed_images == 0 and not compare:
        raise ConflictError(f"job {job_id} is already completed; every image is rated")
    if mode not in {None, job.mode, Mode.FAST}:
        raise UsageError(f"job {job_id} ran in {job.mode} mode; it resumes in fast or {job.mode}")
    if job.mode is Mode.ECONOMY and mode == Mode.FAST:
        still_open = [r for r in await store.batches.of_job(job_id) if not r.fetched]
        if still_open:
            names = ", ".join(r.batch_id or r.file_id or "one being created" for r in still_open)
            raise ConflictError(
                f"job {job_id} has provider batches still open ({names}): resume it without "
                "--mode fast to collect them, or cancel it first; its photos would be paid twice"
            )
    if job.mode is not Mode.FAST and mode == Mode.FAST:  # economy or flex: the rest at list
        await store.set_mode(job_id, Mode.FAST)
        job = dataclasses.replace(job, mode=Mode.FAST)
    if budget is not None:  # `resume --budget USD`: the new ceiling, for the whole job
        table = pricing.load_prices()
        spending.check_budget(budget, job.provider_id, job.model, table)
        await store.set_budget(job_id, budget)
        job = dataclasses.replace(job, budget_usd=budget)
    await store.reopen_failed(job_id)
    if job.mode is Mode.ECONOMY:
        await store.batches.release_ended(job_id)
    return job


async def cancel_job(store: Store, job_id: str) -> str:
    """Ask the owning process to stop; a job nobody runs is marked cancelled at once."""
    job = await get_job(store, job_id)
    if job.is_live():
        await store.request_cancel(job_id)
        return f"cancel requested: job {job_id} stops within 2 s"
    if job.status in CANCELLABLE_STATES:
        await store.finish_job(job_id, JobState.CANCELLED, CANCELLED_BY_USER)
        return f"job {job_id} cancelled"
    return f"job {job_id} is already {job.status.value}; nothing to cancel"


def environment() -> Mapping[str, str]:
    return os.environ


class Service:
    """What a front end (the CLI, the server) holds: one store, one runtime, every operation."""

    def __init__(self, store: Store, env: Mapping[str, str]) -> None:
        self.store = store
        self.env = env
        self._runtime: Runtime | None = None
        self._prices: pricing.PriceTable | None = None
        self._stack = contextlib.AsyncExitStack()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, db: Path, env: Mapping[str, str] | None = None) -> AsyncIterator[Service]:
        store = await Store.open(db)
        service = cls(store, environment() if env is None else env)
        try:
            yield service
        finally:
            try:
                await service._stack.aclose()
            finally:
                await store.close()

    async def runtime(self) -> Runtime:
        """Started on the first run: `status` and `results` need no HTTP session."""
        if self._runtime is None:
            self._runtime = await self._stack.enter_async_context(Runtime(self.store, self.env))
        return self._runtime

    async def create(
        self, manifest: Manifest, settings: ProcessSettings, user: str | None = None
    ) -> JobRow:
        return await create_job(self.store, manifest, settings, self.env, user)

    async def run(
        self,
        job: JobRow,
        *,
        subscribers: Sequence[Callable[[ProgressEvent], None]] = (),
        on_processor: Callable[[Stoppable], None] | None = None,
    ) -> JobOutcome:
        runtime = await self.runtime()
        budget = await spending.budget_for(self.store, job, self.prices())
        outcome = await runtime.run_job(
            job, subscribers=subscribers, on_processor=on_processor, budget=budget
        )
        grouping = job.options.grouping
        if grouping.enabled and outcome.state in {JobState.COMPLETED, JobState.CANCELLED}:
            found = await group_job(self.store, job.id, grouping)
            if grouping.compare and outcome.state is JobState.COMPLETED:
                await compare_job(
                    self.store,
                    runtime,
                    job,
                    found,
                    subscribers=subscribers,
                    on_processor=on_processor,
                )
        return outcome

    async def burst_counts(self, job_id: str) -> tuple[int, int]:
        """(moments, duplicates) of the job's last grouping."""
        return await self.store.tallies.group_counts(job_id)

    async def prepare_resume(
        self, job_id: str, mode: str | None = None, budget: float | None = None
    ) -> JobRow:
        return await prepare_resume(self.store, job_id, mode, budget)

    async def is_live(self, job_id: str) -> bool:
        """Whether a process is running (or polling) the job right now."""
        return (await get_job(self.store, job_id)).is_live()

    async def cancel(self, job_id: str) -> str:
        """Stop a job; an economy job nobody polls has its provider batches cancelled here."""
        job = await get_job(self.store, job_id)
        waiting = [r.id for r in await self.store.batches.of_job(job_id) if not r.fetched]
        open_job = job.status in CANCELLABLE_STATES and not job.is_live()
        if job.mode is Mode.ECONOMY and open_job and waiting:
            outcome = await (await self.runtime()).run_job(job, cancel=True)
            made = await self.store.batches.made(waiting)  # cancelled; none is created
            return (
                f"job {job_id} {outcome.state.value}: {made} provider batch(es) "
                f"cancelled; {outcome.rated} photos rated (kept)"
            )
        return await cancel_job(self.store, job_id)

    def prices(self) -> pricing.PriceTable:
        """The price table, read once; a broken user price file is a usage error (exit 2)."""
        if self._prices is None:
            self._prices = pricing.load_prices(self.env)
        return self._prices

    async def _with_cost(self, job: JobRow) -> JobStatus:
        """The status object with the tokens stored so far and what they cost."""
        groups = await self.store.tallies.usage(job.id)
        groups += await self.store.comparisons.usage(job.id)  # --compare-bursts' requests
        cost = pricing.job_cost(self.prices(), groups, job.provider_id, job.model)
        usage = TokenUsage(
            inputTokens=cost.usage.input_tokens, outputTokens=cost.usage.output_tokens
        )
        rater = pricing.rated_by(groups, job.provider_id)
        cached = await self.store.cache.count(job.id)
        extra = spending.status_fields(self.prices(), groups, job)
        return status_of(job).model_copy(
            update={
                "usage": usage,
                "costUsd": cost.usd,
                "costNote": cost.note,
                "providerId": rater,
                "cachedImages": cached,
                **extra,
            }
        )

    async def status(self, job_id: str) -> JobStatus:
        job = await get_job(self.store, job_id)
        status = await self._with_cost(job)
        if job.mode is not Mode.ECONOMY:
            return status
        batches = [
            ProviderBatch(id=r.batch_id, state=r.state, requests=r.requests, counts=r.counts)
            for r in await self.store.batches.of_job(job_id)
        ]
        return status.model_copy(update={"providerBatches": batches})

    async def statuses(self) -> list[JobStatus]:
        return [await self._with_cost(job) for job in await self.store.list_jobs()]

    async def results(self, job_id: str) -> tuple[JobStatus, list[ItemRecord]]:
        """The status and every photo, each with its cost (by who rated it)."""
        status = await self.status(job_id)
        job = await get_job(self.store, job_id)
        items = await self.store.items(job_id)
        return status, pricing.priced(self.prices(), items, job.provider_id, job.model)

    async def export(
        self,
        job_id: str,
        fmt: str,
        output: Path | None,
        *,
        embed: bool = False,
        sidecar_style: SidecarStyle = "adobe",
        reject_duplicates: bool = False,
        keep: KeepTarget | None = None,
        overwrite_ratings: bool = False,
    ) -> export.Written:
        """Write the job's results in `fmt` to `output` (a file, a folder for XMP, or stdout);
        for XMP, `embed` writes into JPEG/TIFF/PNG/DNG files, `sidecar_style` names sidecars and
        `reject_duplicates` writes the frames of a burst besides its best as rejected. `keep`
        marks the photos a keep target keeps (`kept`); `overwrite_ratings` lets our stars
        replace a photographer's own xmp:Rating."""
        status, items = await self.results(job_id)
        if keep is not None:
            items = await asyncio.to_thread(choose, items, keep)
        xmp = export.XmpOptions(
            embed=embed,
            style=sidecar_style,
            reject_duplicates=reject_duplicates,
            overwrite_ratings=overwrite_ratings,
            job_id=job_id,
        )
        return export.write_results(fmt, status, items, output, xmp)
