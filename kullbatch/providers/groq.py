"""Groq through its OpenAI-compatible Chat Completions endpoint.

POST {GROQ_BASE_URL or https://api.groq.com}/openai/v1/chat/completions with a bearer key.
Groq's vision models take `json_schema` only as best effort (`strict: false`), so every answer is
re-validated, and Groq's 400 `json_validate_failed` (the model missed the schema) is worth
another try. A request carrying a base64 image may not exceed 4 MB (else 413), so local images
are shrunk until the whole JSON body fits; URL images pass as URLs (Groq fetches up to 20 MB).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kullbatch.images import fit_within
from kullbatch.providers._chat import (
    ChatEndpoint,
    ErrorInfo,
    bearer,
    build_body,
    complete,
    json_schema_format,
)
from kullbatch.providers.base import (
    FatalJobError,
    PermanentImageError,
    ProviderError,
    Transient,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import aiohttp

    from kullbatch.models import Answer, PreparedImage, Prompt

DEFAULT_BASE_URL = "https://api.groq.com"
# Groq's documented cap for a request with a base64 image is "4MB"; the decimal reading is the
# safer one and leaves room for the headers.
MAX_BASE64_REQUEST_BYTES = 4_000_000
_DATA_URI_PREFIX = "data:image/jpeg;base64,"


class GroqProvider:
    """One photo, one chat completion with best-effort json_schema output."""

    name = "groq"

    def __init__(
        self, *, model: str, session: aiohttp.ClientSession, endpoint: ChatEndpoint
    ) -> None:
        self.model = model
        self._session = session
        self._endpoint = endpoint

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        if image.url is not None:
            return await complete(self._session, self._endpoint, self._body(prompt, image.url))
        overhead = len(_encoded(self._body(prompt, ""))) + len(_DATA_URI_PREFIX)
        image = await fit_request(image, max_raw_bytes(MAX_BASE64_REQUEST_BYTES - overhead))
        return await complete(self._session, self._endpoint, self._body(prompt, image.data_uri()))

    def _body(self, prompt: Prompt, image_url: str) -> dict[str, Any]:
        return build_body(
            model=self.model,
            prompt=prompt,
            image_url=image_url,
            response_format=json_schema_format(strict=False),
        )


def max_raw_bytes(base64_budget: int) -> int:
    """The largest byte count whose base64 (4 characters per 3 bytes) fits the budget."""
    return max(0, base64_budget // 4 * 3)


async def fit_request(image: PreparedImage, max_bytes: int) -> PreparedImage:
    """Shrink the JPEG (in a worker thread) so the base64 request stays under Groq's cap."""
    assert image.data is not None
    if len(image.data) <= max_bytes:
        return image
    try:
        data = await asyncio.to_thread(fit_within, image.data, max_bytes)
    except PermanentImageError as exc:
        raise PermanentImageError(
            f"groq: {exc.message} (Groq takes at most 4 MB per request with a base64 image)"
        ) from exc
    return replace(image, data=data, media_type="image/jpeg")


def _encoded(body: Mapping[str, Any]) -> bytes:
    # the same encoding post_json sends, so the measured size is the size on the wire
    return json.dumps(body, separators=(",", ":")).encode()


def groq_error_rule(status: int, info: ErrorInfo) -> type[ProviderError] | None:
    """Groq's 400 `json_validate_failed` means this generation missed the schema: try again."""
    if status == 400 and info.code == "json_validate_failed":  # noqa: PLR2004
        return Transient
    return None


def create(*, model: str, session: aiohttp.ClientSession, env: Mapping[str, str]) -> GroqProvider:
    """Build the adapter from the environment (a Mapping, so tests pass a dict)."""
    api_key = env.get("GROQ_API_KEY")
    if not api_key:
        raise FatalJobError("groq: set GROQ_API_KEY in the environment")
    base_url = (env.get("GROQ_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    url = f"{base_url}/openai/v1/chat/completions"
    endpoint = ChatEndpoint(
        "groq", url, bearer(api_key), api_key, groq_error_rule, requests_per_day=True
    )
    return GroqProvider(model=model, session=session, endpoint=endpoint)
