"""A gate per provider that learns the allowed send rate and paces new sends to it.

It starts open ("all at once"). It learns from three sources:

- the limit headers of every answer (`RateLimits`): a requests-per-minute limit becomes a pace
  slightly under it, and a tokens-per-minute limit, divided by the tokens an answer costs,
  another; the slower wins;
- a 429 with a hint: nobody sends until the hint has passed (capped by the caller);
- a 429 without limit headers while requests are going out fast (2 or more a second) and a
  quarter or more of the recent answers are 429s: the pace halves (from the rate requests
  were being sent at), at most once a second, and then grows back by 5 % a second while
  answers arrive (AIMD). A trickle of retries, or a few stray 429s among many good answers,
  is left to the per-image schedules.

`--rpm` states a known limit, and so does a limit header, however low: the pace never exceeds
them. The retry schedules of each image are not touched; the gate only decides when a request,
new or retried, may leave, and turns a retry away rather than hold it past its window.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kullbatch.errors import FlexUnavailable, RateLimited

if TYPE_CHECKING:
    from collections.abc import Callable

    from kullbatch.errors import ProviderError
    from kullbatch.models import RateLimits

HEADROOM = 0.95  # pace under a stated limit: a server's window edges are never exact
DECREASE = 0.5
INCREASE_PER_SECOND = 0.05
MIN_RATE = 0.2  # requests per second: 429s alone never slow a job below this
BURST_RATE = 2.0  # requests per second: below this, 429s are the schedules' business
OVERLOAD_SHARE = 0.25  # a few 429s among many answers are noise; a quarter means "too fast"
SEND_WINDOW = 2.0  # seconds of sends the current send rate is measured over
BURST_SECONDS = 0.1  # at most this much of the pace is released at once
RELEASE_QUANTUM = 0.025  # seconds the dispatcher sleeps at least: a fast pace is let go in
# small handfuls (12 at 500/s), not one timer and one wake-up per request: each wake-up of the
# event loop costs more CPU than the requests it lets go (tests/benchmarks/scale.py)
EPSILON = 1e-9
TOKEN_AVERAGE_WEIGHT = 0.1
DEADLINE_SLACK = 1e-3  # seconds: a deadline met to the millisecond is met (float sums, clocks)


@dataclass(frozen=True, slots=True)
class GateState:
    """What the progress display shows: a hold in seconds, and the pace if one is set."""

    holding_for: float
    rate_per_minute: float | None


class Gate:
    """FIFO waiters released by one dispatcher at the learned pace; free when no pace is set."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        rpm: float | None = None,
        on_change: Callable[[GateState], None] | None = None,
    ) -> None:
        self._clock = clock
        self._ceiling = rpm / 60 if rpm else None
        self._rate: float | None = self._ceiling
        self._from_headers = False
        self._open_at = 0.0
        self._last_decrease = float("-inf")
        self._last_increase = clock()
        self._tokens_per_request: float | None = None
        self._tokens = 1.0  # the pace's bucket: slots that may go now
        self._accrued_at = clock()
        # FIFO callers, each with the time by which it must have gone (inf: no deadline)
        self._waiters: collections.deque[tuple[asyncio.Future[bool], float]] = collections.deque()
        self._soonest = math.inf  # no waiter's deadline comes before this
        self._wake_at = 0.0  # when the dispatcher next releases anyone
        self._dispatcher: asyncio.Task[None] | None = None
        self._sends: collections.deque[float] = collections.deque()
        self._outcomes: collections.deque[tuple[float, bool]] = collections.deque()
        self._limited = 0  # 429s among _outcomes
        # every job sending through this gate hears of its changes (one account, many jobs)
        self._listeners: list[Callable[[GateState], None]] = (
            [] if on_change is None else [on_change]
        )

    # -- what callers read --------------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """Requests per second new sends are paced to; None means no pacing."""
        return self._rate

    def holding_for(self) -> float:
        return max(0.0, self._open_at - self._clock())

    def state(self) -> GateState:
        return GateState(self.holding_for(), None if self._rate is None else self._rate * 60)

    # -- learning -----------------------------------------------------------------------------

    def hold(self, seconds: float) -> None:
        """A server asked for `seconds` of quiet: nobody sends before then."""
        if self._clock() + seconds > self._open_at:
            self._open_at = self._clock() + seconds
            self._changed()

    def answered(self, limits: RateLimits | None, tokens: int = 0) -> None:
        """An answer came back (any status but 429): learn from its headers, grow the pace."""
        now = self._clock()
        self._outcome(now, limited=False)
        if tokens > 0:
            previous = self._tokens_per_request or tokens
            self._tokens_per_request = previous + TOKEN_AVERAGE_WEIGHT * (tokens - previous)
        if limits is not None and self._learn_from_headers(limits):
            return
        if self._rate is not None and not self._from_headers:
            self._grow(now)

    def failed(self, error: Exception) -> None:
        """A request failed: a 429 teaches the pace; any other failure (a flex refusal too:
        the tier was full, the account not too fast) is an answer."""
        if isinstance(error, RateLimited) and not isinstance(error, FlexUnavailable):
            self.rate_limited(error.limits)
        else:
            self.answered(getattr(error, "limits", None))

    def retrying(self, error: ProviderError, wait: float) -> None:
        """A retry comes in `wait` seconds: a 429's hint holds every sender on the account,
        as long as the hint says but no longer than the wait (bounded by the window, as it is).
        """
        if isinstance(error, FlexUnavailable):
            return  # the flex tier's capacity, not the account's pace: nobody else waits
        if isinstance(error, RateLimited) and error.retry_after is not None:
            self.hold(min(error.retry_after, wait))

    def rate_limited(self, limits: RateLimits | None) -> None:
        """A 429 arrived: headers say the pace; without them, halve it (once a second)."""
        if limits is not None and self._learn_from_headers(limits):
            return
        now = self._clock()
        share = self._outcome(now, limited=True)
        sending = self._send_rate(now)
        if now - self._last_decrease < 1.0 or sending < BURST_RATE or share < OVERLOAD_SHARE:
            return
        self._last_decrease = now
        self._last_increase = now
        base = sending if self._rate is None else min(self._rate, sending)
        self._set_rate(max(MIN_RATE, base * DECREASE), from_headers=False)

    def _learn_from_headers(self, limits: RateLimits) -> bool:
        rates = []
        if limits.requests_limit:
            rates.append(limits.requests_limit / 60 * HEADROOM)
        if limits.tokens_limit and self._tokens_per_request:
            rates.append(limits.tokens_limit / 60 / self._tokens_per_request * HEADROOM)
        if not rates:
            return False
        self._set_rate(min(rates), from_headers=True)  # the server's word, however low
        return True

    def _outcome(self, now: float, *, limited: bool) -> float:
        """Record an answer; returns the share of 429s among the recent ones."""
        self._outcomes.append((now, limited))
        self._limited += limited
        while self._outcomes[0][0] < now - SEND_WINDOW:
            self._limited -= self._outcomes.popleft()[1]
        return self._limited / len(self._outcomes)

    def _sent(self, now: float) -> None:
        self._sends.append(now)
        while self._sends[0] < now - SEND_WINDOW:
            self._sends.popleft()

    def _send_rate(self, now: float) -> float:
        while self._sends and self._sends[0] < now - SEND_WINDOW:
            self._sends.popleft()
        return len(self._sends) / SEND_WINDOW

    def _grow(self, now: float) -> None:
        assert self._rate is not None
        elapsed = now - self._last_increase
        if elapsed >= 1.0:
            self._last_increase = now
            self._set_rate(self._rate * (1 + INCREASE_PER_SECOND) ** elapsed, from_headers=False)

    def _set_rate(self, rate: float, *, from_headers: bool) -> None:
        if self._ceiling is not None:
            rate = min(rate, self._ceiling)
        self._from_headers = from_headers
        if self._rate is None or abs(rate - self._rate) > 0.01 * self._rate:
            self._rate = rate
            self._changed()

    def _changed(self) -> None:
        if self._listeners:
            state = self.state()
            for listener in list(self._listeners):
                listener(state)

    def subscribe(self, listener: Callable[[GateState], None]) -> Callable[[], None]:
        """Hear of holds and pace changes; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def limit_to(self, rpm: float) -> None:
        """A stated requests-per-minute limit: the pace never exceeds the lowest one stated."""
        ceiling = rpm / 60
        if self._ceiling is None or ceiling < self._ceiling:
            self._ceiling = ceiling
            if self._rate is None or self._rate > ceiling:
                self._set_rate(ceiling, from_headers=self._from_headers)

    # -- waiting ------------------------------------------------------------------------------

    async def wait(self, until: float = math.inf) -> bool:
        """True when this caller may send, FIFO among callers; False (it must not send) as soon
        as the gate cannot let it go by `until`: a retry is not held past its window."""
        now = self._clock()
        if self._rate is None and not self._waiters and self._open_at <= now:
            self._sent(now)
            return True  # the fast path: no pace, no hold
        if self._rate is not None and not self._waiters and self._open_at <= now:
            self._refill(now)
            if self._tokens >= 1 - EPSILON:  # a slot is free: no queue, no dispatcher
                self._tokens -= 1
                self._sent(now)
                return True
        if until + DEADLINE_SLACK < max(now, self._open_at, self._wake_at):
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append((future, until))
        self._soonest = min(self._soonest, until)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="kullbatch-gate")
        return await future

    def _refill(self, now: float) -> None:
        assert self._rate is not None
        burst = max(1.0, self._rate * BURST_SECONDS)
        self._tokens = min(burst, self._tokens + (now - self._accrued_at) * self._rate)
        self._accrued_at = now

    async def close(self) -> None:
        """Stop the dispatcher (the job ended); waiters still queued are cancelled."""
        for waiter, _ in self._waiters:
            waiter.cancel()
        self._waiters.clear()
        self._soonest, self._wake_at = math.inf, 0.0
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher

    async def _dispatch(self) -> None:
        """A token bucket: slots accrue at the pace, up to a tenth of a second's worth at once,
        so a fast pace releases many callers per pass instead of one per event-loop turn."""
        while self._waiters:
            now = self._clock()
            if self._open_at > now:
                await self._sleep_until(self._open_at, now)
                continue
            if self._rate is None:
                self._tokens, self._accrued_at = float(len(self._waiters)), now
            else:
                self._refill(now)
            if self._tokens < 1 - EPSILON:  # float sums of slot fractions land a hair under 1
                assert self._rate is not None
                wait = max((1 - self._tokens) / self._rate, RELEASE_QUANTUM)
                await self._sleep_until(now + wait, now)
                continue
            while self._tokens >= 1 - EPSILON and self._waiters:
                waiter, _ = self._waiters.popleft()
                if not waiter.done():  # a cancelled caller does not use up a slot
                    waiter.set_result(True)
                    self._sent(now)
                    self._tokens -= 1

    async def _sleep_until(self, wake_at: float, now: float) -> None:
        """Sleep until the next release; first turn away the callers whose deadline comes
        before it (the gate will not let them go in time)."""
        if self._soonest + DEADLINE_SLACK < wake_at:
            kept: collections.deque[tuple[asyncio.Future[bool], float]] = collections.deque()
            for waiter, until in self._waiters:
                if until + DEADLINE_SLACK >= wake_at:
                    kept.append((waiter, until))
                elif not waiter.done():
                    waiter.set_result(False)
            self._waiters = kept
            self._soonest = min((until for _, until in kept), default=math.inf)
            if not kept:
                return
        self._wake_at = wake_at
        await asyncio.sleep(wake_at - now)


class Slots:
    """What else a request holds while it is out: a concurrency slot (`--concurrency N`) and,
    for a photo held as bytes (a local file, a downloaded URL), a bytes slot that bounds memory.
    """

    def __init__(self, concurrency: int, bytes_limit: int) -> None:
        self._concurrency = asyncio.Semaphore(concurrency) if concurrency > 0 else None
        self._bytes = asyncio.Semaphore(max(1, bytes_limit))

    def free(self, holds_bytes: bool) -> bool:
        """Nothing to hold: no concurrency cap and no bytes (the common case)."""
        return self._concurrency is None and not holds_bytes

    async def acquire(self, holds_bytes: bool) -> None:
        """A concurrency slot, then a bytes slot, as needed."""
        if self._concurrency is not None:
            await self._concurrency.acquire()
        if holds_bytes:
            try:
                await self._bytes.acquire()
            except BaseException:
                if self._concurrency is not None:
                    self._concurrency.release()
                raise

    def release(self, holds_bytes: bool) -> None:
        if holds_bytes:
            self._bytes.release()
        if self._concurrency is not None:
            self._concurrency.release()
