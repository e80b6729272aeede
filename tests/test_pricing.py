"""The price table: each provider's image rule and price against figures worked out by hand."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from kullbatch.models import ImageInput, ItemRecord, ItemState, JobState, JobStatus, TokenUsage
from kullbatch.models import Usage as U
from kullbatch.pricing import prices as pricing
from kullbatch.pricing.prices import PriceFileError, RatedUsage, load_prices
from kullbatch.providers import PROVIDERS

TABLE = load_prices({"KULLBATCH_PRICES": "/nonexistent/prices.json"})


def tokens(provider: str, model: str, width: int, height: int) -> int:
    rule = TABLE.image_rule(provider, model)
    assert rule is not None
    return rule.tokens(width, height)


# --- image rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((200, 200), 54),  # 40,000 / 750 = 53.3
        ((1000, 1000), 1334),  # 1,000,000 / 750 = 1333.3
        ((1092, 1092), 1590),  # 1,192,464 / 750 = 1589.95: Anthropic's own 1:1 example, ~1590
        ((1568, 1045), 1600),  # 2184.7: over the ~1600-token cap, so Anthropic downscales it
        ((3000, 2000), 1600),  # brought to 1568 x 1045 first, still at the cap
    ],
)
def test_anthropic_counts_width_times_height_over_750_up_to_1600(size, expected):
    """Anthropic: ceil(w*h/750), at most about 1600 tokens."""
    assert tokens("anthropic", "claude-haiku-4-5", *size) == expected


@pytest.mark.parametrize(
    ("size", "patches"),
    [
        ((1024, 1024), 1024),  # 32 x 32 patches
        ((1800, 2400), 1452),  # OpenAI's example: shrunk to 1056 x 1408, 33 x 44 patches
        ((100, 50), 8),  # 4 x 2 patches
    ],
)
def test_openai_mini_models_count_32_pixel_patches_times_the_multiplier(size, patches):
    """gpt-5-mini: patches (at most 1536) times 1.62, rounded up."""
    assert tokens("openai", "gpt-5-mini", *size) == -(-patches * 162 // 100)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1024, 1024), 765),  # to 768 x 768: 4 tiles, 85 + 4 * 170 (OpenAI's example)
        ((2048, 4096), 1105),  # to 1024 x 2048, then 768 x 1536: 6 tiles (OpenAI's example)
        ((512, 512), 255),  # one tile
    ],
)
def test_openai_tile_models_count_85_plus_170_per_512_pixel_tile(size, expected):
    """A model without its own rule (gpt-4o) uses the provider's tile rule."""
    assert tokens("openai", "gpt-4o", *size) == expected


def test_gemini_2_5_counts_258_tokens_per_768_pixel_tile():
    """A small photo is one tile; 1568 x 1045 is 3 x 2 tiles."""
    assert tokens("gemini", "gemini-2.5-flash", 384, 384) == 258
    assert tokens("gemini", "gemini-2.5-flash", 1568, 1045) == 6 * 258


def test_gemini_3_counts_every_photo_at_its_media_resolution():
    """Gemini 3 models: 1120 tokens whatever the size."""
    assert tokens("gemini", "gemini-3.5-flash", 64, 64) == 1120
    assert tokens("gemini", "gemini-3.5-flash", 1568, 1045) == 1120


def test_grok_counts_448_pixel_tiles_plus_one_at_most_six():
    """xAI: (tiles + 1) * 256, tiles capped at 6."""
    assert tokens("grok", "grok-4-1-fast-non-reasoning", 448, 448) == 2 * 256
    assert tokens("grok", "grok-4-1-fast-non-reasoning", 1568, 1045) == 7 * 256


def test_the_local_rater_counts_no_tokens():
    """The offline rater sends nothing anywhere."""
    assert tokens("local", "local-v1", 4000, 3000) == 0


# --- prices -----------------------------------------------------------------------------------


def test_a_price_is_dollars_per_million_tokens_and_batch_is_half():
    """Claude Haiku 4.5: $1 in, $5 out per million; the batch API halves it."""
    price = TABLE.price("anthropic", "claude-haiku-4-5")
    assert price is not None
    usage = U(input_tokens=1_000_000, output_tokens=100_000)
    assert price.cost(usage) == 1.5
    assert price.cost(usage, batch=True) == 0.75


@pytest.mark.parametrize(
    ("provider", "model", "usage", "expected"),
    [
        ("openai", "gpt-5.4-mini", U(1659, 90), (1659 * 0.75 + 90 * 4.5) / 1e6),
        ("gemini", "gemini-2.5-flash", U(1548, 90), (1548 * 0.3 + 90 * 2.5) / 1e6),
        ("grok", "grok-4-1-fast-non-reasoning", U(1792, 90), (1792 * 0.2 + 90 * 0.5) / 1e6),
        ("groq", "meta-llama/llama-4-scout-17b-16e-instruct", U(1000, 90), 0.0001406),
    ],
)
def test_each_provider_prices_its_default_model(provider, model, usage, expected):
    """Hand-computed: tokens times the table's price per million."""
    price = TABLE.price(provider, model)
    assert price is not None
    assert price.cost(usage) == pytest.approx(expected, abs=1e-12)


def test_a_dated_snapshot_costs_what_its_model_costs():
    """claude-haiku-4-5-20251001 is priced as claude-haiku-4-5."""
    price = TABLE.price("anthropic", "claude-haiku-4-5-20251001")
    assert price is not None and price.input == 1.0


def test_an_unknown_model_has_no_price_and_the_note_says_where_to_add_one():
    """No guess: None, and a note naming the model, the table's date and the user file."""
    assert TABLE.price("openai-compatible", "qwen3-vl:8b") is None
    assert TABLE.price("nobody", "x") is None
    assert TABLE.image_rule("nobody", "x") is None
    note = TABLE.no_price("openai-compatible", "qwen3-vl:8b")
    assert "no price for openai-compatible model 'qwen3-vl:8b'" in note
    assert TABLE.checked in note and "/nonexistent/prices.json" in note


def test_the_package_table_is_dated_and_names_every_provider():
    """The data file says when it was checked and covers the registry."""
    data = json.loads(resources.files("kullbatch.pricing").joinpath("prices.json").read_text())
    assert data["checked"] == TABLE.checked
    assert set(data["providers"]) == set(PROVIDERS)
    for name, spec in PROVIDERS.items():
        if name != "openai-compatible":
            assert TABLE.price(name, spec.default_model) is not None, name


# --- the user's file --------------------------------------------------------------------------


def test_a_user_file_overrides_a_price_and_adds_a_model(tmp_path):
    """Fields it names replace the package's; models it adds get a price; the rest stays."""
    user = tmp_path / "prices.json"
    user.write_text(
        json.dumps(
            {
                "providers": {
                    "anthropic": {"models": {"claude-haiku-4-5": {"input": 0.8}}},
                    "openai-compatible": {"models": {"qwen3-vl:8b": {"input": 0, "output": 0}}},
                }
            }
        )
    )
    table = load_prices({"KULLBATCH_PRICES": str(user)})
    haiku = table.price("anthropic", "claude-haiku-4-5")
    assert haiku is not None and (haiku.input, haiku.output) == (0.8, 5.0)
    assert table.price("openai-compatible", "qwen3-vl:8b") is not None
    assert table.price("anthropic", "claude-sonnet-4-6") is not None


def test_a_user_image_rule_replaces_the_whole_rule(tmp_path):
    """An image rule is not merged field by field: another kind of rule comes whole."""
    user = tmp_path / "p.json"
    user.write_text(json.dumps({"providers": {"grok": {"image": {"rule": "fixed", "tokens": 9}}}}))
    table = load_prices({"KULLBATCH_PRICES": str(user)})
    rule = table.image_rule("grok", "grok-4.3")
    assert rule is not None and rule.tokens(4000, 3000) == 9


def test_the_user_file_defaults_to_the_config_folder():
    """Without $KULLBATCH_PRICES: prices.json in the user config folder."""
    path = pricing.default_prices_path({})
    assert path.name == "prices.json" and "kullbatch" in str(path)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        json.dumps({"providers": {"openai": {"models": {"m": {"input": -1}}}}}),
    ],
)
def test_a_broken_user_file_is_an_error_naming_the_file(tmp_path, content):
    """Bad JSON, a list, or a negative price: PriceFileError with the path."""
    user = tmp_path / "prices.json"
    user.write_text(content)
    with pytest.raises(PriceFileError, match=r"prices\.json"):
        load_prices({"KULLBATCH_PRICES": str(user)})


# --- a job's cost -----------------------------------------------------------------------------


def item(usage: U, provider: str | None = None, model: str | None = None, pricing_="standard"):
    image = ImageInput(id="a", filename="a.jpg", url="https://example.com/a.jpg")
    return ItemRecord(0, image, ItemState.RATED, 1, None, None, usage, provider, model, pricing_)


def test_a_photo_is_priced_by_who_rated_it_else_by_the_job():
    """A fallback's answer costs its own model's price; a photo without a rater, the job's."""
    usage = U(1000, 100)
    own = pricing.item_cost(
        TABLE, item(usage, "openai", "gpt-5-mini"), "anthropic", "claude-haiku-4-5"
    )
    job = pricing.item_cost(TABLE, item(usage), "anthropic", "claude-haiku-4-5")
    assert own == pytest.approx((1000 * 0.25 + 100 * 2.0) / 1e6)
    assert job == pytest.approx((1000 * 1.0 + 100 * 5.0) / 1e6)


def test_a_photo_without_tokens_costs_nothing_even_without_a_price():
    """Nothing used is nothing owed, whoever rated it."""
    assert pricing.item_cost(TABLE, item(U()), "openai-compatible", "x") == 0.0
    assert pricing.item_cost(TABLE, item(U(5, 5)), "openai-compatible", "x") is None


def test_the_job_cost_is_the_sum_of_its_groups_with_batch_at_half_price():
    """Standard and batch answers of one model, and a fallback model, add up."""
    groups = [
        RatedUsage("anthropic", "claude-haiku-4-5", "standard", 2, 2000, 200),
        RatedUsage("anthropic", "claude-haiku-4-5", "batch", 2, 2000, 200),
        RatedUsage(None, None, "standard", 3, 0, 0),  # pending and failed photos
        RatedUsage("openai", "gpt-5-mini", "standard", 1, 1000, 100),
    ]
    cost = pricing.job_cost(TABLE, groups, "anthropic", "claude-haiku-4-5")
    assert cost.usage == U(5000, 500)
    assert cost.usd == pytest.approx(0.003 + 0.0015 + 0.00045)
    assert cost.note is None


def test_a_job_with_photos_from_an_unpriced_model_has_no_cost_and_says_why():
    """One unpriced group makes the total unknown: None with the model and the photo count."""
    groups = [
        RatedUsage("anthropic", "claude-haiku-4-5", "standard", 2, 2000, 200),
        RatedUsage("openai-compatible", "llava", "standard", 3, 300, 30),
    ]
    cost = pricing.job_cost(TABLE, groups, "anthropic", "claude-haiku-4-5")
    assert cost.usd is None and cost.usage == U(2300, 230)
    assert cost.note is not None and "'llava'" in cost.note and "(3 photos)" in cost.note


OPENAI = RatedUsage("openai", "gpt-5-mini", "standard", 1, 1000, 100)
ANTHROPIC = RatedUsage("anthropic", "claude-haiku-4-5", "standard", 3, 3000, 300)
GROK = RatedUsage("grok", "grok-4", "standard", 1, 1000, 100)
NOT_RATED = RatedUsage(None, None, "standard", 2, 0, 0)  # pending and failed photos


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([NOT_RATED], "openai"),  # nothing rated yet
        ([OPENAI, ANTHROPIC, NOT_RATED], "openai"),  # its own provider rated some
        ([ANTHROPIC, NOT_RATED], "anthropic"),  # the fallback rated every photo
        ([GROK, ANTHROPIC], "anthropic"),  # two fallbacks: the one that rated the most
    ],
)
def test_a_job_is_reported_under_its_provider_unless_another_rated_every_photo(groups, expected):
    """A job handed whole to a fallback names the fallback; a shared one keeps its own name."""
    assert pricing.rated_by(groups, "openai") == expected


def status(cost: float | None, note: str | None = None) -> JobStatus:
    return JobStatus(
        jobId="j", shootId="s", providerId="anthropic", mode="fast", status=JobState.COMPLETED,
        totalImages=1, processedImages=1, failedImages=0, progress=1.0, eta=None,
        providerJobId=None, error=None, usage=TokenUsage(inputTokens=12345, outputTokens=678),
        costUsd=cost, costNote=note, createdAt="2026-01-01T00:00:00Z", startedAt=None,
        completedAt=None,
    )  # fmt: skip


def test_the_cost_in_words_shows_tokens_and_dollars_or_why_there_are_none():
    """`status` and the summary print this line."""
    assert pricing.cost_text(status(0.0157)) == "12,345 in, 678 out tokens: $0.0157"
    text = pricing.cost_text(status(None, "no price for x"))
    assert text == "12,345 in, 678 out tokens: cost unknown, no price for x"
