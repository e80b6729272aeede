"""A job's chat body encoded once, with each photo's image URL spliced into the JSON.

Every request of a job carries the same model, prompt, schema and limits; only the image
differs. Encoding the whole body per photo (the schema alone is most of it) was a steady share
of the CPU a photo costs, so `BodyTemplate` encodes the body once around a marker and, per
photo, encodes just the URL (or data URI) into the gap. The request still carries the body as
a dict (`EncodedBody`, for the batch files, the dry run and the tests), with its bytes beside it;
`http.post_json` sends those bytes, identical to what `json.dumps` of the dict gives.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

_MARK = "kullbatch\x00image-url\x00mark"  # a string no prompt or schema holds (checked)
_SEPARATORS = (",", ":")


def encode(body: Any) -> bytes:
    """The JSON bytes of a request body, as every request is sent."""
    return json.dumps(body, separators=_SEPARATORS).encode()


class EncodedBody(dict[str, Any]):
    """A request body (a plain dict to read) that carries its JSON bytes (`encoded`)."""

    __slots__ = ("encoded",)

    def __init__(self, body: dict[str, Any], encoded: bytes) -> None:
        super().__init__(body)
        self.encoded = encoded


class BodyTemplate:
    """`build(image_url=...)` encoded once; `body(url)` is that body with its bytes, cheaply."""

    __slots__ = ("_build", "_prefix", "_suffix")

    def __init__(self, build: Callable[..., dict[str, Any]]) -> None:
        self._build = build
        text = encode(build(image_url=_MARK))
        parts = text.split(encode(_MARK)[1:-1])
        # the marker once, else (a prompt that quotes it?) every body is encoded whole
        self._prefix: bytes | None = parts[0] if len(parts) == 2 else None  # noqa: PLR2004
        self._suffix = parts[-1]

    def body(self, url: str) -> dict[str, Any]:
        body = self._build(image_url=url)
        if self._prefix is None:
            return body
        return EncodedBody(body, self._prefix + encode(url)[1:-1] + self._suffix)
