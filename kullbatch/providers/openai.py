"""OpenAI Chat Completions: strict json_schema output, URL or data-URL images.

POST {OPENAI_BASE_URL or https://api.openai.com/v1}/chat/completions with a bearer key and the
optional OpenAI-Organization / OpenAI-Project headers the openai SDK sends. The wire format and
the error rules are shared with the other chat-completions providers (`_chat.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kullbatch.providers._chat import ChatEndpoint
from kullbatch.providers._chat_compare import ChatComparer
from kullbatch.providers.registry import PROVIDERS

if TYPE_CHECKING:
    import aiohttp

    from kullbatch.providers.base import Credentials, WireRequest

DEFAULT_BASE_URL = PROVIDERS["openai"].default_base_url
# The Batch API's `url` field is relative to the API root, which OPENAI_BASE_URL stops short of
# by this version segment (the base includes /v1, like the openai SDK's).
API_VERSION_PREFIX = "/v1"


class OpenAIProvider(ChatComparer):
    """One photo, one chat completion, constrained to RATING_SCHEMA by strict structured output."""

    name = "openai"
    # "auto" lets OpenAI pick low or high detail from the size; our images are already 1568 px.
    image_detail = "auto"


def batch_url(request: WireRequest) -> str:
    """The `url` of a Batch API input line for `request`: `/v1/chat/completions`."""
    return API_VERSION_PREFIX + request.path


def create(
    *, model: str, session: aiohttp.ClientSession, credentials: Credentials
) -> OpenAIProvider:
    """Build the adapter from the job's credentials (`PROVIDERS["openai"].credentials(env)`)."""
    endpoint = ChatEndpoint.of(credentials)
    return OpenAIProvider(model=model, session=session, endpoint=endpoint)
