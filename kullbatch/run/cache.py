"""Never pay twice for a photo: a local photo rated before is not sent again.

A rating is keyed by what decides it: the SHA-256 of the photo file's bytes, the provider,
the model, `--max-edge` and the final prompt (system prompt, prompt or rubric text, and the
rating schema's version). Never by the API key, the file's name or its path: a renamed or
copied photo, a shoot run again and a resumed job find what was rated, and cost nothing.

Each local photo is read once: `PhotoCache.check` reads the file's bytes in a worker thread,
hashes them and looks the key up (one probe of an index, `store.cache`); a hit is copied (its
answer `cached`, with zero tokens); a miss keeps the bytes for `take`, which hands them to
`images.prepare` to be encoded and sent, and the digest for `keyed`, which stamps the answer
with the key of whoever rated it (a fallback provider has keys of its own). `screen` does that
for a stream of photos a few at a time, ahead of the engine's feeder, so hits never wait for
the rate-limit gate. URL photos have no bytes here and are always sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from collections.abc import AsyncIterable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from kullbatch.errors import PermanentImageError
from kullbatch.media.source import read_source
from kullbatch.providers.base import RATING_SCHEMA

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from kullbatch.models import Answer, ImageInput, Prompt

__all__ = ["SCHEMA_VERSION", "CacheLookup", "PhotoCache", "cache_key"]

# the rating schema's version: a change to it (a new field) makes every earlier rating stale
SCHEMA_VERSION = hashlib.sha256(json.dumps(RATING_SCHEMA, sort_keys=True).encode()).hexdigest()[:16]
LOOKAHEAD = 4  # photos read and looked up ahead of the feeder, at once


def cache_key(digest: str, *, provider: str, model: str, max_edge: int, prompt: Prompt) -> str:
    """The key a rating of the photo whose bytes hash to `digest` is stored and found by."""
    parts = {
        "v": 1,
        "sha256": digest,
        "provider": provider,
        "model": model,
        "maxEdge": max_edge,
        "system": prompt.system,
        "prompt": prompt.text,
        "schema": SCHEMA_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class CacheLookup(Protocol):
    """Where stored ratings are found by key (`store.cache.CacheRecords`)."""

    async def find(self, key: str) -> Answer | None: ...


class PhotoCache:
    """One run's use of the cache, for the job's provider and model."""

    def __init__(
        self,
        lookup: CacheLookup,
        *,
        prompt: Prompt,
        max_edge: int,
        provider: str,
        model: str,
        lookahead: int = LOOKAHEAD,
    ) -> None:
        self._lookup = lookup
        self._prompt = prompt
        self._max_edge = max_edge
        self._provider = provider
        self._model = model
        self._lookahead = max(1, lookahead)
        self._sources: dict[str, bytes] = {}  # read and not yet handed to `prepare`
        self._digests: dict[str, str] = {}  # sent and not yet answered

    def key(self, digest: str, provider: str | None = None, model: str | None = None) -> str:
        return cache_key(
            digest,
            provider=provider or self._provider,
            model=model or self._model,
            max_edge=self._max_edge,
            prompt=self._prompt,
        )

    async def check(self, image: ImageInput) -> Answer | None:
        """The stored answer for this photo, copied; None when it is to be sent (a URL, a photo
        not rated before, or a file that cannot be read: sending says why)."""
        if image.path is None:
            return None
        try:
            source = await asyncio.to_thread(read_source, image.path)
        except PermanentImageError:
            return None
        found = await self._lookup.find(self.key(source.sha256))
        if found is None:
            self._sources[image.id] = source.data
            self._digests[image.id] = source.sha256
        return found

    def take(self, image_id: str) -> bytes | None:
        """The photo's bytes read by `check`, once (a retry reads the file again)."""
        return self._sources.pop(image_id, None)

    def keyed(self, image_id: str, answer: Answer, provider: str, model: str) -> Answer:
        """The answer with the key it is stored under, for the provider and model that gave
        it; unchanged for a photo without one (a URL)."""
        digest = self._digests.pop(image_id, None)
        if digest is None:
            return answer
        return replace(answer, cache_key=self.key(digest, provider, model))

    def keys_of(self, image_ids: Iterable[str], provider: str, model: str) -> list[tuple[str, str]]:
        """(image id, key) of those photos read and not yet answered (economy mode stores
        them with its batch, for answers a later process collects)."""
        digests = self._digests
        return [
            (image_id, self.key(digests[image_id], provider, model))
            for image_id in image_ids
            if image_id in digests
        ]

    def forget(self, image_id: str) -> None:
        """A photo that will not be sent (it failed, or the job stopped)."""
        self._sources.pop(image_id, None)
        self._digests.pop(image_id, None)

    async def screen(
        self,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        hit: Callable[[ImageInput, Answer], None],
    ) -> AsyncIterator[ImageInput]:
        """The photos to send, in order; each photo found in the cache goes to `hit` instead.
        A few photos are checked at once ahead of the one asked for."""
        ahead: deque[tuple[ImageInput, asyncio.Task[Answer | None]]] = deque()
        try:
            async for image in _each(images):
                ahead.append((image, asyncio.ensure_future(self.check(image))))
                if len(ahead) >= self._lookahead and (
                    chosen := await _settle(ahead.popleft(), hit)
                ):
                    yield chosen
            while ahead:
                if chosen := await _settle(ahead.popleft(), hit):
                    yield chosen
        finally:
            for image, task in ahead:
                task.cancel()
                self.forget(image.id)


async def _settle(
    checked: tuple[ImageInput, asyncio.Task[Answer | None]],
    hit: Callable[[ImageInput, Answer], None],
) -> ImageInput | None:
    """The photo when it is to be sent; a photo found in the cache goes to `hit`."""
    image, task = checked
    found = await task
    if found is None:
        return image
    hit(image, found)
    return None


async def _each(
    images: Iterable[ImageInput] | AsyncIterable[ImageInput],
) -> AsyncIterator[ImageInput]:
    if isinstance(images, AsyncIterable):
        async for image in images:
            yield image
    else:
        for image in images:
            yield image
