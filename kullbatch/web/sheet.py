"""What the dashboard's contact sheet needs of the server, beside the routes in `web.api`:

- the body of `PUT /api/batch/results/:jobId/:imageId/rating`, `{"rating": -1..5}` (0 clears),
  read strictly: anything else is a 400 naming `rating`;
- pictures the browser keeps: each thumbnail or large preview carries an ETag made from the
  file's size and modification time and the edge it was drawn at, and a Cache-Control that lets
  the browser reuse it for a day without asking, then ask with `If-None-Match` (a 304 costs no
  decoding); `?size=large` asks for the large view's preview instead of the grid's thumbnail.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from aiohttp import web

from kullbatch.errors import FieldError

if TYPE_CHECKING:
    from pathlib import Path

THUMBNAIL_EDGE = 320  # the grid's cells, sharp on a 2x screen
LARGE_EDGE = 1600  # the large view: a 1280x800 window, or a phone's, filled
SIZES = {"": THUMBNAIL_EDGE, "small": THUMBNAIL_EDGE, "large": LARGE_EDGE}
CACHE_CONTROL = "private, max-age=86400"  # a day, then a revalidation by ETag
LOWEST, HIGHEST = -1, 5


class RatingBodyError(FieldError):
    """A rating body the route refuses: the message says what was wrong and what is wanted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "rating")


def rating_value(body: bytes) -> int:
    """The rating in a request body, -1..5; RatingBodyError for anything else.

    Only a JSON integer counts: `true`, `3.0` and `"3"` are refused, so a client that sends the
    wrong type hears so instead of having its value silently converted.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f'request body: malformed JSON ({exc.__class__.__name__}); send {{"rating": -1..5}}'
        raise RatingBodyError(msg) from None
    if not isinstance(document, dict) or "rating" not in document:
        msg = 'rating: missing; send {"rating": -1..5} (-1 rejects, 0 clears)'
        raise RatingBodyError(msg)
    value = document["rating"]
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"rating: expected a whole number -1..5, got {type(value).__name__}"
        raise RatingBodyError(msg)
    if not LOWEST <= value <= HIGHEST:
        msg = f"rating: expected -1..5 (-1 rejects, 0 clears), got {str(value)[:20]}"
        raise RatingBodyError(msg)
    return value


def picture_edge(size: str | None) -> int | None:
    """The edge for `?size=` (none or `small`: a thumbnail; `large`: the large view)."""
    return SIZES.get(size or "")


def etag(path: Path, edge: int) -> str | None:
    """The picture's validator: the file's size and modification time, and the edge drawn at;
    None when the file cannot be looked at (the route then reports why)."""
    try:
        stat = os.stat(path)  # noqa: PTH116 - one call, no Path object to build in the thread
    except OSError:
        return None
    return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}-{edge}"'


def not_modified(request: web.Request, tag: str | None) -> bool:
    """Whether the browser already holds this very picture (`If-None-Match` names its tag)."""
    if tag is None:
        return False
    asked = request.headers.get("If-None-Match", "")
    return any(part.strip() in {tag, "*"} for part in asked.split(","))


def cache_headers(tag: str | None) -> dict[str, str]:
    headers = {"Cache-Control": CACHE_CONTROL}
    if tag is not None:
        headers["ETag"] = tag
    return headers


def unchanged(tag: str | None) -> web.Response:
    return web.Response(status=304, headers=cache_headers(tag))
