"""Burst comparison through Gemini's generateContent: several `inlineData` parts in one turn.

The question comes first, then each frame's label and its image (bursts are local photos, sent
inline), with the comparison schema as `responseJsonSchema`. The frames share the inline
request's 20 MB: each is shrunk, if need be, to its share of the adapter's image budget. The
adapter (`gemini.GeminiProvider.compare`) sends it and reads the answer as it reads a rating's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kullbatch.media.images import fit_image
from kullbatch.providers.base import WireRequest
from kullbatch.providers.compare import COMPARE_SCHEMA, compare_prompt, frame_label

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kullbatch.models import PreparedImage


def compare_body(frames: Sequence[PreparedImage], max_output_tokens: int) -> dict[str, Any]:
    """A GenerateContentRequest for a burst, the comparison schema as the format."""
    parts: list[dict[str, Any]] = [{"text": compare_prompt(len(frames))}]
    for number, frame in enumerate(frames, start=1):
        parts.append({"text": frame_label(number)})
        parts.append({"inlineData": {"mimeType": frame.media_type, "data": frame.base64()}})
    return {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseJsonSchema": COMPARE_SCHEMA,
            "maxOutputTokens": max_output_tokens,
        },
    }


async def compare_request(
    path: str,
    frames: Sequence[PreparedImage],
    *,
    max_image_bytes: int,
    media_types: frozenset[str],
    max_output_tokens: int,
) -> WireRequest:
    """The request for a burst, each frame shrunk (if need be) to its share of the budget."""
    share = max_image_bytes // max(1, len(frames))
    why = "gemini inline requests must stay under 20 MB"
    ready = [await fit_image(f, max_bytes=share, media_types=media_types, why=why) for f in frames]
    body = compare_body(ready, max_output_tokens)
    return WireRequest(path, {"accept": "application/json"}, body)
