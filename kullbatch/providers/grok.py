"""xAI Grok through its OpenAI-compatible Chat Completions endpoint.

POST {XAI_BASE_URL or https://api.x.ai/v1}/chat/completions with a bearer key and the same body
as OpenAI (strict json_schema). Two differences matter: xAI takes only JPEG and PNG, and it
answers a wrong key with a 400 and a flat body `{"code": ..., "error": "Incorrect API key ..."}`
that must stop the job rather than fail one image.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from kullbatch.images import DEFAULT_MAX_EDGE, encode_image
from kullbatch.providers._chat import (
    ChatEndpoint,
    ErrorInfo,
    bearer,
    build_body,
    complete,
    json_schema_format,
)
from kullbatch.providers.base import FatalJobError, PermanentImageError, ProviderError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import aiohttp

    from kullbatch.models import Answer, PreparedImage, Prompt

DEFAULT_BASE_URL = "https://api.x.ai/v1"
IMAGE_DETAIL = "high"  # xAI's documented value for image understanding
ACCEPTED_MEDIA_TYPES = frozenset({"image/jpeg", "image/png"})


class GrokProvider:
    """One photo, one chat completion with strict structured output."""

    name = "grok"

    def __init__(
        self, *, model: str, session: aiohttp.ClientSession, endpoint: ChatEndpoint
    ) -> None:
        self.model = model
        self._session = session
        self._endpoint = endpoint

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        if image.url is None:
            image = await as_jpeg_or_png(image)
        body = build_body(
            model=self.model,
            prompt=prompt,
            image_url=image.url if image.url is not None else image.data_uri(),
            response_format=json_schema_format(strict=True),
            detail=IMAGE_DETAIL,
        )
        return await complete(self._session, self._endpoint, body)


async def as_jpeg_or_png(image: PreparedImage) -> PreparedImage:
    """Inline bytes in another format (WebP, GIF) are re-encoded as JPEG, which xAI accepts."""
    if image.media_type in ACCEPTED_MEDIA_TYPES or image.data is None:
        return image
    data = await asyncio.to_thread(_to_jpeg, image.data, image.image_id)
    return replace(image, data=data, media_type="image/jpeg")


def _to_jpeg(data: bytes, image_id: str) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return encode_image(opened, DEFAULT_MAX_EDGE)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PermanentImageError(
            f"grok: image {image_id} cannot be converted to JPEG: {exc}"
        ) from exc


def grok_error_rule(status: int, info: ErrorInfo) -> type[ProviderError] | None:
    """xAI answers a wrong or revoked key with 400, not 401."""
    if status == 400 and "api key" in info.message.lower():  # noqa: PLR2004
        return FatalJobError
    return None


def create(*, model: str, session: aiohttp.ClientSession, env: Mapping[str, str]) -> GrokProvider:
    """Build the adapter from the environment (a Mapping, so tests pass a dict)."""
    api_key = env.get("XAI_API_KEY")
    if not api_key:
        raise FatalJobError("grok: set XAI_API_KEY in the environment")
    base_url = (env.get("XAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    endpoint = ChatEndpoint(
        "grok", f"{base_url}/chat/completions", bearer(api_key), api_key, grok_error_rule
    )
    return GrokProvider(model=model, session=session, endpoint=endpoint)
