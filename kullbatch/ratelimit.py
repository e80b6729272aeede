"""A gate per provider: after a 429 with a hint, new sends wait too, not only the image retried."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


class Gate:
    """Holds every send to one provider until the time its last rate-limit answer asked for."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._open_at = 0.0

    def hold(self, seconds: float) -> None:
        """A server asked for `seconds` of quiet: nobody sends before then."""
        self._open_at = max(self._open_at, self._clock() + seconds)

    def holding_for(self) -> float:
        return max(0.0, self._open_at - self._clock())

    async def wait(self) -> float:
        """Sleep until the gate is open; returns how long this caller waited."""
        waited = 0.0
        while (delay := self._open_at - self._clock()) > 0:
            await asyncio.sleep(delay)
            waited += delay
        return waited
