"""Two flushes on one connection never interleave: the writer's and `finish_job`'s."""

from __future__ import annotations

import asyncio

from kullbatch.models import ItemState
from kullbatch.store.database import Store
from tests.test_store import JOB, fresh, rate


async def test_a_flush_started_while_another_writes_waits_for_it(tmp_path, monkeypatch):
    """The second flush begins its transaction only after the first one's commit."""
    store = await fresh(tmp_path / "k.db")
    writing = 0
    overlapped = False
    real_write = Store._write

    async def watched_write(self, *args):
        nonlocal writing, overlapped
        writing += 1
        overlapped = overlapped or writing > 1
        try:
            await asyncio.sleep(0.01)  # a slow disk: the other flush has every chance to start
            return await real_write(self, *args)
        finally:
            writing -= 1

    monkeypatch.setattr(Store, "_write", watched_write)
    try:
        rate(store, "img0")
        first = asyncio.create_task(store.flush())
        await asyncio.sleep(0)  # the first flush is inside its write now
        rate(store, "img1")
        await asyncio.gather(first, store.flush())
        items = await store.items(JOB.id)
    finally:
        await store.close()
    assert not overlapped
    assert [item.state for item in items] == [ItemState.RATED, ItemState.RATED, ItemState.PENDING]
