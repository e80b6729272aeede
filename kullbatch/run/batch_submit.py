"""Economy mode's submitting: a job's photos into provider batches, each paid for once.

Photos in no batch yet are encoded one at a time (the very request fast mode would send) and
appended to a file on disk, packed under the provider's limits, and sent one batch at a time,
so memory holds one photo's request, not a 200 MB batch.

A send is never simply repeated, since the provider may have made the batch although its
answer never came back (or the process died before recording it):

- the batch is recorded with its photos before anything is sent (`creating`: its request
  count and the time); the uploaded file's id and the batch's id are committed the moment the
  provider returns them;
- before a batch is made again, it is looked for: OpenAI's by its input file among the
  account's newest batches, Anthropic's among the workspace's newest by its request count and
  creation time (one not recorded in this database, not being cancelled). One found is
  adopted; when several could be it, the job stops naming them rather than paying twice; when
  none is found, the photos are sent again;
- under a cancel nothing is made: what was made is found (to be cancelled), nothing more.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from kullbatch.errors import FatalJobError, PermanentImageError
from kullbatch.media.images import prepare
from kullbatch.providers.batch.common import BatchFile, custom_id_for
from kullbatch.run.batch_calls import Stopped

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from kullbatch.models import Answer, Fingerprint, ImageInput, Prompt
    from kullbatch.providers.base import BatchClient
    from kullbatch.providers.batch.common import BatchInfo, BatchLine
    from kullbatch.run.batch_calls import BatchCalls, Stops
    from kullbatch.run.cache import PhotoCache
    from kullbatch.store.batches import BatchRecord
    from kullbatch.store.database import Store

CREATING = "creating"
# how much earlier than kullbatch's clock the provider's may stamp a batch it made
CLOCK_LEEWAY = timedelta(minutes=5)


class Submitter:
    """Puts one job's photos into provider batches, and settles batches left half-sent."""

    def __init__(
        self,
        *,
        job_id: str,
        client: BatchClient,
        prompt: Prompt,
        store: Store,
        calls: BatchCalls,
        stops: Stops,
        encoding: tuple[int, bool],  # (max edge, fingerprint the photos)
        fingerprints: dict[str, Fingerprint],
        failed: Callable[[str, str], None],
        note: Callable[[str], None],
        cache: tuple[PhotoCache, Callable[[str, Answer], None]] | None = None,
        admit: Callable[[], bool] | None = None,
    ) -> None:
        self.job_id = job_id
        self._cache = cache  # (the cache, where a photo found in it goes): not put in a batch
        self._client = client
        self._adapter = client.adapter
        self._prompt = prompt
        self._store = store
        self._calls = calls
        self._stops = stops
        self._max_edge, self._fingerprint = encoding
        self._fingerprints = fingerprints
        self._failed = failed
        self._note = note
        self._admit = admit  # --budget: a photo goes into a batch only if its estimate fits

    # -- batches left half-sent ------------------------------------------------------------------

    async def settle(self, *, create: bool) -> None:
        """Every recorded batch without a batch id (a send under way when the process died or
        the call was abandoned) is matched with what the provider made of it. An uploaded
        file with no batch gets one only with `create` (never under a cancel); a send that made
        nothing gives its photos back to be sent again."""
        for record in await self._store.batches.of_job(self.job_id):
            if record.batch_id is not None:
                continue
            info: BatchInfo | None
            if record.file_id is None:
                info = await self._calls(partial(self._made, record))
            elif create:
                info = await self._calls(partial(self._client.batch_for_file, record.file_id))
            else:
                info = await self._calls(partial(self._client.find_for_file, record.file_id))
            if info is not None:
                await self._store.batches.created(record.id, self.job_id, info.id, info.state)
                self._note(f"{self._client.name} batch {info.id} found and recorded")
            elif record.file_id is None:
                await self._store.batches.forget(record.id, self.job_id)

    async def _made(self, record: BatchRecord) -> BatchInfo | None:
        """The batch a create of `record` made though kullbatch never learnt its id, if any."""
        since = datetime.fromisoformat(record.created_at) - CLOCK_LEEWAY
        candidates = await self._client.find_made(record.requests, since)
        known = await self._store.batches.recorded_batch_ids(self._client.name)
        fresh = [info for info in candidates if info.id not in known]
        if len(fresh) > 1:
            ids = ", ".join(info.id for info in fresh)
            raise FatalJobError(
                f"{self._client.name}: the answer to making a batch of {record.requests} photos "
                f"never came back, and {len(fresh)} batches of that size were made since "
                f"{record.created_at}: {ids}. kullbatch cannot tell which is this job's, so it "
                "stopped rather than pay twice: cancel those that are not this shoot's in the "
                f"provider's console, then `kullbatch resume {self.job_id}`"
            )
        return fresh[0] if fresh else None

    # -- new batches -----------------------------------------------------------------------------

    async def submit_unbatched(self) -> None:
        """Photos in no batch yet, packed under the provider's limits, one batch at a time.

        Each photo's request is encoded once and appended to a file on disk; the file is
        streamed to the provider. Ctrl-C or a cancel stops it between two photos (`Stopped`).
        """
        with tempfile.TemporaryDirectory(prefix="kullbatch-") as folder:
            path = Path(folder) / "batch"
            pending = BatchFile(path, self._client.limits, self._client.framing)
            try:
                async for image in self._store.batches.unbatched(self.job_id):
                    if self._stops.stopping:
                        raise Stopped
                    if not await self._add(pending, image):
                        break  # the budget is reached: this batch goes with fewer photos
                if pending.ids:
                    await self._submit(pending)
            finally:
                pending.close()

    async def _add(self, pending: BatchFile, image: ImageInput) -> bool:
        """The photo's request into the pending batch; False: the budget has no room for it."""
        line = await self._line(image)
        if line is None:
            return True
        encoded = self._client.encode(line)
        if not pending.holds(len(encoded)):
            self._failed(image.id, _too_large(len(encoded), self._client.limits.max_bytes))
            return True
        if self._admit is not None and not self._admit():
            return False
        if not pending.fits(len(encoded)):
            await self._submit(pending)
        pending.add(line.custom_id, image.id, encoded)
        return True

    async def _line(self, image: ImageInput) -> BatchLine | None:
        """The photo's request as fast mode would send it; a photo that cannot be read fails."""
        try:
            found, source = await self._check(image)
            if found:
                return None
            prepared = await prepare(
                image, self._max_edge, fingerprint=self._fingerprint, source=source
            )
            ready = await self._adapter.ready(prepared)
        except PermanentImageError as exc:
            self._failed(image.id, exc.message)
            return None
        if prepared.fingerprint is not None:  # kept until the answer comes, to store with it
            self._fingerprints[image.id] = prepared.fingerprint
        request = self._adapter.build_request(ready, self._prompt)
        return self._client.line(custom_id_for(image.id), request)

    async def _check(self, image: ImageInput) -> tuple[bool, bytes | None]:
        """Whether the photo was found in the cache (its copy is then its result), and else
        its bytes as the cache read them (None: a URL, an unread file, or no cache)."""
        if self._cache is None:
            return False, None
        cache, hit = self._cache
        found = await cache.check(image)
        if found is not None:
            hit(image.id, found)
            return True, None
        return False, cache.take(image.id)

    async def _remember_keys(self, image_ids: Iterable[str]) -> None:
        """The batch's photos' cache keys, stored now: an answer collected by a later process
        (`resume` after Ctrl-C) is stored under its key, a source for later runs."""
        if self._cache is not None:
            adapter = self._adapter
            keyed = self._cache[0].keys_of(image_ids, adapter.name, adapter.model)
            await self._store.cache.remember(self.job_id, keyed)

    async def _submit(self, pending: BatchFile) -> None:
        """Send one batch, recorded before it goes; never make it twice (see the module)."""
        path, ids, size = pending.finish()
        row = await self._store.batches.record(
            self.job_id,
            self._client.name,
            ids,
            file_id=None,
            batch_id=None,
            state=CREATING,
            size=size,
        )
        await self._remember_keys(ids.values())
        uploaded: list[str] = []
        tries = 0

        async def on_file(file_id: str) -> None:
            await self._store.batches.uploaded(row, file_id)
            uploaded.append(file_id)

        async def once() -> BatchInfo:
            nonlocal tries
            tries += 1
            if uploaded:  # the create's answer may have been lost: its file tells
                return await self._client.batch_for_file(uploaded[0])
            if tries > 1 and (found := await self._made(await self._record(row))) is not None:
                return found
            return await self._client.submit_file(path, on_file)

        try:
            info = await self._calls(once)
        except FatalJobError:
            if tries == 1 and not uploaded:  # refused outright: the provider made nothing
                await self._store.batches.forget(row, self.job_id)
            raise
        await self._store.batches.created(row, self.job_id, info.id, info.state)
        self._note(f"{self._client.name} batch {info.id} submitted: {len(ids)} photos")

    async def _record(self, row: int) -> BatchRecord:
        return next(r for r in await self._store.batches.of_job(self.job_id) if r.id == row)


def _too_large(size: int, limit: int) -> str:
    return (
        f"the batch request for this photo is {size:,} bytes, over the provider's "
        f"{limit:,}-byte batch limit"
    )
