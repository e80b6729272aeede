"""`process --dry-run --compare-bursts`: how many comparisons a job would send, and their cost.

Stars are not known before a run, so the bursts are found the way a run finds them (pHash and
capture time, from the very decode the dry run makes of each photo to size it) and each burst
counts with its first `MAX_FRAMES` frames. Each comparison request costs its frames' image
tokens by the provider's rule, the question, the labels and the schema, and about
`ANSWER_TOKENS` out; bursts bigger than the provider's per-request image limit count their
rounds (`run.compare.requests_for`). Comparisons go out in fast mode: they are priced at the
list price in both of the estimate's modes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from kullbatch.media import bursts
from kullbatch.models import Usage
from kullbatch.pricing import prices as pricing
from kullbatch.providers.compare import (
    COMPARE_SCHEMA,
    MAX_FRAMES,
    compare_prompt,
    frame_label,
    image_limit,
)
from kullbatch.run.compare import images_for, requests_for

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kullbatch.models import Fingerprint, GroupingOptions

ANSWER_TOKENS = 60  # a verdict: best, a ranking of up to eight numbers, one sentence


@dataclass(frozen=True, slots=True)
class ComparisonEstimate:
    """The comparisons of a dry run: bursts, requests, images sent, tokens and price."""

    bursts: int
    requests: int
    images: int
    input_tokens: int
    output_tokens: int
    usd: float | None  # None: the model has no price (or the provider compares nothing)

    def document(self) -> dict[str, Any]:
        return {
            "bursts": self.bursts,
            "requests": self.requests,
            "images": self.images,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "fastUsd": self.usd,
        }

    def line(self) -> str:
        usd = "no price" if self.usd is None else f"${self.usd:,.4f}"
        return (
            f"  --compare-bursts: {count(self.bursts, 'burst')}, "
            f"{count(self.requests, 'request')}, {count(self.images, 'image')}; "
            f"{self.input_tokens:,} in, {self.output_tokens:,} out "
            f"tokens: {usd} (fast mode, in both totals)"
        )


def estimate_comparisons(
    table: pricing.PriceTable,
    provider: str,
    model: str,
    photos: Sequence[tuple[int, Fingerprint | None, tuple[int, int] | None]],
    grouping: GroupingOptions,
) -> ComparisonEstimate:
    """`photos`: (manifest position, fingerprint, prepared size) of each local photo."""
    frames = [
        bursts.Frame(str(position), position, taken.captured, taken.phash, 0, 0.0)
        for position, taken, _ in photos
        if taken is not None
    ]
    sizes = {str(position): size for position, _, size in photos}
    found = bursts.group_frames(frames, gap=grouping.gap, max_distance=grouping.max_distance)
    if table.offline(provider):  # local compares nothing: its sharpness pick stays
        return ComparisonEstimate(len(found), 0, 0, 0, 0, 0.0)
    rule = table.image_rule(provider, model)
    limit = image_limit(provider)
    schema = pricing.text_tokens(json.dumps(COMPARE_SCHEMA))
    requests = images = input_tokens = 0
    for burst in found:
        keys = burst.keys[:MAX_FRAMES]
        count = len(keys)
        asked = requests_for(count, limit)
        sent = images_for(count, limit)
        tokens = [rule.tokens(*size) if rule and (size := sizes[k]) else 0 for k in keys]
        mean = sum(tokens) / count
        input_tokens += round(sum(tokens) + mean * (sent - count))
        text = compare_prompt(count) + frame_label(count) * count
        input_tokens += (pricing.text_tokens(text) + schema) * asked
        requests += asked
        images += sent
    output_tokens = ANSWER_TOKENS * requests
    price = table.price(provider, model)
    usd = None if price is None else price.cost(Usage(input_tokens, output_tokens))
    return ComparisonEstimate(len(found), requests, images, input_tokens, output_tokens, usd)


@dataclass(frozen=True, slots=True)
class EstimateWithComparisons(pricing.Estimate):
    """A dry run's estimate whose totals include the comparisons, listed apart as well."""

    comparisons: ComparisonEstimate | None = None

    @classmethod
    def of(cls, base: pricing.Estimate, comparisons: ComparisonEstimate) -> EstimateWithComparisons:
        """`base` (the photos' ratings) plus the comparisons, at the list price in both modes."""
        values = {f.name: getattr(base, f.name) for f in fields(base)}
        add = comparisons.usd
        return cls(
            **values
            | {
                "input_tokens": base.input_tokens + comparisons.input_tokens,
                "output_tokens": base.output_tokens + comparisons.output_tokens,
                "fast_usd": _plus(base.fast_usd, add),
                "economy_usd": _plus(base.economy_usd, add),
            },
            comparisons=comparisons,
        )

    def document(self) -> dict[str, Any]:
        document = super(EstimateWithComparisons, self).document()
        if self.comparisons is not None:
            document["comparisons"] = self.comparisons.document()
        return document

    def lines(self) -> list[str]:
        lines = super(EstimateWithComparisons, self).lines()
        if self.comparisons is not None:
            lines.insert(4, self.comparisons.line())
        return lines


def _plus(total: float | None, more: float | None) -> float | None:
    return None if total is None or more is None else round(total + more, 10)


def count(number: int, noun: str) -> str:
    """`1 burst`, `3 bursts`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
