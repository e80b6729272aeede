"""What the OpenAI Batch API and Anthropic's Message Batches have in common, provider-neutral.

- `custom_id_for`: one id per photo that both APIs accept (`^[a-zA-Z0-9_-]{1,64}$`), so a
  result is matched back by id, never by line order.
- `BatchFile`: the batch being filled on disk, framed for its provider, under its `Limits`: a
  request count AND a byte limit (photos travel inline as base64: a few hundred fill a file).
- `BatchInfo`, `LineSuccess` / `LineFailure`: what a poll and a results download say, in one
  vocabulary whatever the provider, so the engine never reads a provider's wire format.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from kullbatch.providers.http import HTTPAnswer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from pathlib import Path

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

    Stable across runs (a resumed job finds the same ids); the store keeps the way back.
    """
    if _VALID_ID.fullmatch(image_id):
        return image_id
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogatepass")).hexdigest()
    readable = _OTHER_CHARACTERS.sub("_", image_id)[:_READABLE_CHARS]
    return f"{readable}-{digest[:_DIGEST_CHARS]}"


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One photo's request: the body fast mode would send, under its custom_id."""

    custom_id: str
    body: Mapping[str, Any]


def compact_json(value: Any) -> bytes:
    """The encoding sizes are measured on: the same bytes `post_json` sends."""
    return json.dumps(value, separators=(",", ":")).encode()


# --- packing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """One provider batch: at most `max_requests` requests and `max_bytes` in all."""

    max_requests: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Framing:
    """How encoded requests are joined into what is sent: a JSONL file, or a JSON array.

    A batch's size is the prefix and suffix, every request, and a separator between two, so
    a JSON array (`{"requests":[...]}` and commas) is measured as exactly as a JSONL file.
    """

    prefix: bytes = b""
    separator: bytes = b""
    suffix: bytes = b""


class BatchFile:
    """The batch being filled: its requests on disk (framed for the provider), their ids.

    Economy mode appends each photo's encoded request as it is built, so memory holds one
    request, not a 200 MB batch; the finished file is streamed to the provider.
    """

    def __init__(self, path: Path, limits: Limits, framing: Framing) -> None:
        self._path = path
        self._limits = limits
        self._framing = framing
        self._handle: BinaryIO | None = None
        self.ids: dict[str, str] = {}
        self._size = 0

    def holds(self, size: int) -> bool:
        """A request of `size` bytes fits a batch of its own (else that photo fails alone)."""
        framing = len(self._framing.prefix) + len(self._framing.suffix)
        return framing + size <= self._limits.max_bytes

    def fits(self, size: int) -> bool:
        """A request of `size` bytes can join this batch without passing either limit."""
        if not self.ids:
            return True
        extra = size + len(self._framing.separator)
        return (
            len(self.ids) < self._limits.max_requests
            and self._size + extra <= self._limits.max_bytes
        )

    def add(self, custom_id: str, image_id: str, encoded: bytes) -> None:
        if self._handle is None:
            self._handle = self._path.open("wb")
            self._handle.write(self._framing.prefix)
            self._size = len(self._framing.prefix) + len(self._framing.suffix)
        else:
            self._handle.write(self._framing.separator)
            self._size += len(self._framing.separator)
        self._handle.write(encoded)
        self._size += len(encoded)
        self.ids[custom_id] = image_id

    def finish(self) -> tuple[Path, dict[str, str], int]:
        """Close the file; the next `add` starts a new batch."""
        assert self._handle is not None
        self._handle.write(self._framing.suffix)
        self.close()
        ids, self.ids = self.ids, {}
        return self._path, ids, self._size

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


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
