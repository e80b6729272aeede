"""Fetch a URL image for providers that only take inline bytes (Gemini, Ollama, Groq's cap)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import aiohttp

from kullbatch.errors import PermanentImageError, Transient
from kullbatch.media.images import sniff_media_type
from kullbatch.providers.http import request

if TYPE_CHECKING:
    from kullbatch.models import PreparedImage

DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=15)
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024


async def inline_url_image(
    session: aiohttp.ClientSession,
    image: PreparedImage,
    *,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> PreparedImage:
    """Download `image.url` (bounded size and time) and return it with `data` set."""
    if image.url is None:
        return image
    answer = await request(
        session,
        "GET",
        image.url,
        headers={"accept": "image/*"},
        timeout=DOWNLOAD_TIMEOUT,
        max_bytes=max_bytes,
    )
    if answer.status == 404 or answer.status == 410:  # noqa: PLR1714, PLR2004
        raise PermanentImageError(f"downloading {image.url}: HTTP {answer.status}")
    if answer.status >= 400:  # noqa: PLR2004
        raise Transient(f"downloading {image.url}: HTTP {answer.status}")
    media_type = sniff_media_type(answer.body)
    if media_type is None:
        raise PermanentImageError(f"{image.url} did not return a JPEG, PNG, GIF or WebP image")
    return replace(image, url=None, data=answer.body, media_type=media_type)
