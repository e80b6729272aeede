"""One runtime per process, many jobs inside it.

What is per process lives here once: the aiohttp session every provider request goes through,
the store's batched writer (started once, flushing for every job), the open-file limit, the
garbage-collector tuning (applied while any job runs, restored when the last one ends), and one
rate-limit gate per provider account (provider, base URL, key), shared by every job that talks
to it, so that two jobs on one key never send faster together than the key allows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aiohttp

from kullbatch.errors import ConflictError, FatalJobError
from kullbatch.models import JobState, Mode, Prompt
from kullbatch.providers import create_batch_client, create_provider, resolve
from kullbatch.run.cache import PhotoCache
from kullbatch.run.economy import EconomyOptions, EconomyRunner, Stoppable
from kullbatch.run.engine import BatchProcessor, EngineOptions, JobOutcome
from kullbatch.run.flex import flex_provider
from kullbatch.run.ratelimit import Gate
from kullbatch.run.retry import quiet_stamina

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping, Sequence
    from types import TracebackType

    from kullbatch.models import JobOptions, ProgressEvent
    from kullbatch.providers import Credentials, Provider, ProviderSpec
    from kullbatch.run.budget import Budget
    from kullbatch.store.database import Store
    from kullbatch.store.rows import JobRow

admin_log = logging.getLogger("kullbatch.admin")

T = TypeVar("T")

ECONOMY_POLL_VAR = "KULLBATCH_ECONOMY_POLL"  # seconds before the first poll (default 5)


@dataclass(frozen=True, slots=True)
class Account:
    """Who a request is charged to: one gate each. The key is kept only as a digest.

    Made from the very credentials the adapter and the batch client send with, so the gate
    paces the account the requests are charged to.
    """

    provider: str
    base_url: str
    key_digest: str

    @classmethod
    def of(cls, credentials: Credentials) -> Account:
        key = credentials.key or ""
        digest = hashlib.sha256(key.encode()).hexdigest()[:16] if key else ""
        return cls(credentials.provider, credentials.base_url.rstrip("/"), digest)


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


class BatchGC:
    """10,000 live requests make a big heap; full collections would cost a third of the CPU.

    While any job runs, objects alive at its start are frozen out of collection and collections
    run less often; when the last job ends, Python's settings come back.
    """

    THRESHOLDS = (50_000, 50, 100)

    def __init__(self) -> None:
        self._jobs = 0
        self._saved: tuple[int, int, int] | None = None

    def enter(self) -> None:
        if self._jobs == 0:
            self._saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(*self.THRESHOLDS)
        self._jobs += 1

    def exit(self) -> None:
        self._jobs -= 1
        if self._jobs == 0 and self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None


def _connector() -> aiohttp.TCPConnector:
    """No silent cap at 100 connections: every in-flight request gets its own socket."""
    return aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)


class Runtime:
    """The process's session, writer, gates and GC settings; `run_job` runs one job in it."""

    def __init__(self, store: Store, env: Mapping[str, str]) -> None:
        self.store = store
        self.env = env
        self._session: aiohttp.ClientSession | None = None
        self._gates: dict[Account, Gate] = {}
        self._gc = BatchGC()
        self.running: dict[str, Stoppable] = {}

    async def __aenter__(self) -> Self:
        quiet_stamina()
        raise_open_file_limit()
        self._session = aiohttp.ClientSession(connector=_connector())
        self.store.start_writer()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self.store.stop_writer()
        finally:
            for gate in self._gates.values():
                await gate.close()
            self._gates.clear()
            if self._session is not None:
                await self._session.close()
                self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the runtime is not started: use `async with Runtime(...)`")
        return self._session

    def gate_for(self, account: Account) -> Gate:
        """The one gate of this account, shared by every job that sends through it."""
        gate = self._gates.get(account)
        if gate is None:
            gate = self._gates[account] = Gate(asyncio.get_running_loop().time)
        return gate

    async def run_job(
        self,
        job: JobRow,
        *,
        env: Mapping[str, str] | None = None,
        subscribers: Sequence[Callable[[ProgressEvent], None]] = (),
        on_processor: Callable[[Stoppable], None] | None = None,
        cancel: bool = False,
        budget: Budget | None = None,
    ) -> JobOutcome:
        """Send every image of the job without a stored result; record how the job ended.

        With `cancel`, an economy job nobody polls has its provider batches cancelled and
        what they finished stored. With a `budget`, each photo is admitted by it.
        """
        env = self.env if env is None else env
        if not await self.store.claim(job):
            raise JobTakenError(job.id)
        spec, model = resolve(job.provider_id, job.model)
        self._gc.enter()
        try:
            outcome = await self._run(
                job, spec, model, env, subscribers, on_processor, cancel=cancel, budget=budget
            )
        finally:
            self._gc.exit()
        await self.store.finish_job(job.id, outcome.state, outcome.error)
        return outcome

    async def _run(
        self,
        job: JobRow,
        spec: ProviderSpec,
        model: str,
        env: Mapping[str, str],
        subscribers: Sequence[Callable[[ProgressEvent], None]],
        on_processor: Callable[[Stoppable], None] | None,
        *,
        cancel: bool = False,
        budget: Budget | None = None,
    ) -> JobOutcome:
        if job.mode is Mode.ECONOMY:
            return await self._economy(
                job, spec, model, env, subscribers, on_processor, cancel=cancel, budget=budget
            )
        try:
            provider, gate = self._build(spec, model, env)
        except FatalJobError as exc:
            if not job.options.fallbacks:
                return JobOutcome(
                    JobState.FAILED, job.processed_images, 0, exc.message, exc.env_vars
                )
            led = self._first_fallback(job, env, exc)
            if led is None:
                return JobOutcome(
                    JobState.FAILED, job.processed_images, 0, exc.message, exc.env_vars
                )
            job, provider, gate = led
        if job.mode is Mode.FLEX:  # the flex tier, each photo at standard once refused too long
            clock = asyncio.get_running_loop().time
            provider = flex_provider(provider, wait=job.options.flex_wait, clock=clock)
        counts = await self.store.item_counts(job.id)
        processor = self._processor(job, provider, gate, env, subscribers, budget)
        return await self._running(
            job.id,
            processor,
            on_processor,
            processor.run(
                self.store.iter_unfinished(job.id),
                total=job.total_images,
                already_rated=counts.rated,
                already_failed=counts.failed,
            ),
        )

    def _first_fallback(
        self, job: JobRow, env: Mapping[str, str], exc: FatalJobError
    ) -> tuple[JobRow, Provider, Gate] | None:
        """The job's own provider cannot even be built (no key): the first fallback that can
        be leads; None when none can."""
        fallbacks = list(job.options.fallbacks)
        while fallbacks:
            first, *fallbacks = fallbacks
            spec, chosen = resolve(first.provider, first.model)
            try:
                provider, gate = self._build(spec, chosen, env)
            except FatalJobError:
                continue
            admin_log.error(
                "[BatchProcessor] Job %s: %s; the job goes to %s", job.id, exc.message, spec.name
            )
            options = job.options.model_copy(update={"fallbacks": tuple(fallbacks)})
            return dataclasses.replace(job, options=options), provider, gate
        return None

    def _build(
        self, spec: ProviderSpec, model: str, env: Mapping[str, str]
    ) -> tuple[Provider, Gate]:
        """The provider's adapter and its account's gate, from one reading of its credentials."""
        credentials = spec.credentials(env)
        provider = create_provider(spec, model, self.session, credentials)
        return provider, self.gate_for(Account.of(credentials))

    def provider_for(self, job: JobRow) -> tuple[Provider, Gate]:
        """The job's own provider and its account's gate, for requests after its photos are
        rated (burst comparisons); FatalJobError when it cannot be built (no key)."""
        spec, model = resolve(job.provider_id, job.model)
        return self._build(spec, model, self.env)

    async def _running(
        self,
        job_id: str,
        stoppable: Stoppable,
        on_processor: Callable[[Stoppable], None] | None,
        work: Coroutine[Any, Any, T],
    ) -> T:
        """`work`, with `stoppable` as the job's: what Ctrl-C and a cancel reach meanwhile."""
        if on_processor is not None:
            on_processor(stoppable)
        self.running[job_id] = stoppable
        try:
            if await self.store.cancel_requested(job_id):  # asked before the claim: stop now
                stoppable.cancel()
            return await work
        finally:
            del self.running[job_id]

    def _processor(
        self,
        job: JobRow,
        provider: Provider,
        gate: Gate,
        env: Mapping[str, str],
        subscribers: Sequence[Callable[[ProgressEvent], None]],
        budget: Budget | None = None,
    ) -> BatchProcessor:
        return BatchProcessor(
            job_id=job.id,
            shoot_id=job.shoot_id,
            provider=provider,
            prompt=Prompt(job.prompt, job.system_prompt),
            store=self.store,
            sink=self.store,
            options=engine_options(job.options),
            subscribers=subscribers,
            gate=gate,
            fallbacks=self._fallbacks(job, env),
            cache=self.photo_cache(job, provider),
            budget=budget,
        )

    def photo_cache(self, job: JobRow, provider: Provider) -> PhotoCache | None:
        """The result cache for the job's photos, as `provider` rates them (None: --no-cache)."""
        if not job.options.cache:
            return None
        prompt = Prompt(job.prompt, job.system_prompt)
        return PhotoCache(
            self.store.cache,
            prompt=prompt,
            max_edge=job.options.max_edge,
            provider=provider.name,
            model=provider.model,
        )

    def _fallbacks(self, job: JobRow, env: Mapping[str, str]) -> list[tuple[Provider, Gate]]:
        """The job's `--fallback` providers, each with its own account's gate.

        One that cannot be built (its key is not set) is left out, and the admin log says so.
        """
        chain: list[tuple[Provider, Gate]] = []
        for fallback in job.options.fallbacks:
            spec, chosen = resolve(fallback.provider, fallback.model)
            try:
                built = self._build(spec, chosen, env)
            except FatalJobError as exc:
                admin_log.error(
                    "[BatchProcessor] Job %s: fallback %s left out: %s",
                    job.id,
                    fallback.provider,
                    exc.message,
                )
                continue
            chain.append(built)
        return chain

    async def _economy(
        self,
        job: JobRow,
        spec: ProviderSpec,
        model: str,
        env: Mapping[str, str],
        subscribers: Sequence[Callable[[ProgressEvent], None]],
        on_processor: Callable[[Stoppable], None] | None,
        *,
        cancel: bool,
        budget: Budget | None = None,
    ) -> JobOutcome:
        """The job's provider batches first; the photos they did not finish then go through
        the fast engine, with the batch client's adapter and the same account's gate."""
        try:
            credentials = spec.credentials(env)
            client = create_batch_client(spec, model, self.session, credentials)
        except FatalJobError as exc:
            return JobOutcome(JobState.FAILED, job.processed_images, 0, exc.message, exc.env_vars)
        counts = await self.store.item_counts(job.id)
        if client is None:
            error = f"{spec.name} has no batch API: economy mode is not possible"
            return JobOutcome(JobState.FAILED, counts.rated, counts.failed, error)
        gate = self.gate_for(Account.of(credentials))
        runner = EconomyRunner(
            job_id=job.id,
            shoot_id=job.shoot_id,
            total=job.total_images,
            client=client,
            gate=gate,
            prompt=Prompt(job.prompt, job.system_prompt),
            store=self.store,
            sink=self.store,
            options=economy_options(job.options, env),
            subscribers=subscribers,
            cache=self.photo_cache(job, client.adapter),
            budget=budget,
        )
        if cancel:
            runner.cancel()
        batches = runner.run(already_rated=counts.rated, already_failed=counts.failed)
        ended = await self._running(job.id, runner, on_processor, batches)
        if not ended.leftovers:
            return ended.outcome
        processor = self._processor(job, client.adapter, gate, env, subscribers, budget)
        leftovers = processor.run(
            ended.leftovers,
            total=job.total_images,
            already_rated=ended.outcome.rated,
            already_failed=ended.outcome.failed,
        )
        return await self._running(job.id, processor, on_processor, leftovers)


class JobTakenError(ConflictError):
    """Another process claimed the job first: it is not run twice (exit 2, HTTP 409)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was just taken by another process; not running it twice")


def engine_options(options: JobOptions) -> EngineOptions:
    """The fast engine's knobs, from the options stored with the job."""
    return EngineOptions(
        concurrency=options.concurrency,
        max_retry_time=options.max_retry_time,
        max_edge=options.max_edge,
        rpm=options.rpm,
        fallback_after=options.fallback_after,
        fingerprint=options.grouping.enabled,
    )


def economy_options(options: JobOptions, env: Mapping[str, str]) -> EconomyOptions:
    """The stored options that economy mode reads, and the poll interval's override."""
    economy = EconomyOptions(
        economy_only=options.economy_only,
        max_edge=options.max_edge,
        max_retry_time=options.max_retry_time,
        fingerprint=options.grouping.enabled,
    )
    if poll := env.get(ECONOMY_POLL_VAR):
        first = float(poll)
        return dataclasses.replace(
            economy, poll_first=first, poll_max=max(first, min(60.0, first * 12))
        )
    return economy
