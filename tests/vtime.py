"""An asyncio loop whose clock jumps to the next timer instead of sleeping.

Retries over a six-hour window, backoff schedules and rate-limit holds run in milliseconds
of real time, while `loop.time()` (the engine's injected clock) reads as if hours passed.
Real I/O (SQLite worker threads) still completes: the loop only jumps when nothing is ready
and no worker thread (aiosqlite's, or the default executor's) still owes it an answer, so a
busy machine cannot make hours pass while a commit is under way.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiosqlite.core

T = TypeVar("T")


class _JumpingSelector:
    def __init__(self, real: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._real = real
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None or timeout <= 0:
            return self._real.select(timeout)
        events = self._real.select(0.0005)
        if events:
            return events
        if self._loop.thread_work > 0:
            # a worker thread owes the loop an answer: wait for it in real time, no jump
            return self._real.select(THREAD_WAIT)
        self._loop.virtual_now += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 1000.0
        self.thread_work = 0  # calls handed to worker threads and not yet answered
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[has-type,assignment]

    def time(self) -> float:
        return self.virtual_now

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self.thread_work += 1
        future.add_done_callback(self._thread_answered)
        return future

    def _thread_answered(self, _: object) -> None:
        self.thread_work -= 1


THREAD_WAIT = 1.0  # real seconds per wait for a worker thread (the loop asks again after)


def _count_sqlite_calls() -> None:
    """aiosqlite runs each call on its own thread: count those owed to a virtual loop."""
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualTimeLoop):
            return await original(self, fn, *args, **kwargs)
        loop.thread_work += 1
        try:
            return await original(self, fn, *args, **kwargs)
        finally:
            loop.thread_work -= 1

    aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]


_count_sqlite_calls()


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
