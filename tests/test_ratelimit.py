"""The per-provider gate: holds, paces learned from headers, AIMD from bare 429s, --rpm."""

from __future__ import annotations

import asyncio

import pytest

from kullbatch.models import RateLimits
from kullbatch.run.ratelimit import HEADROOM, Gate, GateState
from tests.vtime import run_virtual


async def release_times(gate: Gate, count: int) -> list[float]:
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def one() -> None:
        await gate.wait()
        times.append(loop.time())

    await asyncio.gather(*(one() for _ in range(count)))
    await gate.close()
    return sorted(times)


def test_an_open_gate_lets_everyone_through_at_once():
    """No pace and no hold: 1,000 callers pass without waiting."""

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time)
        start = loop.time()
        times = await release_times(gate, 1000)
        return start, times

    start, times = run_virtual(main())
    assert times[-1] == start


def test_a_hold_keeps_every_sender_waiting_until_it_passes():
    """After hold(30), nobody is released before 30 s have passed."""

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time)
        start = loop.time()
        gate.hold(30)
        assert gate.holding_for() == pytest.approx(30)
        return start, await release_times(gate, 10)

    start, times = run_virtual(main())
    assert min(times) - start == pytest.approx(30)


def test_a_requests_limit_header_paces_sends_just_under_it():
    """x-ratelimit-limit-requests 1200 (per minute): 100 sends spread at ~19 a second."""

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time)
        gate.answered(RateLimits(requests_limit=1200, requests_remaining=1199))
        start = loop.time()
        return start, await release_times(gate, 100)

    start, times = run_virtual(main())
    rate = 1200 / 60 * HEADROOM
    assert times[-1] - start == pytest.approx(99 / rate, rel=0.01)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) == pytest.approx(1 / rate, rel=0.01)


def test_a_tokens_limit_paces_by_what_an_answer_costs():
    """60,000 tokens a minute at 1,000 tokens an answer allows ~1 request a second."""

    async def main():
        gate = Gate(asyncio.get_running_loop().time)
        gate.answered(None, tokens=1000)
        gate.answered(RateLimits(requests_limit=10_000, tokens_limit=60_000), tokens=1000)
        return gate.rate

    assert run_virtual(main()) == pytest.approx(1.0 * HEADROOM)


def test_a_bare_429_during_a_burst_halves_the_pace_once_a_second():
    """Without headers: 100 sends in a burst, then 429s: the pace halves once, not per 429."""

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time)
        await release_times(gate, 100)
        gate = _reopened(gate)
        for _ in range(50):
            gate.rate_limited(None)
        first = gate.rate
        await asyncio.sleep(1.5)
        gate.rate_limited(None)
        return first, gate.rate

    first, second = run_virtual(main())
    assert first == pytest.approx(100 / 2.0 * 0.5)  # 100 sends over the 2 s window, halved
    assert second == pytest.approx(first * 0.5)


def _reopened(gate: Gate) -> Gate:
    gate._dispatcher = None
    return gate


def test_the_pace_grows_back_while_answers_come_without_429s():
    """After a decrease, each second of clean answers adds about 5 %."""

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time)
        await release_times(gate, 100)
        gate = _reopened(gate)
        gate.rate_limited(None)
        low = gate.rate
        await asyncio.sleep(10)
        gate.answered(None)
        return low, gate.rate

    low, grown = run_virtual(main())
    assert grown == pytest.approx(low * 1.05**10, rel=0.01)


def test_a_trickle_of_429s_is_left_to_the_schedules():
    """One image retrying now and then does not make the gate pace anybody."""

    async def main():
        gate = Gate(asyncio.get_running_loop().time)
        await gate.wait()
        gate.rate_limited(None)
        return gate.rate

    assert run_virtual(main()) is None


def test_rpm_is_a_ceiling_headers_cannot_raise():
    """--rpm 60 paces at 1 a second even when headers allow 1200 a minute."""

    async def main():
        gate = Gate(asyncio.get_running_loop().time, rpm=60)
        assert gate.rate == pytest.approx(1.0)
        gate.answered(RateLimits(requests_limit=1200))
        return gate.rate

    assert run_virtual(main()) == pytest.approx(1.0)


def test_changes_are_reported_for_the_progress_display():
    """on_change receives the hold and the pace in requests per minute."""
    seen: list[GateState] = []

    async def main():
        gate = Gate(asyncio.get_running_loop().time, on_change=seen.append)
        gate.hold(4)
        gate.hold(1)  # shorter than the current hold: no news
        gate.answered(RateLimits(requests_limit=600))

    run_virtual(main())
    assert len(seen) == 2
    assert seen[0].holding_for == pytest.approx(4) and seen[0].rate_per_minute is None
    assert seen[1].rate_per_minute == pytest.approx(600 * HEADROOM)


def test_a_cancelled_waiter_does_not_use_up_a_slot():
    """At 1 a second, cancelling the second caller lets the third go at 1 s, not 2 s."""

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time, rpm=60)
        start = loop.time()
        first = asyncio.create_task(gate.wait())
        second = asyncio.create_task(gate.wait())
        third = asyncio.create_task(gate.wait())
        await first
        second.cancel()
        await third
        elapsed = loop.time() - start
        await gate.close()
        return elapsed

    assert run_virtual(main()) == pytest.approx(1.0)


def test_closing_the_gate_cancels_whoever_still_waits():
    """When the job ends, queued senders are cancelled and the dispatcher stops."""

    async def main():
        gate = Gate(asyncio.get_running_loop().time)
        gate.hold(100)
        waiter = asyncio.create_task(gate.wait())
        await asyncio.sleep(1)
        await gate.close()
        await asyncio.sleep(0)
        return waiter.cancelled()

    assert run_virtual(main())


def test_stray_429s_among_many_good_answers_do_not_slow_the_job():
    """One 429 in ten answers during a burst is noise for the schedules, not a reason to pace."""

    async def main():
        gate = Gate(asyncio.get_running_loop().time)
        await release_times(gate, 100)
        gate = _reopened(gate)
        for n in range(100):
            if n % 10 == 9:
                gate.rate_limited(None)
            else:
                gate.answered(None)
        return gate.rate

    assert run_virtual(main()) is None


def test_an_announced_limit_below_twelve_a_minute_is_kept_however_low():
    """x-ratelimit-limit-requests 3 (a minute): sends go about 21 s apart, never 3 in 20 s."""

    async def main():
        gate = Gate(asyncio.get_running_loop().time)
        gate.answered(RateLimits(requests_limit=3))
        return gate.rate, await release_times(gate, 5)

    rate, times = run_virtual(main())
    assert rate == pytest.approx(3 / 60 * HEADROOM)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) == pytest.approx(60 / (3 * HEADROOM), rel=0.01)


def test_a_caller_whose_deadline_comes_before_the_hold_ends_is_turned_away_at_once():
    """Held for 60 s, a retry whose window ends in 5 s is told no now, instead of going at 60 s."""

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time)
        gate.hold(60)
        start = loop.time()
        refused = await gate.wait(until=start + 5)
        waited = loop.time() - start
        went = await gate.wait(until=start + 60)  # its window ends as the hold does: it goes
        return refused, waited, went, loop.time() - start

    refused, waited, went, passed_at = run_virtual(main())
    assert (refused, waited) == (False, 0)
    assert went and passed_at == pytest.approx(60)


def test_a_hold_set_while_a_caller_waits_turns_it_away_before_its_deadline():
    """A caller waiting out a 2 s hold is turned away when a 60 s hold outlasts its 10 s window."""

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time)
        start = loop.time()
        gate.hold(2)
        waiting = asyncio.create_task(gate.wait(until=start + 10))
        await asyncio.sleep(1)
        gate.hold(60)
        went = await waiting
        return went, loop.time() - start

    went, answered_at = run_virtual(main())
    assert went is False and answered_at <= 10


def test_a_caller_queued_behind_the_pace_is_turned_away_by_its_deadline():
    """At 6 a minute, the third caller of a queue cannot go by 15 s: it is told so by then."""

    async def main():
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time, rpm=6)
        start = loop.time()
        answers: list[tuple[bool, float]] = []

        async def one() -> None:
            went = await gate.wait(until=start + 15)
            answers.append((went, loop.time() - start))

        await asyncio.gather(one(), one(), one())
        await gate.close()
        return answers

    answers = run_virtual(main())
    assert [went for went, _ in answers] == [True, True, False]
    assert answers[1][1] == pytest.approx(10) and answers[2][1] <= 15
