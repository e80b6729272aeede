"""Never pay twice for a photo: the result cache end to end, through the strict local fakes.

A photo already rated in the same database, with the same bytes, provider, model, max edge and
prompt, is not sent again: its rating is copied, `cached`, free. The fakes count every request
they receive, so "not sent" is what the server saw, not what kullbatch says.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from fake_batch_openai import KEY as BATCH_KEY
from fake_batch_openai import FakeOpenAIBatches
from fake_openai_server import FakeChatServer, openai_error
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.cli.progress import ProgressDisplay
from kullbatch.cli.tables import status_lines
from kullbatch.manifest import manifest_from_document
from kullbatch.models import EventKind, ItemState, JobState, JobStatus, Mode, Prompt
from kullbatch.run.cache import cache_key
from kullbatch.service import dryrun, jobs
from kullbatch.store.cache import LOOKUP_SQL

KEY = "sk-test-key"


def photo(path: Path, n: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A small JPEG of its own colour, so that photo n's bytes are its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (n * 37 % 256, 90 + n % 100, 200 - n * 11 % 200)).save(path)
    return path


def shoot(folder: Path, count: int, *, first: int = 0, stem: str = "IMG") -> list[Path]:
    return [photo(folder / f"{stem}_{n:04d}.jpg", first + n) for n in range(count)]


def copies(paths: list[Path], folder: Path, stem: str = "renamed") -> list[Path]:
    """The same photos under other names in another folder: the same bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, folder / f"{stem}_{n}.jpg")) for n, path in enumerate(paths)]


def manifest(paths: list[Path], urls: list[str] = ()) -> Any:  # type: ignore[assignment]
    entries: list[dict[str, str]] = [
        {"id": f"p{n}", "filename": path.name, "path": str(path)} for n, path in enumerate(paths)
    ]
    entries += [{"id": f"u{n}", "filename": f"u{n}.jpg", "url": url} for n, url in enumerate(urls)]
    return manifest_from_document({"shootId": "cache", "images": entries}, base=Path("/"))


def env_for(fake: FakeChatServer, key: str = KEY) -> dict[str, str]:
    return {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": f"{fake.base_url}/v1"}


async def run_job(db: Path, env: dict[str, str], shot: Any, **settings: Any) -> Any:
    """Create and run one job; its outcome, status and items."""
    wanted = jobs.ProcessSettings(provider="openai", **settings)
    async with jobs.Service.open(db, env) as service:
        job = await service.create(shot, wanted)
        outcome = await service.run(job)
        status, items = await service.results(job.id)
    return outcome, status, items


async def stored_keys(db: Path) -> list[str | None]:
    async with (
        jobs.Service.open(db, {}) as service,
        service.store._db.execute(
            "SELECT cache_key FROM batch_items ORDER BY job_id, position"
        ) as cursor,
    ):
        return [row[0] for row in await cursor.fetchall()]


def sent_sizes(fake: FakeChatServer) -> list[tuple[int, int]]:
    """The size of the photo in each request the server received."""
    sizes = []
    for received in fake.requests:
        uri = json.dumps(received.json).split('"data:image/jpeg;base64,', 1)[1].split('"', 1)[0]
        with Image.open(io.BytesIO(base64.b64decode(uri))) as opened:
            sizes.append(opened.size)
    return sizes


async def test_renamed_copies_of_rated_photos_are_not_sent_and_cost_nothing(
    aiohttp_server, tmp_path
):
    """A second job of the same photos under other names sends no request: each rating is
    copied, cached, with zero tokens and no cost; the job's cost is 0 and says so."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    originals = shoot(tmp_path / "a", 3)
    first, _, rated = await run_job(db, env_for(fake), manifest(originals))
    assert first.rated == 3 and len(fake.requests) == 3

    outcome, status, items = await run_job(
        db, env_for(fake), manifest(copies(originals, tmp_path / "b"))
    )

    assert len(fake.requests) == 3  # nothing more reached the server
    assert outcome.state is JobState.COMPLETED and outcome.rated == 3
    assert [item.cached for item in items] == [True, True, True]
    assert [item.rating for item in items] == [item.rating for item in rated]
    assert all(item.usage.input_tokens == item.usage.output_tokens == 0 for item in items)
    assert [item.cost_usd for item in items] == [0.0, 0.0, 0.0]
    assert status.costUsd == 0.0 and status.usage.inputTokens == 0
    assert status.cachedImages == 3 and status.processedImages == 3
    keys = await stored_keys(db)
    assert None not in keys and len(set(keys)) == 3  # each copy stored under its original's key
    assert not any(item.cached for item in rated)


async def test_a_second_run_of_the_same_shoot_and_a_mixed_shoot_send_only_new_photos(
    aiohttp_server, tmp_path
):
    """The shoot run again sends nothing; new photos beside old ones are the only ones sent."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    originals = shoot(tmp_path / "a", 2)
    await run_job(db, env_for(fake), manifest(originals))
    await run_job(db, env_for(fake), manifest(originals))
    assert len(fake.requests) == 2
    new = [photo(tmp_path / "c" / "NEW.jpg", 50, size=(80, 60))]

    outcome, _, items = await run_job(db, env_for(fake), manifest([*originals, *new]))

    assert sent_sizes(fake)[2:] == [(80, 60)]
    assert outcome.rated == 3 and [item.cached for item in items] == [True, True, False]


async def test_another_prompt_rubric_model_or_max_edge_is_sent_again(aiohttp_server, tmp_path):
    """Each part of the key matters: a changed prompt, rubric, model or --max-edge is a new
    rating, sent and paid for."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    shot = manifest(shoot(tmp_path / "a", 1))
    await run_job(db, env_for(fake), shot)
    changes: list[dict[str, Any]] = [
        {"prompt": "Rate for sharpness only."},
        {"rubric": "wedding"},
        {"model": "gpt-5.4"},
        {"max_edge": 1024},
        {"system_prompt": "You are strict."},
    ]
    for n, change in enumerate(changes, start=2):
        _, _, items = await run_job(db, env_for(fake), shot, **change)
        assert len(fake.requests) == n, change
        assert [item.cached for item in items] == [False], change
    _, _, items = await run_job(db, env_for(fake), shot, rubric="wedding")
    assert len(fake.requests) == len(changes) + 1 and items[0].cached  # the rubric's rating


async def test_no_cache_sends_every_photo_and_is_kept_for_resume(aiohttp_server, tmp_path):
    """--no-cache sends photos rated before, and the job remembers it."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    shot = manifest(shoot(tmp_path / "a", 2))
    await run_job(db, env_for(fake), shot)
    _, status, items = await run_job(db, env_for(fake), shot, cache=False)
    assert len(fake.requests) == 4
    assert not any(item.cached for item in items) and status.cachedImages == 0
    async with jobs.Service.open(db, {}) as service:
        job = await service.store.get_job(status.jobId)
    assert job is not None and job.options.cache is False


async def test_a_failed_photo_is_never_reused_and_is_sent_again(aiohttp_server, tmp_path):
    """A photo the provider refused is not a source: the next job sends it (and rates it)."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    fake.queue(400, openai_error("Invalid image.", "invalid_request_error", "invalid_image_format"))
    db = tmp_path / "k.db"
    shot = manifest(shoot(tmp_path / "a", 1))
    first, _, failed = await run_job(db, env_for(fake), shot)
    assert first.failed == 1 and failed[0].state is ItemState.FAILED

    outcome, _, items = await run_job(db, env_for(fake), shot)

    assert len(fake.requests) == 2 and outcome.rated == 1 and not items[0].cached


async def test_url_photos_are_always_sent(aiohttp_server, tmp_path):
    """A URL photo has no bytes to hash here: it is sent every time, and stored without a key."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    shot = manifest([], urls=["https://photos.example.com/IMG_0001.jpg"])
    await run_job(db, env_for(fake), shot)
    _, _, items = await run_job(db, env_for(fake), shot)
    assert len(fake.requests) == 2 and not items[0].cached
    assert await stored_keys(db) == [None, None]


async def test_the_key_is_the_photos_content_provider_model_edge_and_prompt_never_the_api_key(
    aiohttp_server, tmp_path
):
    """The stored key is recomputed from the file's SHA-256 and the job's settings; another
    API key (another account) finds the same ratings."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    (path,) = shoot(tmp_path / "a", 1)
    _, _, items = await run_job(db, env_for(fake), manifest([path]), prompt="Rate it.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = cache_key(
        digest, provider="openai", model=items[0].model, max_edge=1568, prompt=Prompt("Rate it.")
    )
    assert await stored_keys(db) == [expected]
    other = await FakeChatServer(api_key="sk-another-account").start(aiohttp_server)

    _, _, again = await run_job(
        db, env_for(other, "sk-another-account"), manifest([path]), prompt="Rate it."
    )

    assert other.requests == [] and again[0].cached
    dump = (db.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("k.db*"))).decode(
        "latin-1"
    )
    assert KEY not in dump and "sk-another-account" not in dump


async def test_a_resumed_job_keeps_its_cached_photos_and_sends_only_the_rest(
    aiohttp_server, tmp_path
):
    """A job stopped after its cached copies were stored resumes without sending them, and
    sends each new photo once."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    originals = shoot(tmp_path / "a", 3)
    await run_job(db, env_for(fake), manifest(originals))
    new = [photo(tmp_path / "c" / f"NEW_{n}.jpg", 60 + n, size=(80, 60)) for n in range(2)]
    shot = manifest([*copies(originals, tmp_path / "b"), *new])
    async with jobs.Service.open(db, env_for(fake)) as service:
        job = await service.create(shot, jobs.ProcessSettings(provider="openai"))
        stoppers: list[Any] = []

        def stop_after_cached(event: Any) -> None:
            if event.kind is EventKind.RATED and event.rated == 3:
                stoppers[0].interrupt()  # as Ctrl-C or a kill: the rest stays pending

        first = await service.run(
            job, subscribers=[stop_after_cached], on_processor=stoppers.append
        )
        assert first.state is JobState.INTERRUPTED
        resumed = await service.prepare_resume(job.id)
        outcome = await service.run(resumed)
        status, items = await service.results(job.id)
    assert outcome.state is JobState.COMPLETED and status.processedImages == 5
    assert [item.cached for item in items] == [True, True, True, False, False]
    sent = sent_sizes(fake)
    assert sent.count((64, 48)) == 3  # the first job's three, never the copies
    assert 2 <= sent.count((80, 60)) <= 3  # each new photo (one maybe in flight at the stop)
    assert status.cachedImages == 3


async def test_the_dry_run_counts_cached_photos_as_free(aiohttp_server, tmp_path):
    """`cachedImages` in the estimate: rated photos cost nothing, only new ones are priced."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    originals = shoot(tmp_path / "a", 3)
    await run_job(db, env_for(fake), manifest(originals))
    new = [photo(tmp_path / "c" / "NEW.jpg", 70)]
    shot = manifest([*copies(originals, tmp_path / "b"), *new])
    settings = jobs.ProcessSettings(provider="openai")
    env = env_for(fake)

    mixed = await dryrun.estimate(shot, settings, env, db)
    alone = await dryrun.estimate(manifest(new), settings, env, db)
    uncached = await dryrun.estimate(
        shot, jobs.ProcessSettings(provider="openai", cache=False), env, db
    )

    assert mixed.images == 4 and mixed.cached_images == 3
    assert mixed.document()["cachedImages"] == 3
    assert (mixed.input_tokens, mixed.fast_usd) == (alone.input_tokens, alone.fast_usd)
    assert uncached.cached_images == 0 and uncached.input_tokens == 4 * alone.input_tokens
    assert any("3 photos rated before" in line for line in mixed.lines())
    assert len(fake.requests) == 3  # the dry runs sent nothing


def test_process_dry_run_json_reads_the_cache_of_its_database(tmp_path, monkeypatch):
    """`process --dry-run --json --db` says `cachedImages`; --no-cache counts none."""
    folder = tmp_path / "shoot"
    shoot(folder, 2)
    db = tmp_path / "k.db"
    monkeypatch.setenv("KULLBATCH_DB", str(db))
    runner = CliRunner()
    done = runner.invoke(app, ["process", str(folder), "--provider", "local", "-q"])
    assert done.exit_code == 0, done.output

    cached = runner.invoke(
        app, ["process", str(folder), "--provider", "local", "--dry-run", "--json"]
    )
    sent = runner.invoke(
        app, ["process", str(folder), "--provider", "local", "--dry-run", "--json", "--no-cache"]
    )

    assert json.loads(cached.stdout)["cachedImages"] == 2
    assert json.loads(sent.stdout)["cachedImages"] == 0


async def test_economy_puts_only_photos_not_rated_before_in_its_batch(aiohttp_server, tmp_path):
    """Economy mode copies cached photos and batches only the rest; a shoot wholly rated
    before makes no batch at all. Batch answers are cache sources too."""
    fake = await FakeOpenAIBatches().start(aiohttp_server)
    env = {
        "OPENAI_API_KEY": BATCH_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "KULLBATCH_ECONOMY_POLL": "0.01",
    }
    db = tmp_path / "k.db"
    originals = shoot(tmp_path / "a", 3)
    await run_job(db, env, manifest(originals), mode="economy")
    assert [upload.lines for upload in fake.uploads] == [3]
    new = [photo(tmp_path / "c" / "NEW.jpg", 80)]

    outcome, status, items = await run_job(
        db, env, manifest([*copies(originals, tmp_path / "b"), *new]), mode="economy"
    )
    assert [upload.lines for upload in fake.uploads] == [3, 1]
    assert outcome.rated == 4 and [item.cached for item in items] == [True, True, True, False]
    assert status.cachedImages == 3

    again, _, _ = await run_job(db, env, manifest(originals), mode="economy")
    assert again.state is JobState.COMPLETED and again.rated == 3
    assert len(fake.uploads) == 2 and fake.batch_creates == 2 and fake.per_photo_requests() == 0


async def test_each_local_photo_is_read_once_whether_found_or_sent(
    aiohttp_server, tmp_path, monkeypatch
):
    """The bytes hashed for the key are the bytes encoded and sent: no photo file is opened
    twice by a run, neither a photo sent nor one found in the cache. (The manifest's check
    that each file exists comes before, and burst grouping's focus measure after: off here.)"""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    originals = shoot(tmp_path / "a", 2)
    new = [photo(tmp_path / "c" / "NEW.jpg", 90)]
    await run_job(db, env_for(fake), manifest(originals))
    renamed = copies(originals, tmp_path / "b")
    shot = manifest([*renamed, *new])
    watched = {str(path) for path in [*renamed, *new]}
    opened: list[str] = []
    real_open = os.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) in watched:
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    # every read of a photo goes through `confine.open_photo`, which opens with os.open
    monkeypatch.setattr(os, "open", counting_open)

    outcome, _, items = await run_job(db, env_for(fake), shot, groups=False)

    assert outcome.rated == 3 and [item.cached for item in items] == [True, True, False]
    assert sorted(opened) == sorted(watched)  # each once
    assert len(fake.requests) == 3


async def test_the_lookup_is_one_probe_of_the_cache_key_index(tmp_path):
    """SQLite finds a key through `batch_items_by_cache_key`, never by scanning the table."""
    async with (
        jobs.Service.open(tmp_path / "k.db", {}) as service,
        service.store._db.execute(f"EXPLAIN QUERY PLAN {LOOKUP_SQL}", ("k", "rated")) as cursor,
    ):
        plan = " ".join(str(row[-1]) for row in await cursor.fetchall())
    assert "USING INDEX batch_items_by_cache_key" in plan and "SCAN" not in plan


def test_status_text_says_how_many_photos_came_from_the_cache():
    """`kullbatch status` adds a line for cached photos, and none when there are none."""
    base = {
        "jobId": "batch_1_abc",
        "shootId": "s",
        "providerId": "openai",
        "mode": "fast",
        "status": "completed",
        "totalImages": 4,
        "processedImages": 4,
        "failedImages": 0,
        "progress": 1.0,
        "eta": None,
        "providerJobId": None,
        "error": None,
        "costUsd": 0.0,
        "createdAt": "2026-01-01T00:00:00Z",
        "startedAt": None,
        "completedAt": None,
    }
    assert "  3 from cache (not sent, no cost)" in status_lines(JobStatus(**base, cachedImages=3))
    assert not any("cache" in line for line in status_lines(JobStatus(**base)))


async def test_an_economy_batch_collected_after_resume_is_a_cache_source(aiohttp_server, tmp_path):
    """Ctrl-C after the batch is submitted, `resume` collects it in a new run: its answers are
    stored under their keys all the same, and the next job of the same photos sends nothing."""
    fake = await FakeOpenAIBatches(polls_per_state=3).start(aiohttp_server)
    env = {
        "OPENAI_API_KEY": BATCH_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "KULLBATCH_ECONOMY_POLL": "0.01",
    }
    db = tmp_path / "k.db"
    originals = shoot(tmp_path / "a", 3)
    async with jobs.Service.open(db, env) as service:
        job = await service.create(
            manifest(originals), jobs.ProcessSettings(provider="openai", mode="economy")
        )
        runners: list[Any] = []

        def interrupt_once_submitted(event: Any) -> None:
            if event.kind is EventKind.BATCH and "submitted" in (event.note or ""):
                runners[0].interrupt()

        stopped = await service.run(
            job, subscribers=[interrupt_once_submitted], on_processor=runners.append
        )
        assert stopped.state is JobState.SUBMITTED
    async with jobs.Service.open(db, env) as service:  # as another process would
        finished = await service.run(await service.prepare_resume(job.id))
    assert finished.state is JobState.COMPLETED and finished.rated == 3
    assert None not in await stored_keys(db)

    outcome, _, items = await run_job(db, env, manifest(copies(originals, tmp_path / "b")))

    assert outcome.rated == 3 and all(item.cached for item in items)
    assert len(fake.uploads) == 1 and fake.per_photo_requests() == 0


def test_the_end_of_run_summary_says_how_many_photos_came_from_the_cache():
    """The table printed when a job ends has a Cached row when photos came from the cache."""
    base = JobStatus(
        jobId="batch_1_abc",
        shootId="s",
        providerId="openai",
        mode=Mode.FAST,
        status=JobState.COMPLETED,
        totalImages=4,
        processedImages=4,
        failedImages=0,
        progress=1.0,
        eta=None,
        providerJobId=None,
        error=None,
        costUsd=0.0,
        createdAt="2026-01-01T00:00:00Z",
        startedAt=None,
        completedAt=None,
    )

    def summary(job: JobStatus) -> str:
        console = Console(file=io.StringIO(), width=120)
        display = ProgressDisplay(4, job.jobId, "openai", console, get_time=lambda: 0.0)
        console.print(display.summary(job, 10.0))
        assert isinstance(console.file, io.StringIO)
        return console.file.getvalue()

    cached = base.model_copy(update={"cachedImages": 3})
    assert "3 from cache (not sent, no cost)" in summary(cached)
    assert "Cached" not in summary(base)


async def test_copies_within_one_shoot_are_sent_once_and_copied_free(aiohttp_server, tmp_path):
    """A shoot holding the same photo three times (and another twice) on its first run: one
    request per distinct photo; each copy takes the rating of the one sent, cached and free."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    originals = shoot(tmp_path / "a", 3)
    doubles = [*copies(originals[:1], tmp_path / "b"), *copies(originals[:2], tmp_path / "c")]
    shot = manifest([*originals, *doubles])  # p0 p1 p2, then p0 again, then p0 and p1 again

    outcome, status, items = await run_job(tmp_path / "k.db", env_for(fake), shot)

    assert len(fake.requests) == 3  # what the server saw
    assert outcome.state is JobState.COMPLETED and outcome.rated == 6
    by_id = {item.image.id: item for item in items}
    for same in (["p0", "p3", "p4"], ["p1", "p5"], ["p2"]):  # either copy may be the one sent
        group = [by_id[image_id] for image_id in same]
        assert [item.cached for item in group].count(False) == 1
        assert all(item.rating == group[0].rating for item in group)
        assert all(item.cost_usd == 0.0 for item in group if item.cached)
    assert status.cachedImages == 3 and status.usage.inputTokens == 3 * items[0].usage.input_tokens


async def test_a_copy_of_a_photo_that_failed_is_sent_itself(aiohttp_server, tmp_path):
    """The photo a copy follows is refused: the copy is not left waiting, it is sent."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    fake.queue(400, openai_error("Invalid image.", "invalid_request_error", "invalid_image_format"))
    original = shoot(tmp_path / "a", 1)
    shot = manifest([*original, *copies(original, tmp_path / "b")])

    outcome, _, items = await run_job(tmp_path / "k.db", env_for(fake), shot)

    assert len(fake.requests) == 2
    assert outcome.state is JobState.COMPLETED and (outcome.rated, outcome.failed) == (1, 1)
    # either may lead (the first whose bytes were read): the one refused, the other sent
    assert sorted((item.state, item.cached) for item in items) == [
        (ItemState.FAILED, False),
        (ItemState.RATED, False),
    ]
    keys = await stored_keys(tmp_path / "k.db")  # the copy's rating is a source for later runs
    assert sorted(key is None for key in keys) == [False, True]


async def test_the_dry_run_counts_copies_within_the_shoot_as_free(aiohttp_server, tmp_path):
    """The estimate prices a photo and its copies once, as the run will send it once."""
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    db = tmp_path / "k.db"
    await run_job(db, env_for(fake), manifest(shoot(tmp_path / "old", 1, first=90)))
    originals = shoot(tmp_path / "a", 2)
    shot = manifest([*originals, *copies(originals, tmp_path / "b")])

    estimate = await dryrun.estimate(
        shot, jobs.ProcessSettings(provider="openai"), env_for(fake), db
    )

    assert estimate.images == 4 and estimate.cached_images == 2
