"""Economy mode: a job's photos through the provider's batch API, at half the price.

Each photo's request is the very body fast mode would send (`build_request`), under a
`custom_id`; photos are packed into provider batches under the provider's count and byte
limits, one batch at a time so that memory holds one batch, not the shoot. The provider's ids
are committed the moment they exist (`batch_store.py`), the batches are polled (after 5 s, then
at growing intervals up to 60 s), and answers are matched by `custom_id` and parsed with the
adapter's own `parse_answer`, like fast-mode answers.

Photos a batch did not finish (expired, errored for a reason that may pass, or missing) are
sent again in fast mode by default, so the job still ends with a result for every photo;
`--economy-only` leaves them failed. A photo the provider rejects (a bad image) fails alone.
Ctrl-C leaves the provider's batches running (the job stays `submitted`; `resume` polls them);
`cancel` cancels them at the provider and keeps what finished anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from kullbatch.engine import JobOutcome
from kullbatch.errors import FatalJobError, PermanentImageError, ProviderError, Retryable
from kullbatch.events import Reporter
from kullbatch.heartbeat import Heartbeat
from kullbatch.images import DEFAULT_MAX_EDGE, prepare
from kullbatch.models import EventKind, ImageInput, JobState, ProgressEvent
from kullbatch.providers.batch_common import BatchInfo, BatchLine, LineSuccess, custom_id_for
from kullbatch.providers.batches import BatchFile
from kullbatch.retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kullbatch.batch_store import BatchRecord
    from kullbatch.models import Answer, Fingerprint, PreparedImage, Prompt
    from kullbatch.providers.base import WireRequest
    from kullbatch.providers.batch_common import LineResult
    from kullbatch.providers.batches import BatchClient
    from kullbatch.providers.http import HTTPAnswer
    from kullbatch.store import Store

admin_log = logging.getLogger("kullbatch.admin")

POLL_FIRST = 5.0
POLL_GROWTH = 1.5
POLL_MAX = 60.0
NOT_FINISHED = "the provider's batch ended without an answer for this photo"


class Stoppable(Protocol):
    """A running job a front end can stop: the fast engine or the economy runner."""

    def interrupt(self) -> None: ...

    def cancel(self) -> None: ...


class BatchAdapter(Protocol):
    """What economy mode needs of a provider adapter: build and parse, no sending."""

    name: str
    model: str

    async def ready(self, image: PreparedImage) -> PreparedImage: ...

    def build_request(self, image: PreparedImage, prompt: Prompt) -> WireRequest: ...

    def parse_answer(self, answer: HTTPAnswer) -> Answer: ...


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
    interrupted: bool = False
    cancelled: bool = False
    cancel_sent: bool = False
    leftover_errors: dict[str, str] = field(default_factory=dict)


# Runs the photos a batch did not finish in fast mode; returns how that run ended.
FastRunner = Callable[[list[ImageInput], int, int], Awaitable[JobOutcome]]
T = TypeVar("T")


class EconomyRunner:
    """One economy job: submit what is not in a batch, wait for every batch, store answers."""

    def __init__(
        self,
        *,
        job_id: str,
        shoot_id: str,
        total: int,
        adapter: BatchAdapter,
        client: BatchClient,
        prompt: Prompt,
        store: Store,
        fast: FastRunner,
        options: EconomyOptions | None = None,
        subscribers: Sequence[Callable[[ProgressEvent], None]] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.job_id = job_id
        self.shoot_id = shoot_id
        self._adapter = adapter
        self._client = client
        self._prompt = prompt
        self._store = store
        self._fast = fast
        self._options = options or EconomyOptions()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._policy = RetryPolicy(max_retry_time=self._options.max_retry_time)
        self._report = Reporter(
            job_id=job_id, shoot_id=shoot_id, provider=client.name, model=adapter.model,
            subscribers=subscribers, clock=asyncio.get_running_loop().time,
        )  # fmt: skip
        self._total = total
        self._flags = _Flags()
        # photos in a batch with their fingerprints, until their answers come (a resume
        # leaves these to be hashed again after the run: see `culling`)
        self._fingerprints: dict[str, Fingerprint] = {}
        self._wake = asyncio.Event()
        self._clock = asyncio.get_running_loop().time
        self._heartbeat = Heartbeat(
            store, job_id, self._clock, interval=self._options.heartbeat_interval,
            on_cancel=self.cancel,
        )  # fmt: skip
        self.fast_processor: Stoppable | None = None  # while leftovers go in fast mode

    # -- public -------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Ctrl-C: stop waiting; the provider's batches keep running for `resume`."""
        self._flags.interrupted = True
        self._wake.set()
        if self.fast_processor is not None:
            self.fast_processor.interrupt()

    def cancel(self) -> None:
        """Cancel the provider's batches, keep what finished anyway, send nothing more."""
        self._flags.cancelled = True
        self._wake.set()
        if self.fast_processor is not None:
            self.fast_processor.cancel()

    async def run(self, *, already_rated: int, already_failed: int) -> JobOutcome:
        self._report.start(self._total, already_rated, already_failed)
        try:
            await self._resubmit_recorded_files()
            if not self._flags.cancelled:
                await self._submit_unbatched()
            if await self._store.batches.of_job(self.job_id):
                await self._store.batches.set_state(self.job_id, JobState.SUBMITTED)
            await self._wait_for_batches()
            outcome = await self._finish()
        except FatalJobError as exc:
            admin_log.error("[BatchProcessor] Job %s stopped: %s", self.job_id, exc.message)
            outcome = self._outcome(JobState.FAILED, exc.message)
        self._report.publish(EventKind.ENDED, status=outcome.state, error=outcome.error)
        return outcome

    # -- submitting ---------------------------------------------------------------------------

    async def _resubmit_recorded_files(self) -> None:
        """A file uploaded before a crash, with no batch recorded: find or make its batch,
        upload nothing."""
        for record in await self._store.batches.of_job(self.job_id):
            if record.batch_id is None and record.file_id is not None:
                file_id = record.file_id
                info = await self._retrying(partial(self._client.batch_for_file, file_id))
                await self._store.batches.created(record.id, self.job_id, info.id, info.state)
                self._note(f"{self._client.name} batch {info.id} of {file_id} recorded")

    async def _submit_unbatched(self) -> None:
        """Photos in no batch yet, packed under the provider's limits, one batch at a time.

        Each photo's request is encoded once and appended to a file on disk, so memory holds
        one photo's request, not a 200 MB batch; the file is streamed to the provider.
        """
        with tempfile.TemporaryDirectory(prefix="kullbatch-") as folder:
            pending = BatchFile(Path(folder) / "batch", self._client)
            try:
                async for image in self._store.batches.unbatched(self.job_id):
                    if self._flags.interrupted or self._flags.cancelled:
                        return
                    await self._add(pending, image)
                if pending.ids:
                    await self._submit(pending)
            finally:
                pending.close()

    async def _add(self, pending: BatchFile, image: ImageInput) -> None:
        line = await self._line(image)
        if line is None:
            return
        encoded = self._client.encode(line)
        limits = self._client.limits
        if limits.overhead + len(encoded) > limits.max_bytes:
            self._failed(image.id, _too_large(len(encoded), limits.max_bytes))
            return
        if not pending.fits(len(encoded)):
            await self._submit(pending)
        pending.add(line.custom_id, image.id, encoded)

    async def _line(self, image: ImageInput) -> BatchLine | None:
        """The photo's request as fast mode would send it; a photo that cannot be read fails."""
        try:
            prepared = await prepare(
                image, self._options.max_edge, fingerprint=self._options.fingerprint
            )
            ready = await self._adapter.ready(prepared)
        except PermanentImageError as exc:
            self._failed(image.id, exc.message)
            return None
        if prepared.fingerprint is not None:  # kept until the answer comes, to store with it
            self._fingerprints[image.id] = prepared.fingerprint
        request = self._adapter.build_request(ready, self._prompt)
        return self._client.line(custom_id_for(image.id), request)

    async def _submit(self, pending: BatchFile) -> None:
        """Send one batch; record the provider's ids the moment each exists."""
        path, ids, size = pending.finish()
        recorded: list[tuple[int, str]] = []  # (row, file id) once the upload is committed

        async def on_file(file_id: str) -> None:
            row = await self._store.batches.record(
                self.job_id, self._client.name, ids, file_id=file_id, batch_id=None,
                state="uploaded", size=size,
            )  # fmt: skip
            recorded.append((row, file_id))

        async def once() -> BatchInfo:
            """Upload and create; once the upload is recorded, a retry finds or creates its batch
            (the create may have reached the provider though its answer did not come back)."""
            if recorded:
                return await self._client.batch_for_file(recorded[0][1])
            return await self._client.submit_file(path, on_file)

        info = await self._retrying(once)
        if recorded:
            await self._store.batches.created(recorded[0][0], self.job_id, info.id, info.state)
        else:
            await self._store.batches.record(
                self.job_id, self._client.name, ids, file_id=None, batch_id=info.id,
                state=info.state, size=size,
            )  # fmt: skip
        self._note(f"{self._client.name} batch {info.id} submitted: {len(ids)} photos")

    # -- waiting ------------------------------------------------------------------------------

    async def _wait_for_batches(self) -> None:
        """Poll every unfetched batch until it ends; store each one's answers as it does."""
        delay = self._options.poll_first
        while True:
            waiting = [r for r in await self._store.batches.of_job(self.job_id) if not r.fetched]
            if not waiting or self._flags.interrupted:
                return
            if self._flags.cancelled and not self._flags.cancel_sent:
                await self._cancel_at_provider(waiting)
            else:
                await self._pause(delay)
                delay = min(delay * POLL_GROWTH, self._options.poll_max)
            if self._flags.interrupted:
                return
            for record in waiting:
                assert record.batch_id is not None
                batch_id = record.batch_id
                info = await self._retrying(partial(self._client.get, batch_id))
                await self._store.batches.polled(record.id, info.state, _counts(info), info.error)
                self._note(_describe(self._client.name, info))
                if info.done:
                    await self._collect(record, info)

    async def _cancel_at_provider(self, waiting: list[BatchRecord]) -> None:
        self._flags.cancel_sent = True
        for record in waiting:
            assert record.batch_id is not None
            batch_id = record.batch_id
            info = await self._retrying(partial(self._client.cancel, batch_id))
            self._note(_describe(self._client.name, info))

    async def _pause(self, seconds: float) -> None:
        """Sleep between polls, beating the heartbeat and watching for `kullbatch cancel`."""
        loop_end = self._clock() + seconds
        while (left := loop_end - self._clock()) > 0:
            self._wake.clear()
            step = min(left, self._options.cancel_poll_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), step)
            if self._flags.interrupted or self._flags.cancelled:
                return
            if await self._heartbeat.check():
                return

    # -- answers ------------------------------------------------------------------------------

    async def _collect(self, record: BatchRecord, info: BatchInfo) -> None:
        """Store every answer that came back; what did not is left for fast mode."""
        found = await self._retrying(lambda: self._client.results(info))
        for custom_id, image_id in (await self._store.batches.custom_ids(record.id)).items():
            self._take(image_id, found.get(custom_id), info)
        await self._store.flush()
        await self._store.batches.fetched(record.id)

    def _take(self, image_id: str, result: LineResult | None, info: BatchInfo) -> None:
        if result is None:
            reason = info.error or f"{NOT_FINISHED} (batch {info.id} {info.state})"
            self._flags.leftover_errors[image_id] = reason
            return
        try:
            if isinstance(result, LineSuccess):
                answer = self._adapter.parse_answer(result.answer())
                if (taken := self._fingerprints.pop(image_id, None)) is not None:
                    answer = replace(answer, fingerprint=taken)
            else:
                raise self._client.classify(result)
        except PermanentImageError as exc:
            self._failed(image_id, exc.message)
        except ProviderError as exc:  # expired, cancelled, a passing error: not this photo's
            self._flags.leftover_errors[image_id] = exc.message
        else:
            self._report.counters.rated += 1
            self._report.publish(
                EventKind.RATED, image_id=image_id, answer=answer, attempt=1, batch_priced=True
            )

    async def _finish(self) -> JobOutcome:
        if self._flags.interrupted:
            open_batches = [
                r for r in await self._store.batches.of_job(self.job_id) if not r.fetched
            ]
            state = JobState.SUBMITTED if open_batches else JobState.INTERRUPTED
            return self._outcome(state, "interrupted (Ctrl-C); resume to finish")
        if self._flags.cancelled:
            return self._outcome(JobState.CANCELLED, "cancelled by the user")
        leftovers = await self._store.batches.leftovers(self.job_id)
        if not leftovers:
            return self._outcome(JobState.COMPLETED, None)
        if self._options.economy_only:
            for image in leftovers:
                self._failed(image.id, self._flags.leftover_errors.get(image.id, NOT_FINISHED))
            await self._store.flush()
            return self._outcome(JobState.COMPLETED, None)
        self._note(f"{len(leftovers)} photos the batch did not finish are sent again in fast mode")
        await self._store.batches.set_state(self.job_id, JobState.PROCESSING)
        return await self._fast(
            leftovers, self._report.counters.rated, self._report.counters.failed
        )

    # -- small parts --------------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """A batch call, retried through rate limits and outages like a fast-mode request."""
        retries = 0
        started = self._clock()
        while True:
            try:
                return await call()
            except Retryable as exc:
                retries += 1
                wait = self._policy.next_wait(exc, retries, started, self._clock(), self._rng)
                if wait is None:
                    raise FatalJobError(f"{exc.message} (gave up after {retries} tries)") from exc
                admin_log.warning(
                    "[BatchProcessor] Job %s batch call failed: %s. Retrying in %.0f ms",
                    self.job_id, exc.message, wait * 1000,
                )  # fmt: skip
                await asyncio.sleep(wait)

    def _failed(self, image_id: str, message: str) -> None:
        self._report.counters.failed += 1
        self._report.publish(EventKind.FAILED, image_id=image_id, error=message, attempt=1)

    def _note(self, text: str) -> None:
        admin_log.info("[BatchProcessor] Job %s: %s", self.job_id, text)
        self._report.publish(EventKind.BATCH, note=text)

    def _outcome(self, state: JobState, error: str | None) -> JobOutcome:
        return JobOutcome(state, self._report.counters.rated, self._report.counters.failed, error)


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


def _too_large(size: int, limit: int) -> str:
    return (
        f"the batch request for this photo is {size:,} bytes, over the provider's "
        f"{limit:,}-byte batch limit"
    )
