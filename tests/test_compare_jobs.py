"""`process --compare-bursts` end to end: a shoot with a burst rated on a fake, the burst judged
side by side, the verdict stored and exported, its cost counted, never asked twice, economy
jobs comparing in fast mode after their batch, failures keeping the pick, and the dry run."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fake_batch_openai import KEY as BATCH_KEY
from fake_batch_openai import FakeOpenAIBatches
from fake_openai_server import FakeChatServer, openai_error
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.errors import ConflictError, PermanentImageError, UsageError
from kullbatch.manifest import load_manifest
from kullbatch.models import (
    EventKind,
    ImageInput,
    ItemRecord,
    ItemState,
    JobState,
    ProgressEvent,
    Rating,
    Usage,
)
from kullbatch.pricing import prices as pricing
from kullbatch.providers.compare import Comparison, Verdict
from kullbatch.run.compare import CompareSender
from kullbatch.run.ratelimit import Gate
from kullbatch.run.retry import RetryPolicy
from kullbatch.run.runtime import Runtime
from kullbatch.service import dryrun, jobs
from kullbatch.service.compare import BurstComparisons, compare_job, selection
from kullbatch.service.culling import group_job
from tests.burst_shoot import Shot, make_shoot

KEY = "sk-test-key"
# The harbour burst with its sharp frame in the middle, a city frame in the same second and a
# market street alone: one burst of three.
SHOTS = [
    Shot("h1", "01_harbour_sharp", shift=6, blur=2.5, time="14:03:07.10"),
    Shot("h2", "01_harbour_sharp", time="14:03:07.40"),
    Shot("c1", "02_city_skyline_sharp", time="14:03:07.55"),
    Shot("h3", "01_harbour_sharp", shift=12, blur=4.0, time="14:03:07.70"),
    Shot("m1", "05_market_street_sharp"),
]
BURST = ["h1", "h2", "h3"]


def settings(**extra: Any) -> jobs.ProcessSettings:
    return jobs.ProcessSettings(**{"provider": "openai", "compare_bursts": True} | extra)


async def chat_fake(aiohttp_server: Any) -> tuple[FakeChatServer, dict[str, str]]:
    fake = await FakeChatServer(api_key=KEY).start(aiohttp_server)
    return fake, {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": f"{fake.base_url}/v1"}


def by_id(items: list[Any]) -> dict[str, Any]:
    return {item.image.id: item for item in items}


class Events:
    """A subscriber keeping the notes, which queues `on_end` answers once the photos are rated
    (so a scripted answer reaches the comparison, not a photo)."""

    def __init__(self, fake: FakeChatServer | None = None, *on_end: tuple[int, Any]) -> None:
        self.notes: list[str] = []
        self._fake = fake
        self._on_end = list(on_end)

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind is EventKind.NOTE and event.note:
            self.notes.append(event.note)
        if event.kind is EventKind.ENDED and self._fake is not None:
            for status, body in self._on_end:
                self._fake.queue(status, body)


async def test_a_burst_is_compared_once_and_its_verdict_stored_exported_and_paid(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """One request with the burst's three frames in capture order; the fake picks the sharp
    middle frame from the pixels; ranks, reason and the request's tokens are kept."""
    fake, env = await chat_fake(aiohttp_server)
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    events = Events()
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings())
        outcome = await service.run(job, subscribers=[events])
        status, items = await service.results(job.id)
        await service.export(job.id, "csv", tmp_path / "r.csv")
    assert outcome.state is JobState.COMPLETED
    assert fake.problems == []
    assert [len(frames) for frames in fake.comparisons] == [3]
    found = by_id(items)
    assert {k: found[k].group_rank for k in BURST} == {"h2": 1, "h1": 2, "h3": 3}
    assert {k: found[k].best_in_group for k in BURST} == {"h1": False, "h2": True, "h3": False}
    assert {found[k].group_reason for k in BURST} == {
        "Frame 2 is the sharpest: the eyes are in focus, no motion blur."
    }
    assert (found["c1"].group_rank, found["c1"].group_reason) == (None, None)
    # five photos and one comparison, each 812 in and 64 out on the fake
    assert (status.usage.inputTokens, status.usage.outputTokens) == (6 * 812, 6 * 64)
    table = pricing.load_prices(env)
    price = table.price("openai", job.model)
    assert price is not None and status.costUsd is not None
    photos = sum(item.cost_usd for item in items)
    assert status.costUsd == pytest.approx(photos + price.cost(Usage(812, 64)))
    rows = {r["imageId"]: r for r in csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text()))}
    assert [rows[k]["groupRank"] for k in BURST] == ["2", "1", "3"]
    assert rows["m1"]["groupRank"] == rows["m1"]["groupReason"] == ""
    assert any("compared side by side: 1 of 1" in note for note in events.notes)


async def test_the_models_pick_replaces_the_sharpness_pick_and_a_resume_asks_nothing_again(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The model prefers the third frame: it becomes the best. Running the job again (as a
    resume does) regroups the shoot, sends no comparison, and keeps the model's pick."""
    fake, env = await chat_fake(aiohttp_server)
    verdict = {"best": 3, "ranking": [3, 1, 2], "reason": "Her eyes are open only in frame 3."}
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    events = Events(fake, (200, fake.completion(json.dumps(verdict))))
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings())
        await service.run(job, subscribers=[events])
        first = by_id(await service.store.items(job.id))
        requests = len(fake.requests)
        again = Events()
        await service.run(await jobs.get_job(service.store, job.id), subscribers=[again])
        second = by_id(await service.store.items(job.id))
        cost = (await service.status(job.id)).usage
    for items in (first, second):
        assert {k: items[k].best_in_group for k in BURST} == {"h1": False, "h2": False, "h3": True}
        assert {k: items[k].group_rank for k in BURST} == {"h3": 1, "h1": 2, "h2": 3}
        assert items["h1"].group_reason == "Her eyes are open only in frame 3."
    assert len(fake.requests) == requests  # nothing sent the second time
    assert any("(1 already compared)" in note for note in again.notes)
    assert cost.inputTokens == 6 * 812  # the comparison counted once


async def test_a_failed_comparison_keeps_the_pick_by_stars_and_sharpness_and_is_reported(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """A comparison the provider refuses leaves the burst's pick, no rank, every photo rated."""
    fake, env = await chat_fake(aiohttp_server)
    refusal = openai_error("Could not process image", code="invalid_image")
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    events = Events(fake, (400, refusal))
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings())
        outcome = await service.run(job, subscribers=[events])
        items = by_id(await service.store.items(job.id))
        status = await service.status(job.id)
    assert outcome.state is JobState.COMPLETED and outcome.failed == 0
    assert {k: items[k].best_in_group for k in BURST} == {"h1": False, "h2": True, "h3": False}
    assert {items[k].group_rank for k in BURST} == {None}
    assert status.failedImages == 0
    note = events.notes[-1]
    assert "compared side by side: 0 of 1" in note
    assert "1 kept their pick by stars and sharpness: burst h1: openai HTTP 400" in note


async def test_a_bad_key_at_comparison_time_stops_the_comparisons_at_once(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """A fatal answer is not retried and ends the comparisons; the photos stay rated."""
    fake, env = await chat_fake(aiohttp_server)
    bad_key = openai_error("Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    events = Events(fake, (401, bad_key))
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings())
        outcome = await service.run(job, subscribers=[events])
    assert outcome.state is JobState.COMPLETED
    assert "[check OPENAI_API_KEY]" in events.notes[-1]


async def test_an_economy_job_compares_in_fast_mode_after_its_batch(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The photos go in a batch at half price; the comparison goes to chat completions after
    it, at the list price, and both count in the job's cost."""
    fake = await FakeOpenAIBatches().start(aiohttp_server)
    env = {
        "OPENAI_API_KEY": BATCH_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "KULLBATCH_ECONOMY_POLL": "0.01",
    }
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings(mode="economy"))
        outcome = await service.run(job)
        status, items = await service.results(job.id)
        spent = await service.store.comparisons.usage(job.id)
    assert outcome.state is JobState.COMPLETED
    assert {item.pricing for item in items} == {"batch"}
    assert [len(frames) for frames in fake.comparisons] == [3]
    paths = [seen.path for seen in fake.seen]
    assert paths.index("/v1/chat/completions") > paths.index("/v1/batches")
    assert by_id(items)["h2"].group_rank == 1
    assert [(s.pricing, s.input_tokens, s.output_tokens) for s in spent] == [("standard", 812, 64)]
    price = pricing.load_prices(env).price("openai", job.model)
    assert price is not None and status.costUsd is not None
    photos = sum(item.cost_usd for item in items)
    assert status.costUsd == pytest.approx(photos + price.cost(Usage(812, 64)))


# --- the dry run ------------------------------------------------------------------------------

LONG_BURST = [
    Shot(f"b{n}", "01_harbour_sharp", shift=n, blur=0.5 * n, time=f"14:03:07.{10 + 10 * n}")
    for n in range(8)
] + [Shot("x1", "05_market_street_sharp")]


@pytest.mark.parametrize(
    ("provider", "requests", "images"), [("openai", 1, 8), ("groq", 3, 10), ("local", 0, 0)]
)
async def test_the_dry_run_counts_the_comparisons_and_their_cost(
    tmp_path: Path, provider: str, requests: int, images: int
) -> None:
    """A burst of eight: one request on OpenAI, three on Groq (two chunks and a final), none
    on local; the comparisons' tokens and price are in the totals."""
    manifest = load_manifest(make_shoot(tmp_path / "shoot", LONG_BURST))
    plain = await dryrun.estimate(manifest, jobs.ProcessSettings(provider=provider), {})
    wanted = jobs.ProcessSettings(provider=provider, compare_bursts=True)
    estimate = await dryrun.estimate(manifest, wanted, {})
    document = estimate.document()
    compared = document["comparisons"]
    assert (compared["bursts"], compared["requests"], compared["images"]) == (1, requests, images)
    assert estimate.input_tokens == plain.input_tokens + compared["inputTokens"]
    if provider == "local":
        assert compared["inputTokens"] == 0
        return
    assert compared["inputTokens"] > 0 and compared["fastUsd"] > 0
    assert plain.fast_usd is not None and estimate.fast_usd is not None
    assert estimate.fast_usd == pytest.approx(plain.fast_usd + compared["fastUsd"])
    assert any("--compare-bursts: 1 burst, " in line for line in estimate.lines())


# --- the command line -------------------------------------------------------------------------

runner = CliRunner()


def test_compare_bursts_needs_grouping(tmp_path: Path) -> None:
    """--compare-bursts with --no-groups is a usage error (exit 2), nothing created."""
    manifest = make_shoot(tmp_path / "shoot", SHOTS)
    db = tmp_path / "k.db"
    result = runner.invoke(
        app, ["process", str(manifest), "--db", str(db), "--compare-bursts", "--no-groups"]
    )
    assert result.exit_code == 2
    assert "--compare-bursts compares the bursts grouping finds" in result.stderr


def test_compare_bursts_is_explained_in_process_help() -> None:
    """`process --help` names the option and what it sets."""
    result = runner.invoke(app, ["process", "--help"], env={"COLUMNS": "200"})
    assert "--compare-bursts" in result.stdout
    assert "groupRank" in result.stdout


def test_local_keeps_its_sharpness_pick_under_compare_bursts(tmp_path: Path) -> None:
    """The offline rater sends nothing: the sharp frame is picked, no rank is stored."""
    manifest = make_shoot(tmp_path / "shoot", SHOTS)
    db = str(tmp_path / "k.db")
    result = runner.invoke(app, ["process", str(manifest), "--db", db, "-q", "--compare-bursts"])
    assert result.exit_code == 0, result.stderr
    out = runner.invoke(app, ["results", result.stdout.strip(), "--db", db]).stdout
    results = {r["imageId"]: r for r in json.loads(out)["results"]}
    assert results["h2"]["bestInGroup"] is True
    assert {results[k]["groupRank"] for k in BURST} == {None}


async def test_the_service_refuses_compare_bursts_without_groups(tmp_path: Path) -> None:
    """The same rule holds for the API's callers: no job is stored."""
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        with pytest.raises(UsageError, match="drop --no-groups"):
            await service.create(manifest, jobs.ProcessSettings(compare_bursts=True, groups=False))
        assert await service.store.list_jobs() == []


FOUR_BURSTS = [
    Shot(f"{name[:2]}{frame}", name, shift=3 * frame, blur=2.0 * frame, time=f"1{n}:00:0{frame}")
    for n, name in enumerate(
        ["01_harbour_sharp", "02_city_skyline_sharp", "03_portrait_sharp", "05_market_street_sharp"]
    )
    for frame in range(2)
]


async def test_bursts_compared_at_once_all_count_in_the_jobs_usage(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """Four bursts compared concurrently: four requests and all their tokens are recorded
    (none lost to another burst's write)."""
    fake, env = await chat_fake(aiohttp_server)
    manifest = load_manifest(make_shoot(tmp_path / "shoot", FOUR_BURSTS))
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings())
        await service.run(job)
        requests = await service.store.comparisons.requests(job.id)
        spent = await service.store.comparisons.usage(job.id)
        items = await service.store.items(job.id)
    assert len(fake.comparisons) == requests == 4
    assert [(s.input_tokens, s.output_tokens) for s in spent] == [(4 * 812, 4 * 64)]
    assert sorted(i.image.id for i in items if i.group_rank == 1) == ["010", "020", "030", "050"]


async def test_a_burst_of_eight_on_groq_is_compared_in_rounds_and_every_request_counted(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """Groq takes five images a request: eight frames go as four and four, then the two
    winners; the sharpest frame (the last) wins, every frame gets a rank, three requests are
    paid for."""
    key = "gsk_TESTKEYaBcDeFgHiJkLmNoPqRsTuV"
    fake = await FakeChatServer(prefix="/openai/v1", api_key=key, flavour="groq").start(
        aiohttp_server
    )
    env = {"GROQ_API_KEY": key, "GROQ_BASE_URL": fake.base_url}
    shots = [
        Shot(f"b{n}", "01_harbour_sharp", shift=n, blur=0.6 * (7 - n), time=f"14:03:07.{10 + n}0")
        for n in range(8)
    ]
    manifest = load_manifest(make_shoot(tmp_path / "shoot", shots))
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings(provider="groq"))
        await service.run(job)
        items = by_id(await service.store.items(job.id))
        requests = await service.store.comparisons.requests(job.id)
    assert fake.problems == []
    assert [len(frames) for frames in fake.comparisons] == [4, 4, 2]
    assert requests == 3
    assert items["b7"].best_in_group and items["b7"].group_rank == 1
    assert sorted(items[f"b{n}"].group_rank for n in range(8)) == list(range(1, 9))


def test_a_burst_offers_its_eight_frames_with_the_most_stars_in_capture_order() -> None:
    """Ten frames: the two with the fewest stars stay out; a tie keeps the earlier frame."""
    stars = [3, 5, 2, 4, 4, 1, 5, 3, 2, 4]
    frames = [
        ItemRecord(
            position=n,
            image=ImageInput(id=f"f{n}", filename=f"f{n}.jpg", path=Path(f"f{n}.jpg")),
            state=ItemState.RATED,
            attempts=1,
            error=None,
            rating=Rating(
                starRating=s, colorLabel="none", title="", description="", tags=[], issues=[]
            ),
            usage=Usage(),
        )
        for n, s in enumerate(stars)
    ]
    chosen = [item.image.id for item in selection(frames)]
    assert chosen == ["f0", "f1", "f2", "f3", "f4", "f6", "f7", "f9"]  # f5 (1), f8 (2, later)


async def test_the_dry_runs_comparison_tokens_are_within_a_quarter_of_what_a_run_records(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The fake counts a comparison's tokens from its images as OpenAI does; the dry run's
    estimate of the comparisons is within 25 % of them."""
    fake, env = await chat_fake(aiohttp_server)
    fake.count_usage = True
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    estimate = await dryrun.estimate(manifest, settings(), env)
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings())
        await service.run(job)
        (spent,) = await service.store.comparisons.usage(job.id)
    compared = estimate.document()["comparisons"]
    assert compared["requests"] == 1
    assert abs(compared["inputTokens"] - spent.input_tokens) <= 0.25 * spent.input_tokens


async def test_resume_compares_the_bursts_a_failed_comparison_left_and_only_those(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """A completed job whose comparison failed can be resumed: nothing is rated again, the
    burst is compared; once every burst is, resume refuses as for any completed job."""
    fake, env = await chat_fake(aiohttp_server)
    refusal = openai_error("Could not process image", code="invalid_image")
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings())
        await service.run(job, subscribers=[Events(fake, (400, refusal))])
        sent = len(fake.requests)
        resumed = await service.prepare_resume(job.id)
        await service.run(resumed)
        items = by_id(await service.store.items(job.id))
        with pytest.raises(ConflictError, match="already completed"):
            await service.prepare_resume(job.id)
    assert len(fake.requests) == sent + 1  # the comparison only
    assert items["h2"].group_rank == 1


class Stuck:
    """A comparer whose requests never end (a provider that hangs)."""

    name = "stuck"
    model = "stuck-1"
    max_images = 8

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def compare(self, frames: Any) -> Any:
        self.asked.set()
        await asyncio.Event().wait()


async def test_an_interrupt_stops_the_comparisons_and_keeps_the_picks(tmp_path: Path) -> None:
    """Ctrl-C while a comparison waits: it stops at once, the burst keeps its pick, the
    report says so."""
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        job = await service.create(manifest, jobs.ProcessSettings(provider="local"))
        await service.run(job)
        found = await group_job(service.store, job.id, job.options.grouping)
        stuck = Stuck()
        loop = asyncio.get_running_loop()
        sender = CompareSender(stuck, Gate(loop.time), RetryPolicy(), loop.time)
        comparisons = BurstComparisons(service.store, job, sender)
        running = asyncio.create_task(comparisons.run(found))
        await stuck.asked.wait()
        comparisons.interrupt()
        report = await asyncio.wait_for(running, 5)
        items = by_id(await service.store.items(job.id))
    assert report.compared == 0
    assert report.failed == ["stopped before every burst was compared"]
    assert items["h2"].best_in_group and items["h2"].group_rank is None


async def test_a_provider_that_cannot_be_built_at_comparison_time_is_reported(
    tmp_path: Path,
) -> None:
    """The key gone by the time the bursts are compared: reported, nothing else happens."""
    manifest = load_manifest(make_shoot(tmp_path / "shoot", SHOTS))
    events = Events()
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        job = await service.create(manifest, settings())
        async with Runtime(service.store, {}) as runtime:
            report = await compare_job(service.store, runtime, job, [], subscribers=[events])
    assert report is not None and report.compared == 0
    assert "OPENAI_API_KEY" in report.failed[0]
    assert events.notes[0].startswith("bursts not compared: ")


class TwoThenFails:
    """Two images a request; answers the first two requests (preferring the later frame), then
    raises `error` (a refusal of the final, or a bug)."""

    name = "scripted"
    model = "scripted-1"
    max_images = 2

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def compare(self, frames: Any) -> Verdict:
        self.calls += 1
        if self.calls > 2:
            raise self.error
        return Verdict(Comparison(best=2, ranking=[2, 1], reason="later"), Usage(100, 10))


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (PermanentImageError("scripted HTTP 400: could not process image"), "could not process"),
        (RuntimeError("adapter bug"), "internal error: RuntimeError: adapter bug"),
    ],
)
async def test_a_final_that_fails_keeps_the_pick_and_still_counts_the_rounds_paid_for(
    tmp_path: Path, error: Exception, said: str
) -> None:
    """Four frames at two a request: the two chunks are answered, the final fails. No rank is
    stored, the pick stays, and the two answered requests' tokens count in the job."""
    shots = [
        Shot(f"q{n}", "01_harbour_sharp", shift=n, blur=float(n), time=f"14:03:07.{n}0")
        for n in range(4)
    ]
    manifest = load_manifest(make_shoot(tmp_path / "shoot", shots))
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        job = await service.create(manifest, jobs.ProcessSettings(provider="local"))
        await service.run(job)
        found = await group_job(service.store, job.id, job.options.grouping)
        comparer = TwoThenFails(error)
        loop = asyncio.get_running_loop()
        sender = CompareSender(comparer, Gate(loop.time), RetryPolicy(), loop.time)
        report = await BurstComparisons(service.store, job, sender).run(found)
        items = by_id(await service.store.items(job.id))
        status = await service.status(job.id)
    assert comparer.calls == 3
    assert report.compared == 0 and report.requests == 2
    assert said in report.failed[0]
    assert {items[f"q{n}"].group_rank for n in range(4)} == {None}
    assert items["q0"].best_in_group
    assert (status.usage.inputTokens, status.usage.outputTokens) == (200, 20)
