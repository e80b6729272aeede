"""The database's schema as an ordered list of migrations, each recorded once it has run.

Append only: a database created by an older kullbatch is brought up to date on open, and a
migration never runs twice (the `migrations` table says how far a database is).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kullbatch.store.sql import run, run_script

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import aiosqlite


async def _create_v1(db: aiosqlite.Connection) -> None:
    await run_script(
        db,
        """
        CREATE TABLE batch_jobs (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            shoot_id TEXT NOT NULL,
            provider_id TEXT NOT NULL,
            model TEXT NOT NULL,
            status TEXT NOT NULL,
            total_images INTEGER NOT NULL,
            processed_images INTEGER NOT NULL DEFAULT 0,
            failed_images INTEGER NOT NULL DEFAULT 0,
            results TEXT,
            error TEXT,
            provider_job_id TEXT,
            mode TEXT NOT NULL DEFAULT 'fast',
            prompt TEXT NOT NULL,
            system_prompt TEXT,
            source TEXT NOT NULL,
            options TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            started_at TEXT,
            completed_at TEXT,
            heartbeat_at TEXT,
            owner_pid INTEGER,
            owner_host TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE batch_items (
            job_id TEXT NOT NULL REFERENCES batch_jobs(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            image_id TEXT NOT NULL,
            image TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            result TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT,
            completed_at TEXT,
            PRIMARY KEY (job_id, image_id)
        );
        CREATE INDEX batch_items_by_position ON batch_items(job_id, position);
        CREATE INDEX batch_jobs_by_created ON batch_jobs(created_at);
        """,
    )


async def _provider_batches_v2(db: aiosqlite.Connection) -> None:
    """Economy mode: each provider batch of a job, and which batch each photo went in."""
    await run_script(
        db,
        """
        CREATE TABLE provider_batches (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL REFERENCES batch_jobs(id) ON DELETE CASCADE,
            provider TEXT NOT NULL,
            file_id TEXT,
            batch_id TEXT,
            state TEXT NOT NULL,
            counts TEXT NOT NULL DEFAULT '{}',
            error TEXT,
            requests INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            fetched INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT
        );
        CREATE INDEX provider_batches_by_job ON provider_batches(job_id);
        ALTER TABLE batch_items ADD COLUMN custom_id TEXT;
        ALTER TABLE batch_items ADD COLUMN provider_batch INTEGER;
        ALTER TABLE batch_items ADD COLUMN pricing TEXT NOT NULL DEFAULT 'standard';
        CREATE INDEX batch_items_by_provider_batch ON batch_items(provider_batch);
        """,
    )


async def _rated_by_v3(db: aiosqlite.Connection) -> None:
    """Who rated each photo: with fallback, not always the job's own provider and model."""
    await run_script(
        db,
        """
        ALTER TABLE batch_items ADD COLUMN provider TEXT;
        ALTER TABLE batch_items ADD COLUMN model TEXT;
        """,
    )


async def _burst_groups(db: aiosqlite.Connection) -> None:
    """Bursts: the moment each photo belongs to (null alone) and whether it is the one picked."""
    await run_script(
        db,
        """
        ALTER TABLE batch_items ADD COLUMN burst_group TEXT;
        ALTER TABLE batch_items ADD COLUMN best_in_group INTEGER NOT NULL DEFAULT 0;
        """,
    )


async def _fingerprints(db: aiosqlite.Connection) -> None:
    """Each rated local photo's pHash (16 hex digits) and capture time, taken as it was
    prepared, so that grouping bursts reads no file again."""
    await run_script(
        db,
        """
        ALTER TABLE batch_items ADD COLUMN phash TEXT;
        ALTER TABLE batch_items ADD COLUMN captured REAL;
        """,
    )


async def _studio_culling_and_savings(db: aiosqlite.Connection) -> None:
    """Columns for serve's users and restarts, the photographer's own ratings, burst
    comparison, the budget and the cache: one migration so the features build on one schema.

    - batch_jobs.served: 1 while `serve` owns the job, so a restarted server picks it up.
    - batch_jobs.budget_usd: the job's spending ceiling (null: none).
    - batch_items.photographer_rating: -1..5 set by the photographer (null: untouched).
    - batch_items.group_rank / group_reason: a burst comparison's verdict on each frame.
    - batch_items.cached: 1 when the answer was copied from an earlier identical request.
    - batch_items.cache_key: what makes two requests identical (content, provider, model,
      size, prompt), indexed so the lookup stays fast at 100,000 photos.
    """
    await run_script(
        db,
        """
        ALTER TABLE batch_jobs ADD COLUMN served INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE batch_jobs ADD COLUMN budget_usd REAL;
        CREATE INDEX batch_jobs_by_user ON batch_jobs(user_id, created_at);
        ALTER TABLE batch_items ADD COLUMN photographer_rating INTEGER;
        ALTER TABLE batch_items ADD COLUMN group_rank INTEGER;
        ALTER TABLE batch_items ADD COLUMN group_reason TEXT;
        ALTER TABLE batch_items ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE batch_items ADD COLUMN cache_key TEXT;
        CREATE INDEX batch_items_by_cache_key ON batch_items(cache_key)
            WHERE cache_key IS NOT NULL;
        """,
    )


MIGRATIONS: list[tuple[str, Callable[[aiosqlite.Connection], Awaitable[None]]]] = [
    ("create batch_jobs and batch_items", _create_v1),
    ("provider batches for economy mode", _provider_batches_v2),
    ("the provider and model that rated each photo", _rated_by_v3),
    ("burst groups and the best frame of each", _burst_groups),
    ("the fingerprint of each rated photo", _fingerprints),
    (
        "users, restarts, the photographer's ratings, comparisons, budget, cache",
        _studio_culling_and_savings,
    ),
]


async def migrate(db: aiosqlite.Connection) -> None:
    """Run the migrations this database has not had yet, and commit."""
    await run(
        db,
        "CREATE TABLE IF NOT EXISTS migrations "
        "(id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    async with db.execute("SELECT max(id) FROM migrations") as cursor:
        row = await cursor.fetchone()
    done = (row[0] if row else None) or 0
    for number, (name, step) in enumerate(MIGRATIONS, start=1):
        if number > done:
            await step(db)
            applied_at = datetime.now(UTC).isoformat(timespec="milliseconds")
            await run(
                db,
                "INSERT INTO migrations (id, name, applied_at) VALUES (?, ?, ?)",
                (number, name, applied_at.replace("+00:00", "Z")),
            )
    await db.commit()
