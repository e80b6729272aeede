"""Economy mode's batch calls: fast mode's retry loop and schedules, the account's gate, stops.

A batch call (upload, create, poll, results, cancel) waits for the provider account's gate
like a fast-mode request, tells it how it went (a 429's hint holds every sender on the
account), is retried by the same loop (`retry.retrying`) on the same schedules, and gives up
when the job's window closes. Ctrl-C abandons it wherever it is, in the gate included.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from kullbatch.errors import FatalJobError, RateLimited, Transient
from kullbatch.run.batch_calls import BatchCalls, Stopped, Stops
from kullbatch.run.ratelimit import Gate, GateState
from kullbatch.run.retry import RetryPolicy


def calls_through(gate: Gate, stops: Stops | None = None, window: float = 60.0) -> BatchCalls:
    loop = asyncio.get_running_loop()
    return BatchCalls(
        "batch_1_calls0",
        stops or Stops(),
        gate,
        max_retry_time=window,
        clock=loop.time,
        rng=random.Random(1),
    )


def scripted(*answers: Any) -> Any:
    """A batch call answering `answers` in turn: an exception is raised, anything else
    returned."""
    left = list(answers)

    async def call() -> Any:
        answer = left.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return call


async def test_a_429_on_a_batch_call_holds_the_accounts_gate_then_the_call_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hint holds every sender on the account, for no longer than the wait before the
    retry (the schedule's business, 0.2 s here); the retry goes once the gate opens."""
    monkeypatch.setattr(RetryPolicy, "next_wait", lambda *_: 0.2)
    gate = Gate(asyncio.get_running_loop().time)
    heard: list[GateState] = []
    gate.subscribe(heard.append)
    slow_down = RateLimited("openai HTTP 429: Rate limit reached", retry_after=30.0)

    assert await calls_through(gate)(scripted(slow_down, "polled")) == "polled"
    assert heard and heard[0].holding_for == pytest.approx(0.2, abs=0.05)
    assert gate.holding_for() == 0


async def test_a_batch_call_waits_while_fast_mode_holds_the_gate() -> None:
    """A 429 that fast mode heard on the account holds the batch calls too."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop.time)
    gate.hold(0.3)
    started = loop.time()
    assert await calls_through(gate)(scripted("polled")) == "polled"
    assert loop.time() - started >= 0.29


async def test_a_batch_call_gives_up_when_the_jobs_window_closes() -> None:
    """The window bounds every wait; the last try is made when it closes, then the job stops."""
    loop = asyncio.get_running_loop()
    down = Transient("openai HTTP 503: The server is overloaded")
    started = loop.time()
    with pytest.raises(FatalJobError, match=r"overloaded \(gave up after 2 tries\)$"):
        await calls_through(Gate(loop.time), window=0.1)(scripted(down, down))
    assert loop.time() - started == pytest.approx(0.1, abs=0.05)


async def test_ctrl_c_abandons_a_batch_call_waiting_in_the_gate() -> None:
    """Held for ten seconds by the account's gate, the call is abandoned at once on Ctrl-C."""
    loop = asyncio.get_running_loop()
    gate = Gate(loop.time)
    gate.hold(10.0)
    stops = Stops()
    loop.call_later(0.05, stops.interrupt)
    started = loop.time()
    with pytest.raises(Stopped):
        await calls_through(gate, stops)(scripted("never asked"))
    assert loop.time() - started < 1.0
    await gate.close()
