"""A running job's pulse in the database: the heartbeat `status` reads, and the cancel flag.

`kullbatch status` tells a live job from a dead one by its heartbeat (stale after 30 s), and
`kullbatch cancel` from another process sets a flag the owner reads here. The fast engine and
the economy runner both run one (`run`) as a task of its own for the job's whole life, so that
no slow step (an upload, a retried call) can make a live job look dead.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from kullbatch.store.database import Store

admin_log = logging.getLogger("kullbatch.admin")


class Heartbeat:
    """Beats every `interval` seconds; between beats, reads the cancel flag."""

    def __init__(
        self,
        store: Store,
        job_id: str,
        clock: Callable[[], float],
        *,
        interval: float,
        on_cancel: Callable[[], None],
    ) -> None:
        self._store = store
        self._job_id = job_id
        self._clock = clock
        self._interval = interval
        self._on_cancel = on_cancel
        self._last_beat = clock()

    async def check(self) -> bool:
        """Beat if due, else read the flag; True (and `on_cancel` called) if cancel was asked."""
        try:
            if self._clock() - self._last_beat >= self._interval:
                self._last_beat = self._clock()
                requested = await self._store.beat(self._job_id)
            else:
                requested = await self._store.cancel_requested(self._job_id)
        except Exception:  # a busy or broken database must not silence the heartbeat
            admin_log.exception("[BatchProcessor] Job %s: heartbeat failed", self._job_id)
            return False
        if requested:
            self._on_cancel()
        return requested

    async def run(self, poll_interval: float, *, beat_after_cancel: bool = False) -> None:
        """Check every `poll_interval` seconds until a cancel is asked; with
        `beat_after_cancel`, go on beating (not reading the flag again) until the task is
        cancelled: a job that winds down after a cancel (an economy job cancelling its
        provider batches and collecting what they finished) is still alive."""
        while True:
            await asyncio.sleep(poll_interval)
            if await self.check():
                break
        while beat_after_cancel:
            await asyncio.sleep(poll_interval)
            await self._beat_if_due()

    async def _beat_if_due(self) -> None:
        if self._clock() - self._last_beat < self._interval:
            return
        self._last_beat = self._clock()
        try:
            await self._store.beat(self._job_id)
        except Exception:  # a busy or broken database must not stop the job
            admin_log.exception("[BatchProcessor] Job %s: heartbeat failed", self._job_id)
