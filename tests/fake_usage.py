"""Usage the way the real APIs count it, for fakes that answer with honest token counts.

Written from the providers' vision guides, apart from kullbatch.pricing.prices, so that a test comparing
the dry run's estimate with what a run records compares two separate workings:

- Anthropic shrinks a photo whose long edge is over 1568 px or whose area is over ~1.2 MP
  (1600 tokens), keeping its aspect ratio in whole pixels, then bills ceil(width*height/750).
- OpenAI's mini models cover the photo with 32 px patches; over 1536 patches the photo is
  shrunk until 1536 whole patches cover it; the count is multiplied by 1.62 (gpt-5-mini).
- Text (prompt, system prompt, schema, answer) is about four characters a token.
"""

from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

from PIL import Image

from kullbatch.providers.base import RATING_SCHEMA


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as opened:
        return opened.size


def text_tokens(*texts: str) -> int:
    return sum(math.ceil(len(text) / 4) for text in texts)


def anthropic_image_tokens(width: int, height: int) -> int:
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_200_000 / (width * height)))
    width, height = int(width * scale), int(height * scale)
    return math.ceil(width * height / 750)


def openai_patch_tokens(width: int, height: int, multiplier: float = 1.62) -> int:
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches > 1536:
        ratio = math.sqrt(32 * 32 * 1536 / (width * height))
        ratio *= min(
            math.floor(width * ratio / 32) / (width * ratio / 32),
            math.floor(height * ratio / 32) / (height * ratio / 32),
        )
        patches = round(width * ratio / 32) * round(height * ratio / 32)
    return math.ceil(patches * multiplier)


def anthropic_usage(body: dict[str, Any], answer: str) -> tuple[int, int]:
    """(input, output) tokens of a Messages request with one base64 photo."""
    image, text = body["messages"][0]["content"]
    width, height = size_of(base64.b64decode(image["source"]["data"]))
    schema = json.dumps(body["output_config"]["format"]["schema"])
    prompt = text_tokens(text["text"], body.get("system") or "", schema)
    return anthropic_image_tokens(width, height) + prompt, text_tokens(answer)


def openai_usage(body: dict[str, Any], answer: str) -> tuple[int, int]:
    """(input, output) tokens of a chat completion with one data-URL photo."""
    texts: list[str] = [json.dumps(RATING_SCHEMA)]
    image_tokens = 0
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content:
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                image_tokens += openai_patch_tokens(*size_of(data))
    return image_tokens + text_tokens(*texts), text_tokens(answer)
