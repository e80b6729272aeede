"""An asyncio loop whose clock jumps to the next timer instead of sleeping.

Retries over a six-hour window, backoff schedules and rate-limit holds run in milliseconds
of real time, while `loop.time()` (the engine's injected clock) reads as if hours passed.
Real I/O (SQLite worker threads) still completes: the loop only jumps when nothing is ready.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector:
    def __init__(self, real: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._real = real
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None or timeout <= 0:
            return self._real.select(timeout)
        # let worker threads (aiosqlite) post their results before time jumps ahead
        events = self._real.select(0.0005)
        if not events:
            self._loop.virtual_now += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 1000.0
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[has-type,assignment]

    def time(self) -> float:
        return self.virtual_now


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
