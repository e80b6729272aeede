"""OpenAI Chat Completions: strict json_schema output, URL or data-URL images.

POST {OPENAI_BASE_URL or https://api.openai.com/v1}/chat/completions with a bearer key and the
optional OpenAI-Organization / OpenAI-Project headers the openai SDK sends. The wire format and
the error rules are shared with the other chat-completions providers (`_chat.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from kullbatch.errors import FatalJobError
from kullbatch.providers._chat import ChatAdapter, ChatEndpoint, bearer
from kullbatch.providers.base import Capabilities
from kullbatch.providers.registry import PROVIDERS

if TYPE_CHECKING:
    from collections.abc import Mapping

    import aiohttp

    from kullbatch.providers.base import WireRequest

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The Batch API's `url` field is relative to the API root, which OPENAI_BASE_URL stops short of
# by this version segment (the base includes /v1, like the openai SDK's).
API_VERSION_PREFIX = "/v1"


class OpenAIProvider(ChatAdapter):
    """One photo, one chat completion, constrained to RATING_SCHEMA by strict structured output."""

    name = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities(batch_api=True)
    # "auto" lets OpenAI pick low or high detail from the size; our images are already 1568 px.
    image_detail = "auto"


def batch_url(request: WireRequest) -> str:
    """The `url` of a Batch API input line for `request`: `/v1/chat/completions`."""
    return API_VERSION_PREFIX + request.path


def create(*, model: str, session: aiohttp.ClientSession, env: Mapping[str, str]) -> OpenAIProvider:
    """Build the adapter from the environment (a Mapping, so tests pass a dict)."""
    api_key = env.get("OPENAI_API_KEY")
    if not api_key:
        raise FatalJobError("openai: set OPENAI_API_KEY in the environment")
    auth = bearer(api_key)
    if organization := env.get("OPENAI_ORG_ID"):
        auth["OpenAI-Organization"] = organization
    if project := env.get("OPENAI_PROJECT_ID"):
        auth["OpenAI-Project"] = project
    base_url = PROVIDERS["openai"].base_url(env, DEFAULT_BASE_URL)
    endpoint = ChatEndpoint("openai", base_url, auth, api_key)
    return OpenAIProvider(model=model, session=session, endpoint=endpoint)
