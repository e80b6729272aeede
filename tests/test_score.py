"""`score` (0-100): asked of every provider, measured by the local rater, optional when stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from kullbatch.errors import Transient
from kullbatch.models import Rating
from kullbatch.providers.base import DEFAULT_PROMPT, RATING_SCHEMA, parse_rating
from kullbatch.providers.local import Measurements, rating_for, score_for
from kullbatch.rubrics.loader import load_rubric
from tests.test_local_rater import jpeg, rate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "photos"
ANSWER = {
    "starRating": 4,
    "colorLabel": "green",
    "title": "t",
    "description": "d",
    "tags": [],
    "issues": [],
    "score": 73,
}


def test_the_schema_asks_every_provider_for_a_score() -> None:
    """Required (strict structured output), an integer without numeric bounds (Anthropic
    refuses them), and the prompts say what it means."""
    assert RATING_SCHEMA["properties"]["score"] == {"type": "integer"}
    assert "score" in RATING_SCHEMA["required"]
    assert set(RATING_SCHEMA["required"]) == set(RATING_SCHEMA["properties"])
    assert "score from 0 to 100" in DEFAULT_PROMPT
    assert "score from 0 to 100" in load_rubric("wedding", {}).prompt()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"score": None}, "score: Field required"),
        ({"score": 101}, "score"),
        ({"score": -1}, "score"),
        ({"score": True}, "a score is a whole number"),
        ({"score": "80"}, "a score is a whole number"),
    ],
)
def test_an_answer_with_a_bad_score_is_worth_another_try(change: dict, problem: str) -> None:
    with pytest.raises(Transient, match=problem):
        parse_rating(json.dumps(ANSWER | change), source="openai")


def test_an_answer_without_a_score_is_worth_another_try() -> None:
    answer = {k: v for k, v in ANSWER.items() if k != "score"}
    with pytest.raises(Transient, match="score: Field required"):
        parse_rating(json.dumps(answer), source="anthropic")
    with pytest.raises(Transient, match="not a valid rating"):
        parse_rating("[1, 2]", source="anthropic")  # not an object at all
    assert parse_rating(ANSWER, source="gemini").score == 73


def test_a_result_stored_before_the_score_existed_still_loads() -> None:
    stored = {k: v for k, v in ANSWER.items() if k != "score"}
    assert Rating.model_validate_json(json.dumps(stored)).score is None


def test_the_local_score_lies_in_its_stars_band_and_orders_by_sharpness() -> None:
    """Each star owns 20 points; within a band the sharper frame scores higher."""
    base = Measurements(detail=1400.0, mean=120.0, shadows=0.01, highlights=0.01, contrast=50.0)
    softer = Measurements(detail=650.0, mean=120.0, shadows=0.01, highlights=0.01, contrast=50.0)
    assert rating_for(base).starRating == rating_for(softer).starRating
    assert rating_for(base).score > rating_for(softer).score
    for stars in range(1, 6):
        assert (stars - 1) * 20 <= score_for(base, stars) <= (stars - 1) * 20 + 19


async def test_the_local_rater_scores_a_blurred_copy_lower() -> None:
    with Image.open(EXAMPLES / "01_harbour_sharp.jpg") as opened:
        sharp = opened.convert("RGB")
    crisp = await rate(jpeg(sharp))
    blurred = await rate(jpeg(sharp.filter(ImageFilter.GaussianBlur(3))))
    assert crisp.score is not None and blurred.score is not None
    assert crisp.score > blurred.score
    assert 0 <= blurred.score <= 100
