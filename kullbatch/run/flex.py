"""Flex mode's provider: each photo at the flex tier, at the standard tier once refused too long.

`FlexProvider` wraps two adapters of one provider, one asking for the flex tier and one not.
A photo the flex tier turns away (`FlexUnavailable`) is retried by the engine's one retry loop
on the rate-limit schedule, without slowing the gate (`run.ratelimit.Gate.failed`); once the
photo has been refused for `--flex-wait` (counted from its first refusal), it goes at the
standard tier, at once and from then on, and is priced at the list price: no retry's wait
reaches past that moment (`FlexUnavailable.standard_in`), so a photo is never a doubling late.
Answers of the flex tier carry `tier="flex"`, which the store keeps as the photo's pricing.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from kullbatch.errors import FlexUnavailable
from kullbatch.providers.base import Capabilities
from kullbatch.providers.flex import FLEX, with_tier

if TYPE_CHECKING:
    from collections.abc import Callable

    from kullbatch.models import Answer, PreparedImage, Prompt
    from kullbatch.providers.base import Provider

__all__ = ["FlexProvider", "flex_provider"]


class FlexProvider:
    """The job's provider at the flex tier, falling back per photo to the standard tier."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, standard: Provider, *, wait: float, clock: Callable[[], float]) -> None:
        self.name = standard.name
        self.model = standard.model
        self._standard = standard
        self._flex = with_tier(standard, FLEX)
        self._wait = wait
        self._clock = clock
        self._refused: dict[str, float] = {}  # photo -> when the flex tier first refused it

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        since = self._refused.get(image.image_id)
        if since is not None and self._clock() - since >= self._wait:
            return await self._at_standard(image, prompt)
        try:
            answer = await self._flex.rate(image, prompt)
        except FlexUnavailable as refusal:
            now = self._clock()
            first = self._refused.setdefault(image.image_id, now)
            if now - first >= self._wait:
                return await self._at_standard(image, prompt)
            refusal.standard_in = first + self._wait - now
            raise
        self._refused.pop(image.image_id, None)
        return dataclasses.replace(answer, tier=FLEX)

    async def _at_standard(self, image: PreparedImage, prompt: Prompt) -> Answer:
        answer = await self._standard.rate(image, prompt)
        self._refused.pop(image.image_id, None)
        return answer


class _InliningFlexProvider(FlexProvider):
    capabilities: ClassVar[Capabilities] = Capabilities(inlines_url_images=True)


def flex_provider(standard: Provider, *, wait: float, clock: Callable[[], float]) -> FlexProvider:
    """`standard` at the flex tier; the engine bounds URL downloads as the adapter needs."""
    kind = _InliningFlexProvider if standard.capabilities.inlines_url_images else FlexProvider
    return kind(standard, wait=wait, clock=clock)
