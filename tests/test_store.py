"""The SQLite store: migrations, the batched writer, never overwriting a stored result."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from kullbatch.models import (
    Answer,
    ImageInput,
    ItemState,
    JobOptions,
    JobState,
    Mode,
    Usage,
)
from kullbatch.store.database import Store
from kullbatch.store.migrations import MIGRATIONS
from kullbatch.store.rows import NewJob
from tests.fakes import rating_for
from tests.vtime import run_virtual

OPTIONS = JobOptions(concurrency=4, rubric="portrait")
JOB = NewJob(
    "batch_1_store0", "me", "shoot", "fake", "fake-1", Mode.FAST, "rate", None, "x", OPTIONS
)


def images(n: int) -> list[ImageInput]:
    return [
        ImageInput(id=f"img{i}", filename=f"{i}.jpg", url=f"https://e.test/{i}.jpg")
        for i in range(n)
    ]


def rate(store: Store, image_id: str, usage: Usage | None = None, attempt: int = 1) -> None:
    """Hand the store a rated photo, as the engine does (its first, so counts are (1, 0))."""
    answer = Answer(rating_for(image_id), usage or Usage())
    store.rated(
        JOB.id, image_id, answer, attempt=attempt, provider="fake", model="fake-1", counts=(1, 0)
    )


async def fresh(db) -> Store:
    store = await Store.open(db)
    await store.create_job(JOB, images(3))
    return store


def test_migrations_run_once_and_are_recorded(tmp_path):
    """Opening a database twice applies each migration once, in the migrations table."""

    async def main():
        for _ in range(2):
            store = await Store.open(tmp_path / "k.db")
            await store.close()

    run_virtual(main())
    with sqlite3.connect(tmp_path / "k.db") as conn:
        rows = conn.execute("SELECT id, name FROM migrations").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    assert mode == "wal"


def test_a_job_and_its_images_are_stored_in_manifest_order(tmp_path):
    """create_job stores every image; items() returns them in order, pending."""

    async def main():
        store = await fresh(tmp_path / "k.db")
        job = await store.get_job(JOB.id)
        items = await store.items(JOB.id)
        await store.close()
        return job, items

    job, items = run_virtual(main())
    assert job.total_images == 3 and job.status is JobState.PROCESSING and job.options == OPTIONS
    assert [i.image.id for i in items] == ["img0", "img1", "img2"]
    assert all(i.state is ItemState.PENDING for i in items)


def test_a_stored_result_is_never_overwritten_by_a_later_result(tmp_path):
    """A late failure or retry for a rated image leaves its rating alone."""

    async def main():
        store = await fresh(tmp_path / "k.db")
        rate(store, "img0", Usage(7, 3), attempt=2)
        await store.flush()
        store.failed(JOB.id, "img0", "late failure", attempt=3, counts=(1, 1))
        store.retried(JOB.id, "img0", "late retry", attempt=4)
        store.retried(JOB.id, "img1", "HTTP 503", attempt=1)
        await store.flush()
        items = await store.items(JOB.id)
        await store.close()
        return items

    items = run_virtual(main())
    assert items[0].state is ItemState.RATED and items[0].rating == rating_for("img0")
    assert items[0].usage == Usage(7, 3) and items[0].attempts == 2 and items[0].error is None
    assert items[1].state is ItemState.PENDING and items[1].error == "HTTP 503"


def test_the_writer_commits_without_being_asked(tmp_path):
    """A queued result reaches disk through the writer task alone (no flush, no close)."""

    def on_disk():
        with sqlite3.connect(tmp_path / "k.db") as conn:
            row = conn.execute("SELECT status FROM batch_items WHERE image_id = 'img1'").fetchone()
            job = conn.execute("SELECT processed_images FROM batch_jobs").fetchone()
        return row[0], job[0]

    async def main():
        store = await fresh(tmp_path / "k.db")
        store.start_writer()
        rate(store, "img1")
        seen = on_disk()
        for _ in range(200):  # real time, read by another connection: at most 10 s on a busy box
            if seen == ("rated", 1):
                break
            await asyncio.sleep(0.05)
            seen = on_disk()
        await store.close()
        return seen

    assert asyncio.run(main()) == ("rated", 1)


def test_finish_counts_results_and_resume_reopens_failures(tmp_path):
    """finish_job counts rated and failed; reopen_failed makes failures pending for resume."""

    async def main():
        store = await fresh(tmp_path / "k.db")
        rate(store, "img0")
        store.failed(JOB.id, "img2", "bad", attempt=1, counts=(1, 1))
        await store.finish_job(JOB.id, JobState.COMPLETED)
        finished = await store.get_job(JOB.id)
        await store.reopen_failed(JOB.id)
        unfinished = [image async for image in store.iter_unfinished(JOB.id)]
        await store.close()
        return finished, unfinished

    finished, unfinished = run_virtual(main())
    assert (finished.processed_images, finished.failed_images) == (1, 1)
    assert finished.status is JobState.COMPLETED and finished.completed_at is not None
    assert [i.id for i in unfinished] == ["img1", "img2"]


def test_a_job_is_live_only_while_its_owner_beats(tmp_path):
    """claim + beat make a job live; a stale heartbeat or a dead owner make it not."""

    async def main():
        store = await fresh(tmp_path / "k.db")
        assert await store.claim(await store.get_job(JOB.id))
        assert not await store.beat(JOB.id)
        job = await store.get_job(JOB.id)
        await store.request_cancel(JOB.id)
        cancelled = await store.cancel_requested(JOB.id)
        await store.close()
        return job, cancelled

    job, cancelled = run_virtual(main())
    assert cancelled
    assert job.is_live() and job.owner_pid == os.getpid()
    assert not job.is_live(datetime.now(UTC) + timedelta(seconds=31))
    assert not dataclasses.replace(job, owner_pid=2**22 + 12345).is_live()
    assert not dataclasses.replace(job, status=JobState.COMPLETED).is_live()


def test_jobs_are_listed_newest_first(tmp_path):
    """list_jobs orders by creation time, newest first."""

    async def main():
        store = await Store.open(tmp_path / "k.db")
        for n in range(3):
            await store.create_job(dataclasses.replace(JOB, id=f"batch_{n}_aaaaaa"), images(1))
        jobs = await store.list_jobs()
        missing = await store.get_job("nope")
        await store.close()
        return [j.id for j in jobs], missing

    ids, missing = run_virtual(main())
    assert ids == ["batch_2_aaaaaa", "batch_1_aaaaaa", "batch_0_aaaaaa"] and missing is None


def test_a_failed_commit_keeps_the_results_queued(tmp_path):
    """If a write fails (e.g. the database is locked), nothing queued is lost: it is retried."""

    async def main():
        store = await fresh(tmp_path / "k.db")
        rate(store, "img0")
        real_write = store._write

        async def locked(*args):
            raise sqlite3.OperationalError("database is locked")

        store._write = locked
        with pytest.raises(sqlite3.OperationalError):
            await store.flush()
        store._write = real_write
        await store.flush()
        items = await store.items(JOB.id)
        await store.close()
        return items

    assert run_virtual(main())[0].state is ItemState.RATED


def test_a_file_that_is_not_a_database_is_refused_and_closed(tmp_path):
    """Opening a text file as the database raises (and does not leave a thread behind)."""
    bogus = tmp_path / "notes.db"
    bogus.write_text("this is not SQLite " * 100)

    async def main():
        await Store.open(bogus)

    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        run_virtual(main())
