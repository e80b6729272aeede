"""Two flushes on one connection never interleave: the writer's and `finish_job`'s."""

from __future__ import annotations

import asyncio

from kullbatch.models import ItemState, JobState
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


async def test_every_cursor_the_store_opens_is_closed_on_the_database_thread(tmp_path, monkeypatch):
    """A cursor left to the garbage collector resets its shared statement on the loop's thread,
    racing the worker thread (`bad parameter or other API misuse`): the store closes each."""
    import aiosqlite.cursor  # noqa: PLC0415

    opened: list[object] = []
    closed: set[int] = set()
    real_init, real_close = aiosqlite.cursor.Cursor.__init__, aiosqlite.cursor.Cursor.close

    def tracked_init(self, *args, **kwargs):
        opened.append(self)
        real_init(self, *args, **kwargs)

    async def tracked_close(self):
        closed.add(id(self))
        await real_close(self)

    monkeypatch.setattr(aiosqlite.cursor.Cursor, "__init__", tracked_init)
    monkeypatch.setattr(aiosqlite.cursor.Cursor, "close", tracked_close)
    store = await fresh(tmp_path / "k.db")
    try:
        job = await store.get_job(JOB.id)
        assert job is not None and await store.claim(job)
        rate(store, "img0")
        await store.beat(JOB.id)
        await store.finish_job(JOB.id, JobState.COMPLETED)
        await store.reopen_failed(JOB.id)
        await store.set_groups(JOB.id, [("img0", "g1", True)])
        await store.batches.release_ended(JOB.id)
        left_open = [cursor for cursor in opened if id(cursor) not in closed]
    finally:
        await store.close()
    assert opened and left_open == []
