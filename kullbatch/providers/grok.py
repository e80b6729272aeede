"""xAI Grok through its OpenAI-compatible Chat Completions endpoint.

POST {XAI_BASE_URL or https://api.x.ai/v1}/chat/completions with a bearer key and the same body
as OpenAI (strict json_schema). Two differences matter: xAI takes only JPEG and PNG, and it
answers a wrong key with a 400 and a flat body `{"code": ..., "error": "Incorrect API key ..."}`
that must stop the job rather than fail one image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kullbatch.errors import FatalJobError, ProviderError
from kullbatch.media.images import fit_image
from kullbatch.providers._chat import ChatEndpoint, ErrorInfo
from kullbatch.providers._chat_compare import ChatComparer
from kullbatch.providers.registry import PROVIDERS

if TYPE_CHECKING:
    from collections.abc import Sequence

    import aiohttp

    from kullbatch.models import Answer, PreparedImage, Prompt
    from kullbatch.providers.base import Credentials

DEFAULT_BASE_URL = PROVIDERS["grok"].default_base_url
ACCEPTED_MEDIA_TYPES = frozenset({"image/jpeg", "image/png"})
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # xAI's documented limit per image


class GrokProvider(ChatComparer):
    """One photo, one chat completion with strict structured output."""

    name = "grok"
    image_detail = "high"  # xAI's documented value for image understanding

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        """Inline bytes in another format (WebP, GIF) are re-encoded as JPEG first."""
        ready = await fit_image(
            image,
            max_bytes=MAX_IMAGE_BYTES,
            media_types=ACCEPTED_MEDIA_TYPES,
            why="grok accepts JPEG or PNG, at most 20 MiB per image",
        )
        return await super().rate(ready, prompt)

    async def ready_frames(self, frames: Sequence[PreparedImage]) -> list[PreparedImage]:
        """A burst's frames as JPEG or PNG, each under xAI's per-image limit."""
        why = "grok accepts JPEG or PNG, at most 20 MiB per image"
        return [
            await fit_image(f, max_bytes=MAX_IMAGE_BYTES, media_types=ACCEPTED_MEDIA_TYPES, why=why)
            for f in frames
        ]


def grok_error_rule(status: int, info: ErrorInfo) -> type[ProviderError] | None:
    """xAI answers a wrong or revoked key with 400, not 401."""
    if status == 400 and "api key" in info.message.lower():  # noqa: PLR2004
        return FatalJobError
    return None


def create(*, model: str, session: aiohttp.ClientSession, credentials: Credentials) -> GrokProvider:
    """Build the adapter from the job's credentials (`PROVIDERS["grok"].credentials(env)`)."""
    endpoint = ChatEndpoint.of(credentials, grok_error_rule)
    return GrokProvider(model=model, session=session, endpoint=endpoint)
