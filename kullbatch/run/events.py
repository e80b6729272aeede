"""A job's running counts, where each photo's result goes, and the `ProgressEvent`s announced.

The fast engine and the economy runner report the same way, through a `Reporter`: a photo's
result is counted and handed to the job's `ResultSink` (the store, which commits it soon), then
each step becomes one event with the job's counts, its shoot, the provider and an ETA, handed to
the progress display and the WebSocket hub in turn. Results never travel on the events: a
subscriber shows progress, it does not keep results. A broken subscriber never stops a job.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kullbatch.models import EventKind, ProgressEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kullbatch.models import Answer

admin_log = logging.getLogger("kullbatch.admin")


def eta_seconds(done: int, total: int, elapsed: float) -> int | None:
    """Seconds left at the average pace so far; None until an image is done."""
    if done <= 0 or elapsed < 0:
        return None
    remaining = max(total - done, 0)
    return math.ceil(remaining * elapsed / done)


class ResultSink(Protocol):
    """Where a job's results are kept: the store (`store.database.Store`) has these methods.

    Called on the event loop, once per photo (and per retry), so a call only queues: the
    result is on disk within a moment. `counts` is the job's (rated, failed) with this result.
    """

    def rated(
        self,
        job_id: str,
        image_id: str,
        answer: Answer,
        *,
        attempt: int,
        provider: str,
        model: str,
        batch_priced: bool = False,
        counts: tuple[int, int],
    ) -> None:
        """Rated by `provider`'s `model` at the `attempt`-th request; through a batch API
        (half price) when `batch_priced`."""

    def failed(
        self, job_id: str, image_id: str, error: str, *, attempt: int, counts: tuple[int, int]
    ) -> None:
        """Failed for good with `error` after `attempt` requests."""

    def retried(self, job_id: str, image_id: str, error: str, *, attempt: int) -> None:
        """Request `attempt` failed with `error`; the photo will be sent again."""


@dataclass(slots=True)
class Counters:
    total: int = 0
    rated: int = 0
    failed: int = 0
    retrying: int = 0


class Reporter:
    """Counts one run of a job, hands its results to the sink and publishes its events."""

    def __init__(
        self,
        *,
        job_id: str,
        shoot_id: str,
        provider: str,
        model: str,
        sink: ResultSink,
        subscribers: Sequence[Callable[[ProgressEvent], None]],
        clock: Callable[[], float],
    ) -> None:
        self.job_id = job_id
        self._sink = sink
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

    # -- results: counted, kept, announced ------------------------------------------------------

    def rated(
        self,
        image_id: str,
        answer: Answer,
        *,
        attempt: int,
        provider: str | None = None,
        model: str | None = None,
        batch_priced: bool = False,
    ) -> None:
        """A photo rated, by the job's own provider unless a fallback's is named."""
        counters = self.counters
        counters.rated += 1
        try:
            self._sink.rated(
                self.job_id,
                image_id,
                answer,
                attempt=attempt,
                provider=provider or self.provider,
                model=model or self.model,
                batch_priced=batch_priced,
                counts=(counters.rated, counters.failed),
            )
        except Exception:  # as when the store listened on the events: the job goes on
            admin_log.exception("result sink failed on %s", image_id)
        self.publish(EventKind.RATED, image_id=image_id, provider=provider)

    def failed(self, image_id: str, error: str, *, attempt: int) -> None:
        """A photo failed for good."""
        counters = self.counters
        counters.failed += 1
        try:
            self._sink.failed(
                self.job_id,
                image_id,
                error,
                attempt=attempt,
                counts=(counters.rated, counters.failed),
            )
        except Exception:
            admin_log.exception("result sink failed on %s", image_id)
        self.publish(EventKind.FAILED, image_id=image_id, error=error, attempt=attempt)

    def retrying(self, image_id: str, error: str, *, attempt: int, wait: float) -> None:
        """A request failed; the photo goes again in `wait` seconds (the engine counts it in
        and out of `counters.retrying`)."""
        try:
            self._sink.retried(self.job_id, image_id, error, attempt=attempt)
        except Exception:
            admin_log.exception("result sink failed on %s", image_id)
        self.publish(EventKind.RETRYING, image_id=image_id, error=error, attempt=attempt, wait=wait)

    def publish(self, kind: EventKind, *, provider: str | None = None, **fields: Any) -> None:
        if not self._subscribers:  # nobody listens (`--quiet`): no event to build
            return
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
