"""Any OpenAI-compatible chat server: Ollama, vLLM, llama.cpp, LM Studio, a corporate gateway.

POST {OPENAI_COMPATIBLE_BASE_URL}/chat/completions; the base URL is required (there is no
sensible default host) and the bearer key is sent only when OPENAI_COMPATIBLE_API_KEY is set.
Images always travel as data URIs, because Ollama does not fetch URLs. Structured output tries
`json_schema` first; a server that rejects it (a 400 naming response_format/json_schema, or a
422 from a strict request validator) gets `json_object` with the schema spelled out in the
prompt, for this image at once and for the rest of the job.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from kullbatch.errors import FatalJobError
from kullbatch.providers._chat import (
    JSON_OBJECT_FORMAT,
    ChatEndpoint,
    error_info,
    json_schema_format,
)
from kullbatch.providers._chat_compare import ChatComparer
from kullbatch.providers.base import RATING_SCHEMA, Capabilities
from kullbatch.providers.compare import schema_instructions
from kullbatch.providers.download import inline_url_image
from kullbatch.providers.http import HTTPAnswer, scrub
from kullbatch.providers.registry import PROVIDERS

if TYPE_CHECKING:
    from collections.abc import Sequence

    import aiohttp

    from kullbatch.models import Answer, PreparedImage, Prompt
    from kullbatch.providers.base import Credentials, WireRequest
    from kullbatch.providers.compare import Verdict

log = logging.getLogger("kullbatch.admin")  # the fallback is worth a line in the admin log

BASE_URL_VAR = PROVIDERS["openai-compatible"].base_url_vars[0]
_SCHEMA_REJECTED = re.compile(
    r"response_format|response format|json_schema|json schema", re.IGNORECASE
)
JSON_OBJECT_INSTRUCTIONS = (
    "Answer with one JSON object and nothing else, matching this JSON Schema:\n"
    + json.dumps(RATING_SCHEMA, separators=(",", ":"))
)


class OpenAICompatibleProvider(ChatComparer):
    """One photo, one chat completion; json_schema if the server takes it, else json_object."""

    name = "openai-compatible"
    # downloads URL photos (Ollama does not fetch them): the engine bounds how many at once
    capabilities: ClassVar[Capabilities] = Capabilities(inlines_url_images=True)
    # older local servers know only the original name; unknown fields are ignored
    max_tokens_field = "max_tokens"

    def __init__(
        self, *, model: str, session: aiohttp.ClientSession, endpoint: ChatEndpoint
    ) -> None:
        super().__init__(model=model, session=session, endpoint=endpoint)
        # Set once the server rejects json_schema, so the other images go straight to json_object.
        self.json_object_only = False

    def build_request(self, image: PreparedImage, prompt: Prompt) -> WireRequest:
        """json_schema until the server has rejected it, json_object (schema in the text) after."""
        if not self.json_object_only:
            return self.chat_request(image, prompt, json_schema_format(strict=True))
        prompt = replace(prompt, text=f"{prompt.text}\n\n{JSON_OBJECT_INSTRUCTIONS}")
        return self.chat_request(image, prompt, JSON_OBJECT_FORMAT)

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        ready = await inline_url_image(self._session, image)
        if not self.json_object_only:
            answer = await self.send(self.build_request(ready, prompt))
            if answer.ok or not rejects_json_schema(answer):
                return self.parse_answer(answer)
            if not self.json_object_only:  # images in flight learn it too: say it once
                log.warning(
                    "%s rejected response_format json_schema (HTTP %d: %s); using json_object",
                    self._endpoint.url,
                    answer.status,
                    scrub(error_info(answer).message[:200], self._endpoint.api_key),
                )
                self.json_object_only = True
        return await super().rate(ready, prompt)

    async def compare(self, frames: Sequence[PreparedImage]) -> Verdict:
        """As `rate`: json_schema until the server rejects it, then json_object with the
        comparison schema spelled out in the question."""
        if not self.json_object_only:
            answer = await self.send(self.compare_request(frames))
            if answer.ok or not rejects_json_schema(answer):
                return self.parse_verdict(answer, len(frames))
            self.json_object_only = True
        request = self.compare_request(frames, JSON_OBJECT_FORMAT, schema_instructions())
        return self.parse_verdict(await self.send(request), len(frames))


def rejects_json_schema(answer: HTTPAnswer) -> bool:
    """Did the server refuse `response_format: json_schema` itself (not the image, not auth)?"""
    if answer.status == 422:  # noqa: PLR2004
        return True
    if answer.status != 400:  # noqa: PLR2004
        return False
    info = error_info(answer)
    return bool(_SCHEMA_REJECTED.search(f"{info.message} {info.param or ''}"))


def create(
    *, model: str, session: aiohttp.ClientSession, credentials: Credentials
) -> OpenAICompatibleProvider:
    """Build the adapter; without a base URL there is nowhere to send, so the job stops.

    The bearer key is sent only when OPENAI_COMPATIBLE_API_KEY is set (`credentials.headers`).
    """
    if not credentials.base_url:
        raise FatalJobError(
            f"openai-compatible: set {BASE_URL_VAR} in the environment "
            "(including /v1, e.g. http://localhost:11434/v1 for Ollama)",
            env_var=BASE_URL_VAR,
        )
    endpoint = ChatEndpoint.of(credentials)
    return OpenAICompatibleProvider(model=model, session=session, endpoint=endpoint)
