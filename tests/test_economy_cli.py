"""`kullbatch process --mode economy`, `status` and `cancel` on economy jobs, through the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fake_batch_anthropic import KEY as ANTHROPIC_KEY
from fake_batch_anthropic import FakeAnthropicBatches
from fake_batch_openai import KEY as OPENAI_KEY
from fake_batch_openai import FakeOpenAIBatches
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.manifest import load_manifest
from kullbatch.models import EventKind, JobState
from kullbatch.run.economy import Stoppable
from kullbatch.service import jobs
from tests.app_thread import AppThread

SHOOT = Path(__file__).parent.parent / "examples" / "shoot.json"
PHOTOS = len(json.loads(SHOOT.read_text())["images"])
runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private database, fast polls, and no provider settings from the developer's shell."""
    monkeypatch.setenv("KULLBATCH_DB", str(tmp_path / "k.db"))
    monkeypatch.setenv("KULLBATCH_ECONOMY_POLL", "0.01")
    for var in ("KULLBATCH_PROVIDER", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_process_in_economy_mode_rates_the_example_through_one_openai_batch(env):
    """The bundled shoot goes out as one uploaded file and one batch, and comes back rated."""
    fake = FakeOpenAIBatches(seed=5)
    with AppThread(fake.app()) as server:
        env.setenv("OPENAI_API_KEY", OPENAI_KEY)
        env.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
        result = invoke(
            "process", str(SHOOT), "--provider", "openai", "--mode", "economy", "--json", "-q"
        )
    status = json.loads(result.stdout.split("\n", 1)[1])
    assert result.exit_code == 0, result.stderr
    assert status["mode"] == "economy" and status["processedImages"] == PHOTOS
    assert status["providerBatches"][0]["state"] == "completed"
    assert status["providerBatches"][0]["requests"] == PHOTOS
    assert fake.batch_creates == 1 and fake.per_photo_requests() == 0


def test_economy_mode_is_refused_for_providers_without_a_batch_api(env):
    """Exit 2 before anything is sent, naming the providers that have a batch API."""
    env.setenv("GEMINI_API_KEY", "g-key")
    result = invoke("process", str(SHOOT), "--provider", "gemini", "--mode", "economy")
    assert result.exit_code == 2
    assert "gemini has no batch API" in result.stderr and "openai, anthropic" in result.stderr


def test_status_shows_the_provider_batches_and_cancel_cancels_them(env, tmp_path):
    """A job left `submitted` shows its batch and the provider's counts; cancel stops it."""
    fake = FakeAnthropicBatches(polls_per_state=50)
    with AppThread(fake.app()) as server:
        fake.base_url = server.url
        env.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        env.setenv("ANTHROPIC_BASE_URL", server.url)
        job_id = asyncio.run(_submit_and_leave(tmp_path / "k.db"))
        shown = invoke("status", job_id)
        as_json = json.loads(invoke("status", job_id, "--json").stdout)
        cancelled = invoke("cancel", job_id)
        after = json.loads(invoke("status", job_id, "--json").stdout)
    assert "submitted" in shown.stdout and "anthropic batch msgbatch_" in shown.stdout
    assert f"kullbatch resume {job_id}" in shown.stdout
    assert as_json["status"] == "submitted" and as_json["providerJobId"].startswith("msgbatch_")
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.stdout
    assert after["status"] == "cancelled"
    assert any(seen.path.endswith("/cancel") for seen in fake.seen)


async def _submit_and_leave(db: Path) -> str:
    """Submit an economy job, then stop waiting as Ctrl-C would."""
    async with jobs.Service.open(db) as service:
        settings = jobs.ProcessSettings(provider="anthropic", mode="economy")
        job = await service.create(load_manifest(SHOOT), settings)
        runners: list[Stoppable] = []

        def leave(event) -> None:
            if event.kind is EventKind.BATCH and "submitted" in (event.note or ""):
                runners[0].interrupt()

        outcome = await service.run(job, subscribers=[leave], on_processor=runners.append)
        assert outcome.state is JobState.SUBMITTED
        return job.id
