"""The provider Protocol and the error taxonomy every provider raises.

    ProviderError
    ├── RateLimited(retry_after)      429, Anthropic 529  -> rate-limit schedule
    ├── Transient(retry_after)        408, 409, 5xx, drops, timeouts, bad answers -> other schedule
    ├── PermanentImageError           this image cannot be rated (400/413/422 about the image)
    └── FatalJobError                 the whole job must stop (auth, model, credit, missing key)

Providers raise these and nothing else; the engine decides what to do with each.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from kullbatch.models import Answer, PreparedImage, Prompt, RateLimits, Rating

if TYPE_CHECKING:
    from collections.abc import Mapping


class ProviderError(Exception):
    """Base of the taxonomy; `message` is what users and the admin log see."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # the limits the failing answer's headers reported, for the rate-limit gate
        self.limits: RateLimits | None = None


class RateLimited(ProviderError):
    def __init__(
        self, message: str = "Rate limit exceeded", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transient(ProviderError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentImageError(ProviderError):
    pass


class FatalJobError(ProviderError):
    pass


class Provider(Protocol):
    """One vision model behind one call; each network provider is one module."""

    name: str
    model: str

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer: ...


DEFAULT_PROMPT = (
    "Rate this photograph as an experienced photo editor culling a shoot. Give 1 to 5 stars "
    "(5 = portfolio, 1 = reject: out of focus, badly exposed, eyes closed), a colour label "
    "(green = pick, yellow = maybe, red = reject, blue or purple for special sets, none), a short "
    "title, a one-sentence description and a few lowercase keywords."
)

RATING_SCHEMA_NAME = "photo_rating"

RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "starRating": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "colorLabel": {
            "type": "string",
            "enum": ["red", "yellow", "green", "blue", "purple", "none"],
        },
        "title": {"type": "string"},
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["starRating", "colorLabel", "title", "description", "tags"],
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
