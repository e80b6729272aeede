"""A scripted provider: per image, a list of what each attempt does."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import ClassVar

from kullbatch.models import Answer, PreparedImage, Prompt, RateLimits, Rating, Usage
from kullbatch.providers.base import Capabilities


def rating_for(image_id: str) -> Rating:
    """A rating that depends on the image, so a mix-up between images shows."""
    stars = sum(map(ord, image_id)) % 5 + 1
    return Rating(
        starRating=stars,
        colorLabel="green" if stars >= 4 else "yellow",
        title=f"title of {image_id}",
        description=f"description of {image_id}",
        tags=[image_id, "fake"],
        score=stars * 20 - sum(map(ord, image_id)) % 7,
    )


@dataclass
class ScriptedProvider:
    """Attempt n of image X raises script[X][n-1] if it is an exception, else answers."""

    capabilities: ClassVar[Capabilities] = Capabilities()
    script: dict[str, list[BaseException | None]] = field(default_factory=dict)
    latency: float = 0.0
    limits: RateLimits | None = None  # what every answer's headers report
    name: str = "fake"
    model: str = "fake-1"
    calls: list[tuple[str, float]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def rate(self, image: PreparedImage, prompt: Prompt) -> Answer:
        loop = asyncio.get_running_loop()
        self.calls.append((image.image_id, loop.time()))
        self.attempts[image.image_id] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        steps = self.script.get(image.image_id, [])
        n = self.attempts[image.image_id]
        if n <= len(steps) and steps[n - 1] is not None:
            raise steps[n - 1]  # type: ignore[misc]
        return Answer(rating_for(image.image_id), Usage(10, 5), self.limits)


@dataclass
class DownloadingProvider(ScriptedProvider):
    """A scripted provider that, like Gemini, downloads URL photos itself."""

    capabilities: ClassVar[Capabilities] = Capabilities(inlines_url_images=True)
