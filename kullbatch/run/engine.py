"""The BatchProcessor: every image in flight at once, each retried through its own window.

One coroutine per image in flight. The first image goes alone (the probe), so that a bad key
costs one request; then a feeder releases the rest as fast as the rate-limit gate admits them:
all at once when the provider allows it, at the learned pace otherwise. Only images that are
about to leave (or are in flight, or waiting to retry) exist as tasks, so memory follows what
is in flight, not the size of the shoot. Failures are classified by the provider; this module
only decides, through `retry.RetryPolicy` and `retry.retrying`, whether and when to try again.
Each result goes to the job's `ResultSink` (the store); subscribers (progress display, WebSocket
hub) receive a `ProgressEvent` per step.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterable
from dataclasses import replace
from typing import TYPE_CHECKING

from kullbatch.errors import FatalJobError, ProviderError, provider_specific
from kullbatch.media.images import prepare
from kullbatch.models import (
    CANCELLED_BY_USER,
    Answer,
    EventKind,
    ImageInput,
    JobState,
    ProgressEvent,
    Prompt,
)
from kullbatch.run.events import Reporter, ResultSink
from kullbatch.run.fallback import Chain, Link
from kullbatch.run.heartbeat import Heartbeat
from kullbatch.run.outcome import EngineOptions, JobOutcome, _Stop
from kullbatch.run.ratelimit import Gate, GateState, Slots
from kullbatch.run.retry import GaveUp, RetryPolicy, Sending, format_wait_ms, retrying

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from kullbatch.providers.base import Provider
    from kullbatch.run.budget import Budget
    from kullbatch.run.cache import PhotoCache
    from kullbatch.store.database import Store

__all__ = ["BatchProcessor", "EngineOptions", "JobOutcome"]

admin_log = logging.getLogger("kullbatch.admin")


class BatchProcessor:
    """Runs one job's images through its provider (and its fallbacks), reporting every step."""

    def __init__(
        self,
        *,
        job_id: str,
        provider: Provider,
        prompt: Prompt,
        store: Store,
        sink: ResultSink,
        options: EngineOptions | None = None,
        subscribers: Sequence[Callable[[ProgressEvent], None]] = (),
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        policy: RetryPolicy | None = None,
        gate: Gate | None = None,
        shoot_id: str = "",
        fallbacks: Sequence[tuple[Provider, Gate | None]] = (),
        cache: PhotoCache | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.job_id = job_id
        self._cache = cache  # photos rated before are copied, not sent (`run.cache`)
        self._budget = budget  # --budget: each photo admitted, each one's cost learned
        self._prompt = prompt
        self._store = store
        self._options = options or EngineOptions()
        self._clock = clock or asyncio.get_running_loop().time
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._policy = policy or RetryPolicy(max_retry_time=self._options.max_retry_time)
        window = min(self._options.fallback_after, self._options.max_retry_time)
        self._fallback_policy = RetryPolicy(max_retry_time=window)
        # each provider's gate: shared with other jobs on the same account, or one of its own
        self._chain = Chain(
            [self._link(each, each_gate) for each, each_gate in [(provider, gate), *fallbacks]]
        )
        self._slots = Slots(self._options.concurrency, self._options.prepared_limit)
        self._stop = _Stop()
        self._report = Reporter(
            job_id=job_id,
            shoot_id=shoot_id,
            provider=provider.name,
            model=provider.model,
            sink=sink,
            subscribers=subscribers,
            clock=self._clock,
        )
        self._live: set[asyncio.Task[None]] = set()
        self._fed = False
        self._probe_sent = False
        self._unfinished = 0  # images released and not yet ended (a done callback comes late)
        self._all_done = asyncio.Event()
        self._probe_answered = asyncio.Event()

    def _link(self, provider: Provider, gate: Gate | None) -> Link:
        link = Link(provider, gate or Gate(self._clock), owns_gate=gate is None)
        if self._options.rpm:
            link.gate.limit_to(self._options.rpm)
        return link

    @property
    def gate(self) -> Gate:
        """The job's own provider's gate."""
        return self._chain.links[0].gate

    # -- public -------------------------------------------------------------------------------

    def cancel(self) -> None:
        self._stop.request(JobState.CANCELLED, CANCELLED_BY_USER)

    def interrupt(self) -> None:
        self._stop.request(JobState.INTERRUPTED, "interrupted (Ctrl-C); resume to finish")

    async def run(
        self,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        total: int,
        already_rated: int = 0,
        already_failed: int = 0,
    ) -> JobOutcome:
        """Rate `images` (those of the job without a result); returns how the job ended.

        `images` may be a list or an async iterator (the store's pages): it is read only as
        fast as images are released.
        """
        self._report.start(total, already_rated, already_failed)
        unsubscribe = [link.gate.subscribe(self._gate_changed) for link in self._chain.links]
        heartbeat = Heartbeat(
            self._store,
            self.job_id,
            self._clock,
            interval=self._options.heartbeat_interval,
            on_cancel=self.cancel,
        )
        poll = self._options.cancel_poll_interval
        watcher = asyncio.create_task(heartbeat.run(poll), name="kullbatch-watch")
        if self._cache is not None:
            images = self._cache.screen(images, self._cached)
        feeder = asyncio.create_task(self._feed(images), name="kullbatch-feed")
        try:
            await self._first(self._all_done, feeder)
            if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
                raise feeder.exception()  # type: ignore[misc]  # a broken store page
            if not self._stop.event.is_set():
                await self._first(self._all_done)  # or the stop event, which _first adds
        finally:
            for stop_hearing in unsubscribe:
                stop_hearing()
            live = [watcher, feeder, *self._live]
            for task in live:
                task.cancel()
            await asyncio.gather(*live, return_exceptions=True)
            for link in self._chain.links:
                if link.owns_gate:
                    await link.gate.close()
        state = self._stop.state or JobState.COMPLETED
        counters = self._report.counters
        stop, error = self._stop, self._stop.error
        unsent = counters.total - counters.rated - counters.failed
        if stop.state is None and self._budget and (held := self._budget.verdict(unsent)):
            state, error = JobState.PAUSED, held  # the budget was reached: resume goes on
        outcome = JobOutcome(state, counters.rated, counters.failed, error, stop.env_vars)
        self._report.publish(EventKind.ENDED, status=state, error=outcome.error)
        return outcome

    # -- scheduling ---------------------------------------------------------------------------

    async def _feed(self, images: Iterable[ImageInput] | AsyncIterable[ImageInput]) -> None:
        """The probe alone, then each image as soon as the gate (and the slots) admit it."""
        if isinstance(images, AsyncIterable):
            async for image in images:
                if not await self._release(image):
                    break
        else:
            for image in images:  # a list needs no async iteration: the hot path stays short
                if not await self._release(image):
                    break
        self._fed = True
        if self._unfinished == 0:
            self._all_done.set()

    async def _release(self, image: ImageInput) -> bool:
        """Send one image on its way; False once nothing more is to be sent."""
        link = self._chain.head
        if self._stop.event.is_set() or link is None:
            return False
        if self._budget is not None and not await self._budget.admit():
            return False  # the budget is reached: what is in flight finishes, nothing more
        if not self._probe_sent:
            self._probe_sent = True
            self._spawn(image, probe=True, admitted=None)
            await self._first(self._probe_answered)
            return True
        holds_bytes = self._holds_bytes(image, link)
        if self._slots.free(holds_bytes):  # the common case: only the gate to pass
            await link.gate.wait()
        else:
            await self._slots.acquire(holds_bytes)
            try:
                await link.gate.wait()
            except BaseException:
                self._slots.release(holds_bytes)
                raise
        self._spawn(image, probe=False, admitted=link)
        return True

    def _cached(self, image: ImageInput, answer: Answer) -> None:
        """A photo found in the cache: its copied answer is its result; nothing is sent."""
        if not self._stop.event.is_set():  # a stopped job leaves it pending, free next time
            self._report.rated(image.id, answer, attempt=0)

    def _spawn(self, image: ImageInput, *, probe: bool, admitted: Link | None) -> None:
        self._unfinished += 1
        task = asyncio.create_task(self._one(image, probe=probe, admitted=admitted))
        self._live.add(task)
        task.add_done_callback(self._live.discard)

    async def _first(self, *waitables: asyncio.Event | asyncio.Task[None]) -> None:
        """Wait until the first of these is set or done (without O(n) waits on all tasks)."""
        waiters = [
            asyncio.ensure_future(item.wait() if isinstance(item, asyncio.Event) else item)
            for item in (*waitables, self._stop.event)
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter, item in zip(waiters, (*waitables, self._stop.event), strict=True):
                if isinstance(item, asyncio.Event):
                    waiter.cancel()

    async def _one(self, image: ImageInput, *, probe: bool, admitted: Link | None) -> None:
        spent: tuple[Answer, str, str] | tuple[()] = ()  # what the budget is told it cost
        try:
            if self._chain.single:  # no fallback: one provider, the whole window
                link = self._chain.links[0]
                answer, attempts = await self._rate_with_retries(
                    image, link, admitted=admitted is not None, last=True
                )
            else:
                answer, attempts, link = await self._rate(image, admitted)
        except FatalJobError as exc:
            admin_log.error("[BatchProcessor] Job %s stopped: %s", self.job_id, exc.message)
            self._stop.request(JobState.FAILED, exc.message, exc.env_vars)
            return
        except GaveUp as gave_up:
            self._report.failed(image.id, gave_up.message, attempt=gave_up.attempts)
            if self._cache is not None:  # a photo following this one is sent itself
                self._cache.forget(image.id)
        else:
            rater = link.provider
            self._report.rated(
                image.id, answer, attempt=attempts, provider=rater.name, model=rater.model
            )
            spent = (answer, rater.name, rater.model)
        finally:
            if probe:
                self._probe_answered.set()
            if self._budget is not None:
                self._budget.ended(*spent)
        self._unfinished -= 1
        if self._fed and self._unfinished == 0:
            self._all_done.set()

    # -- one image ----------------------------------------------------------------------------

    async def _rate(self, image: ImageInput, admitted: Link | None) -> tuple[Answer, int, Link]:
        """Through the chain: each provider for its window, the last for the whole one."""
        link = admitted or self._chain.head
        attempts = 0
        while link is not None:
            after = self._chain.after(link)
            try:
                answer, tries = await self._rate_with_retries(
                    image, link, admitted=link is admitted, last=after is None
                )
            except FatalJobError as exc:
                if after is None:
                    raise
                self._provider_down(link, after, exc)
                attempts += 1
            except GaveUp as gave_up:
                if after is None or not gave_up.movable:
                    raise
                attempts += gave_up.attempts
                admin_log.warning(
                    "[BatchProcessor] Image %s moves from %s to %s: %s",
                    image.id,
                    link.provider.name,
                    after.provider.name,
                    gave_up.message,
                )
            else:
                return answer, attempts + tries, link
            admitted = None
            link = self._chain.after(link)
        raise FatalJobError("every provider of the job stopped: see the admin log")

    def _provider_down(self, link: Link, after: Link, exc: FatalJobError) -> None:
        if self._chain.take_down(link, exc.message):
            note = (
                f"{link.provider.name} stopped: {exc.message}; the rest of the job goes to "
                f"{after.provider.name} ({after.provider.model})"
            )
            admin_log.error("[BatchProcessor] Job %s: %s", self.job_id, note)
            self._report.publish(EventKind.NOTE, note=note)

    async def _rate_with_retries(
        self, image: ImageInput, link: Link, *, admitted: bool, last: bool
    ) -> tuple[Answer, int]:
        sending = Sending(self._policy if last else self._fallback_policy)

        def backoff(exc: Exception) -> float | None:
            if not isinstance(exc, ProviderError) or (not last and provider_specific(exc)):
                return None
            wait = sending.next_wait(exc, self._clock(), self._rng)
            if wait is not None:
                self._retry_scheduled(image, link, sending.retries, exc, wait)
            return wait

        async def attempt(number: int) -> Answer:
            if number == 1:
                return await self._attempt(image, link, sending, admitted=admitted)
            self._report.counters.retrying -= 1
            return await self._attempt(image, link, sending)

        try:
            return await retrying(attempt, backoff)
        except FatalJobError:
            raise
        except ProviderError as exc:
            elapsed = self._clock() - (sending.first_sent or self._clock())
            raise GaveUp.after(image.id, exc, sending.retries + 1, elapsed, last=last) from exc
        except Exception as exc:  # a bug in an adapter must not take 10,000 images down
            admin_log.exception("[BatchProcessor] Image %s: unexpected error", image.id)
            message = f"internal error: {type(exc).__name__}: {exc}"
            raise GaveUp(message, sending.retries + 1) from exc

    def _holds_bytes(self, image: ImageInput, link: Link) -> bool:
        return image.path is not None or link.provider.capabilities.inlines_url_images

    async def _attempt(
        self, image: ImageInput, link: Link, sending: Sending, *, admitted: bool = False
    ) -> Answer:
        """One request: a concurrency slot and a bytes slot (if needed), then the gate.

        The gate comes last, so that a hold or a pace applies to requests about to leave, not
        to tasks that would then queue behind a semaphore and leave whenever they get it. An
        `admitted` attempt was given its slots and its gate pass by the feeder.
        """
        holds_bytes = self._holds_bytes(image, link)
        if admitted:
            if self._slots.free(holds_bytes):
                return await self._send(image, link, sending)
            try:
                return await self._send(image, link, sending)
            finally:
                self._slots.release(holds_bytes)
        if self._slots.free(holds_bytes):  # the common case: nothing to hold
            await sending.through(link.gate)
            return await self._send(image, link, sending)
        await self._slots.acquire(holds_bytes)
        try:
            await sending.through(link.gate)
            return await self._send(image, link, sending)
        finally:
            self._slots.release(holds_bytes)

    async def _send(self, image: ImageInput, link: Link, sending: Sending) -> Answer:
        if sending.first_sent is None:  # the retry window starts at the first send
            sending.first_sent = self._clock()
        gate = link.gate
        try:
            source = None if self._cache is None else self._cache.take(image.id)
            prepared = await prepare(
                image, self._options.max_edge, fingerprint=self._options.fingerprint, source=source
            )
            answer = await link.provider.rate(prepared, self._prompt)
        except FatalJobError:
            raise  # the probe's fatal answer stops the job; the rest are never released
        except Exception as exc:
            gate.failed(exc)
            self._probe_answered.set()
            raise
        usage = answer.usage
        gate.answered(answer.limits, usage.input_tokens + usage.output_tokens)
        self._probe_answered.set()
        if self._cache is not None:
            answer = self._cache.keyed(image.id, answer, link.provider.name, link.provider.model)
        if prepared.fingerprint is None:
            return answer
        return replace(answer, fingerprint=prepared.fingerprint)

    def _retry_scheduled(
        self, image: ImageInput, link: Link, retries: int, exc: ProviderError, wait: float
    ) -> None:
        self._report.counters.retrying += 1  # before the hold: its GATE event counts this one
        link.gate.retrying(exc, wait)
        admin_log.warning(
            "[BatchProcessor] Image %s attempt %d failed: %s. Retrying in %s",
            image.id,
            retries,
            exc.message.rstrip("."),
            format_wait_ms(wait),
        )
        self._report.retrying(image.id, exc.message, attempt=retries, wait=wait)

    # -- events -------------------------------------------------------------------------------

    def _gate_changed(self, state: GateState) -> None:
        self._report.publish(EventKind.GATE, wait=state.holding_for, rate=state.rate_per_minute)
