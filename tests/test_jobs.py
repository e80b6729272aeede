"""The service layer: job ids, status objects, cancel of an orphaned job, provider ids."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kullbatch.errors import ConflictError, FatalJobError
from kullbatch.models import ImageInput, JobOptions, JobState, Mode
from kullbatch.providers import PROVIDERS, resolve
from kullbatch.service import jobs, paths
from kullbatch.store.database import Store
from kullbatch.store.rows import NewJob
from tests.vtime import run_virtual

JOB = NewJob(
    "batch_1_jobs00", "me", "shoot", "local", "local-v1", Mode.FAST, "rate", None, "x", JobOptions()
)


def test_job_ids_follow_the_spec():
    """batch_<unix ms>_<6 of [a-z0-9]>."""
    job_id = jobs.new_job_id(now=1764350000.123)
    assert re.fullmatch(r"batch_1764350000123_[a-z0-9]{6}", job_id)


def test_the_database_defaults_to_the_environment_then_the_data_folder(tmp_path):
    """$KULLBATCH_DB wins; otherwise kullbatch.db in the user data folder."""
    assert paths.default_db_path({"KULLBATCH_DB": str(tmp_path / "x.db")}) == tmp_path / "x.db"
    assert paths.default_db_path({}).name == "kullbatch.db"
    assert paths.admin_log_path(Path("/a/kullbatch.db")) == Path("/a/kullbatch-admin.log")


async def stored_job(db: Path, claim: bool):
    store = await Store.open(db)
    images = [
        ImageInput(id=f"i{n}", filename="a.jpg", url="https://e.test/a.jpg") for n in range(4)
    ]
    await store.create_job(JOB, images)
    if claim:
        assert await store.claim(await store.get_job(JOB.id))
    else:  # its creator died long ago: no fresh heartbeat
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE batch_jobs SET heartbeat_at = '2000-01-01T00:00:00.000Z'")
    return store, await store.get_job(JOB.id)


def test_a_job_whose_heartbeat_went_stale_reads_as_interrupted(tmp_path):
    """processing + heartbeat older than 30 s -> interrupted, with a hint to resume."""

    async def main():
        store, job = await stored_job(tmp_path / "k.db", claim=True)
        await store.close()
        return job

    job = run_virtual(main())
    live = jobs.status_of(dataclasses.replace(job, processed_images=2))
    assert live.status is JobState.PROCESSING and live.progress == 0.5 and live.eta is not None
    later = datetime.now(UTC) + timedelta(seconds=31)
    stale = jobs.status_of(job, now=later)
    assert stale.status is JobState.INTERRUPTED and "resume" in (stale.error or "")


def test_cancelling_a_job_nobody_runs_marks_it_cancelled_at_once(tmp_path):
    """An orphaned processing job is cancelled directly; cancelling again says so."""

    async def main():
        store, _ = await stored_job(tmp_path / "k.db", claim=False)
        first = await jobs.cancel_job(store, JOB.id)
        second = await jobs.cancel_job(store, JOB.id)
        job = await store.get_job(JOB.id)
        await store.close()
        return first, second, job

    first, second, job = run_virtual(main())
    assert first.endswith("cancelled") and "already cancelled" in second
    assert job.status is JobState.CANCELLED


def test_a_running_job_cannot_be_resumed_twice(tmp_path):
    """resume refuses a job whose owner is alive, so two processes never send the same images."""

    async def main():
        store, _ = await stored_job(tmp_path / "k.db", claim=True)
        try:
            with pytest.raises(ConflictError, match="still running"):
                await jobs.prepare_resume(store, JOB.id)
        finally:
            await store.close()

    run_virtual(main())


@pytest.mark.parametrize(
    ("given", "model", "expected"),
    [
        ("openai", None, ("openai", "gpt-5.4-mini")),
        ("openai-gpt-5", None, ("openai", "gpt-5")),
        ("xai", None, ("grok", "grok-4-1-fast-non-reasoning")),
        ("google-gemini-3.5-flash", None, ("gemini", "gemini-3.5-flash")),
        ("openai-compatible", "llava", ("openai-compatible", "llava")),
        ("anthropic-claude-sonnet-4-6", "claude-opus-5", ("anthropic", "claude-opus-5")),
    ],
)
def test_provider_ids_resolve_to_a_provider_and_a_model(given, model, expected):
    """Names, aliases and the spec's provider-model ids; --model wins over the id's model."""
    spec, chosen = resolve(given, model)
    assert (spec.name, chosen) == expected


def test_an_unknown_provider_lists_the_known_ones():
    """A typo gets the list of names."""
    with pytest.raises(ValueError, match="anthropic"):
        resolve("opnai", None)


def test_a_missing_key_is_fatal_before_any_request():
    """The credentials name the variables to set, in the order they are read."""
    with pytest.raises(FatalJobError, match="GOOGLE_API_KEY or GEMINI_API_KEY") as caught:
        PROVIDERS["gemini"].credentials({})
    assert caught.value.env_vars == ("GOOGLE_API_KEY", "GEMINI_API_KEY")  # as data too
    with pytest.raises(FatalJobError) as unusable:
        PROVIDERS["openai"].credentials({"OPENAI_API_KEY": "sk", "OPENAI_BASE_URL": "host/v1"})
    assert unusable.value.env_vars == ("OPENAI_BASE_URL",)


def test_of_two_processes_racing_to_run_a_job_only_one_wins(tmp_path):
    """claim is a compare-and-swap on what each saw: the second claimant is refused."""

    async def main():
        store, seen = await stored_job(tmp_path / "k.db", claim=False)
        first = await store.claim(seen)
        second = await store.claim(seen)
        await store.close()
        return first, second

    assert run_virtual(main()) == (True, False)


def test_a_new_job_is_live_before_its_first_request(tmp_path):
    """Right after `process --quiet` prints the id, status says processing, not interrupted."""

    async def main():
        store = await Store.open(tmp_path / "k.db")
        await store.create_job(JOB, [])
        job = await store.get_job(JOB.id)
        await store.close()
        return job

    assert jobs.status_of(run_virtual(main())).status is JobState.PROCESSING
