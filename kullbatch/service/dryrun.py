"""`process --dry-run`: what a job would cost, worked out without sending or storing anything.

Each local photo is prepared exactly as a run prepares it (rotated, downscaled, re-encoded), so
its size is the one the provider would see; the provider's image rule turns that size into
tokens, and the prompt, the system prompt and the rating schema are added to every photo.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING

from kullbatch.errors import PermanentImageError
from kullbatch.media import images
from kullbatch.pricing import prices as pricing
from kullbatch.providers import PROVIDERS
from kullbatch.providers.base import RATING_SCHEMA
from kullbatch.service import prompt
from kullbatch.service.compare_estimate import EstimateWithComparisons, estimate_comparisons
from kullbatch.service.jobs import ProcessSettings, choose_provider

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kullbatch.manifest import Manifest
    from kullbatch.models import Fingerprint, ImageInput

__all__ = ["estimate", "prompt_tokens"]


def prompt_tokens(prompt: str, system: str | None) -> int:
    """The text sent with every photo: the prompt, the system prompt and the rating schema."""
    schema = json.dumps(RATING_SCHEMA)
    return sum(pricing.text_tokens(text) for text in (prompt, system or "", schema))


async def _size(
    image: ImageInput, max_edge: int, gate: asyncio.Semaphore, fingerprint: bool = False
) -> tuple[tuple[int, int] | None, Fingerprint | None]:
    """The prepared photo's size (None for a URL: nothing is downloaded) and, with
    `fingerprint` (--compare-bursts), its fingerprint from the same decode."""
    if image.url is not None:
        return None, None
    async with gate:
        prepared = await images.prepare(image, max_edge, fingerprint=fingerprint)
    assert prepared.data is not None
    return images.image_size(prepared.data), prepared.fingerprint


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
    compare = settings.compare_bursts
    found = await asyncio.gather(
        *(_size(image, settings.max_edge, gate, compare) for image in manifest.images),
        return_exceptions=True,
    )
    sizes: list[tuple[int, int] | None] = []
    unreadable: list[str] = []
    photos: list[tuple[int, Fingerprint | None, tuple[int, int] | None]] = []
    for position, result in enumerate(found):
        if isinstance(result, PermanentImageError):
            unreadable.append(result.message)
        elif isinstance(result, BaseException):
            raise result
        else:
            sizes.append(result[0])
            photos.append((position, result[1], result[0]))
    base = pricing.estimate(
        table,
        provider,
        model,
        sizes,
        prompt_tokens(composed.text, composed.system),
        economy=PROVIDERS[provider].economy,
        unreadable=unreadable,
    )
    if not compare:
        return base
    grouping = settings.job_options().grouping
    comparisons = estimate_comparisons(table, provider, model, photos, grouping)
    return EstimateWithComparisons.of(base, comparisons)
