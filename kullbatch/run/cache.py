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

Copies within one shoot are not paid twice either: while a photo is in flight, a photo of the
same run with the same key follows it (`screen`): it is not sent, and takes a free copy of the
answer when it comes (`keyed`). Should the first fail (`forget`), the follower is sent itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict, deque
from collections.abc import AsyncIterable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, TypeAlias

from kullbatch.errors import PermanentImageError
from kullbatch.media.source import read_source
from kullbatch.models import Usage
from kullbatch.providers.base import RATING_SCHEMA

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from kullbatch.models import Answer, ImageInput, Prompt

__all__ = ["SCHEMA_VERSION", "CacheLookup", "PhotoCache", "cache_key"]

# the rating schema's version: a change to it (a new field) makes every earlier rating stale
SCHEMA_VERSION = hashlib.sha256(json.dumps(RATING_SCHEMA, sort_keys=True).encode()).hexdigest()[:16]
LOOKAHEAD = 4  # photos read and looked up ahead of the feeder, at once
RECENT_SECONDS = 10.0  # an answer is kept for copies this long: the store has it by then


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
        # read and not yet answered: the photo's digest, and its key for the job's provider
        self._read: dict[str, tuple[str, str]] = {}
        # a photo in flight that others of the run follow: its key -> its answer to come (None:
        # it failed), and the image id leading each key
        self._leaders: dict[str, asyncio.Future[Answer | None]] = {}
        self._leading: dict[str, str] = {}
        self._seen: set[str] = set()  # keys met by `seen_before` (the dry run's count)
        # answers given in this run, until the store surely holds them (its writer commits
        # every quarter second): key -> (when, the free copy), oldest first
        self._recent: OrderedDict[str, tuple[float, Answer]] = OrderedDict()

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
        found, _ = await self._check(image)
        return found

    async def _check(self, image: ImageInput) -> tuple[Answer | None, str | None]:
        """`check`, and the photo's key (None: a URL or an unread file), computed once."""
        if image.path is None:
            return None, None
        try:
            source = await asyncio.to_thread(read_source, image.path)
        except PermanentImageError:
            return None, None
        key = self.key(source.sha256)
        found = await self._lookup.find(key)
        if found is None:
            self._sources[image.id] = source.data
            self._read[image.id] = (source.sha256, key)
        return found, key

    def take(self, image_id: str) -> bytes | None:
        """The photo's bytes read by `check`, once (a retry reads the file again)."""
        return self._sources.pop(image_id, None)

    def keyed(self, image_id: str, answer: Answer, provider: str, model: str) -> Answer:
        """The answer with the key it is stored under, for the provider and model that gave
        it; unchanged for a photo without one (a URL)."""
        read = self._read.pop(image_id, None)
        if read is None:
            return answer
        digest, own = read
        theirs = own if (provider, model) == (self._provider, self._model) else None
        keyed = replace(answer, cache_key=theirs or self.key(digest, provider, model))
        key = self._leading.pop(image_id, None)
        if key is not None:  # its followers, and copies checked in the next seconds, are free
            free = replace(keyed, usage=Usage(), limits=None, cached=True, tier=None)
            self._remember(key, free)
            leader = self._leaders.pop(key, None)
            if leader is not None and not leader.done():
                leader.set_result(free)
        return keyed

    def _remember(self, key: str, free: Answer) -> None:
        now = asyncio.get_running_loop().time()
        self._recent[key] = (now, free)
        while self._recent:
            oldest, _ = next(iter(self._recent.values()))
            if now - oldest <= RECENT_SECONDS:
                break
            self._recent.popitem(last=False)

    def keys_of(self, image_ids: Iterable[str], provider: str, model: str) -> list[tuple[str, str]]:
        """(image id, key) of those photos read and not yet answered (economy mode stores
        them with its batch, for answers a later process collects)."""
        read = self._read
        return [
            (image_id, self.key(read[image_id][0], provider, model))
            for image_id in image_ids
            if image_id in read
        ]

    def forget(self, image_id: str) -> None:
        """A photo that will not be sent (it failed, or the job stopped): the photos following
        it are sent themselves."""
        self._sources.pop(image_id, None)
        self._read.pop(image_id, None)
        leader = self._leaders.pop(self._leading.pop(image_id, ""), None)
        if leader is not None and not leader.done():
            leader.set_result(None)

    def seen_before(self, image_id: str) -> bool:
        """Whether a photo checked and not found has the key of one checked before it in this
        run (a copy within the shoot: the dry run counts it as free, as `screen` makes it)."""
        read = self._read.get(image_id)
        if read is None:
            return False
        key = read[1]
        if key in self._seen:
            return True
        self._seen.add(key)
        return False

    async def _screen_one(self, image: ImageInput) -> Checked:
        """`check`, then: the answer of the photo in flight this one follows (a future), or
        None when this one is to be sent (it leads those with its key that come after it)."""
        found, key = await self._check(image)
        if found is not None or key is None:
            return found
        recent = self._recent.get(key)
        if recent is not None:  # answered a moment ago, maybe not yet in the store
            self.forget(image.id)
            return recent[1]
        leader = self._leaders.get(key)
        if leader is None:
            self._leaders[key] = asyncio.get_running_loop().create_future()
            self._leading[image.id] = key
            return None
        self._sources.pop(image.id, None)  # not sent unless the one it follows fails (then
        return leader  # read again, and keyed when answered: its key stays)

    async def screen(
        self,
        images: Iterable[ImageInput] | AsyncIterable[ImageInput],
        hit: Callable[[ImageInput, Answer], None],
    ) -> AsyncIterator[ImageInput]:
        """The photos to send, in order; each photo found in the cache, or following one in
        flight with its content, goes to `hit` instead (a follower whose leader failed comes
        later in the stream). A few photos are checked at once ahead of the one asked for."""
        ahead: deque[tuple[ImageInput, asyncio.Task[Checked]]] = deque()
        followers = _Followers(hit, self.forget)
        try:
            async for image in _each(images):
                ahead.append((image, asyncio.ensure_future(self._screen_one(image))))
                if len(ahead) >= self._lookahead and (
                    chosen := await _settle(ahead.popleft(), followers)
                ):
                    yield chosen
                while followers.released:
                    yield followers.released.popleft()
            while ahead:
                if chosen := await _settle(ahead.popleft(), followers):
                    yield chosen
            while await followers.next_released():
                yield followers.released.popleft()
        finally:
            for image, task in ahead:
                task.cancel()
                self.forget(image.id)
            followers.cancel()


# what a photo's check found: a stored answer, the answer to come of the photo it follows, or
# None: it is to be sent
Checked: TypeAlias = "Answer | asyncio.Future[Answer | None] | None"


class _Followers:
    """Photos waiting for the answer of the photo in flight they are copies of."""

    def __init__(
        self, hit: Callable[[ImageInput, Answer], None], done: Callable[[str], None]
    ) -> None:
        self.hit = hit
        self._done = done  # a follower given its copy: nothing of it is kept
        self._waiting: set[asyncio.Task[None]] = set()
        self.released: deque[ImageInput] = deque()  # their leader failed: to be sent

    def follow(self, image: ImageInput, leader: asyncio.Future[Answer | None]) -> None:
        task = asyncio.ensure_future(self._wait(image, leader))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def _wait(self, image: ImageInput, leader: asyncio.Future[Answer | None]) -> None:
        answer = await asyncio.shield(leader)  # another follower's end must not cancel it
        if answer is None:
            self.released.append(image)
        else:
            self._done(image.id)
            self.hit(image, answer)

    async def next_released(self) -> bool:
        """Wait until a follower is released (True) or none waits any more (False)."""
        while not self.released and self._waiting:
            await asyncio.wait(self._waiting, return_when=asyncio.FIRST_COMPLETED)
            self._waiting = {task for task in self._waiting if not task.done()}
        return bool(self.released)

    def cancel(self) -> None:
        for task in self._waiting:
            task.cancel()


async def _settle(
    checked: tuple[ImageInput, asyncio.Task[Checked]], followers: _Followers
) -> ImageInput | None:
    """The photo when it is to be sent; a photo found in the cache goes to `hit`, and one
    following a photo in flight waits for that one's answer."""
    image, task = checked
    found = await task
    if found is None:
        return image
    if isinstance(found, asyncio.Future):
        followers.follow(image, found)
        return None
    followers.hit(image, found)
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
