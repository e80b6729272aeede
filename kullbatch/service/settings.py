"""What the user asked a job to be (`ProcessSettings`), and the provider it goes to: read by
`process`, the API and the dry run alike, so that all three make the same job."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kullbatch.errors import FieldError, UsageError
from kullbatch.models import (
    DEFAULT_DISTANCE,
    DEFAULT_FALLBACK_AFTER,
    DEFAULT_FLEX_WAIT,
    DEFAULT_GAP,
    DEFAULT_MAX_EDGE,
    DEFAULT_MAX_RETRY_TIME,
    Fallback,
    GroupingOptions,
    JobOptions,
)
from kullbatch.providers import resolve

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kullbatch.manifest import Manifest

__all__ = ["ProcessSettings", "choose_provider"]


@dataclass(frozen=True, slots=True)
class ProcessSettings:
    """What the user asked for on the command line; None means "from the manifest or default"."""

    provider: str | None = None
    model: str | None = None
    prompt: str | None = None
    system_prompt: str | None = None
    mode: str | None = None
    shoot_id: str | None = None
    max_retry_time: float = DEFAULT_MAX_RETRY_TIME
    concurrency: int = 0
    rpm: float | None = None
    max_edge: int = DEFAULT_MAX_EDGE
    economy_only: bool = False  # economy mode: photos a batch did not finish fail, not go fast
    fallbacks: tuple[str, ...] = ()  # --fallback P[:MODEL], in order
    fallback_after: float = DEFAULT_FALLBACK_AFTER
    rubric: str | None = None  # --rubric NAME: the shoot type's instructions and star scale
    groups: bool = True  # --no-groups: bursts are not looked for
    burst_gap: float = DEFAULT_GAP
    burst_distance: int = DEFAULT_DISTANCE
    cache: bool = True  # --no-cache: send every photo, even one rated before
    budget: float | None = None  # --budget USD: the job never spends more (None: no ceiling)
    flex_wait: float | None = None  # --flex-wait: refused this long, a photo goes standard
    compare_bursts: bool = False  # --compare-bursts: each burst's frames judged side by side

    def with_manifest(self, manifest: Manifest) -> ProcessSettings:
        """These settings completed by a JSON manifest's (the API body's) `budgetUsd`,
        `flexWait`, `cache` and `compareBursts`: an option given here wins; `cache: false` and
        `compareBursts: true` hold as `--no-cache` and `--compare-bursts` do."""
        budget = manifest.budget_usd if self.budget is None else self.budget
        flex_wait = manifest.flex_wait if self.flex_wait is None else self.flex_wait
        cache = self.cache and manifest.cache is not False
        compare = self.compare_bursts or manifest.compare_bursts is True
        return replace(
            self, budget=budget, flex_wait=flex_wait, cache=cache, compare_bursts=compare
        )

    def job_options(self) -> JobOptions:
        """What the job remembers of these settings, so that `resume` runs it the same way."""
        return JobOptions(
            concurrency=self.concurrency,
            max_retry_time=self.max_retry_time,
            max_edge=self.max_edge,
            rpm=self.rpm,
            fallback_after=self.fallback_after,
            economy_only=self.economy_only,
            fallbacks=tuple(_fallback(wanted) for wanted in self.fallbacks),
            rubric=self.rubric,
            grouping=GroupingOptions(
                enabled=self.groups,
                gap=self.burst_gap,
                max_distance=self.burst_distance,
                compare=self.compare_bursts,
            ),
            cache=self.cache,
            flex_wait=DEFAULT_FLEX_WAIT if self.flex_wait is None else self.flex_wait,
        )


def choose_provider(
    settings: ProcessSettings, manifest: Manifest, env: Mapping[str, str]
) -> tuple[str, str]:
    wanted = settings.provider or manifest.provider_id or env.get("KULLBATCH_PROVIDER") or "local"
    try:
        spec, model = resolve(wanted, settings.model)
    except ValueError as exc:
        raise FieldError(str(exc), "providerId") from exc
    return spec.name, model


def _fallback(wanted: str) -> Fallback:
    """`anthropic`, `anthropic:claude-sonnet-4-6` or `openai-gpt-5` -> (provider, model)."""
    name, _, model = wanted.partition(":")
    try:
        spec, chosen = resolve(name, model or None)
    except ValueError as exc:
        raise UsageError(f"--fallback {wanted}: {exc}") from exc
    return Fallback(provider=spec.name, model=chosen)
