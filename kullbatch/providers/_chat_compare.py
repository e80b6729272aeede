"""Burst comparison in the chat-completions dialect (openai, grok, groq, openai-compatible).

One user message holds the question, then for each frame a text part with its label and an
`image_url` part with the frame as a data URI (bursts are local photos), the way OpenAI's,
xAI's, Groq's and Ollama's chat endpoints take several images; `response_format` asks for the
comparison schema (strict where the adapter's ratings are strict). The answer is read as a
rating is (`_chat`), then validated as a comparison.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from kullbatch.errors import ProviderError, Transient
from kullbatch.models import Usage
from kullbatch.providers._chat import (
    ChatAdapter,
    _Completion,
    _first_problem,
    _rating_text,
    _unfence,
    error_for,
)
from kullbatch.providers.base import WireRequest
from kullbatch.providers.compare import (
    COMPARE_SCHEMA,
    COMPARE_SCHEMA_NAME,
    Verdict,
    compare_prompt,
    frame_label,
    image_limit,
    parse_comparison,
)
from kullbatch.providers.http import answer_error
from kullbatch.providers.rate_headers import parse_rate_limits

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from kullbatch.models import PreparedImage
    from kullbatch.providers.http import HTTPAnswer

# A verdict is a few dozen tokens; reasoning models also spend hidden tokens under this cap.
COMPARE_MAX_TOKENS = 2048


def compare_format(*, strict: bool) -> dict[str, Any]:
    """`response_format` asking for the comparison schema."""
    return {
        "type": "json_schema",
        "json_schema": {"name": COMPARE_SCHEMA_NAME, "strict": strict, "schema": COMPARE_SCHEMA},
    }


def compare_content(
    frames: Sequence[PreparedImage], text: str, detail: str | None
) -> list[dict[str, Any]]:
    """The user message's parts: the question, then each frame's label and its image."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for number, frame in enumerate(frames, start=1):
        image: dict[str, str] = {"url": frame.data_uri()}
        if detail is not None:
            image["detail"] = detail
        content.append({"type": "text", "text": frame_label(number)})
        content.append({"type": "image_url", "image_url": image})
    return content


class ChatComparer(ChatAdapter):
    """A chat adapter that also compares a burst's frames in one request."""

    @property
    def max_images(self) -> int:
        return image_limit(self.name)

    async def ready_frames(self, frames: Sequence[PreparedImage]) -> list[PreparedImage]:
        """The frames as this provider takes them (converted, shrunk); bytes already."""
        return list(frames)

    def compare_request(
        self,
        frames: Sequence[PreparedImage],
        response_format: Mapping[str, Any] | None = None,
        extra: str = "",
    ) -> WireRequest:
        """The comparison request for ready frames; `extra` is added to the question."""
        text = compare_prompt(len(frames)) + (f"\n\n{extra}" if extra else "")
        body = {
            "model": self.model,
            "messages": [
                {"role": "user", "content": compare_content(frames, text, self.image_detail)}
            ],
            "response_format": dict(response_format or compare_format(strict=self.strict_schema)),
            self.max_tokens_field: COMPARE_MAX_TOKENS,
        }
        return WireRequest(self._endpoint.path, {}, body)

    def parse_verdict(self, answer: HTTPAnswer, frames: int) -> Verdict:
        """A 2xx completion -> Verdict; an error answer -> the classified error."""
        endpoint = self._endpoint
        if not answer.ok:
            raise error_for(endpoint, answer)
        limits = parse_rate_limits(answer.headers, endpoint.requests_per_day)
        try:
            completion = _Completion.model_validate_json(answer.body)
            text = _rating_text(endpoint.provider, completion)
            comparison = parse_comparison(_unfence(text), frames, source=endpoint.provider)
        except ValidationError as exc:
            message = f"{endpoint.provider} answer is not a chat completion: {_first_problem(exc)}"
            raise answer_error(Transient, message, answer, limits=limits) from exc
        except ProviderError as exc:
            raise exc.with_limits(limits) from exc
        usage = completion.usage
        tokens = Usage(
            (usage.prompt_tokens or 0) if usage else 0,
            (usage.completion_tokens or 0) if usage else 0,
        )
        return Verdict(comparison, tokens, limits)

    async def compare(self, frames: Sequence[PreparedImage]) -> Verdict:
        ready = await self.ready_frames(frames)
        answer = await self.send(self.compare_request(ready))
        return self.parse_verdict(answer, len(ready))
