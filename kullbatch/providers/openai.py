"""OpenAI Chat Completions: strict json_schema output, URL or data-URL images.

POST {OPENAI_BASE_URL or https://api.openai.com/v1}/chat/completions with a bearer key and the
optional OpenAI-Organization / OpenAI-Project headers the openai SDK sends. The wire format and
the error rules are shared with the other chat-completions providers (`_chat.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kullbatch.providers._chat import ChatEndpoint, bearer, build_body, complete, json_schema_format
from kullbatch.providers.base import FatalJobError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import aiohttp

    from kullbatch.models import Answer, PreparedImage, Prompt

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# "auto" lets OpenAI pick low or high detail from the size; our images are already 1568 px.
IMAGE_DETAIL = "auto"


class OpenAIProvider:
    """One photo, one chat completion, constrained to RATING_SCHEMA by strict structured output."""

    name = "openai"

    def __init__(
        self, *, model: str, session: aiohttp.ClientSession, endpoint: ChatEndpoint
    ) -> None:
        self.model = model
        self._session = session
        self._endpoint = endpoint

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        body = build_body(
            model=self.model,
            prompt=prompt,
            image_url=image.url if image.url is not None else image.data_uri(),
            response_format=json_schema_format(strict=True),
            detail=IMAGE_DETAIL,
        )
        return await complete(self._session, self._endpoint, body)


def create(*, model: str, session: aiohttp.ClientSession, env: Mapping[str, str]) -> OpenAIProvider:
    """Build the adapter from the environment (a Mapping, so tests pass a dict)."""
    api_key = env.get("OPENAI_API_KEY")
    if not api_key:
        raise FatalJobError("openai: set OPENAI_API_KEY in the environment")
    headers = bearer(api_key)
    if organization := env.get("OPENAI_ORG_ID"):
        headers["OpenAI-Organization"] = organization
    if project := env.get("OPENAI_PROJECT_ID"):
        headers["OpenAI-Project"] = project
    base_url = (env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    endpoint = ChatEndpoint("openai", f"{base_url}/chat/completions", headers, api_key)
    return OpenAIProvider(model=model, session=session, endpoint=endpoint)
