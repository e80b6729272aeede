"""How the fakes answer a burst comparison: from the frames' pixels, never from their order.

Each frame's sharpness is the variance of its edges (a blurred or shaken frame has little), and
the verdict ranks the frames sharpest first, as a model looking for the frame in focus would.
A test that sends the sharpest frame anywhere but first sees whether the adapter and the
engine map the model's frame numbers back to the right photos.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from PIL import Image, ImageFilter, ImageStat

from kullbatch.providers.compare import COMPARE_SCHEMA, COMPARE_SCHEMA_NAME

__all__ = ["COMPARE_SCHEMA", "COMPARE_SCHEMA_NAME", "sharpness", "verdict", "verdict_text"]


def sharpness(data: bytes) -> float:
    """The variance of the frame's edges on a small greyscale copy: more is sharper."""
    with Image.open(io.BytesIO(data)) as opened:
        grey = opened.convert("L")
    grey.thumbnail((256, 256))
    return float(ImageStat.Stat(grey.filter(ImageFilter.FIND_EDGES)).var[0])


def verdict(frames: list[bytes]) -> dict[str, Any]:
    """The comparison a careful model gives: sharpest first, 1-based frame numbers."""
    scores = [sharpness(frame) for frame in frames]
    ranking = sorted(range(1, len(frames) + 1), key=lambda n: -scores[n - 1])
    return {
        "best": ranking[0],
        "ranking": ranking,
        "reason": f"Frame {ranking[0]} is the sharpest: the eyes are in focus, no motion blur.",
    }


def verdict_text(frames: list[bytes]) -> str:
    return json.dumps(verdict(frames))


def decode_data_uri(url: str) -> bytes:
    return base64.b64decode(url.partition(",")[2])
