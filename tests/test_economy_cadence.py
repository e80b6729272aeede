"""Economy mode polls a provider's batch on schedule: the first poll 5 s after the batch exists,
then each wait 1.5 times the one before, at most 60 s (`POLL_FIRST`, `POLL_GROWTH`, `POLL_MAX`).

The job runs in virtual time (`vtime`) against the fake batch APIs served in the same loop, so
half an hour of polling takes a moment; every poll is stamped with the loop's clock. A loop that
polls without waiting, waits too little, or keeps polling a finished batch fails here instead
of costing a real account thousands of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from fake_batch_anthropic import KEY as ANTHROPIC_KEY
from fake_batch_anthropic import FakeAnthropicBatches
from fake_batch_openai import KEY as OPENAI_KEY
from fake_batch_openai import FakeOpenAIBatches
from test_economy import economy_job

from kullbatch.models import JobState
from kullbatch.providers.batch import openai as batch_openai
from kullbatch.providers.batch.common import Limits
from kullbatch.providers.batch.openai import OpenAIBatchClient
from kullbatch.run.economy import POLL_FIRST, POLL_GROWTH, POLL_MAX
from kullbatch.service import jobs
from tests.vtime import run_virtual

# a wait may come out this much longer in virtual time (the loop jumps to its next timer when a
# loopback answer is a moment late); never shorter
SLACK = 1.0
POLLS = 9  # polls until a batch ends: past the cap (the 8th wait is the first of 60 s)
# a job that has not ended by then (virtual seconds; its batches end within 5 minutes) is
# stuck in a loop, and fails in seconds of real time rather than at the test's time limit
DEADLINE = 20 * 60.0


@dataclass(frozen=True)
class Poll:
    at: float  # the loop's clock
    batch: str
    done: bool  # the batch had ended when this poll answered


@dataclass(frozen=True)
class Account:
    name: str
    fake: Any
    batch_get: re.Pattern[str]  # the path of one batch's status
    batch_create: str  # the path a batch is made at (POST)

    def env(self, url: str) -> dict[str, str]:
        if self.name == "openai":
            return {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{url}/v1"}
        return {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": url}


def openai() -> Account:
    fake = FakeOpenAIBatches(polls_per_state=POLLS // 3)  # validating, in progress, finalizing
    return Account("openai", fake, re.compile(r"^/v1/batches/([^/]+)$"), "/v1/batches")


def anthropic() -> Account:
    fake = FakeAnthropicBatches(polls_per_state=POLLS)  # in progress, then ended
    path = "/v1/messages/batches"
    return Account("anthropic", fake, re.compile(rf"^{path}/([^/]+)$"), path)


def schedule(count: int) -> list[float]:
    """The waits before each of `count` polls, from the constants."""
    waits, wait = [], POLL_FIRST
    for _ in range(count):
        waits.append(wait)
        wait = min(wait * POLL_GROWTH, POLL_MAX)
    return waits


@contextlib.asynccontextmanager
async def serving(account: Account, polls: list[Poll], created: list[float]) -> AsyncIterator[str]:
    """The fake on 127.0.0.1 in the running (virtual) loop, every poll and create stamped."""
    loop = asyncio.get_running_loop()

    @web.middleware
    async def stamp(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        found = account.batch_get.match(request.path)
        if request.method == "GET" and found and response.status == 200:
            batch = account.fake.batches[found.group(1)]
            polls.append(Poll(loop.time(), batch.id, batch.done))
        elif request.method == "POST" and request.path == account.batch_create:
            created.append(loop.time())
        return response

    app = account.fake.app()
    app.middlewares.append(stamp)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def run_job(tmp_path, account: Account, photos: int) -> tuple[Any, list[Poll], list[float]]:
    polls: list[Poll] = []
    created: list[float] = []

    async def main() -> Any:
        async with (
            serving(account, polls, created) as url,
            jobs.Service.open(tmp_path / "k.db", account.env(url)) as service,
        ):
            job = await economy_job(service, tmp_path, photos, provider=account.name)
            async with asyncio.timeout(DEADLINE):
                return await service.run(job)

    return run_virtual(main()), polls, created


def assert_on_schedule(waits: list[float]) -> None:
    expected = schedule(len(waits))
    for n, (waited, due) in enumerate(zip(waits, expected, strict=True), start=1):
        assert due - 1e-6 <= waited <= due + SLACK, (
            f"poll {n} came {waited:.3f} s after the one before, the schedule says {due:.3f} s: "
            f"{[round(w, 3) for w in waits]}"
        )


def test_the_schedule_grows_from_the_first_wait_to_the_cap():
    """The constants themselves: 5 s, x1.5, at most 60 s, reached after a few minutes."""
    waits = schedule(12)
    assert waits[:4] == [POLL_FIRST, POLL_FIRST * POLL_GROWTH, 11.25, 16.875]
    assert max(waits) == POLL_MAX and waits[-1] == POLL_MAX
    assert all(b >= a for a, b in zip(waits, waits[1:], strict=False))
    assert (POLL_FIRST, POLL_GROWTH, POLL_MAX) == (5.0, 1.5, 60.0)  # the README's figures


@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
def test_one_batch_is_polled_on_schedule_until_it_ends_and_never_after(tmp_path, make):
    """First poll 5 s after the create, then 7.5, 11.25, ... up to 60 s; none after the end."""
    account = make()
    outcome, polls, created = run_job(tmp_path, account, 4)
    assert outcome.state is JobState.COMPLETED and outcome.rated == 4
    assert len(created) == 1 and len({p.batch for p in polls}) == 1
    # enough polls to reach the cap, so growth and cap are both exercised
    assert len(polls) == POLLS and schedule(POLLS)[-2:] == [POLL_MAX, POLL_MAX]
    assert [p.done for p in polls] == [False] * (len(polls) - 1) + [True]
    times = [created[0], *(p.at for p in polls)]
    assert_on_schedule([b - a for a, b in zip(times, times[1:], strict=False)])
    # counted against the clock: by any moment, no more polls than the schedule allows
    due = [created[0] + sum(schedule(n)) for n in range(1, len(polls) + 1)]
    for n, poll in enumerate(polls):
        allowed = sum(1 for moment in due if moment <= poll.at + 1e-6)
        assert n + 1 <= allowed, f"poll {n + 1} at +{poll.at - created[0]:.2f} s is early"
    assert account.fake.per_photo_requests() == 0


def test_several_open_batches_are_polled_together_once_per_wait(tmp_path, monkeypatch):
    """Three batches are polled in one round per wait, not each on a clock of its own: every
    round asks each open batch once, and rounds follow the one schedule."""
    monkeypatch.setattr(OpenAIBatchClient, "limits", Limits(3, batch_openai.MAX_BYTES))
    account = openai()
    outcome, polls, created = run_job(tmp_path, account, 7)
    assert outcome.state is JobState.COMPLETED and outcome.rated == 7
    assert len(created) == 3 == len({p.batch for p in polls})
    rounds: list[list[Poll]] = []
    for poll in polls:
        if rounds and poll.at - rounds[-1][0].at < POLL_FIRST / 2:
            rounds[-1].append(poll)
        else:
            rounds.append([poll])
    for round_ in rounds:
        assert len({p.batch for p in round_}) == len(round_), "a batch polled twice in a round"
    assert len(rounds[0]) == 3  # all three open at the first poll
    # each batch is polled until it ends and never again
    for batch in {p.batch for p in polls}:
        done = [p.done for p in polls if p.batch == batch]
        assert done == [False] * (len(done) - 1) + [True]
    starts = [created[-1], *(round_[0].at for round_ in rounds)]
    assert_on_schedule([b - a for a, b in zip(starts, starts[1:], strict=False)])
