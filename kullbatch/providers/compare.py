"""Burst comparison on the wire: the question, the answer's schema, and who can be asked.

`process --compare-bursts` sends the frames of one burst in one request, in capture order,
each image after a "Frame n:" label, and asks which frame is best and why. The answer is
`{"best": i, "ranking": [i, ...], "reason": "..."}` with 1-based frame numbers, best first;
it is validated here (`parse_comparison`): a ranking that is not every frame exactly once, or
whose first frame is not `best`, is a bad answer worth another try (`Transient`).

Each network adapter has a `compare` method (the `Comparer` protocol) that builds the request
in its provider's own multi-image wire format next to its `rate`; `local` has none and keeps
its sharpness measure. `max_images` is the provider's per-request image limit (Groq: 5); the
run layer compares a bigger burst in rounds (`kullbatch.run.compare`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from kullbatch.errors import Transient
from kullbatch.models import RateLimits, Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kullbatch.models import PreparedImage

__all__ = [
    "COMPARE_SCHEMA",
    "COMPARE_SCHEMA_NAME",
    "IMAGE_LIMITS",
    "MAX_FRAMES",
    "Comparer",
    "Comparison",
    "Verdict",
    "compare_prompt",
    "comparer_of",
    "frame_label",
    "image_limit",
    "parse_comparison",
    "schema_instructions",
]

MAX_FRAMES = 8  # a burst's frames compared at most: the 8 with the most stars
# Images one request may carry, where a provider allows fewer than MAX_FRAMES (providers.md:
# Groq takes at most five per request).
IMAGE_LIMITS: dict[str, int] = {"groq": 5}

COMPARE_SCHEMA_NAME = "burst_comparison"
COMPARE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "best": {"type": "integer"},
        "ranking": {"type": "array", "items": {"type": "integer"}},
        "reason": {"type": "string"},
    },
    "required": ["best", "ranking", "reason"],
    "additionalProperties": False,
}


def image_limit(provider: str) -> int:
    """How many frames one comparison request to `provider` may hold."""
    return min(IMAGE_LIMITS.get(provider, MAX_FRAMES), MAX_FRAMES)


def frame_label(number: int) -> str:
    """The text before the `number`-th image (1-based): how the prompt names each frame."""
    return f"Frame {number}:"


def compare_prompt(frames: int) -> str:
    """The question for a burst of `frames` frames (the images follow, each after its label)."""
    return (
        f"These {frames} photos are frames of one burst, a moment apart, in the order they "
        f"were taken; each image follows its label, Frame 1 to Frame {frames}. As an "
        "experienced photo editor culling a shoot, judge them side by side and pick the one "
        "frame to keep: eyes open, the eyes in sharp focus, the best expression, no motion "
        "blur. Answer in JSON with `best` (the best frame's number), `ranking` (every frame "
        "number exactly once, best first) and `reason` (one sentence: why the best frame "
        "beats the others)."
    )


def schema_instructions() -> str:
    """The schema spelled out, for servers that take only `json_object`."""
    return "Answer with one JSON object matching this JSON Schema:\n" + json.dumps(
        COMPARE_SCHEMA, separators=(",", ":")
    )


class Comparison(BaseModel):
    """A model's verdict on one burst (frame numbers 1-based, in the order sent)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    best: int
    ranking: list[int]
    reason: str

    def problem(self, frames: int) -> str | None:
        """What makes this no verdict on `frames` frames; None when it is one."""
        if sorted(self.ranking) != list(range(1, frames + 1)):
            return f"ranking {self.ranking} is not frames 1 to {frames} each once"
        if self.best != self.ranking[0]:
            return f"best {self.best} is not the ranking's first frame {self.ranking[0]}"
        if not self.reason.strip():
            return "the reason is empty"
        return None


def parse_comparison(text: str, frames: int, *, source: str) -> Comparison:
    """Validate a model's answer on `frames` frames; anything else is worth another try."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Transient(f"{source} comparison is not JSON ({exc.msg}): {text[:80]!r}") from exc
    try:
        comparison = Comparison.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise Transient(f"{source} comparison is not valid: {problems}") from exc
    if problem := comparison.problem(frames):
        raise Transient(f"{source} comparison is not valid: {problem}")
    return comparison


@dataclass(frozen=True, slots=True)
class Verdict:
    """One comparison request's answer and what it cost."""

    comparison: Comparison
    usage: Usage = field(default_factory=Usage)
    limits: RateLimits | None = None


@runtime_checkable
class Comparer(Protocol):
    """A provider that can judge a burst's frames in one request."""

    name: str
    model: str

    @property
    def max_images(self) -> int: ...

    async def compare(self, frames: Sequence[PreparedImage]) -> Verdict:
        """One request holding `frames` in order (at most `max_images`); raises the
        provider's classified errors, as `rate` does."""
        ...


def comparer_of(provider: object) -> Comparer | None:
    """The provider as a comparer; None for one that compares nothing (`local`)."""
    return provider if isinstance(provider, Comparer) else None
