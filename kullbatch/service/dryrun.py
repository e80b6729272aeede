"""`process --dry-run`: what a job would cost, worked out without sending or storing anything.

Each local photo is prepared exactly as a run prepares it (rotated, downscaled, re-encoded), so
its size is the one the provider would see; the provider's image rule turns that size into
tokens, and the prompt, the system prompt and the rating schema are added to every photo.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
from typing import TYPE_CHECKING

from kullbatch.errors import PermanentImageError
from kullbatch.media import images
from kullbatch.models import Mode
from kullbatch.pricing import prices as pricing
from kullbatch.providers import PROVIDERS
from kullbatch.service import prompt
from kullbatch.service.jobs import ProcessSettings, choose_provider
from kullbatch.service.spending import prompt_tokens

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kullbatch.manifest import Manifest
    from kullbatch.models import ImageInput

__all__ = ["estimate", "prompt_tokens"]


async def _size(
    image: ImageInput, max_edge: int, gate: asyncio.Semaphore
) -> tuple[int, int] | None:
    """The prepared photo's size; None for a URL (nothing is downloaded)."""
    if image.url is not None:
        return None
    async with gate:
        prepared = await images.prepare(image, max_edge)
    assert prepared.data is not None
    return images.image_size(prepared.data)


async def estimate(
    manifest: Manifest, settings: ProcessSettings, env: Mapping[str, str]
) -> pricing.Estimate:
    """Tokens and price of the job `settings` describe, in fast and economy mode.

    Nothing is sent and no job is created: the database is not even opened. The prompt is
    the one a run of the same settings stores and sends (`prompt.compose`).
    """
    provider, model = choose_provider(settings, manifest, env)
    composed = prompt.compose(settings, manifest, env)
    table = pricing.load_prices(env)
    gate = asyncio.Semaphore(os.cpu_count() or 4)
    found = await asyncio.gather(
        *(_size(image, settings.max_edge, gate) for image in manifest.images),
        return_exceptions=True,
    )
    sizes: list[tuple[int, int] | None] = []
    unreadable: list[str] = []
    for result in found:
        if isinstance(result, PermanentImageError):
            unreadable.append(result.message)
        elif isinstance(result, BaseException):
            raise result
        else:
            sizes.append(result)
    found_estimate = pricing.estimate(
        table,
        provider,
        model,
        sizes,
        prompt_tokens(composed.text, composed.system),
        economy=PROVIDERS[provider].economy,
        unreadable=unreadable,
    )
    return with_budget(found_estimate, settings.budget, settings.mode or manifest.mode)


def with_budget(
    found: pricing.Estimate, budget: float | None, mode: str | None
) -> pricing.Estimate:
    """`--dry-run --budget USD`: whether the shoot fits in the mode asked for, and how many
    photos the budget would rate (at the shoot's mean price per photo)."""
    if budget is None:
        return found
    by_mode = {Mode.ECONOMY: found.economy_usd, Mode.FLEX: found.flex_usd}
    total = by_mode.get(Mode(mode), found.fast_usd) if mode in set(Mode) else found.fast_usd
    total = found.fast_usd if total is None else total
    if total is None:
        return found
    photos = found.images if total <= budget else math.floor(budget / (total / found.images))
    fits = {"budgetUsd": budget, "fits": total <= budget, "photos": min(photos, found.images)}
    return dataclasses.replace(found, budget=fits)
