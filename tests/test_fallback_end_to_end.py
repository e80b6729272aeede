"""`--fallback` end to end: real HTTP to local fakes of two providers, through the service layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fake_batch_anthropic import KEY as ANTHROPIC_KEY
from fake_batch_anthropic import FakeAnthropicBatches
from fake_batch_openai import KEY as OPENAI_KEY
from fake_batch_openai import FakeOpenAIBatches
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.manifest import manifest_from_document
from kullbatch.models import Fallback, ItemState, JobState
from kullbatch.service import jobs
from kullbatch.service.settings import _fallback as fallback_of
from tests.fault_server import FaultConfig, FaultServer, completion, expected_rating, run_in_thread

PHOTOS = 4


def manifest(folder: Path) -> Any:
    images = [
        {"id": f"img{n}", "filename": f"img{n}.jpg", "url": f"https://photos.test/img{n}.jpg"}
        for n in range(PHOTOS)
    ]
    return manifest_from_document({"shootId": "fallback", "images": images}, base=folder)


async def anthropic(aiohttp_server: Any) -> tuple[FakeAnthropicBatches, dict[str, str]]:
    fake = await FakeAnthropicBatches().start(aiohttp_server)
    return fake, {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": fake.base_url}


async def run_job(db: Path, env: dict[str, str], settings: jobs.ProcessSettings, folder: Path):
    async with jobs.Service.open(db, env) as service:
        job = await service.create(manifest(folder), settings)
        outcome = await service.run(job)
        _, items = await service.results(job.id)
        stored = await service.store.get_job(job.id)
    return outcome, items, stored


async def test_a_provider_answering_503_to_everything_hands_its_photos_on(aiohttp_server, tmp_path):
    """Every photo still failing after --fallback-after goes to the next provider and is rated."""
    second, env = await anthropic(aiohttp_server)
    down = FaultServer(FaultConfig(p503=1.0))
    with run_in_thread(down) as base_url:
        env |= {"OPENAI_API_KEY": down.config.api_key, "OPENAI_BASE_URL": base_url}
        settings = jobs.ProcessSettings(
            provider="openai", fallbacks=("anthropic",), fallback_after=1.0
        )
        outcome, items, stored = await run_job(tmp_path / "k.db", env, settings, tmp_path)
    assert outcome.state is JobState.COMPLETED and outcome.rated == PHOTOS
    assert {(item.provider, item.model) for item in items} == {("anthropic", "claude-haiku-4-5")}
    assert second.per_photo_requests() == PHOTOS
    assert down.stats.outcomes["503"] >= PHOTOS * 2  # each photo was retried before it moved
    assert stored.options.fallbacks == (Fallback(provider="anthropic", model="claude-haiku-4-5"),)


async def test_a_wrong_key_moves_the_rest_of_the_job_to_the_fallback_at_once(
    aiohttp_server, tmp_path
):
    """A 401 from the first provider costs one request; the fallback rates every photo."""
    first = await FakeOpenAIBatches(api_key="sk-the-real-one").start(aiohttp_server)
    second, env = await anthropic(aiohttp_server)
    env |= {"OPENAI_API_KEY": "sk-wrong", "OPENAI_BASE_URL": first.base_url}
    settings = jobs.ProcessSettings(provider="openai", fallbacks=("anthropic:claude-sonnet-4-6",))
    outcome, items, _ = await run_job(tmp_path / "k.db", env, settings, tmp_path)
    assert outcome.state is JobState.COMPLETED and outcome.rated == PHOTOS
    assert {(item.provider, item.model) for item in items} == {("anthropic", "claude-sonnet-4-6")}
    assert first.per_photo_requests() == 1


async def test_a_refusal_goes_to_the_fallback_without_retrying(aiohttp_server, tmp_path):
    """One photo the first model refuses is rated by the second; the others stay with the first."""
    asked: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer sk-the-key":
            return web.json_response(
                {"error": {"message": "Incorrect API key provided: sk-wr***ng.",
                           "type": "invalid_request_error", "param": None,
                           "code": "invalid_api_key"}},
                status=401,
            )  # fmt: skip
        body = await request.json()
        url = body["messages"][-1]["content"][-1]["image_url"]["url"]
        image_id = url.rsplit("/", 1)[1].removesuffix(".jpg")
        asked.append(image_id)
        answer = completion(json.dumps(expected_rating(image_id)), body["model"])
        if image_id == "img2":
            answer["choices"][0]["message"] |= {"content": None, "refusal": "I can't rate that."}
        return web.json_response(answer)

    application = web.Application()
    application.router.add_post("/v1/chat/completions", chat)
    first = await aiohttp_server(application, host="127.0.0.1")
    second, env = await anthropic(aiohttp_server)
    env |= {"OPENAI_API_KEY": "sk-the-key", "OPENAI_BASE_URL": str(first.make_url("/v1"))}
    settings = jobs.ProcessSettings(provider="openai", fallbacks=("anthropic",))
    outcome, items, _ = await run_job(tmp_path / "k.db", env, settings, tmp_path)
    assert outcome.rated == PHOTOS and asked.count("img2") == 1
    assert [item.provider for item in items] == ["openai", "openai", "anthropic", "openai"]
    assert all(item.state is ItemState.RATED for item in items)


async def test_a_fallback_without_its_key_is_left_out_and_the_primary_still_works(
    aiohttp_server, tmp_path
):
    """A fallback whose key is not set never stops a job its own provider can do."""
    first = await FakeOpenAIBatches().start(aiohttp_server)
    env = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": first.base_url}
    settings = jobs.ProcessSettings(provider="openai", fallbacks=("gemini",))
    outcome, items, _ = await run_job(tmp_path / "k.db", env, settings, tmp_path)
    assert outcome.rated == PHOTOS and {item.provider for item in items} == {"openai"}


async def test_a_primary_without_its_key_lets_the_first_fallback_lead(aiohttp_server, tmp_path):
    """No OPENAI_API_KEY, but a fallback: the job runs on the fallback instead of failing."""
    second, env = await anthropic(aiohttp_server)
    settings = jobs.ProcessSettings(provider="openai", fallbacks=("grok", "anthropic"))
    outcome, items, _ = await run_job(tmp_path / "k.db", env, settings, tmp_path)
    assert outcome.state is JobState.COMPLETED and {item.provider for item in items} == {
        "anthropic"
    }


async def test_no_provider_with_a_key_fails_the_job_naming_the_first(tmp_path):
    """Neither the provider nor any fallback can be built: the job fails with the first's reason."""
    settings = jobs.ProcessSettings(provider="openai", fallbacks=("grok",))
    outcome, _, _ = await run_job(tmp_path / "k.db", {}, settings, tmp_path)
    assert outcome.state is JobState.FAILED and "OPENAI_API_KEY" in (outcome.error or "")


def test_an_unknown_fallback_provider_is_a_usage_error(tmp_path, monkeypatch):
    """`--fallback nosuch` exits 2 before any job exists, and a bad duration too."""
    monkeypatch.setenv("KULLBATCH_DB", str(tmp_path / "k.db"))
    shoot = Path(__file__).parent.parent / "examples" / "shoot.json"
    runner = CliRunner()
    unknown = runner.invoke(app, ["process", str(shoot), "--fallback", "nosuch"])
    duration = runner.invoke(app, ["process", str(shoot), "--fallback-after", "soon"])
    assert unknown.exit_code == 2 and "--fallback nosuch" in unknown.stderr
    assert duration.exit_code == 2 and "--fallback-after" in duration.stderr


@pytest.mark.parametrize("wanted", ["anthropic", "anthropic:claude-sonnet-4-6", "openai-gpt-5"])
def test_fallback_names_resolve_like_provider_names(wanted):
    """P, P:MODEL and the spec's provider-model ids all name a provider and a model."""
    fallback = fallback_of(wanted)
    assert fallback.provider in {"anthropic", "openai"} and fallback.model


@pytest.mark.parametrize("primary", ["wrong key", "no key"])
async def test_a_job_the_fallback_rated_whole_is_reported_as_the_fallbacks(
    aiohttp_server, tmp_path, primary
):
    """The status (the summary's and --json's) names the provider that rated every photo."""
    second, env = await anthropic(aiohttp_server)
    if primary == "wrong key":
        first = await FakeOpenAIBatches(api_key="sk-the-real-one").start(aiohttp_server)
        env |= {"OPENAI_API_KEY": "sk-wrong", "OPENAI_BASE_URL": first.base_url}
    settings = jobs.ProcessSettings(provider="openai", fallbacks=("anthropic",))
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await service.create(manifest(tmp_path), settings)
        outcome = await service.run(job)
        status = await service.status(job.id)
        listed = await service.statuses()
    assert outcome.rated == PHOTOS and second.per_photo_requests() == PHOTOS
    assert status.providerId == "anthropic" and [s.providerId for s in listed] == ["anthropic"]
