"""Economy mode's calls to a provider's batch API: retried, and stoppable at any moment.

A batch call (an upload, a create, a poll, a results download, a cancel) is retried through
rate limits and outages like a fast-mode request: the same loop (`retry.retrying`), the same
schedules and window (`retry.Sending`), and the same gate, the provider account's: each
attempt waits for it, and tells it how the call went (a 429 paces, and its hint holds, every
sender on the account, fast-mode jobs included). Each attempt, and each wait before the
next, is raced against Ctrl-C and `kullbatch cancel`:

- Ctrl-C abandons whatever is under way at once (the provider's batches keep running, for
  `resume`);
- a cancel abandons what was started before it (it changes what the job does next), while
  the calls the cancel itself makes (looking a batch up, cancelling it, collecting what it
  finished anyway) run to their end; only Ctrl-C stops those.

An abandoned call raises `Stopped`; the economy runner decides what follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, TypeVar

from kullbatch.errors import FatalJobError, ProviderError, Retryable
from kullbatch.run.retry import RetryPolicy, Sending, retrying

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable

    from kullbatch.run.ratelimit import Gate

admin_log = logging.getLogger("kullbatch.admin")

T = TypeVar("T")


class Stopped(Exception):
    """A batch call or a wait was abandoned for Ctrl-C or a cancel."""


class Stops:
    """Ctrl-C and cancel of one economy job, as flags and as events a call is raced against."""

    def __init__(self) -> None:
        self.interrupted = False
        self.cancelled = False
        self._any = asyncio.Event()  # Ctrl-C or cancel
        self._interrupt = asyncio.Event()  # Ctrl-C only

    def interrupt(self) -> None:
        self.interrupted = True
        self._interrupt.set()
        self._any.set()

    def cancel(self) -> None:
        self.cancelled = True
        self._any.set()

    @property
    def stopping(self) -> bool:
        return self.interrupted or self.cancelled

    def watched(self) -> asyncio.Event:
        """What stops work that starts now: any stop, or once cancelled, Ctrl-C only."""
        return self._interrupt if self.cancelled else self._any

    async def race(self, work: Awaitable[T], watched: asyncio.Event) -> T:
        """`work`'s result, or `Stopped` (and `work` cancelled) once `watched` is set.

        `work` runs in the calling task, as under `asyncio.timeout`: a stop cancels that task
        and the cancellation comes out as `Stopped`; anything else `work` raises comes out as
        it is.
        """
        task = asyncio.current_task()
        assert task is not None
        running, stopped = True, False

        def stop(_: object) -> None:
            nonlocal stopped
            if running:
                stopped = True
                task.cancel()

        waiter = asyncio.ensure_future(watched.wait())
        waiter.add_done_callback(stop)
        try:
            return await work
        except asyncio.CancelledError:
            if stopped and task.uncancel() == 0:
                raise Stopped from None
            raise
        finally:
            running = False
            waiter.cancel()

    async def sleep(self, seconds: float, watched: asyncio.Event) -> None:
        """Wait `seconds`, or raise `Stopped` as soon as `watched` is set."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watched.wait(), seconds)
        if watched.is_set():
            raise Stopped


class BatchCalls:
    """Makes one job's batch calls: each retried through passing errors, each stoppable,
    each through the provider account's gate."""

    def __init__(
        self,
        job_id: str,
        stops: Stops,
        gate: Gate,
        *,
        max_retry_time: float,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._job_id = job_id
        self._stops = stops
        self._gate = gate
        self._policy = RetryPolicy(max_retry_time=max_retry_time)
        self._clock = clock
        self._rng = rng

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried like a fast-mode request until the job's window ends."""
        watched = self._stops.watched()
        if watched.is_set():
            raise Stopped
        sending = Sending(self._policy)

        def backoff(exc: Exception) -> float | None:
            if not isinstance(exc, Retryable):
                return None
            wait = sending.next_wait(exc, self._clock(), self._rng)
            if wait is not None:
                self._gate.retrying(exc, wait)
                admin_log.warning(
                    "[BatchProcessor] Job %s batch call failed: %s. Retrying in %.0f ms",
                    self._job_id,
                    exc.message,
                    wait * 1000,
                )
            return wait

        async def attempt(_: int) -> T:
            await sending.through(self._gate)
            if sending.first_sent is None:  # the window opens at the first send
                sending.first_sent = self._clock()
            try:
                result = await call()
            except FatalJobError:
                raise  # the job stops: nothing to teach the gate
            except ProviderError as exc:
                self._gate.failed(exc)
                raise
            self._gate.answered(None)
            return result

        try:
            result, _ = await self._stops.race(retrying(attempt, backoff), watched)
        except Retryable as exc:
            tries = sending.retries + 1
            raise FatalJobError(f"{exc.message} (gave up after {tries} tries)") from exc
        return result

    async def pause(self, seconds: float) -> None:
        """The wait between two polls; `Stopped` on Ctrl-C, or on a cancel not yet acted on."""
        await self._stops.sleep(seconds, self._stops.watched())
