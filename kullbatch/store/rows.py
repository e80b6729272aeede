"""What the store's rows read as: jobs, their liveness, items, and the database's clock format.

Plain values, so that modules above the store (the service, the server) can hold a job without
holding a database connection.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kullbatch.models import (
    ACTIVE_STATES,
    Fingerprint,
    ImageInput,
    ItemRecord,
    ItemState,
    JobOptions,
    JobState,
    Mode,
    Rating,
    Usage,
)

HEARTBEAT_STALE_AFTER = 30.0


def utc_now() -> str:
    """`2026-12-06T10:11:26.123Z`: the second's text is made once a second, as every result
    stored is stamped (hundreds a second)."""
    now = time.time()
    second = int(now)
    if second != _SECOND[0]:
        _SECOND[:] = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_SECOND[1]}.{int((now - second) * 1000):03d}Z"


_SECOND: list[Any] = [None, ""]  # the last second utc_now stamped, and its text


def parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class NewJob:
    """What `process` knows before the first request."""

    id: str
    user_id: str
    shoot_id: str
    provider_id: str
    model: str
    mode: Mode
    prompt: str
    system_prompt: str | None
    source: str
    options: JobOptions


@dataclass(frozen=True, slots=True)
class ItemCounts:
    rated: int
    failed: int


@dataclass(frozen=True, slots=True)
class JobRow:
    """One row of batch_jobs, as read back."""

    id: str
    user_id: str
    shoot_id: str
    provider_id: str
    model: str
    mode: Mode
    status: JobState
    total_images: int
    processed_images: int
    failed_images: int
    error: str | None
    provider_job_id: str | None
    prompt: str
    system_prompt: str | None
    source: str
    options: JobOptions
    created_at: str
    started_at: str | None
    completed_at: str | None
    heartbeat_at: str | None
    owner_pid: int | None
    owner_host: str | None
    cancel_requested: bool
    budget_usd: float | None = None  # --budget: the job's spending ceiling; None: none

    def is_live(self, now: datetime | None = None) -> bool:
        """A processing (or polling) job whose owner still beats; a dead owner means it was
        interrupted."""
        if self.status not in ACTIVE_STATES:
            return False
        beat = parse_time(self.heartbeat_at)
        if beat is None or ((now or datetime.now(UTC)) - beat).total_seconds() > (
            HEARTBEAT_STALE_AFTER
        ):
            return False
        return not (self.owner_host == socket.gethostname() and not _pid_alive(self.owner_pid))


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def job_row(row: Any) -> JobRow:
    return JobRow(
        id=row["id"],
        user_id=row["user_id"],
        shoot_id=row["shoot_id"],
        provider_id=row["provider_id"],
        model=row["model"],
        mode=Mode(row["mode"]),
        status=JobState(row["status"]),
        total_images=row["total_images"],
        processed_images=row["processed_images"],
        failed_images=row["failed_images"],
        error=row["error"],
        provider_job_id=row["provider_job_id"],
        prompt=row["prompt"],
        system_prompt=row["system_prompt"],
        source=row["source"],
        options=JobOptions.model_validate_json(row["options"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        heartbeat_at=row["heartbeat_at"],
        owner_pid=row["owner_pid"],
        owner_host=row["owner_host"],
        cancel_requested=bool(row["cancel_requested"]),
        budget_usd=row["budget_usd"],
    )


def item_record(row: Any) -> ItemRecord:
    result = row["result"]
    return ItemRecord(
        position=row["position"],
        image=ImageInput.model_validate_json(row["image"]),
        state=ItemState(row["status"]),
        attempts=row["attempts"],
        error=row["last_error"],
        rating=None if result is None else Rating.model_validate_json(result),
        usage=Usage(row["input_tokens"], row["output_tokens"]),
        provider=row["provider"],
        model=row["model"],
        pricing=row["pricing"],
        group=row["burst_group"],
        best_in_group=bool(row["best_in_group"]),
        fingerprint=_fingerprint(row["phash"], row["captured"]),
        photographer_rating=row["photographer_rating"],
        cached=bool(row["cached"]),
        group_rank=row["group_rank"],
        group_reason=row["group_reason"],
    )


def _fingerprint(phash: str | None, captured: float | None) -> Fingerprint | None:
    return None if phash is None else Fingerprint(int(phash, 16), captured)
