"""Economy mode: a job's photos through the provider's batch API, at half the price.

Each photo's request is the very body fast mode would send (`build_request`), under a
`custom_id`; photos are packed into provider batches under the provider's count and byte
limits, one batch at a time so that memory holds one batch, not the shoot. The provider's ids
are committed the moment they exist (`store.batches`), the batches are polled (after 5 s, then
at growing intervals up to 60 s), and answers are matched by `custom_id` and parsed with the
adapter's own `parse_answer`, like fast-mode answers.

Photos a batch did not finish (expired, errored for a reason that may pass, or missing) are
sent again in fast mode by default, so the job still ends with a result for every photo: the
runner hands them back (`EconomyResult.leftovers`) and the runtime runs them through the fast
engine. `--economy-only` leaves them failed. A photo the provider rejects (a bad image) fails
alone. Every batch call waits for, and teaches, the provider account's rate-limit gate.

The job's heartbeat beats, and the cancel flag is read, in a task of its own for as long as
the runner runs, whatever it is doing (the fast run of the leftovers watches its own).
Ctrl-C abandons whatever is under way (an upload, a retried call, the wait between polls)
and leaves the provider's batches running (the job stays `submitted`; `resume` polls them).
`cancel` abandons what is under way too, submits nothing more, cancels every batch the
provider made (found first when its id was never recorded) and keeps what finished anyway.
Submitting lives in `batch_submit.py`, the calls in `batch_calls.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Protocol

from kullbatch.errors import FatalJobError, PermanentImageError, ProviderError
from kullbatch.models import (
    CANCELLED_BY_USER,
    DEFAULT_MAX_EDGE,
    EventKind,
    ImageInput,
    JobState,
    ProgressEvent,
)
from kullbatch.pricing.prices import BATCH
from kullbatch.providers.batch.common import BatchInfo, LineSuccess
from kullbatch.run.batch_calls import BatchCalls, Stopped, Stops
from kullbatch.run.batch_submit import Submitter
from kullbatch.run.engine import JobOutcome
from kullbatch.run.events import Reporter
from kullbatch.run.heartbeat import Heartbeat

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kullbatch.models import Answer, Fingerprint, Prompt
    from kullbatch.providers.base import BatchClient
    from kullbatch.providers.batch.common import LineResult
    from kullbatch.run.budget import Budget
    from kullbatch.run.cache import PhotoCache
    from kullbatch.run.events import ResultSink
    from kullbatch.run.ratelimit import Gate
    from kullbatch.store.batches import BatchRecord
    from kullbatch.store.database import Store

admin_log = logging.getLogger("kullbatch.admin")

POLL_FIRST = 5.0
POLL_GROWTH = 1.5
POLL_MAX = 60.0
NOT_FINISHED = "the provider's batch ended without an answer for this photo"


class Stoppable(Protocol):
    """A running job a front end can stop: the fast engine or the economy runner."""

    def interrupt(self) -> None: ...

    def cancel(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EconomyOptions:
    economy_only: bool = False
    max_edge: int = DEFAULT_MAX_EDGE
    max_retry_time: float = 6 * 3600.0
    poll_first: float = POLL_FIRST
    poll_max: float = POLL_MAX
    heartbeat_interval: float = 5.0
    cancel_poll_interval: float = 0.5
    fingerprint: bool = False  # hash local photos as they are encoded, for burst grouping


@dataclass(slots=True)
class _Flags:
    cancel_sent: bool = False
    leftover_errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EconomyResult:
    """How the economy part of a job ended, and the photos its batches did not finish: the
    runtime sends those in fast mode (there are none under `--economy-only`, a stop or a
    failure). With leftovers, `outcome` is the job so far (`processing`), not its end."""

    outcome: JobOutcome
    leftovers: list[ImageInput] = field(default_factory=list)


class EconomyRunner:
    """One economy job: submit what is not in a batch, wait for every batch, store answers."""

    def __init__(
        self,
        *,
        job_id: str,
        shoot_id: str,
        total: int,
        client: BatchClient,
        gate: Gate,
        prompt: Prompt,
        store: Store,
        sink: ResultSink,
        options: EconomyOptions | None = None,
        subscribers: Sequence[Callable[[ProgressEvent], None]] = (),
        rng: random.Random | None = None,
        cache: PhotoCache | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.job_id = job_id
        self._budget = budget  # --budget: batches take only the photos whose estimate fits
        self.shoot_id = shoot_id
        self._cache = cache  # photos rated before are copied, not batched (`run.cache`)
        self._adapter = client.adapter
        self._client = client
        self._prompt = prompt
        self._store = store
        self._options = options or EconomyOptions()
        self._report = Reporter(
            job_id=job_id,
            shoot_id=shoot_id,
            provider=client.name,
            model=client.adapter.model,
            sink=sink,
            subscribers=subscribers,
            clock=asyncio.get_running_loop().time,
        )
        self._total = total
        self._flags = _Flags()
        # photos in a batch with their fingerprints, until their answers come (a resume
        # leaves these to be hashed again after the run: see `culling`)
        self._fingerprints: dict[str, Fingerprint] = {}
        clock = asyncio.get_running_loop().time
        self._stops = Stops()
        self._calls = BatchCalls(
            job_id,
            self._stops,
            gate,
            max_retry_time=self._options.max_retry_time,
            clock=clock,
            rng=rng or random.Random(),  # noqa: S311 - jitter, not crypto
        )
        self._submitter = Submitter(
            job_id=job_id,
            client=client,
            prompt=prompt,
            store=store,
            calls=self._calls,
            stops=self._stops,
            encoding=(self._options.max_edge, self._options.fingerprint),
            fingerprints=self._fingerprints,
            failed=self._failed,
            note=self._note,
            cache=None if cache is None else (cache, self._cached),
            admit=None if budget is None else budget.take,
        )
        self._heartbeat = Heartbeat(
            store, job_id, clock, interval=self._options.heartbeat_interval, on_cancel=self.cancel
        )

    # -- public -------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Ctrl-C: abandon what is under way; the provider's batches keep running for
        `resume`."""
        self._stops.interrupt()

    def cancel(self) -> None:
        """Cancel the provider's batches, keep what finished anyway, send nothing more."""
        self._stops.cancel()

    async def run(self, *, already_rated: int, already_failed: int) -> EconomyResult:
        """The job's batches to their end; the photos they did not finish come back as
        `leftovers` (the job's end is then published by the fast run that takes them)."""
        self._report.start(self._total, already_rated, already_failed)
        watcher = asyncio.create_task(
            self._heartbeat.run(self._options.cancel_poll_interval, beat_after_cancel=True),
            name="kullbatch-economy-watch",
        )
        try:
            result = await self._run()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if result.leftovers and (stopped := await self._stopped()) is not None:
            result = EconomyResult(stopped)  # a stop came while handing the leftovers over
        if not result.leftovers:
            outcome = result.outcome
            self._report.publish(EventKind.ENDED, status=outcome.state, error=outcome.error)
        return result

    async def _run(self) -> EconomyResult:
        try:
            try:
                await self._work()
            except Stopped:
                if not self._stops.interrupted:  # a cancel cut it short: finish as a cancel
                    with contextlib.suppress(Stopped):  # unless Ctrl-C comes meanwhile
                        await self._work()
            return await self._finish()
        except FatalJobError as exc:
            admin_log.error("[BatchProcessor] Job %s stopped: %s", self.job_id, exc.message)
            return EconomyResult(self._outcome(JobState.FAILED, exc.message, exc.env_vars))

    async def _work(self) -> None:
        """Settle what a crash or a stop left half-sent, submit the rest (not under a
        cancel), then wait for every batch (cancelling them under a cancel)."""
        await self._submitter.settle(create=not self._stops.cancelled)
        if not self._stops.cancelled:
            await self._submitter.submit_unbatched()
        if await self._open_batches():
            await self._store.batches.set_state(self.job_id, JobState.SUBMITTED)
        await self._wait_for_batches()

    # -- waiting ------------------------------------------------------------------------------

    async def _wait_for_batches(self) -> None:
        """Poll every unfetched batch until it ends; store each one's answers as it does."""
        delay = self._options.poll_first
        while True:
            waiting = await self._open_batches()
            if not waiting:
                return
            if self._stops.cancelled and not self._flags.cancel_sent:
                await self._cancel_at_provider(waiting)
            else:
                await self._calls.pause(delay)
                delay = min(delay * POLL_GROWTH, self._options.poll_max)
            for record in waiting:
                assert record.batch_id is not None
                batch_id = record.batch_id
                info = await self._calls(partial(self._client.get, batch_id))
                await self._store.batches.polled(record.id, info.state, _counts(info), info.error)
                self._note(_describe(self._client.name, info))
                if info.done:
                    await self._collect(record, info)

    async def _cancel_at_provider(self, waiting: list[BatchRecord]) -> None:
        self._flags.cancel_sent = True
        for record in waiting:
            assert record.batch_id is not None
            batch_id = record.batch_id
            info = await self._calls(partial(self._client.cancel, batch_id))
            self._note(_describe(self._client.name, info))

    async def _open_batches(self) -> list[BatchRecord]:
        """The job's provider batches that exist and whose answers are not stored yet."""
        records = await self._store.batches.of_job(self.job_id)
        return [r for r in records if r.batch_id is not None and not r.fetched]

    # -- answers ------------------------------------------------------------------------------

    async def _collect(self, record: BatchRecord, info: BatchInfo) -> None:
        """Store every answer that came back; what did not is left for fast mode."""
        found = await self._calls(lambda: self._client.results(info))
        for custom_id, image_id in (await self._store.batches.custom_ids(record.id)).items():
            self._take(image_id, found.get(custom_id), info)
        await self._store.flush()
        await self._store.batches.fetched(record.id)

    def _take(self, image_id: str, result: LineResult | None, info: BatchInfo) -> None:
        answer = self._answer(image_id, result, info)
        if self._budget is not None:  # the photo is no longer in flight; an answer is paid
            batch = None if answer is None else replace(answer, tier=BATCH)
            self._budget.ended(batch, self._client.name, self._adapter.model)

    def _answer(self, image_id: str, result: LineResult | None, info: BatchInfo) -> Answer | None:
        """Store the photo's answer (returned) or its failure, or leave it for fast mode."""
        if result is None:
            reason = info.error or f"{NOT_FINISHED} (batch {info.id} {info.state})"
            self._flags.leftover_errors[image_id] = reason
            return None
        try:
            if isinstance(result, LineSuccess):
                answer = self._adapter.parse_answer(result.answer())
                if (taken := self._fingerprints.pop(image_id, None)) is not None:
                    answer = replace(answer, fingerprint=taken)
                if self._cache is not None:
                    adapter = self._adapter
                    answer = self._cache.keyed(image_id, answer, adapter.name, adapter.model)
            else:
                raise self._client.classify(result)
        except PermanentImageError as exc:
            self._failed(image_id, exc.message)
        except ProviderError as exc:  # expired, cancelled, a passing error: not this photo's
            self._flags.leftover_errors[image_id] = exc.message
        else:
            self._report.rated(image_id, answer, attempt=1, batch_priced=True)
            return answer
        return None

    async def _finish(self) -> EconomyResult:
        if (stopped := await self._stopped()) is not None:
            return EconomyResult(stopped)
        if self._budget is not None and self._budget.reached:  # the rest waits for resume
            counters = self._report.counters
            unsent = counters.total - counters.rated - counters.failed
            return EconomyResult(self._outcome(JobState.PAUSED, self._budget.verdict(unsent)))
        leftovers = await self._store.batches.leftovers(self.job_id)
        if not leftovers:
            return EconomyResult(self._outcome(JobState.COMPLETED, None))
        if self._options.economy_only:
            for image in leftovers:
                self._failed(image.id, self._flags.leftover_errors.get(image.id, NOT_FINISHED))
            await self._store.flush()
            return EconomyResult(self._outcome(JobState.COMPLETED, None))
        self._note(f"{len(leftovers)} photos the batch did not finish are sent again in fast mode")
        await self._store.batches.set_state(self.job_id, JobState.PROCESSING)
        return EconomyResult(self._outcome(JobState.PROCESSING, None), leftovers)

    async def _stopped(self) -> JobOutcome | None:
        """How the job ends under Ctrl-C or a cancel; None when neither came."""
        if self._stops.interrupted:
            state = JobState.SUBMITTED if await self._open_batches() else JobState.INTERRUPTED
            return self._outcome(state, "interrupted (Ctrl-C); resume to finish")
        if self._stops.cancelled:
            return self._outcome(JobState.CANCELLED, CANCELLED_BY_USER)
        return None

    # -- small parts --------------------------------------------------------------------------

    def _cached(self, image_id: str, answer: Answer) -> None:
        """A photo found in the cache: its copy is its result, and it goes in no batch."""
        self._report.rated(image_id, answer, attempt=0)

    def _failed(self, image_id: str, message: str) -> None:
        self._report.failed(image_id, message, attempt=1)

    def _note(self, text: str) -> None:
        admin_log.info("[BatchProcessor] Job %s: %s", self.job_id, text)
        self._report.publish(EventKind.BATCH, note=text)

    def _outcome(
        self, state: JobState, error: str | None, env_vars: tuple[str, ...] = ()
    ) -> JobOutcome:
        counters = self._report.counters
        return JobOutcome(state, counters.rated, counters.failed, error, env_vars)


def _counts(info: BatchInfo) -> dict[str, int]:
    counts = info.counts
    return {
        "total": counts.total,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "expired": counts.expired,
        "cancelled": counts.cancelled,
        "processing": counts.processing,
    }


def _describe(provider: str, info: BatchInfo) -> str:
    counts = info.counts
    done = counts.succeeded + counts.failed + counts.expired + counts.cancelled
    total = f"/{counts.total}" if counts.total else ""
    return f"{provider} batch {info.id}: {info.state}, {done}{total} done"
