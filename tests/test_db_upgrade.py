"""A database made by the first schema version, opened by today's kullbatch.

The database is built here from migration 1 alone (`MIGRATIONS[0]`: the migrations list is
append-only, so its first entry is the schema version 1 created), with jobs and results written
in SQL as version 1 wrote them: options with its four keys only, images as its `ImageInput`
JSON, ratings without `issues`, no provider batches, no provider or model per photo, no bursts,
no fingerprints. Today's `Store.open` must bring it up to date once, and `jobs`, `status`,
`results` and `resume` (with the offline `local` rater) must work on its jobs.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import aiosqlite
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.models import ItemState, JobOptions, JobState
from kullbatch.store import migrations
from kullbatch.store.database import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "photos"
runner = CliRunner()

DONE, KILLED = "batch_1717000000000_v1done", "batch_1717000100000_v1kill"
# what version 1 stored of `process`'s options: STORED_OPTIONS then, at their defaults
V1_OPTIONS = {"concurrency": 0, "max_retry_time": 21600.0, "max_edge": 1568, "rpm": None}
V1_TITLE = "Rated by kullbatch with schema version 1"
# (job, photo, state) in manifest order; the killed job's process died after two answers, one
# failure and with two photos not sent yet
PHOTOS = {
    DONE: [
        ("01_harbour_sharp", "rated"),
        ("07_harbour_blurry", "rated"),
        ("11_beach_overexposed", "rated"),
    ],
    KILLED: [
        ("02_city_skyline_sharp", "rated"),
        ("09_city_night_underexposed", "rated"),
        ("03_portrait_sharp", "failed"),
        ("04_mountain_lake_sharp", "pending"),
        ("13_mountain_lake_hazy", "pending"),
    ],
}


def v1_rating(stars: int) -> str:
    """A result as version 1's `Rating.model_dump_json()` wrote it: no `issues` field."""
    label = {5: "green", 4: "green", 3: "yellow"}.get(stars, "red")
    return json.dumps(
        {
            "starRating": stars,
            "colorLabel": label,
            "title": V1_TITLE,
            "description": "Stored before the schema had provider, pricing or burst columns.",
            "tags": ["v1", "stored"],
        },
        separators=(",", ":"),
    )


def v1_image(image_id: str, path: Path) -> str:
    """An image as version 1's `ImageInput.model_dump_json()` wrote it (resolved path)."""
    return json.dumps(
        {
            "id": image_id,
            "filename": path.name,
            "url": None,
            "path": str(path),
            "metadata": {},
            "tags": [],
        },
        separators=(",", ":"),
    )


async def _schema_version_1(db_path: Path) -> None:
    """Migration 1 alone, recorded in `migrations` as version 1's `migrate` recorded it."""
    name, create = migrations.MIGRATIONS[0]
    async with aiosqlite.connect(db_path) as db:
        await db.execute(
            "CREATE TABLE migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TEXT NOT NULL)"
        )
        await create(db)
        await db.execute(
            "INSERT INTO migrations (id, name, applied_at) VALUES (1, ?, ?)",
            (name, "2024-05-29T16:26:40.000Z"),
        )
        await db.commit()


def make_v1_database(tmp_path: Path) -> Path:
    """The two jobs, in a database of schema version 1; the photos copied beside it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    db_path = tmp_path / "v1.db"
    asyncio.run(_schema_version_1(db_path))
    with sqlite3.connect(db_path) as db:
        for job_id, listed in PHOTOS.items():
            killed = job_id == KILLED
            counts = {s: sum(1 for _, state in listed if state == s) for s in ("rated", "failed")}
            db.execute(
                "INSERT INTO batch_jobs (id, user_id, shoot_id, provider_id, model, status,"
                " total_images, processed_images, failed_images, mode, prompt, system_prompt,"
                " source, options, created_at, started_at, completed_at, heartbeat_at,"
                " owner_pid, owner_host)"
                " VALUES (?, 'photographer', ?, 'local', 'local-v1', ?, ?, ?, ?, 'fast',"
                " 'Rate this photo', NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    "v1-" + ("killed" if killed else "done"),
                    "processing" if killed else "completed",
                    len(listed),
                    counts["rated"],
                    counts["failed"],
                    str(tmp_path / "shoot.json"),
                    json.dumps(V1_OPTIONS),
                    "2024-05-29T16:26:40.123Z",
                    "2024-05-29T16:26:40.125Z",
                    None if killed else "2024-05-29T16:26:52.500Z",
                    # a killed process's last heartbeat, long stale; a finished job has none
                    "2024-05-29T16:27:01.000Z" if killed else None,
                    999_999 if killed else None,
                    "the-old-laptop" if killed else None,
                ),
            )
            for position, (stem, state) in enumerate(listed):
                path = photos / f"{stem}.jpg"
                shutil.copyfile(EXAMPLES / path.name, path)
                image_id = f"img{position}"
                done_at = None if state == "pending" else "2024-05-29T16:26:45.000Z"
                db.execute(
                    "INSERT INTO batch_items (job_id, position, image_id, image, status,"
                    " attempts, last_error, result, input_tokens, output_tokens, created_at,"
                    " updated_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?)",
                    (
                        job_id,
                        position,
                        image_id,
                        v1_image(image_id, path),
                        state,
                        0 if state == "pending" else 1,
                        "timed out reading the file" if state == "failed" else None,
                        v1_rating(4 - position % 3) if state == "rated" else None,
                        "2024-05-29T16:26:40.123Z",
                        done_at,
                        done_at,
                    ),
                )
    return db_path


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def columns(db_path: Path, table: str) -> set[str]:
    with sqlite3.connect(db_path) as db:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def applied(db_path: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT id, name, applied_at FROM migrations ORDER BY id").fetchall()


def test_the_v1_database_really_is_version_1(tmp_path):
    """The fixture is what version 1 left: one migration, none of the later tables or columns."""
    db_path = make_v1_database(tmp_path)
    assert [row[0] for row in applied(db_path)] == [1]
    assert "custom_id" not in columns(db_path, "batch_items")
    assert "provider" not in columns(db_path, "batch_items")
    with sqlite3.connect(db_path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"migrations", "batch_jobs", "batch_items"}


def test_opening_upgrades_once_and_every_stored_row_reads(tmp_path):
    """Store.open runs migrations 2 to the last, once; jobs and items read as today's types."""
    db_path = make_v1_database(tmp_path)

    async def read() -> tuple[list, list, list]:
        store = await Store.open(db_path)
        try:
            listed = await store.list_jobs()
            done = await store.items(DONE)
            killed = await store.items(KILLED)
        finally:
            await store.close()
        return listed, done, killed

    listed, done, killed = asyncio.run(read())
    upgraded = applied(db_path)
    assert [row[0] for row in upgraded] == list(range(1, len(migrations.MIGRATIONS) + 1))
    assert [row[1] for row in upgraded] == [name for name, _ in migrations.MIGRATIONS]
    assert upgraded[0][2] == "2024-05-29T16:26:40.000Z"  # version 1's own record is kept
    assert {"custom_id", "provider", "burst_group", "phash"} <= columns(db_path, "batch_items")
    assert "provider_batches" in {
        row[0] for row in sqlite3.connect(db_path).execute("SELECT name FROM sqlite_master")
    }

    assert [job.id for job in listed] == [KILLED, DONE]  # newest first
    by_id = {job.id: job for job in listed}
    assert by_id[DONE].status is JobState.COMPLETED
    assert by_id[DONE].options == JobOptions()  # version 1 stored every option at its default
    assert by_id[KILLED].status is JobState.PROCESSING and not by_id[KILLED].is_live()
    assert [item.state for item in done] == [ItemState.RATED] * 3
    assert [item.state for item in killed] == [
        ItemState.RATED,
        ItemState.RATED,
        ItemState.FAILED,
        ItemState.PENDING,
        ItemState.PENDING,
    ]
    for item in done:
        assert item.rating is not None and item.rating.title == V1_TITLE
        assert item.rating.issues == []  # the field came later: empty, not an error
        assert item.pricing == "standard" and item.group is None and item.fingerprint is None
    assert killed[2].error == "timed out reading the file"

    # opened again: nothing runs twice
    asyncio.run(read())
    assert applied(db_path) == upgraded


def test_jobs_and_status_read_version_1_jobs(tmp_path):
    """`jobs` lists both; a finished one reads completed, the killed one interrupted."""
    db_path = make_v1_database(tmp_path)
    listed = json.loads(invoke("jobs", "--db", str(db_path), "--json").stdout)
    assert [job["jobId"] for job in listed] == [KILLED, DONE]

    done = json.loads(invoke("status", DONE, "--db", str(db_path), "--json").stdout)
    assert done["status"] == "completed" and done["progress"] == 1.0
    assert (done["totalImages"], done["processedImages"], done["failedImages"]) == (3, 3, 0)
    assert done["providerId"] == "local" and done["mode"] == "fast"

    killed = json.loads(invoke("status", KILLED, "--db", str(db_path), "--json").stdout)
    assert killed["status"] == "interrupted"
    assert (killed["totalImages"], killed["processedImages"], killed["failedImages"]) == (5, 2, 1)
    shown = invoke("status", KILLED, "--db", str(db_path))
    assert shown.exit_code == 0 and "interrupted" in shown.stdout


def test_results_of_a_version_1_job_export_as_csv_and_json(tmp_path):
    """Stored ratings come out unchanged, in manifest order, with the later fields empty."""
    db_path = make_v1_database(tmp_path)
    out = tmp_path / "ratings.csv"
    written = invoke("results", DONE, "--db", str(db_path), "--format", "csv", "--output", str(out))
    assert written.exit_code == 0, written.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [r["imageId"] for r in rows] == ["img0", "img1", "img2"]
    assert [int(r["starRating"]) for r in rows] == [4, 3, 2]
    assert [r["colorLabel"] for r in rows] == ["green", "yellow", "red"]
    assert {r["title"] for r in rows} == {V1_TITLE} and {r["tags"] for r in rows} == {"v1;stored"}
    assert {(r["issues"], r["group"], r["bestInGroup"]) for r in rows} == {("", "", "false")}

    document = json.loads(invoke("results", DONE, "--db", str(db_path), "--format", "json").stdout)
    assert document["jobId"] == DONE and document["processedImages"] == 3
    results = document["results"]
    assert [r["filename"] for r in results] == [f"{stem}.jpg" for stem, _ in PHOTOS[DONE]]
    assert [r["starRating"] for r in results] == [4, 3, 2]
    assert all(r["issues"] == [] and r["group"] is None for r in results)
    # version 1 did not record who rated each photo: the column is empty, or the job's own
    assert {r["provider"] for r in results} <= {None, "local"}

    partial = json.loads(invoke("results", KILLED, "--db", str(db_path)).stdout)["results"]
    assert [("error" in r, r.get("status")) for r in partial] == [
        (False, None),
        (False, None),
        (True, None),
        (False, "pending"),
        (False, "pending"),
    ]
    as_csv = invoke("results", KILLED, "--db", str(db_path), "--format", "csv").stdout
    killed_rows = list(csv.DictReader(io.StringIO(as_csv)))
    assert [r["error"] for r in killed_rows] == ["", "", "timed out reading the file", "", ""]


def test_resume_finishes_a_version_1_job_with_the_local_rater(tmp_path):
    """Only the failed and the unsent photos are rated; version 1's answers stay as they were."""
    db_path = make_v1_database(tmp_path)
    resumed = invoke("resume", KILLED, "--db", str(db_path), "--json", "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    status = json.loads(resumed.stdout)
    assert status["status"] == "completed"
    assert (status["processedImages"], status["failedImages"]) == (5, 0)

    results = json.loads(invoke("results", KILLED, "--db", str(db_path)).stdout)["results"]
    assert [r["title"] == V1_TITLE for r in results] == [True, True, False, False, False]
    assert [r["starRating"] for r in results[:2]] == [4, 3]
    assert all((r["provider"], r["model"]) == ("local", "local-v1") for r in results[2:])
    assert all(1 <= r["starRating"] <= 5 for r in results)

    after = json.loads(invoke("status", KILLED, "--db", str(db_path), "--json").stdout)
    assert after["status"] == "completed" and after["progress"] == 1.0
    out = tmp_path / "after.csv"
    assert (
        invoke("results", KILLED, "--db", str(db_path), "-f", "csv", "-o", str(out)).exit_code == 0
    )
    assert len(list(csv.DictReader(out.open(encoding="utf-8", newline="")))) == 5
    again = invoke("resume", KILLED, "--db", str(db_path))
    assert again.exit_code == 2 and "already completed" in again.stderr
