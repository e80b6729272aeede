"""Flex mode end to end through the strict fakes: the tier on the wire, refusals, the price.

Each job runs in a virtual-time loop (tests/vtime.py), so `--flex-wait` and the rate-limit
schedule's waits pass in milliseconds while the engine's clock reads minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fake_gemini_server import (
    FLEX_UNAVAILABLE,
    GEMINI_KEY,
    FakeGemini,
    google_error,
    quota_exceeded,
)
from fake_openai_server import FakeChatServer
from PIL import Image

from kullbatch.errors import FatalJobError, FlexUnavailable, RateLimited, Transient, UsageError
from kullbatch.manifest import manifest_from_document
from kullbatch.models import JobState, Mode, PreparedImage, Prompt
from kullbatch.pricing import prices as pricing
from kullbatch.providers import create_provider, resolve
from kullbatch.providers.flex import with_tier
from kullbatch.run.ratelimit import Gate
from kullbatch.run.retry import quiet_stamina
from kullbatch.service import export, jobs
from tests.vtime import run_virtual

quiet_stamina()
OPENAI_KEY = "sk-test-key"
GROQ_KEY = "gsk-test-key"
FLEX_GEMINI = "gemini-3.5-flash-lite"
TABLE = pricing.load_prices({"KULLBATCH_PRICES": "/nonexistent/prices.json"})


@pytest.fixture(autouse=True)
def no_user_prices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The package's price table only: a user's file must not change the figures."""
    monkeypatch.setenv("KULLBATCH_PRICES", str(tmp_path / "no-prices.json"))


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """The fake on 127.0.0.1 in the running (virtual) loop; yields its root URL."""
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
        Image.new("RGB", (64, 48), (10 * n % 255, 90, 140)).save(path)
        entries.append({"id": f"img{n}", "filename": path.name, "path": path.name})
    return manifest_from_document({"shootId": "flex", "images": entries}, base=folder)


def env_for(provider: str, url: str) -> dict[str, str]:
    if provider == "openai":
        return {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{url}/v1"}
    if provider == "groq":
        return {"GROQ_API_KEY": GROQ_KEY, "GROQ_BASE_URL": url}
    return {"GEMINI_API_KEY": GEMINI_KEY, "GOOGLE_GEMINI_BASE_URL": url}


async def flex_job(
    app: web.Application, tmp_path: Path, count: int, **settings: Any
) -> tuple[Any, Any, list[Any], float, list[Any]]:
    """One flex job through the fake: (outcome, status, items, virtual seconds, gates)."""
    provider = settings.setdefault("provider", "openai")
    settings.setdefault("mode", "flex")
    async with (
        serving(app) as url,
        jobs.Service.open(tmp_path / "k.db", env_for(provider, url)) as service,
    ):
        job = await service.create(shoot(tmp_path, count), jobs.ProcessSettings(**settings))
        started = asyncio.get_running_loop().time()
        outcome = await service.run(job)
        took = asyncio.get_running_loop().time() - started
        status, items = await service.results(job.id)
        gates = list((await service.runtime())._gates.values())
    return outcome, status, items, took, gates


def test_flex_requests_carry_the_tier_and_are_priced_at_the_flex_price(tmp_path):
    """Every request asks for `service_tier: flex`; each photo is priced at the Batch price and
    the status counts the tier and what it saved."""
    fake = FakeChatServer(api_key=OPENAI_KEY)

    outcome, status, items, _, _ = run_virtual(
        flex_job(fake.app(), tmp_path, 3, model="gpt-5.4-mini")
    )

    assert outcome.state is JobState.COMPLETED and outcome.rated == 3
    assert fake.tiers == ["flex"] * 3 and fake.problems == []
    assert status.mode is Mode.FLEX and status.tiers == {"flex": 3}
    price = TABLE.price("openai", "gpt-5.4-mini")
    assert price is not None and price.flex == (0.375, 2.25)  # half the list price
    each = (812 * 0.375 + 64 * 2.25) / 1e6  # the fake's usage at the flex price
    assert status.costUsd == pytest.approx(3 * each)
    assert status.flexSavedUsd == pytest.approx(3 * each)  # flex is half: it saved as much
    assert [item.pricing for item in items] == ["flex"] * 3
    assert [export.result_object(item)["tier"] for item in items] == ["flex"] * 3


def test_flex_refusals_are_retried_on_the_rate_limit_schedule_without_slowing_the_gate(
    tmp_path,
):
    """A fifth of the flex requests are turned away (429 Resource Unavailable): each is retried
    at the flex tier within seconds, and the account's gate is neither paced nor held."""
    fake = FakeChatServer(api_key=OPENAI_KEY)
    fake.flex_refuse = 0.2

    outcome, status, items, took, gates = run_virtual(flex_job(fake.app(), tmp_path, 20))

    assert outcome.state is JobState.COMPLETED and outcome.rated == 20
    assert len(fake.tiers) == 24 and set(fake.tiers) == {"flex"}  # every fifth refused: 4
    assert status.tiers == {"flex": 20}
    assert [item.attempts for item in items].count(2) == 4
    assert took < 5  # one rate-limit step (1 s plus jitter), not a minute
    # the pace OpenAI's headers state (2M tokens a minute at 876 an answer), not halved
    assert [gate.rate for gate in gates] == [pytest.approx(2_000_000 / 60 / 876 * 0.95)]
    assert all(gate.holding_for() == 0 for gate in gates)


@pytest.mark.parametrize(("kind", "slowed"), [(FlexUnavailable, False), (RateLimited, True)])
def test_a_burst_of_flex_refusals_does_not_halve_the_pace_as_429s_do(kind, slowed):
    """Half of a fast burst refused: a rate limit halves the pace and a hint holds everyone;
    the flex tier's refusals do neither."""

    async def main() -> tuple[float | None, float]:
        loop = asyncio.get_running_loop()
        gate = Gate(loop.time)
        for n in range(40):  # 20 requests a second, every other one refused
            assert await gate.wait()
            if n % 2:
                error = kind("full", status=429)
                gate.failed(error)
                gate.retrying(error, 1.0)
            else:
                gate.answered(None)
            await asyncio.sleep(0.05)
        gate.retrying(kind("full", status=429, retry_after=30.0), 30.0)  # a hint of 30 s
        return gate.rate, gate.holding_for()

    rate, held = run_virtual(main())
    assert (rate is not None) is slowed and (held > 0) is slowed


def test_a_photo_refused_past_flex_wait_goes_at_the_standard_tier_and_list_price(tmp_path):
    """The flex tier refuses everything: each photo is retried for --flex-wait, then sent once
    at the standard tier, and priced at the list price. The last wait is cut short so that the
    photo leaves at 60 s, not at the next doubling (63 s and more)."""
    fake = FakeChatServer(api_key=OPENAI_KEY)
    fake.flex_refuse = 1.0

    outcome, status, items, took, _ = run_virtual(flex_job(fake.app(), tmp_path, 2, flex_wait=60.0))

    assert outcome.state is JobState.COMPLETED and outcome.rated == 2
    assert Counter(fake.tiers)[None] == 2  # one standard request per photo, no more
    assert fake.tiers.count("flex") == 2 * 6  # at 0, 1, 3, 7, 15, 31 s (plus jitter), then 60
    assert 60 <= took < 61
    assert status.tiers == {"standard": 2} and status.flexSavedUsd == 0
    assert status.costUsd == pytest.approx(2 * (812 * 0.75 + 64 * 4.5) / 1e6)


def test_groq_flex_refusal_498_is_retried_and_priced_at_the_list_price(tmp_path):
    """Groq's 498 `capacity_exceeded` is a flex refusal; Groq's flex price is its list price."""
    fake = FakeChatServer(api_key=GROQ_KEY, prefix="/openai/v1", flavour="groq")
    fake.flex_refuse = 0.5
    model = "meta-llama/llama-4-scout-17b-16e-instruct"

    outcome, status, _, _, gates = run_virtual(
        flex_job(fake.app(), tmp_path, 4, provider="groq", model=model)
    )

    assert outcome.state is JobState.COMPLETED and outcome.rated == 4
    assert set(fake.tiers) == {"flex"} and len(fake.tiers) > 4 and fake.problems == []
    assert status.tiers == {"flex": 4} and status.flexSavedUsd == 0
    assert status.costUsd == pytest.approx(4 * (812 * 0.11 + 64 * 0.34) / 1e6)
    # Groq's requests header is per day (not a pace): only the tokens per minute pace it
    assert all(gate.holding_for() == 0 for gate in gates)


def test_gemini_flex_asks_for_service_tier_and_its_503_is_retried_at_half_price(tmp_path):
    """Gemini's GenerateContentRequest carries `serviceTier: flex`; a 503 on a flex request
    is the tier shedding load; flex is half the list price."""
    fake = FakeGemini(model=FLEX_GEMINI)
    fake.flex_refuse = 0.25

    outcome, status, _, _, _ = run_virtual(
        flex_job(fake.app(), tmp_path, 4, provider="gemini", model=FLEX_GEMINI)
    )

    assert outcome.state is JobState.COMPLETED and outcome.rated == 4
    assert set(fake.tiers) == {"flex"} and len(fake.tiers) > 4 and fake.problems == []
    assert status.tiers == {"flex": 4}
    assert status.costUsd == pytest.approx(4 * (1291 * 0.15 + 58 * 1.25) / 1e6)


@pytest.mark.parametrize(
    ("provider", "model", "named"),
    [
        ("openai", "gpt-4.1-mini", "gpt-5.4-mini"),
        ("gemini", "gemini-2.5-flash", "gemini-3.5-flash-lite"),
        ("anthropic", "claude-haiku-4-5", "flex mode works with: gemini, groq, openai"),
    ],
)
def test_a_model_or_provider_without_flex_is_refused_before_sending(
    tmp_path, provider, model, named
):
    """No job is created: the error names the models (or providers) that have a flex tier."""

    async def main() -> None:
        settings = jobs.ProcessSettings(provider=provider, model=model, mode="flex")
        async with jobs.Service.open(tmp_path / "k.db", {}) as service:
            with pytest.raises(UsageError, match="flex") as refused:
                await service.create(shoot(tmp_path, 1), settings)
            assert named in str(refused.value)
            assert await service.store.list_jobs() == []

    run_virtual(main())


async def _rate_at(
    fake_app: web.Application, provider: str, model: str | None, tier: str | None
) -> Any:
    """One photo through the provider's adapter asking for `tier`."""
    async with serving(fake_app) as url, aiohttp.ClientSession() as session:
        spec, chosen = resolve(provider, model)
        adapter = create_provider(spec, chosen, session, spec.credentials(env_for(provider, url)))
        buffer = io.BytesIO()
        Image.new("RGB", (32, 24), "teal").save(buffer, format="JPEG")
        image = PreparedImage("img0", "a.jpg", data=buffer.getvalue())
        tiered = adapter if tier is None else with_tier(adapter, tier)
        return await tiered.rate(image, Prompt("rate this"))


@pytest.mark.parametrize("provider", ["openai", "groq", "gemini"])
def test_the_fakes_refuse_a_tier_the_real_api_does_not_know(provider):
    """`service_tier: "cheapest"` is a 400 on every real API; the fakes say so too."""
    if provider == "gemini":
        fake: Any = FakeGemini(model=FLEX_GEMINI)
    elif provider == "groq":
        fake = FakeChatServer(api_key=GROQ_KEY, prefix="/openai/v1", flavour="groq")
    else:
        fake = FakeChatServer(api_key=OPENAI_KEY)
    model = {"gemini": FLEX_GEMINI, "groq": None, "openai": None}[provider]

    with pytest.raises(Exception, match="HTTP 400"):
        run_virtual(_rate_at(fake.app(), provider, model, "cheapest"))
    assert fake.problems and "'cheapest'" in " ".join(fake.problems)


def test_a_flex_refusal_is_its_own_error_and_only_at_the_flex_tier():
    """The same 503 is a flex refusal on a flex request and a plain Transient otherwise."""
    fake = FakeGemini(model=FLEX_GEMINI)
    fake.flex_refuse = 1.0
    with pytest.raises(FlexUnavailable, match="flex tier is full"):
        run_virtual(_rate_at(fake.app(), "gemini", FLEX_GEMINI, "flex"))
    fake.reply(503, FLEX_UNAVAILABLE)
    with pytest.raises(Transient) as standard:
        run_virtual(_rate_at(fake.app(), "gemini", FLEX_GEMINI, None))
    assert not isinstance(standard.value, FlexUnavailable)


def test_resume_in_fast_mode_sends_a_flex_jobs_failed_photos_at_the_standard_tier(tmp_path):
    """Photos the flex tier refused for their whole retry window failed; `resume --mode fast`
    sends them again without the tier, and the job is a fast one from then on."""
    fake = FakeChatServer(api_key=OPENAI_KEY)
    fake.flex_refuse = 1.0

    async def main() -> tuple[Any, Any, Any]:
        async with (
            serving(fake.app()) as url,
            jobs.Service.open(tmp_path / "k.db", env_for("openai", url)) as service,
        ):
            settings = jobs.ProcessSettings(provider="openai", mode="flex", max_retry_time=30.0)
            job = await service.create(shoot(tmp_path, 2), settings)
            refused = await service.run(job)
            resumed_job = await service.prepare_resume(job.id, "fast")
            resumed = await service.run(resumed_job)
            return refused, resumed, await service.status(job.id)

    refused, resumed, status = run_virtual(main())
    assert refused.state is JobState.COMPLETED and refused.failed == 2 and refused.rated == 0
    assert resumed.rated == 2 and status.mode is Mode.FAST
    assert fake.tiers[-2:] == [None, None] and set(fake.tiers[:-2]) == {"flex"}
    assert status.tiers == {"standard": 2}


def _openai_429(code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "requests", "param": None, "code": code}}


@pytest.mark.parametrize(
    ("provider", "status", "body", "kind"),
    [
        ("openai", 429, _openai_429("rate_limit_exceeded", "Rate limit reached"), RateLimited),
        (
            "openai",
            429,
            _openai_429("insufficient_quota", "You exceeded your quota"),
            FatalJobError,
        ),
        ("gemini", 429, quota_exceeded(), RateLimited),
        ("gemini", 429, google_error(429, "RESOURCE_EXHAUSTED", "Flex is busy"), FlexUnavailable),
    ],
    ids=["openai-rate-limit", "openai-no-credit", "gemini-quota", "gemini-flex-busy"],
)
def test_at_the_flex_tier_a_rate_limit_or_no_credit_stays_what_it_is(provider, status, body, kind):
    """Only the tier's own refusals are flex refusals: the account's limits and credit are not."""
    if provider == "gemini":
        fake: Any = FakeGemini(model=FLEX_GEMINI)
        fake.reply(status, body)
    else:
        fake = FakeChatServer(api_key=OPENAI_KEY)
        fake.queue(status, body)
    model = FLEX_GEMINI if provider == "gemini" else None

    with pytest.raises(kind) as raised:
        run_virtual(_rate_at(fake.app(), provider, model, "flex"))
    assert isinstance(raised.value, FlexUnavailable) is (kind is FlexUnavailable)
