"""The service layer the CLI (and later the server) call: create, run, resume, cancel, report.

It wires a manifest, a provider, the store and the engine together, and owns the one
`aiohttp.ClientSession` every provider request goes through.
"""

from __future__ import annotations

import contextlib
import gc
import getpass
import logging
import os
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import platformdirs

from kullbatch.engine import BatchProcessor, EngineOptions, JobOutcome, quiet_stamina
from kullbatch.errors import FatalJobError
from kullbatch.images import DEFAULT_MAX_EDGE
from kullbatch.models import ImageInput, JobState, JobStatus, ProgressEvent, Prompt
from kullbatch.providers import create_provider, resolve
from kullbatch.providers.base import DEFAULT_PROMPT
from kullbatch.retry import DEFAULT_MAX_RETRY_TIME
from kullbatch.store import JobRow, NewJob, Store, parse_time

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from kullbatch.manifest import Manifest

admin_log = logging.getLogger("kullbatch.admin")

MODES = ("fast", "economy")


class JobNotFoundError(LookupError):
    def __init__(self, job_id: str, db: Path) -> None:
        super().__init__(f"no job {job_id!r} in {db} (see `kullbatch jobs`)")


class UsageError(ValueError):
    """A request that cannot run as asked (exit 2), found before anything is written."""


def default_db_path(env: Mapping[str, str]) -> Path:
    if value := env.get("KULLBATCH_DB"):
        return Path(value).expanduser()
    return Path(platformdirs.user_data_dir("kullbatch", appauthor=False)) / "kullbatch.db"


def admin_log_path(db: Path) -> Path:
    return db.with_name(db.stem + "-admin.log")


def close_admin_log() -> None:
    for handler in list(admin_log.handlers):
        admin_log.removeHandler(handler)
        handler.close()


def configure_admin_log(db: Path, *, verbose: bool) -> None:
    """Every failed attempt goes to a file beside the database, and to stderr with -v."""
    admin_log.setLevel(logging.INFO)
    admin_log.propagate = False
    close_admin_log()
    db.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(admin_log_path(db), encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    admin_log.addHandler(to_file)
    if verbose:
        to_stderr = logging.StreamHandler()
        to_stderr.setFormatter(logging.Formatter("%(message)s"))
        admin_log.addHandler(to_stderr)


def new_job_id(now: float | None = None) -> str:
    """`batch_<unix ms>_<6 random [a-z0-9]>`, the spec's job id."""
    millis = int((time.time() if now is None else now) * 1000)
    alphabet = string.ascii_lowercase + string.digits
    return f"batch_{millis}_{''.join(secrets.choice(alphabet) for _ in range(6))}"


# What a job remembers of its ProcessSettings, so that `resume` runs it the same way.
_STORED_OPTIONS = ("concurrency", "max_retry_time", "max_edge", "rpm")


@dataclass(frozen=True, slots=True)
class ProcessSettings:
    """What the user asked for on the command line; None means "from the manifest or default"."""

    provider: str | None = None
    model: str | None = None
    prompt: str | None = None
    system_prompt: str | None = None
    mode: str | None = None
    shoot_id: str | None = None
    max_retry_time: float = DEFAULT_MAX_RETRY_TIME
    concurrency: int = 0
    rpm: float | None = None
    max_edge: int = DEFAULT_MAX_EDGE


def _choose_provider(
    settings: ProcessSettings, manifest: Manifest, env: Mapping[str, str]
) -> tuple[str, str]:
    wanted = settings.provider or manifest.provider_id or env.get("KULLBATCH_PROVIDER") or "local"
    try:
        spec, model = resolve(wanted, settings.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return spec.name, model


async def create_job(
    store: Store, manifest: Manifest, settings: ProcessSettings, env: Mapping[str, str]
) -> JobRow:
    """Record the job and every image before the first request, in one transaction."""
    provider, model = _choose_provider(settings, manifest, env)
    mode = settings.mode or manifest.mode or "fast"
    if mode not in MODES:
        raise UsageError(f"--mode must be fast or economy, not {mode!r}")
    if mode == "economy":
        raise UsageError("economy mode (provider batch APIs) is not available yet; use --mode fast")
    options = {key: getattr(settings, key) for key in _STORED_OPTIONS}
    job = NewJob(
        id=new_job_id(),
        user_id=_user_name(),
        shoot_id=settings.shoot_id or manifest.shoot_id,
        provider_id=provider,
        model=model,
        mode=mode,
        prompt=settings.prompt or manifest.prompt or DEFAULT_PROMPT,
        system_prompt=settings.system_prompt or manifest.system_prompt,
        source=str(manifest.source),
        options=options,
    )
    await store.create_job(job, manifest.images)
    row = await store.get_job(job.id)
    assert row is not None
    return row


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "local"


def raise_open_file_limit() -> None:
    """Each request in flight holds a socket: lift the soft limit (often 1024) to the hard one."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            admin_log.info("open-file limit raised from %d to %d", soft, wanted)
    except (ImportError, ValueError, OSError) as exc:  # pragma: no cover - platform dependent
        admin_log.info("open-file limit left as it is: %s", exc)


@contextlib.contextmanager
def batch_gc() -> Iterator[None]:
    """10,000 live requests make a big heap; full collections would cost a third of the CPU.

    Objects alive at the start are frozen out of collection and collections run less often,
    for the duration of the job only.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _connector() -> aiohttp.TCPConnector:
    """No silent cap at 100 connections: every in-flight request gets its own socket."""
    return aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)


async def run_job(
    store: Store,
    job: JobRow,
    env: Mapping[str, str],
    *,
    subscribers: Sequence[Callable[[ProgressEvent], None]] = (),
    on_processor: Callable[[BatchProcessor], None] | None = None,
) -> JobOutcome:
    """Send every image of the job without a stored result; record how the job ended."""
    quiet_stamina()
    raise_open_file_limit()
    if not await store.claim(job):
        raise UsageError(f"job {job.id} was just taken by another process; not running it twice")
    images = await store.unfinished(job.id)
    store.start_writer()
    try:
        with batch_gc():
            outcome = await _run(store, job, env, images, subscribers, on_processor)
    finally:
        await store.stop_writer()
    await store.finish_job(job.id, outcome.state, outcome.error)
    return outcome


async def _run(
    store: Store,
    job: JobRow,
    env: Mapping[str, str],
    images: list[ImageInput],
    subscribers: Sequence[Callable[[ProgressEvent], None]],
    on_processor: Callable[[BatchProcessor], None] | None,
) -> JobOutcome:
    spec, model = resolve(job.provider_id, job.model)
    async with aiohttp.ClientSession(connector=_connector()) as session:
        try:
            provider = create_provider(spec, model, session, env)
        except FatalJobError as exc:
            return JobOutcome(JobState.FAILED, job.processed_images, 0, exc.message)
        processor = BatchProcessor(
            job_id=job.id,
            provider=provider,
            prompt=Prompt(job.prompt, job.system_prompt),
            store=store,
            options=_engine_options(job.options),
            subscribers=[store.handle, *subscribers],
        )
        if on_processor is not None:
            on_processor(processor)
        already_rated = job.total_images - len(images)
        return await processor.run(images, total=job.total_images, already_rated=already_rated)


def _engine_options(options: Mapping[str, Any]) -> EngineOptions:
    """The options stored with the job; anything missing takes the engine's default."""
    chosen = {key: options[key] for key in _STORED_OPTIONS if options.get(key) is not None}
    return EngineOptions(**chosen)


async def get_job(store: Store, job_id: str) -> JobRow:
    job = await store.get_job(job_id)
    if job is None:
        raise JobNotFoundError(job_id, store.path)
    return job


async def prepare_resume(store: Store, job_id: str) -> JobRow:
    """A job that is not running again: its failed images get another chance."""
    job = await get_job(store, job_id)
    if job.is_live():
        raise UsageError(f"job {job_id} is still running (pid {job.owner_pid}); not resuming it")
    if job.status is JobState.COMPLETED and job.failed_images == 0:
        raise UsageError(f"job {job_id} is already completed; every image is rated")
    await store.reopen_failed(job_id)
    return job


async def cancel_job(store: Store, job_id: str) -> str:
    """Ask the owning process to stop; a job nobody runs is marked cancelled at once."""
    job = await get_job(store, job_id)
    if job.is_live():
        await store.request_cancel(job_id)
        return f"cancel requested: job {job_id} stops within 2 s"
    if job.status in {JobState.PROCESSING, JobState.INTERRUPTED, JobState.SUBMITTED}:
        await store.finish_job(job_id, JobState.CANCELLED, "cancelled by the user")
        return f"job {job_id} cancelled"
    return f"job {job_id} is already {job.status.value}; nothing to cancel"


def status_of(job: JobRow, now: datetime | None = None) -> JobStatus:
    """The status object; a processing job whose owner died reads as interrupted."""
    now = now or datetime.now(UTC)
    state = job.status
    if state is JobState.PROCESSING and not job.is_live(now):
        state = JobState.INTERRUPTED
    done = job.processed_images + job.failed_images
    total = job.total_images
    return JobStatus(
        jobId=job.id,
        shootId=job.shoot_id,
        providerId=job.provider_id,
        mode=job.mode,
        status=state,
        totalImages=total,
        processedImages=job.processed_images,
        failedImages=job.failed_images,
        progress=round(done / total, 4) if total else 1.0,
        eta=_eta(job, done, now) if state is JobState.PROCESSING else None,
        providerJobId=job.provider_job_id,
        error=job.error
        or (
            "the process running this job stopped; `kullbatch resume` finishes it"
            if state is JobState.INTERRUPTED and job.status is JobState.PROCESSING
            else None
        ),
        createdAt=job.created_at,
        startedAt=job.started_at,
        completedAt=job.completed_at,
    )


def _eta(job: JobRow, done: int, now: datetime) -> int | None:
    started = parse_time(job.started_at)
    if started is None or done == 0:
        return None
    elapsed = (now - started).total_seconds()
    return max(0, round(elapsed / done * (job.total_images - done)))


def environment() -> Mapping[str, str]:
    return os.environ
