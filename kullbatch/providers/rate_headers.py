"""OpenAI-style `x-ratelimit-*` headers (OpenAI, Groq, xAI, Ollama) read into `RateLimits`,
the numbers the rate-limit gate paces by."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kullbatch.models import RateLimits
from kullbatch.providers.http import parse_go_duration

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["parse_rate_limits"]


def parse_rate_limits(
    headers: Mapping[str, str], requests_per_day: bool = False
) -> RateLimits | None:
    """OpenAI/Groq `x-ratelimit-*` headers (lower-cased) -> RateLimits; None when absent.

    A per-day requests pair (Groq) is left out: the gate paces per minute, and a daily quota
    is not a pace.
    """
    if not any(name.startswith("x-ratelimit-") for name in headers):
        return None
    if requests_per_day:
        return RateLimits(
            tokens_limit=_integer(headers.get("x-ratelimit-limit-tokens")),
            tokens_remaining=_integer(headers.get("x-ratelimit-remaining-tokens")),
            tokens_reset=_duration(headers.get("x-ratelimit-reset-tokens")),
        )
    return RateLimits(
        requests_limit=_integer(headers.get("x-ratelimit-limit-requests")),
        requests_remaining=_integer(headers.get("x-ratelimit-remaining-requests")),
        requests_reset=_duration(headers.get("x-ratelimit-reset-requests")),
        tokens_limit=_integer(headers.get("x-ratelimit-limit-tokens")),
        tokens_remaining=_integer(headers.get("x-ratelimit-remaining-tokens")),
        tokens_reset=_duration(headers.get("x-ratelimit-reset-tokens")),
    )


def _integer(value: str | None) -> int | None:
    try:
        return None if value is None else int(value.strip())
    except ValueError:
        return None


def _duration(value: str | None) -> float | None:
    return None if value is None else parse_go_duration(value)
