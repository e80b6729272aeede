"""The flex tier: which providers have one, how a request asks for it, and how it says "full".

OpenAI and Groq take `"service_tier": "flex"` in the chat-completions body; Gemini takes the
GenerateContentRequest's `serviceTier` (`flex`, `standard`, `priority`; python-genai's
`GenerateContentConfig.service_tier`, js-genai's `ServiceTier`). A flex request waits up to
15 minutes for an answer (`FLEX_TIMEOUT`). The tier turns requests away when it is full:

- OpenAI: HTTP 429 whose error says "resource unavailable" (not a rate limit of the account);
- Groq: HTTP 498 `capacity_exceeded`;
- Gemini: HTTP 503 UNAVAILABLE, or a 429 RESOURCE_EXHAUSTED that names no quota of the
  account (a quota violation is a real rate limit, or a quota that never clears).

Those become `FlexUnavailable`: retried on the rate-limit schedule without slowing the gate.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any, TypeVar

from kullbatch.errors import FlexUnavailable, ProviderError, Retryable
from kullbatch.providers.http import FLEX_TIMEOUT, REQUEST_TIMEOUT, answer_error, retry_after_hint

if TYPE_CHECKING:
    import aiohttp

    from kullbatch.providers.http import HTTPAnswer

__all__ = ["FLEX", "FLEX_PROVIDERS", "flex_refusal", "timeout_for", "with_body_tier", "with_tier"]

FLEX = "flex"
FLEX_PROVIDERS = frozenset({"openai", "gemini", "groq"})
_OPENAI_UNAVAILABLE = re.compile(r"resource[ _-]?unavailable", re.IGNORECASE)
_GROQ_CAPACITY = 498

T = TypeVar("T")


def with_tier(adapter: T, tier: str) -> T:
    """A copy of `adapter` whose requests ask for `tier` (the adapter is left as it was)."""
    if not hasattr(adapter, "service_tier"):
        raise TypeError(f"{type(adapter).__name__} has no service tier")
    tiered = copy.copy(adapter)
    tiered.service_tier = tier
    return tiered


def with_body_tier(body: dict[str, Any], field: str, tier: str | None) -> dict[str, Any]:
    """`body` asking for `tier` in `field` (unchanged without a tier)."""
    return body if tier is None else {**body, field: tier}


def timeout_for(tier: str | None) -> aiohttp.ClientTimeout:
    """How long a request at `tier` may wait for its answer."""
    return REQUEST_TIMEOUT if tier is None else FLEX_TIMEOUT


def flex_refusal(
    tier: str | None, provider: str, answer: HTTPAnswer, error: ProviderError
) -> ProviderError:
    """`error` as `FlexUnavailable` when the answer is the flex tier saying it is full."""
    if tier is None or not isinstance(error, Retryable) or not _refused(provider, answer):
        return error
    text = f"{error.message} [the flex tier is full: retried, then sent at the standard tier]"
    return answer_error(FlexUnavailable, text, answer, retry_after=retry_after_hint(answer.headers))


def _refused(provider: str, answer: HTTPAnswer) -> bool:
    text = answer.text(2000)
    if provider == "groq":
        return answer.status == _GROQ_CAPACITY or "capacity_exceeded" in text
    if provider == "openai":
        return answer.status == 429 and bool(_OPENAI_UNAVAILABLE.search(text))  # noqa: PLR2004
    if provider == "gemini":
        if answer.status == 503:  # noqa: PLR2004
            return True
        return answer.status == 429 and "QuotaFailure" not in text  # noqa: PLR2004
    return False
