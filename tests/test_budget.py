"""`--budget USD`: admission against a ceiling, learned estimates, paused jobs and resume.

The jobs run through the strict OpenAI fake in a virtual-time loop (tests/vtime.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fake_batch_openai import KEY as BATCH_KEY
from fake_batch_openai import FakeOpenAIBatches
from fake_openai_server import FakeChatServer
from PIL import Image
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.errors import UsageError
from kullbatch.manifest import manifest_from_document
from kullbatch.models import Answer, JobState, Rating, Usage
from kullbatch.pricing import prices as pricing
from kullbatch.run.budget import Budget, budget_message
from kullbatch.run.retry import quiet_stamina
from kullbatch.service import dryrun, jobs, spending
from tests.vtime import run_virtual

quiet_stamina()
KEY = "sk-test-key"
MODEL = "gpt-5.4-mini"
# A dear model, so that a photo costs cents and the ceiling reads in dollars.
PRICES = {"providers": {"openai": {"models": {MODEL: {"input": 100.0, "output": 400.0}}}}}
RATING = Rating(starRating=3, colorLabel="none", title="t", description="d", tags=[])


@pytest.fixture(autouse=True)
def dear_prices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    monkeypatch.setenv("KULLBATCH_PRICES", str(path))
    return {"KULLBATCH_PRICES": str(path)}


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def shoot(folder: Path, count: int) -> Any:
    entries = []
    for n in range(count):
        path = folder / f"IMG_{n:04d}.jpg"
        Image.new("RGB", (64, 48), (n * 7 % 255, 60, 200)).save(path)
        entries.append({"id": f"img{n}", "filename": path.name, "path": path.name})
    return manifest_from_document({"shootId": "budget", "images": entries}, base=folder)


def estimate_tokens(job: Any) -> tuple[int, int]:
    """The dry run's rule for one photo of the job: (input, output) tokens."""
    table = pricing.load_prices()
    rule = table.image_rule("openai", MODEL)
    assert rule is not None
    image = rule.tokens(*spending.photo_size(job.options.max_edge))
    return image + spending.prompt_tokens(job.prompt, job.system_prompt), pricing.ANSWER_TOKENS


def test_a_budget_binding_at_a_third_stops_close_to_it_though_the_estimate_was_half(
    tmp_path, dear_prices
):
    """Answers cost twice the dry run's rule: the job learns it from the first answer, stops
    within a photo of the ceiling without passing it, pauses, and `resume --budget` finishes
    the shoot without sending any photo twice."""

    async def main() -> tuple[Any, ...]:
        fake = FakeChatServer(api_key=KEY)
        async with serving(fake.app()) as url:
            env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": f"{url}/v1", **dear_prices}
            async with jobs.Service.open(tmp_path / "k.db", env) as service:
                settings = jobs.ProcessSettings(provider="openai", model=MODEL, budget=1.0)
                job = await service.create(shoot(tmp_path, 30), settings)
                tokens_in, tokens_out = estimate_tokens(job)
                fake.usage = (2 * tokens_in, 2 * tokens_out)  # twice the estimate
                price = service.prices().price("openai", MODEL)
                assert price is not None
                each = price.cost(Usage(*fake.usage))
                ceiling = round(10.5 * each, 4)  # room for ten and a half photos of 30
                await service.store.set_budget(job.id, ceiling)
                first_estimate = await spending.budget_for(service.store, job, service.prices())
                assert first_estimate is not None
                assert first_estimate.estimate == pytest.approx(each / 2)
                job = await service.store.get_job(job.id)
                assert job is not None
                paused = await service.run(job)
                paused_status = await service.status(job.id)
                sent_before = len(fake.tiers)
                resumed_job = await service.prepare_resume(job.id, budget=100.0)
                resumed = await service.run(resumed_job)
                status = await service.status(job.id)
        return paused, paused_status, sent_before, resumed, status, fake, ceiling, each

    paused, paused_status, sent_before, resumed, status, fake, ceiling, each = run_virtual(main())

    assert paused.state is JobState.PAUSED and paused_status.status is JobState.PAUSED
    assert paused.rated == sent_before == 10  # within a photo of 10.5: no estimate learned, 20
    assert paused_status.costUsd is not None and paused_status.costUsd <= ceiling
    assert paused_status.costUsd == pytest.approx(10 * each)
    assert paused.error == budget_message(10 * each, ceiling, 20)
    assert re.fullmatch(
        r"budget reached: \$\d+\.\d\d of \$\d+\.\d\d spent; 20 photos not sent", paused.error or ""
    )
    assert paused_status.budgetUsd == pytest.approx(ceiling)
    assert resumed.state is JobState.COMPLETED and resumed.rated == 30
    assert len(fake.tiers) == 30 and fake.problems == []  # each photo sent once, in all
    assert status.budgetUsd == 100.0 and status.costUsd == pytest.approx(30 * each)


def test_a_budget_that_does_not_bind_sends_everything_and_completes(tmp_path, dear_prices):
    """With room for every photo, the job runs as without a budget: all rated, no pause."""

    async def main() -> tuple[Any, Any]:
        fake = FakeChatServer(api_key=KEY)
        async with serving(fake.app()) as url:
            env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": f"{url}/v1", **dear_prices}
            async with jobs.Service.open(tmp_path / "k.db", env) as service:
                settings = jobs.ProcessSettings(provider="openai", model=MODEL, budget=500.0)
                job = await service.create(shoot(tmp_path, 12), settings)
                return await service.run(job), await service.status(job.id)

    outcome, status = run_virtual(main())
    assert outcome.state is JobState.COMPLETED and outcome.rated == 12 and outcome.error is None
    assert status.budgetUsd == 500.0


def test_admission_waits_for_requests_in_flight_and_learns_from_their_answers():
    """The fourth photo does not fit beside three estimated ones; an answer cheaper than the
    estimate makes room, and the estimate becomes what answers cost (plus a margin)."""

    async def main() -> list[bool]:
        costs = iter([0.5, 0.5, 0.5])
        budget = Budget(3.0, spent=0.0, estimate=1.0, cost=lambda *_: next(costs))
        admitted = [await budget.admit() for _ in range(3)]
        fourth = asyncio.create_task(budget.admit())
        await asyncio.sleep(0)
        admitted.append(fourth.done())
        budget.ended(Answer(RATING, Usage(1, 1)), "openai", MODEL)
        admitted.append(await fourth)
        assert budget.estimate == pytest.approx(0.55)
        return admitted

    assert run_virtual(main()) == [True, True, True, False, True]


def test_admission_refuses_when_nothing_is_in_flight_and_the_next_photo_does_not_fit():
    """The job stops: nothing to wait for, the verdict names what was spent and not sent."""

    async def main() -> tuple[bool, str | None]:
        budget = Budget(1.0, spent=0.95, estimate=0.1, cost=lambda *_: 0.0)
        return await budget.admit(), budget.verdict(7)

    assert run_virtual(main()) == (False, "budget reached: $0.95 of $1.00 spent; 7 photos not sent")


@pytest.mark.parametrize(("budget", "fits", "photos"), [(1000.0, True, 6), (None, None, None)])
def test_the_dry_run_says_whether_the_shoot_fits_the_budget(
    tmp_path, dear_prices, budget, fits, photos
):
    """`--dry-run --budget`: fits, and how many photos the budget would rate."""
    settings = jobs.ProcessSettings(provider="openai", model=MODEL, budget=budget)
    found = run_virtual(dryrun.estimate(shoot(tmp_path, 6), settings, dear_prices))
    document = found.document()
    if budget is None:
        assert "budget" not in document
        return
    assert document["budget"] == {"budgetUsd": budget, "fits": fits, "photos": photos}
    assert found.fast_usd is not None
    small = dryrun.with_budget(found, found.fast_usd / 3, "fast")
    assert small.budget == {"budgetUsd": found.fast_usd / 3, "fits": False, "photos": 2}
    assert any("does not fit: 2 photos" in line for line in small.lines())


def test_a_budget_that_is_not_positive_is_refused(tmp_path, dear_prices):
    """Exit 2 before anything is stored."""

    async def main() -> None:
        async with jobs.Service.open(tmp_path / "k.db", {"OPENAI_API_KEY": KEY}) as service:
            settings = jobs.ProcessSettings(provider="openai", budget=0.0)
            with pytest.raises(UsageError, match="positive"):
                await service.create(shoot(tmp_path, 1), settings)
            assert await service.store.list_jobs() == []

    run_virtual(main())


def test_economy_submits_only_the_photos_whose_estimate_fits_then_resume_batches_the_rest(
    tmp_path, dear_prices
):
    """A budget with room for four photos at the batch price (by the dry run's rule): the
    provider batch takes four, the job pauses once they are answered; `resume --budget` puts
    the other six in a new batch. Ten requests in all: no photo twice."""

    async def main() -> tuple[Any, ...]:
        fake = FakeOpenAIBatches()
        async with serving(fake.app()) as url:
            env = {"OPENAI_API_KEY": BATCH_KEY, "OPENAI_BASE_URL": f"{url}/v1", **dear_prices}
            async with jobs.Service.open(tmp_path / "k.db", env) as service:
                settings = jobs.ProcessSettings(provider="openai", model=MODEL, mode="economy")
                job = await service.create(shoot(tmp_path, 10), settings)
                budget = await spending.budget_for(
                    service.store, replace(job, budget_usd=1.0), service.prices()
                )
                assert budget is not None
                ceiling = round(4.5 * budget.estimate, 6)
                await service.store.set_budget(job.id, ceiling)
                job = await service.store.get_job(job.id)
                assert job is not None
                paused = await service.run(job)
                first = [len(batch.requests) for batch in fake.batches.values()]
                status = await service.status(job.id)
                job = await service.prepare_resume(job.id, budget=100.0)
                resumed = await service.run(job)
                every = [len(batch.requests) for batch in fake.batches.values()]
        return paused, first, status, ceiling, resumed, every

    paused, first, status, ceiling, resumed, every = run_virtual(main())
    assert first == [4] and paused.state is JobState.PAUSED and paused.rated == 4
    assert paused.error is not None and paused.error.endswith("; 6 photos not sent")
    assert status.costUsd is not None and status.costUsd <= ceiling
    assert status.tiers == {"batch": 4}
    assert resumed.state is JobState.COMPLETED and resumed.rated == 10
    assert every == [4, 6]


def test_the_cli_dry_run_with_a_budget_prints_whether_the_shoot_fits(tmp_path, dear_prices):
    """`process --dry-run --budget USD --json` carries the budget's verdict; nothing is sent."""
    shoot(tmp_path, 4)
    runner = CliRunner()
    args = ["process", str(tmp_path), "--provider", "openai", "--model", MODEL, "--dry-run"]
    result = runner.invoke(app, [*args, "--budget", "0.0001", "--json"], env=dear_prices)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["budget"] == {"budgetUsd": 0.0001, "fits": False, "photos": 0}
    words = runner.invoke(app, [*args, "--budget", "1000"], env=dear_prices)
    assert "budget $1,000.0000: the shoot fits" in words.stdout


def test_the_cli_refuses_flex_mode_for_a_provider_without_it(tmp_path):
    """Exit 2 and a message naming the providers that have a flex tier; no job is made."""
    shoot(tmp_path, 1)
    db = tmp_path / "k.db"
    result = CliRunner().invoke(
        app,
        ["process", str(tmp_path), "--provider", "local", "--mode", "flex", "--db", str(db)],
    )
    assert result.exit_code == 2
    assert "flex mode works with: gemini, groq, openai" in result.output
