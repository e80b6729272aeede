"""Cost end to end: the dry run's estimate, then a real run on the local fakes, then its bill.

The fakes count usage from the photo they receive, the way the real API does
(tests/fake_usage.py), so the dry run's estimate is compared with honest figures.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic_server import KEY as ANTHROPIC_KEY
from fake_anthropic_server import FakeAnthropic
from fake_batch_openai import KEY as BATCH_KEY
from fake_batch_openai import FakeOpenAIBatches
from fake_openai_server import FakeChatServer
from PIL import Image
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.errors import UsageError
from kullbatch.manifest import manifest_from_document
from kullbatch.models import JobState
from kullbatch.service import dryrun, export, jobs, prompt
from tests.app_thread import AppThread

OPENAI_KEY = "sk-test-key"
SIZES = [(3000, 2000), (2000, 3000), (800, 600)]  # landscape, portrait, a small one


def shoot(folder: Path, sizes: list[tuple[int, int]] = SIZES) -> Any:
    """Photos of these sizes with some detail in them, each its own (the cache would copy a
    photo whose bytes another has), as a manifest."""
    entries = []
    for n, (width, height) in enumerate(sizes):
        path = folder / f"IMG_{n:04d}.jpg"
        picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        picture.paste((n * 60 % 256, 0, 255), (0, 0, 8, 8))
        picture.save(path, quality=80)
        entries.append({"id": f"img{n}", "filename": path.name, "path": path.name})
    return manifest_from_document({"shootId": "cost", "images": entries}, base=folder)


def within(estimated: float, recorded: float, share: float = 0.25) -> bool:
    return abs(estimated - recorded) <= share * recorded


async def estimate_then_run(tmp_path: Path, env: dict[str, str], provider: str) -> Any:
    """The dry run, then the same job for real; the estimate, the status and the items."""
    manifest = shoot(tmp_path)
    settings = jobs.ProcessSettings(provider=provider)
    estimate = await dryrun.estimate(manifest, settings, env)
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, settings)
        outcome = await service.run(job)
        status, items = await service.results(job.id)
    assert outcome.state is JobState.COMPLETED and outcome.rated == len(SIZES)
    return estimate, status, items


async def test_the_anthropic_estimate_is_within_a_quarter_of_what_the_run_records(
    aiohttp_server, tmp_path
):
    """Claude counts w*h/750 per photo plus the prompt: estimate and bill agree within 25 %."""
    fake = FakeAnthropic()
    fake.count_usage = True
    server = await aiohttp_server(fake.app())
    env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": str(server.make_url(""))}

    estimate, status, items = await estimate_then_run(tmp_path, env, "anthropic")

    assert len(fake.requests) == len(SIZES)  # the three of the run; the dry run sent none
    assert fake.rejections == []
    recorded = status.usage.inputTokens + status.usage.outputTokens
    assert within(estimate.input_tokens + estimate.output_tokens, recorded)
    assert within(estimate.input_tokens, status.usage.inputTokens)
    assert status.costUsd is not None and estimate.fast_usd is not None
    assert within(estimate.fast_usd, status.costUsd)
    expected = (status.usage.inputTokens * 1.0 + status.usage.outputTokens * 5.0) / 1e6
    assert status.costUsd == pytest.approx(expected)
    assert sum(item.cost_usd for item in items) == pytest.approx(status.costUsd, abs=1e-9)


async def test_the_openai_estimate_is_within_a_quarter_of_what_the_run_records(
    aiohttp_server, tmp_path
):
    """gpt-5.4-mini counts 32 px patches times 1.62 plus the prompt: within 25 %."""
    fake = await FakeChatServer(api_key=OPENAI_KEY).start(aiohttp_server)
    fake.count_usage = True
    env = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{fake.base_url}/v1"}

    estimate, status, items = await estimate_then_run(tmp_path, env, "openai")

    assert len(fake.requests) == len(SIZES) and fake.problems == []
    assert within(estimate.input_tokens, status.usage.inputTokens)
    assert estimate.fast_usd is not None and status.costUsd is not None
    assert within(estimate.fast_usd, status.costUsd)
    assert estimate.economy_usd == pytest.approx(estimate.fast_usd / 2)
    assert sum(item.usage.input_tokens for item in items) == status.usage.inputTokens
    assert sum(item.cost_usd for item in items) == pytest.approx(status.costUsd, abs=1e-9)


async def test_results_carry_each_photos_tokens_and_cost_in_json_jsonl_and_csv(
    aiohttp_server, tmp_path
):
    """Every format shows inputTokens, outputTokens and costUsd, adding up to the job's."""
    fake = FakeAnthropic()
    server = await aiohttp_server(fake.app())
    env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": str(server.make_url(""))}
    manifest = shoot(tmp_path, [(64, 48)] * 3)
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, jobs.ProcessSettings(provider="anthropic"))
        await service.run(job)
        status = await service.status(job.id)
        for fmt in ("json", "jsonl", "csv"):
            await service.export(job.id, fmt, tmp_path / f"r.{fmt}")
    each = (1612 * 1.0 + 87 * 5.0) / 1e6  # the fake's fixed usage at Claude Haiku 4.5's price
    assert status.usage.inputTokens == 3 * 1612 and status.usage.outputTokens == 3 * 87
    assert status.costUsd == pytest.approx(3 * each)
    document = json.loads((tmp_path / "r.json").read_text())
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader((tmp_path / "r.csv").open(newline="")))
    for results in (document["results"], lines):
        assert [r["inputTokens"] for r in results] == [1612] * 3
        assert [r["outputTokens"] for r in results] == [87] * 3
        assert sum(r["costUsd"] for r in results) == pytest.approx(status.costUsd)
    assert sum(float(row["costUsd"]) for row in rows) == pytest.approx(status.costUsd)
    assert {row["inputTokens"] for row in rows} == {"1612"}


async def test_an_economy_job_is_billed_at_the_batch_price(aiohttp_server, tmp_path):
    """Answers from OpenAI's Batch API are stored as batch-priced and cost half."""
    fake = await FakeOpenAIBatches(seed=3).start(aiohttp_server)
    env = {
        "OPENAI_API_KEY": BATCH_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "KULLBATCH_ECONOMY_POLL": "0.01",
    }
    manifest = shoot(tmp_path, [(64, 48)] * 4)
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(
            manifest, jobs.ProcessSettings(provider="openai", mode="economy")
        )
        await service.run(job)
        status, items = await service.results(job.id)
    half = (812 * 0.75 + 64 * 4.5) / 1e6 / 2  # the fake's usage at gpt-5.4-mini's batch price
    assert {item.pricing for item in items} == {"batch"}
    assert [item.cost_usd for item in items] == pytest.approx([half] * 4)
    assert status.costUsd == pytest.approx(4 * half)
    assert status.usage.inputTokens == 4 * 812


async def test_a_model_without_a_price_has_no_cost_and_the_status_says_so(aiohttp_server, tmp_path):
    """An Ollama model is not in the table: costUsd is null with a note, never a guess."""
    fake = await FakeChatServer(api_key=None, flavour="ollama").start(aiohttp_server)
    env = {"OPENAI_COMPATIBLE_BASE_URL": f"{fake.base_url}/v1"}
    manifest = shoot(tmp_path, [(64, 48)] * 2)
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest, jobs.ProcessSettings(provider="openai-compatible"))
        await service.run(job)
        status, items = await service.results(job.id)
    assert status.usage.inputTokens == 2 * 812
    assert status.costUsd is None
    assert status.costNote is not None and "no price for openai-compatible" in status.costNote
    assert [item.cost_usd for item in items] == [None, None]
    assert export.result_object(items[0])["costUsd"] is None


async def test_a_local_job_costs_nothing(tmp_path):
    """The offline rater uses no tokens: $0, in the status and in every result."""
    manifest = shoot(tmp_path, [(64, 48)] * 2)
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        job = await service.create(manifest, jobs.ProcessSettings(provider="local"))
        await service.run(job)
        status, items = await service.results(job.id)
        (listed,) = await service.statuses()
    assert status.costUsd == 0.0 and listed.costUsd == 0.0
    assert [item.cost_usd for item in items] == [0.0, 0.0]


async def test_a_broken_price_file_is_a_usage_error(tmp_path):
    """A user file that is not JSON stops `status` with its path (exit 2 in the CLI)."""
    (tmp_path / "p.json").write_text("{")
    manifest = shoot(tmp_path, [(64, 48)])
    async with jobs.Service.open(
        tmp_path / "k.db", {"KULLBATCH_PRICES": str(tmp_path / "p.json")}
    ) as service:
        job = await service.create(manifest, jobs.ProcessSettings(provider="local"))
        with pytest.raises(UsageError, match=r"p\.json"):
            await service.status(job.id)
    with pytest.raises(UsageError, match=r"p\.json"):
        await dryrun.estimate(
            manifest, jobs.ProcessSettings(), {"KULLBATCH_PRICES": str(tmp_path / "p.json")}
        )


# --- the dry run ------------------------------------------------------------------------------

runner = CliRunner()


def test_a_dry_run_sends_nothing_and_creates_no_job(tmp_path):
    """`process --dry-run --json` prints the estimate; the fake sees no request, no db exists."""
    fake = FakeAnthropic()
    shoot(tmp_path)
    (tmp_path / "shoot.json").write_text(
        json.dumps(
            {
                "images": [
                    {"id": f"img{n}", "filename": f"IMG_{n:04d}.jpg", "path": f"IMG_{n:04d}.jpg"}
                    for n in range(3)
                ]
            }
        )
    )
    db = tmp_path / "k.db"
    with AppThread(fake.app()) as server:
        env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": server.url}
        result = runner.invoke(
            app,
            [
                "process",
                str(tmp_path / "shoot.json"),
                "--provider",
                "anthropic",
                "--dry-run",
                "--json",
                "--db",
                str(db),
            ],
            env=env,
        )
    assert result.exit_code == 0, result.output
    assert fake.requests == []
    assert not db.exists() and not list(tmp_path.glob("*.log"))
    document = json.loads(result.stdout)
    assert document["images"] == 3
    assert (document["provider"], document["model"]) == ("anthropic", "claude-haiku-4-5")
    assert set(document["estimate"]) == {"inputTokens", "outputTokens", "fastUsd", "economyUsd"}
    assert document["estimate"]["economyUsd"] == pytest.approx(document["estimate"]["fastUsd"] / 2)


def test_a_dry_run_in_words_names_both_modes(tmp_path):
    """Without --json: the photo count, the tokens, and a price per mode."""
    shoot(tmp_path)
    result = runner.invoke(app, ["process", str(tmp_path), "--provider", "anthropic", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run: 3 photos for anthropic claude-haiku-4-5; nothing was sent" in result.stdout
    assert "fast mode:    $" in result.stdout and "economy mode: $" in result.stdout


async def test_a_dry_run_for_a_provider_without_a_batch_api_has_no_economy_price(tmp_path):
    """Gemini has no economy mode here: economyUsd is null; a URL and a lost file are noted."""
    shoot(tmp_path, [(64, 48)])
    manifest = manifest_from_document(
        {
            "images": [
                {"id": "u", "filename": "u.jpg", "url": "https://example.com/u.jpg"},
                {"id": "lost", "filename": "IMG_0000.jpg", "path": "IMG_0000.jpg"},
            ]
        },
        base=tmp_path,
    )
    (tmp_path / "IMG_0000.jpg").unlink()  # moved away after the manifest was read
    settings = jobs.ProcessSettings(provider="gemini")
    estimate = await dryrun.estimate(manifest, settings, {})
    assert estimate.images == 2
    assert estimate.fast_usd is not None and estimate.economy_usd is None
    sent = prompt.compose(settings, manifest, {})  # the general rubric, as a run sends it
    assert estimate.input_tokens == 6 * 258 + dryrun.prompt_tokens(sent.text, sent.system)
    notes = " ".join(estimate.notes)
    assert "1 photos are URLs of unknown size" in notes and "IMG_0000.jpg" in notes
    assert "economy mode: no batch API" in "\n".join(estimate.lines())


async def test_a_dry_run_with_an_unknown_model_says_it_has_no_price(tmp_path):
    """Tokens are still estimated; both prices are null, and a note says why."""
    manifest = shoot(tmp_path, [(64, 48)])
    settings = jobs.ProcessSettings(provider="openai", model="gpt-9-imaginary")
    estimate = await dryrun.estimate(manifest, settings, {})
    assert estimate.input_tokens > 0
    assert estimate.fast_usd is None and estimate.economy_usd is None
    assert any("no price for openai model 'gpt-9-imaginary'" in note for note in estimate.notes)
    assert "economy mode: no price" in "\n".join(estimate.lines())


async def test_a_dry_run_prices_the_prompt_a_run_of_the_same_settings_stores(tmp_path):
    """--rubric changes the estimate, by exactly the tokens of the prompt the run would store."""
    manifest = shoot(tmp_path)
    asked = {"provider": "anthropic", "system_prompt": "You cull shoots."}
    plain = jobs.ProcessSettings(**asked)
    wedding = jobs.ProcessSettings(**asked, rubric="wedding", prompt="The couple first.")
    without = await dryrun.estimate(manifest, plain, {})
    with_rubric = await dryrun.estimate(manifest, wedding, {})
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        plain_job = await service.create(manifest, plain)
        wedding_job = await service.create(manifest, wedding)
    assert "The couple first." in wedding_job.prompt
    count = len(manifest.images)
    stored = [
        dryrun.prompt_tokens(job.prompt, job.system_prompt) for job in (plain_job, wedding_job)
    ]
    assert with_rubric.input_tokens != without.input_tokens
    assert with_rubric.input_tokens - without.input_tokens == count * (stored[1] - stored[0])


def test_a_dry_run_of_the_example_with_a_rubric_costs_what_the_rubric_sends(tmp_path):
    """The example manifest has a prompt of its own; --rubric wedding replaces it in the
    estimate as in the run, and an unknown rubric is refused (exit 2) before any estimate."""
    example = Path(__file__).parent.parent / "examples" / "shoot.json"
    base = ["process", str(example), "--provider", "anthropic", "--dry-run", "--json"]
    plain = runner.invoke(app, base)
    wedding = runner.invoke(app, [*base, "--rubric", "wedding"])
    assert plain.exit_code == wedding.exit_code == 0, plain.output + wedding.output
    tokens = [json.loads(r.stdout)["estimate"]["inputTokens"] for r in (plain, wedding)]
    assert tokens[1] > tokens[0]
    unknown = runner.invoke(app, [*base, "--rubric", "nope"])
    assert unknown.exit_code == 2 and "unknown rubric" in unknown.stderr
