"""Which wait follows which failure: the spec's two schedules, hints, jitter and the window.

stamina runs the attempts (`retrying`, the one retry loop: fast mode's requests and economy
mode's batch calls alike); this module decides, per failure, whether there is another attempt
and how long to wait before it. Time is always passed in, so the six-hour window is tested with
numbers, not with sleeping; `Sending` keeps one image's count on one provider, and passes it
through the provider's gate only while its window lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import stamina

from kullbatch.errors import (
    FlexUnavailable,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Retryable,
    provider_specific,
)
from kullbatch.models import DEFAULT_MAX_RETRY_TIME

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from kullbatch.run.ratelimit import Gate

T = TypeVar("T")

admin_log = logging.getLogger("kullbatch.admin")

JITTER = 0.1  # up to +10 % on a wait, so that 10,000 images do not retry in lock step


@dataclass(frozen=True, slots=True)
class Schedule:
    """initial * 2**n seconds, the last step replaced by `cap`."""

    initial: float
    cap: float
    steps: int  # doublings before the cap: 1,2,4,…,32 is 6 steps, then 60

    def base_wait(self, retry_number: int) -> float:
        """Wait before retry `retry_number` (1 = the first retry), without jitter."""
        exponent = retry_number - 1
        if exponent >= self.steps:
            return self.cap
        return min(self.initial * float(2**exponent), self.cap)


RATE_LIMIT_SCHEDULE = Schedule(initial=1.0, cap=60.0, steps=6)  # 1,2,4,8,16,32,60
OTHER_SCHEDULE = Schedule(initial=2.0, cap=120.0, steps=6)  # 2,4,8,16,32,64,120


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, Retryable)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The per-image retry window, the two schedules and the jitter."""

    max_retry_time: float = DEFAULT_MAX_RETRY_TIME
    jitter: float = JITTER
    rate_limit: Schedule = RATE_LIMIT_SCHEDULE
    other: Schedule = OTHER_SCHEDULE

    def schedule_for(self, error: ProviderError) -> Schedule:
        return self.rate_limit if isinstance(error, RateLimited) else self.other

    def next_wait(
        self,
        error: ProviderError,
        retry_number: int,
        started_at: float,
        now: float,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before retry `retry_number`, or None when the image should fail.

        A wait that would end beyond the window is shortened to end at it, so that one last
        attempt is made exactly when the window closes; a flex refusal's, to end when the photo
        goes at the standard tier.
        """
        if not is_retryable(error):
            return None
        deadline = started_at + self.max_retry_time
        if now >= deadline:
            return None
        wait = jittered(self.schedule_for(error), retry_number, _hint(error), self.jitter, rng)
        if isinstance(error, FlexUnavailable) and error.standard_in is not None:
            wait = min(wait, error.standard_in)  # then the standard tier: no longer to wait
        return min(wait, deadline - now)


def _hint(error: ProviderError) -> float | None:
    return error.retry_after if isinstance(error, Retryable) else None


def jittered(
    schedule: Schedule,
    retry_number: int,
    hint: float | None,
    jitter: float,
    rng: random.Random | None = None,
) -> float:
    """The schedule's wait (or the server's hint), capped, with up to `jitter` added.

    A hint never makes the wait shorter than the schedule's first step: `retry-after: 0`, a date
    in the past or `retryDelay: "0s"` would otherwise retry as fast as answers come back.
    The cap is a hard ceiling: at the cap, jitter goes downwards instead.
    """
    base = schedule.base_wait(retry_number) if hint is None else max(schedule.initial, hint)
    base = min(base, schedule.cap)
    spread = (rng or random).uniform(0.0, jitter)
    if base * (1 + spread) > schedule.cap:
        return schedule.cap * (1 - spread)
    return base * (1 + spread)


@dataclass(slots=True)
class Sending:
    """One image's retries on one provider: its window opens when the image is first sent."""

    policy: RetryPolicy
    first_sent: float | None = None
    retries: int = 0
    failed: ProviderError | None = None  # the failure the coming retry answers
    closed: bool = False  # the gate would hold the coming retry past the window: no more

    @property
    def deadline(self) -> float:
        """When the window closes; never, before the image is first sent."""
        if self.first_sent is None:
            return math.inf
        return self.first_sent + self.policy.max_retry_time

    def next_wait(
        self, error: ProviderError, now: float, rng: random.Random | None = None
    ) -> float | None:
        """The wait before the next retry (which is then counted), or None: no more retries."""
        if self.closed:
            return None
        started = now if self.first_sent is None else self.first_sent
        wait = self.policy.next_wait(error, self.retries + 1, started, now, rng)
        if wait is not None:
            self.retries += 1
            self.failed = error
        return wait

    async def through(self, gate: Gate) -> None:
        """Pass `gate` within the window; a retry the gate would hold past it is not made, and
        the failure before it stands (raised again, it ends the image's retries)."""
        if not await gate.wait(self.deadline):
            assert self.failed is not None  # an image not yet sent has no deadline
            self.retries -= 1
            self.closed = True
            raise self.failed


async def retrying(
    attempt: Callable[[int], Awaitable[T]], backoff: Callable[[Exception], float | None]
) -> tuple[T, int]:
    """`attempt(n)` (n = 1, 2, ...) until it succeeds: (its result, n). After a failure,
    `backoff` gives the wait before the next attempt, or None: the failure is raised.

    Most calls succeed at once: stamina's machinery is built only for the others.
    """
    try:
        return await attempt(1), 1
    except Exception as exc:
        wait = backoff(exc)
        if wait is None:
            raise
        forget_tracebacks(exc)
    await asyncio.sleep(wait)

    def on(exc: Exception) -> bool | float:
        wait = backoff(exc)
        if wait is None:
            return False
        forget_tracebacks(exc)
        return wait

    async for each in stamina.retry_context(on=on, attempts=None, timeout=None):
        with each:
            return await attempt(each.num + 1), each.num + 1
    raise AssertionError("unreachable: stamina either returns or raises")


def forget_tracebacks(error: BaseException) -> None:
    """Drop the tracebacks of a failure that will be retried (and of its causes): they hold the
    frames of the failed attempt, its request, its socket, about 70 KB a photo, for the whole
    wait, while 10,000 photos wait out an outage. Only the message is ever reported."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        each = pending.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        each.__traceback__ = None
        pending += [each.__cause__, each.__context__]


def format_wait_ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


class GaveUp(Exception):
    """An image's retries are over: it is stored as failed with its last error."""

    def __init__(self, message: str, attempts: int, *, movable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts
        # another provider may do better: its window ran out, or this provider refused it
        self.movable = movable

    @classmethod
    def after(
        cls, image_id: str, exc: ProviderError, attempts: int, elapsed: float, *, last: bool = True
    ) -> GaveUp:
        """The verdict, and the admin log's last line for an image that fails for good (in the
        spec's format); one that moves to the next provider (`last` False) is not logged here.
        """
        movable = isinstance(exc, Retryable) or provider_specific(exc)
        if movable and not last:
            return cls(exc.message, attempts, movable=True)
        if isinstance(exc, PermanentImageError):
            admin_log.warning("[BatchProcessor] Image %s failed: %s", image_id, exc.message)
        else:
            admin_log.error(
                "[BatchProcessor] Image %s failed permanently after %d attempts (%s): %s",
                image_id,
                attempts,
                format_wait_ms(elapsed),
                exc.message,
            )
        return cls(exc.message, attempts, movable=movable)


def quiet_stamina() -> None:
    """stamina logs every retry by default; ours go to the admin log in the spec's format."""
    with contextlib.suppress(Exception):
        stamina.instrumentation.set_on_retry_hooks([])
