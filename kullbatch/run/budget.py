"""`--budget USD`: a ceiling the job's spending never passes, whole job, across resumes.

The engine asks `Budget.admit` before each photo leaves, and tells `Budget.ended` when a photo
is done (with its answer when it was rated). A photo is admitted only when what was spent,
plus the estimate of every request in flight, plus its own estimate, fits under the ceiling.
The estimate starts from the dry run's rule for one photo and, from the first answer on, is
the running mean of what the answers cost, with a margin (`MARGIN`): the first photo goes
alone (the engine's probe), so the rest are estimated from a real answer. When the next photo
does not fit but requests are in flight, admission waits for them (they may cost less than
estimated); when nothing is in flight and it still does not fit, nothing more is sent and the
job ends `paused` with the reason (`verdict`).

When the ceiling is far, `admit` is one addition and one comparison: no waiting, no pacing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from kullbatch.models import Answer

__all__ = ["MARGIN", "Budget", "budget_message"]

MARGIN = 0.1  # an answer may cost a tenth more than the mean so far


def budget_message(spent: float, ceiling: float, not_sent: int) -> str:
    """The paused job's error: `budget reached: $4.97 of $5.00 spent; 312 photos not sent`."""
    places = 2 if ceiling >= 1 else 4  # cents say nothing of a ceiling under a dollar
    return (
        f"budget reached: ${spent:,.{places}f} of ${ceiling:,.{places}f} spent; "
        f"{not_sent} photos not sent"
    )


class Budget:
    """The job's ceiling, what it spent, and what its requests in flight may still cost."""

    def __init__(
        self,
        ceiling: float,
        *,
        spent: float,
        estimate: float,
        cost: Callable[[Answer, str, str], float],
        in_flight: int = 0,
    ) -> None:
        self.ceiling = ceiling
        self.spent = spent
        self._first_estimate = estimate
        self._cost = cost  # USD of an answer by (answer, provider, model), at its tier
        self._answers = 0
        self._answered_usd = 0.0
        self.in_flight = in_flight  # photos sent (or in an open provider batch), not answered
        self.reached = False  # a photo was refused: the job ends paused
        self._settled = asyncio.Event()

    @property
    def estimate(self) -> float:
        """What the next photo is expected to cost."""
        if self._answers == 0:
            return self._first_estimate
        return self._answered_usd / self._answers * (1 + MARGIN)

    def _fits(self) -> bool:
        return self.spent + (self.in_flight + 1) * self.estimate <= self.ceiling + 1e-12

    async def admit(self) -> bool:
        """True: the photo may go (its estimate is now in flight); False: the budget is reached
        and nothing more is sent."""
        while not self._fits():
            if self.in_flight == 0:
                self.reached = True
                return False
            self._settled.clear()
            await self._settled.wait()
        self.in_flight += 1
        return True

    def take(self) -> bool:
        """Economy mode: one more photo into a provider batch if its estimate fits (no
        waiting: a batch answers in hours); False once the budget is reached."""
        if not self._fits():
            self.reached = True
            return False
        self.in_flight += 1
        return True

    def ended(self, answer: Answer | None = None, provider: str = "", model: str = "") -> None:
        """A photo admitted is done: rated (`answer`, priced by who rated it) or failed."""
        self.in_flight -= 1
        if answer is not None:
            usd = self._cost(answer, provider, model)
            self.spent += usd
            self._answers += 1
            self._answered_usd += usd
        self._settled.set()

    def verdict(self, not_sent: int) -> str | None:
        """The paused job's error, or None when the budget did not stop the job."""
        if not self.reached:
            return None
        return budget_message(self.spent, self.ceiling, not_sent)
