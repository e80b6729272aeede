"""The Provider and BatchClient protocols, a provider's credentials, and the rating schema.

The error taxonomy lives in `kullbatch.errors`, and is imported from there.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import ValidationError

from kullbatch.errors import Transient
from kullbatch.models import COLOR_LABELS, ISSUES, Answer, PreparedImage, Prompt, Rating
from kullbatch.providers.http import WireRequest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import datetime
    from pathlib import Path

    from kullbatch.errors import ProviderError
    from kullbatch.providers.batch.common import (
        BatchInfo,
        BatchLine,
        Framing,
        Limits,
        LineFailure,
        LineResult,
    )
    from kullbatch.providers.http import HTTPAnswer

__all__ = [
    "DEFAULT_PROMPT",
    "RATING_SCHEMA",
    "RATING_SCHEMA_NAME",
    "BatchAdapter",
    "BatchClient",
    "Capabilities",
    "Credentials",
    "Provider",
    "WireRequest",
    "parse_rating",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's type can do, declared once on the class and read by the engine."""

    # URL photos are downloaded by the adapter (Gemini, Ollama): the engine bounds how many
    # are held in memory at once, as for local photos
    inlines_url_images: bool = False


@dataclass(frozen=True, slots=True)
class Credentials:
    """One provider account as the environment names it, read once per job
    (`ProviderSpec.credentials`) and handed to the adapter, the batch client and the
    rate-limit gate's account alike, so all three speak for the same key.

    `headers` carry the key (and OpenAI's organisation and project): they are added only when
    sending, never to a `WireRequest`. `key` is kept to scrub it from messages; `key_var` is
    the variable it came from (None without a key: local, a keyless openai-compatible server).
    """

    provider: str
    base_url: str
    key: str | None = field(default=None, repr=False)  # never in a repr or log
    key_var: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


class Provider(Protocol):
    """One vision model behind one call; each network provider is one module."""

    name: str
    model: str
    capabilities: ClassVar[Capabilities]

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer: ...


class BatchAdapter(Provider, Protocol):
    """A provider whose requests economy mode batches: it builds and parses without sending."""

    async def ready(self, image: PreparedImage) -> PreparedImage:
        """The image as the provider takes it (converted, shrunk); URLs pass as URLs."""
        ...

    def build_request(self, image: PreparedImage, prompt: Prompt) -> WireRequest: ...

    def parse_answer(self, answer: HTTPAnswer) -> Answer: ...


class BatchClient(Protocol):
    """What economy mode needs of a provider's batch API: one class per provider, in
    `providers/batch/`, named by the provider's `ProviderSpec.batch`.

    Requests are encoded one at a time and written to a file with the client's `framing`, so
    a batch of hundreds of megabytes is streamed from disk, never held in memory. `adapter` is
    the provider whose requests it batches (and whose answers it parses): the photos a batch
    does not finish go through it in fast mode.
    """

    name: str
    limits: Limits
    framing: Framing

    @property
    def adapter(self) -> BatchAdapter: ...

    def line(self, custom_id: str, request: WireRequest) -> BatchLine: ...

    def encode(self, line: BatchLine) -> bytes: ...

    async def submit_file(
        self, path: Path, on_file: Callable[[str], Awaitable[None]]
    ) -> BatchInfo: ...

    async def batch_for_file(self, file_id: str) -> BatchInfo:
        """The batch of an uploaded file: the one the provider already made from it, else a
        new one (a create's answer can be lost, or the process die before it is committed)."""
        ...

    async def find_for_file(self, file_id: str) -> BatchInfo | None:
        """The batch the provider already made from an uploaded file, or None; makes none."""
        ...

    async def find_made(self, requests: int, since: datetime) -> list[BatchInfo]:
        """Batches a create sent at `since` may have made though its answer never came back
        (`requests` requests, made since then, not being cancelled), newest first."""
        ...

    async def get(self, batch_id: str) -> BatchInfo: ...

    async def cancel(self, batch_id: str) -> BatchInfo: ...

    async def results(self, info: BatchInfo) -> dict[str, LineResult]: ...

    def classify(self, failure: LineFailure) -> ProviderError: ...


DEFAULT_PROMPT = (
    "Rate this photograph as an experienced photo editor culling a shoot. Give 1 to 5 stars "
    "(5 = portfolio, 1 = reject: out of focus, badly exposed, eyes closed), a colour label "
    "(green = pick, yellow = maybe, red = reject, blue or purple for special sets, none), a short "
    "title, a one-sentence description, a few lowercase keywords, the issues you see "
    f"(any of: {', '.join(ISSUES)}; none for a clean frame), and a score from 0 to 100 that "
    "ranks the photo finer than its stars (a better 4-star frame scores higher)."
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
        # no minimum/maximum: Anthropic's structured output refuses numeric bounds;
        # `Rating` checks 0-100 when the answer is parsed
        "score": {"type": "integer"},
    },
    "required": ["starRating", "colorLabel", "title", "description", "tags", "issues", "score"],
    "additionalProperties": False,
}


def parse_rating(payload: str | Mapping[str, Any], *, source: str) -> Rating:
    """Validate a model's answer; anything that is not a rating is worth another try."""
    if isinstance(payload, str):  # the usual answer, parsed and checked in one pass
        with contextlib.suppress(ValidationError):
            rating = Rating.model_validate_json(payload)
            if rating.score is not None:  # else said below, as a missing score is
                return rating
    try:  # a mapping, or text that is not a rating: said the way the checks below say it
        data = json.loads(payload) if isinstance(payload, str) else dict(payload)
    except json.JSONDecodeError as exc:
        snippet = payload[:80] if isinstance(payload, str) else ""
        raise Transient(f"{source} answer is not JSON ({exc.msg}): {snippet!r}") from exc
    if isinstance(data, dict) and data.get("score") is None:  # optional in `Rating` (results
        # stored before it existed), but asked of every provider
        raise Transient(f"{source} answer is not a valid rating: score: Field required")
    try:
        return Rating.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise Transient(f"{source} answer is not a valid rating: {problems}") from exc
