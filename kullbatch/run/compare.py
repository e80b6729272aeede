"""One burst's comparison: its requests through the retry loop and the provider's gate, in
rounds where the burst has more frames than the provider takes in one request.

Each request goes through the one retry loop (`retry.retrying`) with the job's retry policy,
and through the gate of the provider's account (`Sending.through`), so a comparison waits on a
429 exactly as a photo does. A burst bigger than the provider's per-request image limit (Groq:
five) is compared as a tournament: its frames are cut, in capture order, into as few chunks as
the limit allows, each of near-equal size; each chunk's best goes on to a final between the
winners (rounds again if the winners are still too many). The overall ranking is the final's
order of the winners, then the chunks' seconds (ordered as their winners are), then their
thirds, and so on: only the first place is decided by one side-by-side look at the contenders;
the places after it are each chunk's own. The final's reason is the burst's reason.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kullbatch.errors import ProviderError
from kullbatch.models import Usage
from kullbatch.run.retry import RetryPolicy, Sending, format_wait_ms, retrying

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from kullbatch.models import PreparedImage
    from kullbatch.providers.compare import Comparer, Verdict
    from kullbatch.run.ratelimit import Gate

admin_log = logging.getLogger("kullbatch.admin")


def chunks(count: int, limit: int) -> list[range]:
    """`count` frames cut, in order, into as few runs of at most `limit` as possible, of
    near-equal size (8 frames by 5: 4 and 4, not 5 and 3)."""
    if limit < 2:  # noqa: PLR2004
        raise ValueError(f"a comparison needs room for two images per request, not {limit}")
    parts = max(1, math.ceil(count / limit))
    size, extra = divmod(count, parts)
    runs, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        runs.append(range(start, end))
        start = end
    return runs


def requests_for(count: int, limit: int) -> int:
    """Requests a burst of `count` frames costs at `limit` images per request."""
    if count < 2:  # noqa: PLR2004
        return 0
    runs = chunks(count, limit)
    if len(runs) == 1:
        return 1
    return sum(requests_for(len(run), limit) for run in runs) + requests_for(len(runs), limit)


def images_for(count: int, limit: int) -> int:
    """Images a burst of `count` frames sends at `limit` per request (finals resend winners)."""
    if count < 2:  # noqa: PLR2004
        return 0
    runs = chunks(count, limit)
    if len(runs) == 1:
        return count
    return sum(images_for(len(run), limit) for run in runs) + images_for(len(runs), limit)


@dataclass(frozen=True, slots=True)
class Ranked:
    """A burst's order (indices into its frames, best first), the reason, and the cost."""

    order: list[int]
    reason: str
    usage: Usage = field(default_factory=Usage)
    requests: int = 0


def _merge(order: list[int], runs: list[list[int]], final: list[int]) -> list[int]:
    """The winners in the final's order, then each chunk's next place, chunk by chunk in that
    order (`runs`: each chunk's ranking as indices into the burst; `final` into the runs)."""
    merged = [runs[run][0] for run in final]
    depth = max(len(run) for run in runs)
    for place in range(1, depth):
        merged += [runs[run][place] for run in final if place < len(runs[run])]
    assert sorted(merged) == sorted(order)
    return merged


async def tournament(
    count: int, limit: int, ask: Callable[[Sequence[int]], Awaitable[Verdict]]
) -> Ranked:
    """Rank frames 0..count-1; `ask(indices)` compares those frames in one request."""
    return await _rank(list(range(count)), limit, ask)


async def _rank(
    frames: list[int], limit: int, ask: Callable[[Sequence[int]], Awaitable[Verdict]]
) -> Ranked:
    if len(frames) == 1:  # a chunk of one (3 frames at 2 a request) goes on unasked
        return Ranked(list(frames), "")
    if len(frames) <= limit:
        verdict = await ask(frames)
        order = [frames[number - 1] for number in verdict.comparison.ranking]
        return Ranked(order, verdict.comparison.reason, verdict.usage, 1)
    parts = [[frames[i] for i in run] for run in chunks(len(frames), limit)]
    rounds = [await _rank(part, limit, ask) for part in parts]
    winners = [ranked.order[0] for ranked in rounds]
    final = await _rank(winners, limit, ask)
    by_winner = {ranked.order[0]: index for index, ranked in enumerate(rounds)}
    order = _merge(frames, [r.order for r in rounds], [by_winner[w] for w in final.order])
    spent = [*rounds, final]
    usage = Usage(
        sum(r.usage.input_tokens for r in spent), sum(r.usage.output_tokens for r in spent)
    )
    return Ranked(order, final.reason, usage, sum(r.requests for r in spent))


@dataclass(slots=True)
class CompareSender:
    """Sends comparison requests for one job: its comparer, its account's gate, its policy."""

    comparer: Comparer
    gate: Gate
    policy: RetryPolicy
    clock: Callable[[], float]
    rng: random.Random = field(default_factory=random.Random)
    spent: list[Usage] = field(default_factory=list)  # every answered request's tokens

    async def rank(self, frames: Sequence[PreparedImage]) -> Ranked:
        """The burst's ranking, in one request or in rounds (`tournament`)."""

        async def ask(indices: Sequence[int]) -> Verdict:
            return await self.send([frames[i] for i in indices])

        return await tournament(len(frames), self.comparer.max_images, ask)

    async def send(self, frames: Sequence[PreparedImage]) -> Verdict:
        """One comparison request, retried through the retry loop and the gate."""
        sending = Sending(self.policy)

        def backoff(exc: Exception) -> float | None:
            if not isinstance(exc, ProviderError):
                return None
            wait = sending.next_wait(exc, self.clock(), self.rng)
            if wait is not None:
                self.gate.retrying(exc, wait)
                admin_log.warning(
                    "[Compare] %s attempt %d failed: %s. Retrying in %s",
                    self.comparer.name,
                    sending.retries,
                    exc.message.rstrip("."),
                    format_wait_ms(wait),
                )
            return wait

        async def attempt(_number: int) -> Verdict:
            await sending.through(self.gate)
            if sending.first_sent is None:
                sending.first_sent = self.clock()
            try:
                verdict = await self.comparer.compare(frames)
            except Exception as exc:
                self.gate.failed(exc)
                raise
            usage = verdict.usage
            self.gate.answered(verdict.limits, usage.input_tokens + usage.output_tokens)
            self.spent.append(usage)
            return verdict

        verdict, _attempts = await retrying(attempt, backoff)
        return verdict
