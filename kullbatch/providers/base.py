"""The provider Protocol, what adapters build and declare, and the shared rating schema.

The error taxonomy lives in `kullbatch.errors`; it is re-exported here so that older imports
keep working, but kullbatch's own code imports it from `kullbatch.errors`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import ValidationError

from kullbatch.errors import (
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Retryable,
    Transient,
)
from kullbatch.models import COLOR_LABELS, ISSUES, Answer, PreparedImage, Prompt, Rating

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_PROMPT",
    "RATING_SCHEMA",
    "RATING_SCHEMA_NAME",
    "Capabilities",
    "FatalJobError",
    "PermanentImageError",
    "Provider",
    "ProviderError",
    "RateLimited",
    "Retryable",
    "Transient",
    "WireRequest",
    "parse_rating",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's type can do, declared once on the class and read by the engine."""

    # URL photos are downloaded by the adapter (Gemini, Ollama): the engine bounds how many
    # are held in memory at once, as for local photos
    inlines_url_images: bool = False
    # the provider has a batch API economy mode can submit `WireRequest.body`s to
    batch_api: bool = False


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One request exactly as fast mode sends it, without the key: what economy mode batches.

    `path` is relative to the adapter's `base_url`, which is its base-URL variable's value (or
    the default) as the provider's own SDK reads it:
    - openai, grok, openai-compatible: the base includes `/v1` (https://api.openai.com/v1), so
      `path` is `/chat/completions`; OpenAI's batch line `url` is `openai.batch_url(request)`;
    - groq: the base is the host (https://api.groq.com), `path` `/openai/v1/chat/completions`;
    - anthropic: the host, `path` `/v1/messages`;
    - gemini: the host, `path` `/v1beta/models/<model>:generateContent`.
    `headers` are what the request needs besides the key (a version, `accept`); `body` is the
    JSON document.
    """

    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]


class Provider(Protocol):
    """One vision model behind one call; each network provider is one module."""

    name: str
    model: str
    capabilities: ClassVar[Capabilities]

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer: ...


DEFAULT_PROMPT = (
    "Rate this photograph as an experienced photo editor culling a shoot. Give 1 to 5 stars "
    "(5 = portfolio, 1 = reject: out of focus, badly exposed, eyes closed), a colour label "
    "(green = pick, yellow = maybe, red = reject, blue or purple for special sets, none), a short "
    "title, a one-sentence description, a few lowercase keywords, and the issues you see "
    f"(any of: {', '.join(ISSUES)}; none for a clean frame)."
)

RATING_SCHEMA_NAME = "photo_rating"

RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "starRating": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "colorLabel": {"type": "string", "enum": list(COLOR_LABELS)},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "issues": {"type": "array", "items": {"type": "string", "enum": list(ISSUES)}},
    },
    "required": ["starRating", "colorLabel", "title", "description", "tags", "issues"],
    "additionalProperties": False,
}


def parse_rating(payload: str | Mapping[str, Any], *, source: str) -> Rating:
    """Validate a model's answer; anything that is not a rating is worth another try."""
    try:
        data = json.loads(payload) if isinstance(payload, str) else dict(payload)
    except json.JSONDecodeError as exc:
        snippet = payload[:80] if isinstance(payload, str) else ""
        raise Transient(f"{source} answer is not JSON ({exc.msg}): {snippet!r}") from exc
    try:
        return Rating.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise Transient(f"{source} answer is not a valid rating: {problems}") from exc
