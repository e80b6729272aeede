"""What a job may spend and what it spent: flex mode's checks, `--budget`, the status figures.

- A flex job is refused before anything is sent (a usage error, exit 2) when its provider has
  no flex tier, or its model no flex price (the refusal names the models that have one).
- A job with a budget gets a `run.budget.Budget`: the ceiling stored with the job, what its
  stored answers cost so far (every earlier run of it), and the dry run's rule for one photo.
- The status object carries the budget, the photos rated at each tier, and what flex saved.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kullbatch.errors import FieldError
from kullbatch.models import Mode
from kullbatch.pricing import prices as pricing
from kullbatch.pricing.prices import BATCH
from kullbatch.pricing.tiers import flex_saved, photo_estimate, tier_counts
from kullbatch.providers.base import RATING_SCHEMA
from kullbatch.providers.flex import FLEX, FLEX_PROVIDERS
from kullbatch.run.budget import Budget

if TYPE_CHECKING:
    from kullbatch.models import Answer
    from kullbatch.pricing.prices import PriceTable, RatedUsage
    from kullbatch.store.database import Store
    from kullbatch.store.rows import JobRow

__all__ = [
    "budget_for",
    "check_budget",
    "check_flex",
    "photo_size",
    "prompt_tokens",
    "status_fields",
]


def prompt_tokens(prompt: str, system: str | None) -> int:
    """The text sent with every photo: the prompt, the system prompt and the rating schema."""
    schema = json.dumps(RATING_SCHEMA)
    return sum(pricing.text_tokens(text) for text in (prompt, system or "", schema))


def photo_size(max_edge: int) -> tuple[int, int]:
    """A photo of unknown size, as the dry run counts a URL: 3:2 at the job's long edge."""
    width, height = pricing.URL_IMAGE_SIZE
    return max_edge, max(1, round(max_edge * height / width))


def check_flex(provider: str, model: str, table: PriceTable) -> None:
    """`--mode flex` only where the provider has a flex tier and the model a flex price."""
    if provider not in FLEX_PROVIDERS:
        raise FieldError(
            f"{provider} has no flex tier, so flex mode is not possible; flex mode works "
            f"with: {', '.join(sorted(FLEX_PROVIDERS))} (or use --mode fast or economy)",
            "mode",
        )
    price = table.price(provider, model)
    if price is None or price.flex is None:
        having = ", ".join(table.flex_models(provider)) or "none in the price table"
        raise FieldError(
            f"{provider} model {model!r} has no flex tier (prices checked {table.checked}); "
            f"the {provider} models with one: {having}",
            "mode",
        )


def check_budget(usd: float | None, provider: str, model: str, table: PriceTable) -> None:
    """A budget must be a positive amount, for a model whose price is known."""
    if usd is None:
        return
    if usd <= 0:
        raise FieldError(f"--budget must be a positive amount of USD, not {usd}", "budgetUsd")
    if not table.offline(provider) and table.price(provider, model) is None:
        raise FieldError(f"--budget needs a price: {table.no_price(provider, model)}", "budgetUsd")


async def budget_for(store: Store, job: JobRow, table: PriceTable) -> Budget | None:
    """The job's `Budget` (None without one): what its stored answers cost, its ceiling."""
    if job.budget_usd is None:
        return None
    spent = pricing.job_cost(
        table, await store.tallies.usage(job.id), job.provider_id, job.model
    ).usd
    estimate = photo_estimate(
        table,
        job.provider_id,
        job.model,
        prompt_tokens(job.prompt, job.system_prompt),
        photo_size(job.options.max_edge),
        batch=job.mode is Mode.ECONOMY,
        flex=job.mode is Mode.FLEX,
    )
    # an economy job's photos in provider batches not read yet are in flight (on a resume)
    batched = [r for r in await store.batches.of_job(job.id) if not r.fetched]

    def cost(answer: Answer, provider: str, model: str) -> float:
        price = table.price(provider or job.provider_id, model or job.model)
        if price is None:
            return 0.0
        return price.cost(answer.usage, batch=answer.tier == BATCH, flex=answer.tier == FLEX)

    return Budget(
        job.budget_usd,
        spent=spent or 0.0,
        estimate=estimate or 0.0,
        cost=cost,
        in_flight=sum(record.requests for record in batched),
    )


def status_fields(table: PriceTable, groups: list[RatedUsage], job: JobRow) -> dict[str, Any]:
    """`budgetUsd`, `tiers` and (flex mode) `flexSavedUsd` of the status object."""
    fields: dict[str, Any] = {"budgetUsd": job.budget_usd, "tiers": tier_counts(groups)}
    if job.mode is Mode.FLEX:
        fields["flexSavedUsd"] = flex_saved(table, groups, job.provider_id, job.model)
    return fields
