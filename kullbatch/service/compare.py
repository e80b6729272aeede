"""`process --compare-bursts`: after grouping, each burst's frames judged side by side.

A burst of two or more frames sends its frames (the `MAX_FRAMES` with the most stars, in
capture order) in one request to the job's own provider, in fast mode whatever the job's mode:
an economy job's comparisons go out once its batches are in. The verdict sets the burst's
`bestInGroup`, each compared frame's `groupRank` (1 = best; frames left out have none) and the
`groupReason` of every frame of the burst, in one transaction with the tokens spent.

A burst whose compared frames all carry a rank is done: a `resume` regroups the shoot, and the
stored verdict is applied again instead of asked again. A comparison that fails (after the
retry loop's retries), or a frame that cannot be read, leaves the burst's pick by stars and
sharpness in place: it is logged and reported, and no photo fails. A fatal answer (a bad key,
no credit) ends the comparisons at once. `local` compares nothing: its pick by sharpness stays.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kullbatch.errors import FatalJobError, ProviderError
from kullbatch.media.images import prepare
from kullbatch.models import EventKind, ItemState, ProgressEvent, Usage
from kullbatch.providers.compare import MAX_FRAMES, comparer_of
from kullbatch.run.compare import CompareSender
from kullbatch.run.retry import RetryPolicy
from kullbatch.service.compare_estimate import count

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kullbatch.media.bursts import Burst
    from kullbatch.models import ItemRecord
    from kullbatch.run.economy import Stoppable
    from kullbatch.run.runtime import Runtime
    from kullbatch.store.database import Store
    from kullbatch.store.rows import JobRow

admin_log = logging.getLogger("kullbatch.admin")

AT_ONCE = 16  # bursts compared at once, at most: each holds its frames' bytes while it waits


@dataclass(slots=True)
class CompareReport:
    """What `--compare-bursts` did for a job's bursts."""

    bursts: int = 0  # bursts of two or more frames
    compared: int = 0  # asked now and answered
    reused: int = 0  # answered by an earlier run of the job
    failed: list[str] = field(default_factory=list)  # one line per burst that kept its pick
    requests: int = 0
    usage: Usage = field(default_factory=Usage)

    def note(self) -> str:
        """The report in words, for the terminal and the WebSocket."""
        done = f"bursts compared side by side: {self.compared} of {self.bursts}"
        if self.reused:
            done += f" ({self.reused} already compared)"
        done += f"; {count(self.requests, 'request')}, {self.usage.input_tokens:,} in, "
        done += f"{self.usage.output_tokens:,} out tokens"
        if self.failed:
            done += f"; {len(self.failed)} kept their pick by stars and sharpness: {self.failed[0]}"
        return done


def selection(frames: Sequence[ItemRecord]) -> list[ItemRecord]:
    """The frames to compare: the MAX_FRAMES with the most stars (the first taken on a tie),
    in capture order (the order of `frames`)."""
    order = {id(item): index for index, item in enumerate(frames)}
    ranked = sorted(frames, key=lambda i: (-(i.rating.starRating if i.rating else 0), order[id(i)]))
    chosen = {id(item) for item in ranked[:MAX_FRAMES]}
    return [item for item in frames if id(item) in chosen]


def announce(
    subscribers: Sequence[Callable[[ProgressEvent], None]], job: JobRow, note: str
) -> None:
    """A note to the job's subscribers (the terminal, the WebSocket) after its run ended."""
    event = ProgressEvent(
        kind=EventKind.NOTE,
        job_id=job.id,
        total=job.total_images,
        rated=job.processed_images,
        failed=job.failed_images,
        retrying=0,
        status=job.status,
        shoot_id=job.shoot_id,
        provider=job.provider_id,
        note=note,
    )
    for subscriber in subscribers:
        try:
            subscriber(event)
        except Exception:  # a broken display must not stop the comparisons
            admin_log.exception("progress subscriber %r failed", subscriber)


class BurstComparisons:
    """One job's comparisons; `interrupt`/`cancel` stop them (Ctrl-C reaches them here)."""

    def __init__(
        self,
        store: Store,
        job: JobRow,
        sender: CompareSender,
        subscribers: Sequence[Callable[[ProgressEvent], None]] = (),
    ) -> None:
        self._store = store
        self._job = job
        self._sender = sender
        self._subscribers = list(subscribers)
        self._stop = asyncio.Event()
        self._fatal: str | None = None
        self.report = CompareReport()

    def interrupt(self) -> None:
        self._stop.set()

    def cancel(self) -> None:
        self._stop.set()

    def publish(self, note: str) -> None:
        announce(self._subscribers, self._job, note)

    async def run(self, found: Sequence[Burst]) -> CompareReport:
        """Compare every burst of `found` not compared before; returns what was done."""
        await self._store.comparisons.clear_ungrouped(self._job.id)
        items = {item.image.id: item for item in await self._store.items(self._job.id)}
        bursts = [
            [items[key] for key in burst.keys if items[key].state is ItemState.RATED]
            for burst in found
        ]
        bursts = [frames for frames in bursts if len(frames) > 1]
        self.report.bursts = len(bursts)
        todo = []
        for frames in bursts:
            chosen = selection(frames)
            if all(item.group_rank is not None for item in chosen):
                await self._reuse(chosen)
            else:
                todo.append(frames)
        if todo:
            comparer = self._sender.comparer
            how_many = count(len(todo), "burst")
            self.publish(
                f"comparing {how_many} side by side with {comparer.name} ({comparer.model})"
            )
            await self._all(todo)
        self.publish(self.report.note())
        return self.report

    async def _reuse(self, chosen: Sequence[ItemRecord]) -> None:
        best = next((item for item in chosen if item.group_rank == 1), None)
        if best is not None:
            keys = [item.image.id for item in chosen]
            await self._store.comparisons.apply_best(self._job.id, keys, best.image.id)
        self.report.reused += 1

    async def _all(self, todo: Sequence[Sequence[ItemRecord]]) -> None:
        limit = min(AT_ONCE, self._job.options.concurrency or AT_ONCE)
        slots = asyncio.Semaphore(limit)

        async def one(frames: Sequence[ItemRecord]) -> None:
            async with slots:
                if not self._stop.is_set():
                    await self._burst(frames)

        work: asyncio.Future[Any] = asyncio.gather(*(one(frames) for frames in todo))
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if self._stop.is_set() and self._fatal is None:
            self.report.failed.append("stopped before every burst was compared")

    async def _burst(self, frames: Sequence[ItemRecord]) -> None:
        job = self._job
        chosen = selection(frames)
        group = frames[0].group or frames[0].image.id
        sender = replace(self._sender, spent=[])
        try:
            prepared = [await prepare(item.image, job.options.max_edge) for item in chosen]
            ranked = await sender.rank(prepared)
        except ProviderError as exc:
            await self._failed(group, exc.message, sender, fatal=isinstance(exc, FatalJobError))
            return
        except Exception as exc:  # a bug in an adapter must not stop the other bursts
            admin_log.exception("[Compare] Job %s burst %s: unexpected error", job.id, group)
            await self._failed(group, f"internal error: {type(exc).__name__}: {exc}", sender)
            return
        ranks: dict[str, int | None] = {item.image.id: None for item in frames}
        for place, index in enumerate(ranked.order, start=1):
            ranks[chosen[index].image.id] = place
        best = chosen[ranked.order[0]].image.id
        spent = self._spent(sender)
        await self._store.comparisons.record(job.id, ranks, ranked.reason, best, spent)
        report = self.report
        report.compared += 1
        report.requests += len(sender.spent)

    def _spent(self, sender: CompareSender) -> tuple[str, str, int, Usage] | None:
        if not sender.spent:
            return None
        usage = Usage(
            sum(u.input_tokens for u in sender.spent), sum(u.output_tokens for u in sender.spent)
        )
        total = self.report.usage
        self.report.usage = Usage(
            total.input_tokens + usage.input_tokens, total.output_tokens + usage.output_tokens
        )
        comparer = sender.comparer
        return comparer.name, comparer.model, len(sender.spent), usage

    async def _failed(
        self, group: str, message: str, sender: CompareSender, *, fatal: bool = False
    ) -> None:
        admin_log.error("[Compare] Job %s burst %s: %s", self._job.id, group, message)
        self.report.failed.append(f"burst {group}: {message}")
        self.report.requests += len(sender.spent)
        spent = self._spent(sender)
        if spent is not None:
            await self._store.comparisons.record(self._job.id, {}, None, None, spent)
        if fatal and self._fatal is None:
            self._fatal = message
            self._stop.set()


async def compare_job(
    store: Store,
    runtime: Runtime,
    job: JobRow,
    found: Sequence[Burst],
    *,
    subscribers: Sequence[Callable[[ProgressEvent], None]] = (),
    on_processor: Callable[[Stoppable], None] | None = None,
) -> CompareReport | None:
    """Compare the job's bursts with its own provider; None when it compares nothing
    (`local`), or cannot be built (its key is gone: reported)."""
    job = await store.get_job(job.id) or job  # its counts as the run left them
    try:
        provider, gate = runtime.provider_for(job)
    except FatalJobError as exc:
        admin_log.error("[Compare] Job %s: %s", job.id, exc.message)
        announce(subscribers, job, f"bursts not compared: {exc.message}")
        return CompareReport(failed=[exc.message])
    comparer = comparer_of(provider)
    if comparer is None:
        return None
    policy = RetryPolicy(max_retry_time=job.options.max_retry_time)
    loop = asyncio.get_running_loop()
    sender = CompareSender(comparer, gate, policy, loop.time)
    comparisons = BurstComparisons(store, job, sender, subscribers)
    if on_processor is not None:
        on_processor(comparisons)
    return await comparisons.run(found)
