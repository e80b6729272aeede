"""What a job's tiers cost and saved, and what one photo is expected to cost (`--budget`).

A job's photos are priced at the tier that answered them (`batch_items.pricing`: `standard`,
`batch` or `flex`); the status object counts the photos of each tier and says what the flex
tier saved against the list price. A budget starts from the dry run's rule for one photo.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from kullbatch.models import Usage
from kullbatch.pricing.prices import ANSWER_TOKENS, FLEX

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kullbatch.pricing.prices import PriceTable, RatedUsage

__all__ = ["flex_saved", "photo_estimate", "tier_counts"]


def tier_counts(groups: Iterable[RatedUsage]) -> dict[str, int]:
    """Photos rated at each tier (photos not rated have no provider and are not counted)."""
    counts: Counter[str] = Counter()
    for group in groups:
        if group.provider is not None:
            counts[group.pricing] += group.photos
    return dict(counts)


def flex_saved(
    table: PriceTable, groups: Iterable[RatedUsage], provider: str, model: str
) -> float | None:
    """USD the flex answers saved against the list price; None when a price is missing."""
    saved = 0.0
    for group in groups:
        if group.pricing != FLEX:
            continue
        price = table.price(group.provider or provider, group.model or model)
        if price is None:
            return None
        tokens = Usage(group.input_tokens, group.output_tokens)
        saved += price.cost(tokens) - price.cost(tokens, flex=True)
    return round(saved, 10)


def photo_estimate(
    table: PriceTable,
    provider: str,
    model: str,
    prompt_tokens: int,
    size: tuple[int, int],
    *,
    batch: bool = False,
    flex: bool = False,
) -> float | None:
    """USD for one photo of `size` by the dry run's rule (image tokens by the provider's rule,
    the prompt, about ANSWER_TOKENS out); None without a price."""
    price = table.price(provider, model)
    if price is None:
        return None
    rule = table.image_rule(provider, model)
    image = 0 if rule is None else rule.tokens(*size)
    usage = Usage(image + prompt_tokens, ANSWER_TOKENS)
    return price.cost(usage, batch=batch, flex=flex)
