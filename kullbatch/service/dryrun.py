"""`process --dry-run`: what a job would cost, worked out without sending or storing anything.

Each local photo is prepared exactly as a run prepares it (rotated, downscaled, re-encoded), so
its size is the one the provider would see; the provider's image rule turns that size into
tokens, and the prompt, the system prompt and the rating schema are added to every photo.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
from typing import TYPE_CHECKING, Literal

from kullbatch.errors import PermanentImageError
from kullbatch.media import images
from kullbatch.models import Mode
from kullbatch.pricing import prices as pricing
from kullbatch.providers import PROVIDERS
from kullbatch.run.cache import PhotoCache
from kullbatch.service import prompt
from kullbatch.service.compare_estimate import EstimateWithComparisons, estimate_comparisons
from kullbatch.service.settings import ProcessSettings, choose_provider
from kullbatch.service.spending import prompt_tokens
from kullbatch.store.database import Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from kullbatch.manifest import Manifest
    from kullbatch.models import Fingerprint, ImageInput, Prompt

__all__ = ["estimate", "prompt_tokens"]


async def _size(
    image: ImageInput,
    max_edge: int,
    gate: asyncio.Semaphore,
    cache: PhotoCache | None,
    fingerprint: bool = False,
) -> tuple[tuple[int, int] | None, Fingerprint | None] | Literal["cached"]:
    """The prepared photo's size (None for a URL: nothing is downloaded) and, with
    `fingerprint` (--compare-bursts), its fingerprint from the same decode; "cached" for a
    photo the result cache holds (read and hashed, not decoded)."""
    if image.url is not None:
        return None, None
    async with gate:
        source = None
        if cache is not None:
            if await cache.check(image) is not None:
                return "cached"
            if cache.seen_before(image.id):  # a copy of a photo of this shoot: free, as a run
                cache.forget(image.id)  # copies the other's answer
                return "cached"
            source = cache.take(image.id)
            cache.forget(image.id)
        prepared = await images.prepare(image, max_edge, fingerprint=fingerprint, source=source)
    assert prepared.data is not None
    return images.image_size(prepared.data), prepared.fingerprint


@contextlib.asynccontextmanager
async def _cache(
    db: Path | None, settings: ProcessSettings, composed: Prompt, provider: str, model: str
) -> AsyncIterator[PhotoCache | None]:
    """The result cache of an existing database (None: no database yet, or `--no-cache`)."""
    if db is None or not settings.cache or not await asyncio.to_thread(db.is_file):
        yield None
        return
    store = await Store.open(db)
    try:
        yield PhotoCache(
            store.cache, prompt=composed, max_edge=settings.max_edge, provider=provider, model=model
        )
    finally:
        await store.close()


async def estimate(
    manifest: Manifest,
    settings: ProcessSettings,
    env: Mapping[str, str],
    db: Path | None = None,
) -> pricing.Estimate:
    """Tokens and price of the job `settings` describe, in fast and economy mode.

    Nothing is sent and no job is created. The prompt is the one a run of the same settings
    stores and sends (`prompt.compose`). With `db` (an existing database), photos rated
    there before under the same key (`run.cache`) are counted as free: `cachedImages`.
    """
    settings = settings.with_manifest(manifest)
    provider, model = choose_provider(settings, manifest, env)
    composed = prompt.compose(settings, manifest, env)
    table = pricing.load_prices(env)
    gate = asyncio.Semaphore(os.cpu_count() or 4)
    compare = settings.compare_bursts
    async with _cache(db, settings, composed, provider, model) as cache:
        found = await asyncio.gather(
            *(_size(image, settings.max_edge, gate, cache, compare) for image in manifest.images),
            return_exceptions=True,
        )
    sizes: list[tuple[int, int] | None] = []
    unreadable: list[str] = []
    cached = 0
    photos: list[tuple[int, Fingerprint | None, tuple[int, int] | None]] = []
    for position, result in enumerate(found):
        if isinstance(result, PermanentImageError):
            unreadable.append(result.message)
        elif isinstance(result, BaseException):
            raise result
        elif result == "cached":
            cached += 1
        else:
            sizes.append(result[0])
            photos.append((position, result[1], result[0]))
    found_estimate = pricing.estimate(
        table,
        provider,
        model,
        sizes,
        prompt_tokens(composed.text, composed.system),
        economy=PROVIDERS[provider].economy,
        unreadable=unreadable,
        cached=cached,
    )
    if compare:
        grouping = settings.job_options().grouping
        comparisons = estimate_comparisons(table, provider, model, photos, grouping)
        found_estimate = EstimateWithComparisons.of(found_estimate, comparisons)
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
