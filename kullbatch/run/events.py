"""A job's running counts and the `ProgressEvent`s built from them, for every subscriber.

The fast engine and the economy runner report the same way: each step becomes one event with
the job's counts, its shoot, the provider and an ETA, handed to the store's writer, the
progress display and the WebSocket hub in turn. A broken subscriber never stops a job.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kullbatch.models import EventKind, ProgressEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

admin_log = logging.getLogger("kullbatch.admin")


def eta_seconds(done: int, total: int, elapsed: float) -> int | None:
    """Seconds left at the average pace so far; None until an image is done."""
    if done <= 0 or elapsed < 0:
        return None
    remaining = max(total - done, 0)
    return math.ceil(remaining * elapsed / done)


@dataclass(slots=True)
class Counters:
    total: int = 0
    rated: int = 0
    failed: int = 0
    retrying: int = 0


class Reporter:
    """Counts one run of a job and publishes its events."""

    def __init__(
        self,
        *,
        job_id: str,
        shoot_id: str,
        provider: str,
        model: str,
        subscribers: Sequence[Callable[[ProgressEvent], None]],
        clock: Callable[[], float],
    ) -> None:
        self.job_id = job_id
        self.shoot_id = shoot_id
        self.provider = provider
        self.model = model
        self.counters = Counters()
        self._subscribers = list(subscribers)
        self._clock = clock
        self._started_at = clock()
        self._done_before = 0

    def start(self, total: int, rated: int, failed: int) -> None:
        """A run begins with what earlier runs of the job already stored."""
        self.counters = Counters(total=total, rated=rated, failed=failed)
        self._done_before = rated + failed
        self._started_at = self._clock()
        self.publish(EventKind.STARTED)

    def publish(
        self,
        kind: EventKind,
        *,
        provider: str | None = None,
        model: str | None = None,
        **fields: Any,
    ) -> None:
        counters = self.counters
        done = counters.rated + counters.failed - self._done_before
        event = ProgressEvent(
            kind=kind,
            job_id=self.job_id,
            total=counters.total,
            rated=counters.rated,
            failed=counters.failed,
            retrying=counters.retrying,
            shoot_id=self.shoot_id,
            provider=provider or self.provider,
            model=model or self.model,
            eta=None if done <= 0 else self.eta(),
            **fields,
        )
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:  # a broken display must not stop the job
                admin_log.exception("progress subscriber %r failed", subscriber)

    def eta(self) -> int | None:
        """Seconds left at this run's pace so far; None until an image of this run ended."""
        counters = self.counters
        done = counters.rated + counters.failed
        elapsed = self._clock() - self._started_at
        return eta_seconds(done - self._done_before, counters.total - self._done_before, elapsed)
