"""What the two batch fakes share: answers, scripted line errors, a batch moved on by polls.

Time is the number of polls, never the wall clock: each GET of a batch is one tick, and a
state lasts `polls_per_state` ticks (validating -> in_progress -> finalizing -> completed for
OpenAI; in_progress -> ended for Anthropic). While in progress, each tick finishes an equal
share of the requests, so a cancel or an expiry part-way leaves some finished and some not.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image, ImageStat


@dataclass(frozen=True)
class LineError:
    """The error one request gets instead of an answer (default: OpenAI/Anthropic's bad image)."""

    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = "invalid_image"
    message: str = "The image data you provided does not represent a valid image."


# What the model says for one request: its text (the rating JSON), or an error for the line.
Outcome = str | LineError
AnswerFn = Callable[[str, dict[str, Any]], Outcome]


def rating_for(custom_id: str) -> dict[str, Any]:
    """A valid rating (RATING_SCHEMA) that depends on the request, so a mix-up shows."""
    stars = sum(map(ord, custom_id)) % 5 + 1
    return {
        "starRating": stars,
        "colorLabel": "green" if stars >= 4 else "yellow",
        "title": f"photo {custom_id}",
        "description": f"the photo sent as {custom_id}",
        "tags": ["batch", custom_id.lower()],
        "issues": [] if stars >= 4 else ["out-of-focus"],
        "score": stars * 20 - 5,
    }


def photo_key(data: bytes) -> str:
    """What the fake "sees" in a photo: its mean colour, to the nearest 10 levels.

    Decoded pixels, not bytes, so re-encoding the photo (as kullbatch prepares it) does not
    change what the fake sees; a photo sent under another photo's custom_id is rated as itself.
    """
    with Image.open(io.BytesIO(data)) as opened:
        means = ImageStat.Stat(opened.convert("RGB")).mean
    return "rgb-" + "-".join(f"{round(mean / 10) * 10:03d}" for mean in means)


def photo_colour(n: int) -> tuple[int, int, int]:
    """Photo n's colour: distinct for n < 500, each channel a multiple of 10 (a robust key)."""
    return (n % 25) * 10, 90, 200 - (n // 25) % 20 * 10


def photo_jpeg(n: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A real JPEG of photo n's colour, as kullbatch prepares photos (quality 85)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, photo_colour(n)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def expected_rating(photo: Path | bytes) -> dict[str, Any]:
    """The rating the fakes answer for this photo (a file on disk, or its bytes)."""
    data = photo.read_bytes() if isinstance(photo, Path) else photo
    return rating_for(photo_key(data))


def seen_in(body: dict[str, Any]) -> str:
    """What the model sees of the request's photo: `photo_key` of inline bytes (OpenAI's data
    URI, Anthropic's base64 source), or the file a URL names (the API fetches it; the fake
    reads its name, as tests/fault_server.py does).

    Only called on bodies the fake has validated, so the image is there and decodes.
    """
    for part in body["messages"][-1]["content"]:
        if part.get("type") == "image_url":
            url = part["image_url"]["url"]
        elif part.get("type") == "image":
            source = part["source"]
            url = source.get("url") or "data:;base64," + source["data"]
        else:
            continue
        if url.startswith("data:"):
            return photo_key(base64.b64decode(url.partition(",")[2], validate=True))
        return "url-" + url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    raise ValueError("no image in the request")


def default_answer(custom_id: str, body: dict[str, Any]) -> Outcome:
    """The model's answer, from what the photo shows (never from the custom_id)."""
    return json.dumps(rating_for(seen_in(body)))


def errors_for(ids: set[str], error: LineError | None = None) -> AnswerFn:
    """An answer function: the listed requests get `error`, the others a rating."""
    wrong = error or LineError()

    def answer(custom_id: str, body: dict[str, Any]) -> Outcome:
        return wrong if custom_id in ids else default_answer(custom_id, body)

    return answer


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    size: int


@dataclass
class FakeBatch:
    """A batch's life, ticked by polls; provider-neutral phase names (OpenAI's)."""

    id: str
    requests: list[tuple[str, dict[str, Any]]]
    answer: AnswerFn
    polls_per_state: int = 1
    expire_after: int | None = None  # the window ends with this many requests finished
    failure: str | None = None  # validation fails with this message
    phase: str = "validating"
    finalizing: bool = True
    polls: int = 0
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    cancel_requested: bool = False
    # lines the API refuses as a fast-mode request would be refused: their per-line error
    rejected: dict[str, LineError] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.phase in {"completed", "failed", "expired", "cancelled"}

    @property
    def unfinished(self) -> list[str]:
        return [cid for cid, _ in self.requests if cid not in self.outcomes]

    def counts(self) -> tuple[int, int]:
        """(succeeded, errored) so far."""
        errored = sum(isinstance(outcome, LineError) for outcome in self.outcomes.values())
        return len(self.outcomes) - errored, errored

    def tick(self) -> None:
        """One poll's worth of time."""
        self.polls += 1
        if self.phase == "cancelling":
            self._enter("cancelled")
        elif self.phase == "validating" and self.polls >= self.polls_per_state:
            self._enter("failed" if self.failure else "in_progress")
        elif self.phase == "in_progress":
            self._work()
        elif self.phase == "finalizing" and self.polls >= self.polls_per_state:
            self._enter("completed")

    def cancel(self) -> None:
        if not self.done:
            self.cancel_requested = True
            self._enter("cancelling")

    def _work(self) -> None:
        share = math.ceil(len(self.requests) / self.polls_per_state)
        limit = len(self.requests) if self.expire_after is None else self.expire_after
        for custom_id, body in self.requests:
            if share == 0 or len(self.outcomes) >= limit:
                break
            if custom_id not in self.outcomes:
                rejected = self.rejected.get(custom_id)
                outcome = rejected if rejected is not None else self.answer(custom_id, body)
                self.outcomes[custom_id] = outcome
                share -= 1
        if self.polls >= self.polls_per_state:
            if self.unfinished:
                self._enter("expired")
            else:
                self._enter("finalizing" if self.finalizing else "completed")

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.polls = 0


def shuffled(lines: list[bytes], seed: int | None) -> bytes:
    """Result lines as JSONL, in a random order unless `seed` is None."""
    if seed is not None:
        random.Random(seed).shuffle(lines)
    return b"".join(line + b"\n" for line in lines)


def recording_middleware(seen: list[Seen]) -> Any:
    """Every request, known route or not, so a test can say "no per-photo requests"."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(Seen(request.method, request.path, request.content_length or 0))
        return await handler(request)

    return record
