"""Groq through its OpenAI-compatible Chat Completions endpoint.

POST {GROQ_BASE_URL or https://api.groq.com}/openai/v1/chat/completions with a bearer key.
Groq's vision models take `json_schema` only as best effort (`strict: false`), so every answer is
re-validated, and Groq's 400 `json_validate_failed` (the model missed the schema) is worth
another try. A request carrying a base64 image may not exceed 4 MB (else 413), so local images
are shrunk until the whole JSON body fits; URL images pass as URLs (Groq fetches up to 20 MB).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kullbatch.errors import ProviderError, Transient
from kullbatch.media.images import fit_image
from kullbatch.providers._chat import ChatEndpoint, ErrorInfo
from kullbatch.providers._chat_compare import ChatComparer
from kullbatch.providers.registry import PROVIDERS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import aiohttp

    from kullbatch.models import Answer, PreparedImage, Prompt
    from kullbatch.providers.base import Credentials

DEFAULT_BASE_URL = PROVIDERS["groq"].default_base_url
PATH = "/openai/v1/chat/completions"  # relative to the host, as the groq SDK appends it
# Groq's documented cap for a request with a base64 image is "4MB"; the decimal reading is the
# safer one and leaves room for the headers.
MAX_BASE64_REQUEST_BYTES = 4_000_000
MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})
_DATA_URI_PREFIX = "data:image/jpeg;base64,"


class GroqProvider(ChatComparer):
    """One photo, one chat completion with best-effort json_schema output."""

    name = "groq"
    strict_schema = False  # vision models take json_schema only as best effort

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        """A local image is shrunk until the whole base64 request fits Groq's 4 MB cap."""
        if image.data is not None:
            empty = replace(image, url="", data=None)
            overhead = len(_encoded(self.build_request(empty, prompt).body)) + len(_DATA_URI_PREFIX)
            image = await fit_image(
                image,
                max_bytes=max_raw_bytes(MAX_BASE64_REQUEST_BYTES - overhead),
                media_types=MEDIA_TYPES,
                why="Groq takes at most 4 MB per request with a base64 image",
            )
        return await super().rate(image, prompt)

    async def ready_frames(self, frames: Sequence[PreparedImage]) -> list[PreparedImage]:
        """A burst's frames (at most five: Groq's limit) shrunk alike until the whole base64
        request fits Groq's 4 MB cap."""
        empty = [replace(frame, data=b"") for frame in frames]
        overhead = len(_encoded(self.compare_request(empty).body))
        share = (MAX_BASE64_REQUEST_BYTES - overhead) // max(1, len(frames))
        why = "Groq takes at most 4 MB per request with base64 images"
        return [
            await fit_image(f, max_bytes=max_raw_bytes(share), media_types=MEDIA_TYPES, why=why)
            for f in frames
        ]


def max_raw_bytes(base64_budget: int) -> int:
    """The largest byte count whose base64 (4 characters per 3 bytes) fits the budget."""
    return max(0, base64_budget // 4 * 3)


def _encoded(body: Mapping[str, Any]) -> bytes:
    # the same encoding post_json sends, so the measured size is the size on the wire
    return json.dumps(body, separators=(",", ":")).encode()


def groq_error_rule(status: int, info: ErrorInfo) -> type[ProviderError] | None:
    """Groq's 400 `json_validate_failed` means this generation missed the schema: try again."""
    if status == 400 and info.code == "json_validate_failed":  # noqa: PLR2004
        return Transient
    return None


def create(*, model: str, session: aiohttp.ClientSession, credentials: Credentials) -> GroqProvider:
    """Build the adapter from the job's credentials (`PROVIDERS["groq"].credentials(env)`)."""
    endpoint = ChatEndpoint.of(credentials, groq_error_rule, requests_per_day=True, path=PATH)
    return GroqProvider(model=model, session=session, endpoint=endpoint)
