"""What the OpenAI Batch API and Anthropic's Message Batches have in common, provider-neutral.

- `custom_id_for`: one id per photo that both APIs accept (`^[a-zA-Z0-9_-]{1,64}$`), so a
  result is matched back by id, never by line order.
- `split_sized`: a shoot cut into provider batches under a request count AND a byte limit
  (photos travel inline as base64: a few hundred fill a file); a single request over the byte
  limit is reported for that photo instead of failing the whole split.
- `BatchInfo`, `LineSuccess` / `LineFailure`: what a poll and a results download say, in one
  vocabulary whatever the provider, so the engine never reads a provider's wire format.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from kullbatch.providers.http import HTTPAnswer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

T = TypeVar("T")

BatchState = Literal[
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
]
TERMINAL_STATES: frozenset[BatchState] = frozenset({"completed", "failed", "expired", "cancelled"})
FailureKind = Literal["errored", "expired", "cancelled"]


# --- ids ------------------------------------------------------------------------------------

_VALID_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OTHER_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]+")
_DIGEST_CHARS = 24  # 96 bits of SHA-256: no accidental collision in any shoot
_READABLE_CHARS = 64 - 1 - _DIGEST_CHARS


def custom_id_for(image_id: str) -> str:
    """An id both batch APIs accept: the image id itself when valid, else readable part + hash.

    Stable across runs (a resumed job finds the same ids); `custom_id_map` keeps the way back.
    """
    if _VALID_ID.fullmatch(image_id):
        return image_id
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()
    readable = _OTHER_CHARACTERS.sub("_", image_id)[:_READABLE_CHARS]
    return f"{readable}-{digest[:_DIGEST_CHARS]}"


def custom_id_map(image_ids: Iterable[str]) -> dict[str, str]:
    """custom_id -> image id for a whole shoot; a duplicate image id is refused, not merged."""
    mapping: dict[str, str] = {}
    for image_id in image_ids:
        custom_id = custom_id_for(image_id)
        if custom_id in mapping:
            other = mapping[custom_id]
            raise ValueError(
                f"image ids {other!r} and {image_id!r} map to the same batch custom_id "
                f"{custom_id!r}: image ids must be unique within a job"
            )
        mapping[custom_id] = image_id
    return mapping


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One photo's request: the body fast mode would send, under its custom_id."""

    custom_id: str
    body: Mapping[str, Any]


def compact_json(value: Any) -> bytes:
    """The encoding sizes are measured on: the same bytes `post_json` sends."""
    return json.dumps(value, separators=(",", ":")).encode()


# --- splitting ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """One provider batch: at most `max_requests` items and `max_bytes` in all.

    The total is `overhead` + every item's size + `separator` between two items, so a JSON
    array (`{"requests":[...]}` and commas) is measured as exactly as a JSONL file.
    """

    max_requests: int
    max_bytes: int
    overhead: int = 0
    separator: int = 0


@dataclass(frozen=True, slots=True)
class TooLarge(Generic[T]):
    """An item that cannot fit in any batch on its own: that photo fails, the rest go on."""

    item: T
    size: int
    limit: int

    @property
    def message(self) -> str:
        return (
            f"the batch request for this photo is {self.size:,} bytes, over the provider's "
            f"{self.limit:,}-byte batch limit"
        )


@dataclass(frozen=True, slots=True)
class Split(Generic[T]):
    """Items cut into batches, in their order, plus the items no batch can hold."""

    batches: list[list[T]]
    too_large: list[TooLarge[T]]


def split_sized(items: Iterable[tuple[T, int]], limits: Limits) -> Split[T]:
    """Greedy, order-keeping packing of (item, encoded size) pairs under both limits."""
    if limits.max_requests < 1:
        raise ValueError("max_requests must be at least 1")
    batches: list[list[T]] = []
    too_large: list[TooLarge[T]] = []
    current: list[T] = []
    used = limits.overhead
    for item, size in items:
        if limits.overhead + size > limits.max_bytes:
            too_large.append(TooLarge(item, limits.overhead + size, limits.max_bytes))
            continue
        extra = size + (limits.separator if current else 0)
        if current and (len(current) >= limits.max_requests or used + extra > limits.max_bytes):
            batches.append(current)
            current, used, extra = [], limits.overhead, size
        current.append(item)
        used += extra
    if current:
        batches.append(current)
    return Split(batches, too_large)


# --- polls ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """The provider's own request counts; a count a provider does not report stays 0."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    processing: int = 0


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """One provider batch as a poll saw it, whatever the provider.

    `error` is set when the provider refused the batch as a whole (OpenAI validation). The
    ids are what `results` needs: OpenAI's output and error files, Anthropic's results URL.
    """

    id: str
    state: BatchState
    counts: BatchCounts = BatchCounts()
    error: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    results_url: str | None = None

    @property
    def done(self) -> bool:
        """The provider will not change this batch any more: its results can be fetched."""
        return self.state in TERMINAL_STATES


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineSuccess:
    """A request the provider answered; `answer()` feeds the adapter's own answer parser."""

    custom_id: str
    status: int
    body: bytes

    def answer(self) -> HTTPAnswer:
        return HTTPAnswer(self.status, {}, self.body)


@dataclass(frozen=True, slots=True)
class LineFailure:
    """A request without an answer: `errored` (with the provider's error), `expired`, `cancelled`.

    An errored line keeps the HTTP status and the error body the provider gave for it, so the
    adapter's classifier can tell a bad image (that photo fails) from a refused request.
    """

    custom_id: str
    kind: FailureKind
    message: str
    status: int | None = None
    body: bytes = b""
    error_type: str | None = None

    def answer(self) -> HTTPAnswer | None:
        """The error as an HTTP answer for the classifiers; None when no request was made."""
        return HTTPAnswer(self.status, {}, self.body) if self.status is not None else None


LineResult = LineSuccess | LineFailure


def jsonl_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for every non-blank line of a JSONL download."""
    for number, line in enumerate(data.splitlines(), start=1):
        if line.strip():
            yield number, line


# A cancel refused with these: the batch may have ended since the last poll.
ENDED_MEANWHILE = frozenset({400, 409})


async def ended_or(
    answer: HTTPAnswer,
    fetch: Callable[[], Awaitable[BatchInfo]],
    parse: Callable[[HTTPAnswer], BatchInfo],
) -> BatchInfo:
    """The answer to a cancel: a batch that has already ended has nothing left to stop, so its
    final state is returned instead of the refusal; anything else is parsed (or raised)."""
    if answer.status in ENDED_MEANWHILE:
        info = await fetch()
        if info.done:
            return info
    return parse(answer)
