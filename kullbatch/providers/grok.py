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
from kullbatch.providers._chat import ChatAdapter, ChatEndpoint, ErrorInfo, bearer
from kullbatch.providers.registry import PROVIDERS

if TYPE_CHECKING:
    from collections.abc import Mapping

    import aiohttp

    from kullbatch.models import Answer, PreparedImage, Prompt

DEFAULT_BASE_URL = "https://api.x.ai/v1"
ACCEPTED_MEDIA_TYPES = frozenset({"image/jpeg", "image/png"})
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # xAI's documented limit per image


class GrokProvider(ChatAdapter):
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
    base_url = PROVIDERS["grok"].base_url(env, DEFAULT_BASE_URL)
    endpoint = ChatEndpoint("grok", base_url, bearer(api_key), api_key, grok_error_rule)
    return GrokProvider(model=model, session=session, endpoint=endpoint)
