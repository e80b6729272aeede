"""What a run is given (`EngineOptions`) and what it hands back (`JobOutcome`), and the
first reason a run stops (`_Stop`): the engine's plain data, apart from its logic."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kullbatch import models

if TYPE_CHECKING:
    from kullbatch.models import JobState


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Knobs of one run; the defaults are the product's."""

    concurrency: int = 0  # 0 = every image at once; else requests in flight at most
    max_retry_time: float = models.DEFAULT_MAX_RETRY_TIME
    max_edge: int = models.DEFAULT_MAX_EDGE
    prepared_limit: int = 256  # photos held as bytes and in flight at once: bounds memory
    rpm: float | None = None  # a known requests-per-minute limit: the gate never exceeds it
    heartbeat_interval: float = 5.0
    cancel_poll_interval: float = 0.5
    fallback_after: float = models.DEFAULT_FALLBACK_AFTER  # retrying before the next provider
    fingerprint: bool = False  # hash local photos as they are prepared, for burst grouping


@dataclass(frozen=True, slots=True)
class JobOutcome:
    state: JobState
    rated: int
    failed: int
    error: str | None = None
    env_vars: tuple[str, ...] = ()  # a fatal error's variables to check (`FatalJobError`)


@dataclass(slots=True)
class _Stop:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    state: JobState | None = None
    error: str | None = None
    env_vars: tuple[str, ...] = ()

    def request(
        self, state: JobState, error: str | None = None, env_vars: tuple[str, ...] = ()
    ) -> None:
        if self.state is None:  # the first reason wins: a fatal error is not "cancelled"
            self.state, self.error, self.env_vars = state, error, env_vars
        self.event.set()
