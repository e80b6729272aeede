"""Prices per provider and model, and how each provider turns a photo into tokens.

The table is `prices.json` beside this module, dated by when it was checked. A user file
(`$KULLBATCH_PRICES`, else `prices.json` in the user config folder) has the same shape and
overrides or adds what it names: a provider's fields, a model, a field of a model. A model in
neither has no price: its cost is None with a note saying so, never a guess.

How a photo becomes tokens for each provider is in `kullbatch.pricing.image_tokens`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kullbatch.errors import UsageError
from kullbatch.models import ItemRecord, JobStatus, Usage
from kullbatch.pricing.image_tokens import ImageRule

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "ANSWER_TOKENS",
    "PRICES_ENV",
    "URL_IMAGE_SIZE",
    "Estimate",
    "ImageRule",
    "JobCost",
    "Price",
    "PriceFileError",
    "PriceTable",
    "RatedUsage",
    "cost_text",
    "default_prices_path",
    "estimate",
    "item_cost",
    "job_cost",
    "load_prices",
    "priced",
    "rated_by",
    "text_tokens",
]

PRICES_ENV = "KULLBATCH_PRICES"
ANSWER_TOKENS = 90  # a rating: stars, label, title, a sentence or two, about eight tags
URL_IMAGE_SIZE = (1568, 1045)  # a URL photo's size is unknown: counted as a 3:2 photo this big
BATCH = "batch"
FLEX = "flex"
_DATED = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")  # claude-haiku-4-5-20251001 is claude-haiku-4-5


class PriceFileError(UsageError):
    """A price file that cannot be read or does not have the table's shape (a usage error)."""


class _FlexEntry(BaseModel):
    """A model's flex-tier price (`--mode flex`), where and when it was read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    source: str | None = None
    checked: str | None = None


class _ModelEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)  # USD per million input tokens
    output: float = Field(ge=0)  # USD per million output tokens
    image: ImageRule | None = None  # else the provider's
    note: str | None = None
    flex: _FlexEntry | None = None  # None: the model has no flex tier


class _ProviderEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_discount: float | None = Field(default=None, ge=0, le=1)  # 0.5: batch is half price
    offline: bool = False  # rates on this machine: no tokens at all
    image: ImageRule
    models: dict[str, _ModelEntry] = Field(default_factory=dict)


class _PriceFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    checked: str  # the date the prices were last compared with the providers' pages
    source: str | None = None
    providers: dict[str, _ProviderEntry]


@dataclass(frozen=True, slots=True)
class Price:
    """One model's price: USD per million tokens, and the batch API's discount."""

    provider: str
    model: str
    input: float
    output: float
    batch_discount: float | None
    flex: tuple[float, float] | None = None  # (input, output) at the flex tier; None: no flex

    def cost(self, usage: Usage, *, batch: bool = False, flex: bool = False) -> float:
        """USD for `usage`; batch answers get the provider's batch discount, flex answers the
        flex price."""
        per_in, per_out = self.flex if flex and self.flex is not None else (self.input, self.output)
        usd = (usage.input_tokens * per_in + usage.output_tokens * per_out) / 1_000_000
        if batch and self.batch_discount is not None:
            usd *= 1 - self.batch_discount
        return round(usd, 10)


class PriceTable:
    """The package's table merged with the user's file."""

    def __init__(self, data: _PriceFile, user_file: Path) -> None:
        self._data = data
        self.user_file = user_file
        self.checked = data.checked

    def _entry(self, provider: str, model: str) -> _ModelEntry | None:
        entry = self._data.providers.get(provider)
        if entry is None:
            return None
        found = entry.models.get(model)
        if found is None and (dated := _DATED.search(model)):
            found = entry.models.get(model[: dated.start()])
        return found

    def price(self, provider: str, model: str) -> Price | None:
        """The model's price, or None when neither table knows it."""
        entry = self._entry(provider, model)
        if entry is None:
            return None
        discount = self._data.providers[provider].batch_discount
        flex = None if entry.flex is None else (entry.flex.input, entry.flex.output)
        return Price(provider, model, entry.input, entry.output, discount, flex)

    def flex_models(self, provider: str) -> list[str]:
        """The models of `provider` with a flex price, for the refusal naming them."""
        entry = self._data.providers.get(provider)
        return [] if entry is None else [n for n, m in entry.models.items() if m.flex is not None]

    def image_rule(self, provider: str, model: str) -> ImageRule | None:
        """How `provider` counts a photo for `model`: the model's rule, else the provider's."""
        entry = self._data.providers.get(provider)
        if entry is None:
            return None
        model_entry = self._entry(provider, model)
        return model_entry.image if model_entry and model_entry.image else entry.image

    def offline(self, provider: str) -> bool:
        """Whether the provider rates on this machine, so a photo costs no tokens at all."""
        entry = self._data.providers.get(provider)
        return entry is not None and entry.offline

    def no_price(self, provider: str, model: str) -> str:
        """The note for a model without a price: what is missing and where to add it."""
        return (
            f"no price for {provider} model {model!r} (prices checked {self.checked}): "
            f"add it to {self.user_file}"
        )


def default_prices_path(env: Mapping[str, str]) -> Path:
    """`$KULLBATCH_PRICES`, else `prices.json` in the user config folder."""
    if value := env.get(PRICES_ENV):
        return Path(value).expanduser()
    return Path(platformdirs.user_config_dir("kullbatch", appauthor=False)) / "prices.json"


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Nested objects merge key by key; an image rule or any other value is replaced whole."""
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and key != "image":
            merged[key] = _merge(old, value)
        else:
            merged[key] = value
    return merged


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PriceFileError(f"prices file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PriceFileError(f"prices file {path}: expected a JSON object")
    return data


def load_prices(env: Mapping[str, str] | None = None) -> PriceTable:
    """The package's table, with the user's file (if it exists) laid over it."""
    env = os.environ if env is None else env
    data: dict[str, Any] = json.loads(
        resources.files("kullbatch.pricing").joinpath("prices.json").read_text(encoding="utf-8")
    )
    user_file = default_prices_path(env)
    if user_file.is_file():
        data = _merge(data, _read(user_file))
    try:
        return PriceTable(_PriceFile.model_validate(data), user_file)
    except ValidationError as exc:
        raise PriceFileError(f"prices file {user_file}: {exc}") from exc


def text_tokens(text: str) -> int:
    """About four characters a token: the estimate for prompts and schemas."""
    return math.ceil(len(text) / 4)


def item_cost(table: PriceTable, item: ItemRecord, provider: str, model: str) -> float | None:
    """USD for one photo's stored usage, priced by who rated it (else the job's provider and
    model); 0 when nothing was used, None when that model has no price."""
    usage = item.usage
    if usage.input_tokens == 0 and usage.output_tokens == 0:
        return 0.0
    price = table.price(item.provider or provider, item.model or model)
    if price is None:
        return None
    return price.cost(usage, batch=item.pricing == BATCH, flex=item.pricing == FLEX)


def priced(
    table: PriceTable, items: Iterable[ItemRecord], provider: str, model: str
) -> list[ItemRecord]:
    """The items with `cost_usd` filled in."""
    return [replace(item, cost_usd=item_cost(table, item, provider, model)) for item in items]


@dataclass(frozen=True, slots=True)
class RatedUsage:
    """Stored usage of a job's photos rated by one provider and model at one pricing."""

    provider: str | None
    model: str | None
    pricing: str
    photos: int
    input_tokens: int
    output_tokens: int


def rated_by(groups: Iterable[RatedUsage], provider: str) -> str:
    """Who rated the job: its own `provider` if it rated any photo (or none was rated yet),
    else the provider that rated the most (a job its provider handed whole to a fallback)."""
    photos: Counter[str] = Counter()
    for group in groups:
        if group.provider is not None:  # photos not rated (yet) have no provider
            photos[group.provider] += group.photos
    if not photos or provider in photos:
        return provider
    return photos.most_common(1)[0][0]


@dataclass(frozen=True, slots=True)
class JobCost:
    """A job's tokens so far and their cost; `usd` is None (and `note` says why) when some
    photos were rated by a model without a price."""

    usage: Usage
    usd: float | None
    note: str | None = None


def job_cost(table: PriceTable, groups: Iterable[RatedUsage], provider: str, model: str) -> JobCost:
    """The sum of the photos' costs, group by group (the same figures `item_cost` gives)."""
    groups = list(groups)
    usage = Usage(sum(g.input_tokens for g in groups), sum(g.output_tokens for g in groups))
    usd = 0.0
    unpriced: Counter[tuple[str, str]] = Counter()
    for group in groups:
        if group.input_tokens == 0 and group.output_tokens == 0:
            continue
        who = (group.provider or provider, group.model or model)
        price = table.price(*who)
        if price is None:
            unpriced[who] += group.photos
            continue
        tokens = Usage(group.input_tokens, group.output_tokens)
        usd += price.cost(tokens, batch=group.pricing == BATCH, flex=group.pricing == FLEX)
    if unpriced:
        notes = [f"{table.no_price(*who)} ({n} photos)" for who, n in unpriced.items()]
        return JobCost(usage, None, "; ".join(notes))
    return JobCost(usage, round(usd, 10))


def cost_text(status: JobStatus) -> str:
    """`12,345 in, 678 out tokens: $0.0157`, or why the cost is unknown."""
    usage = status.usage
    tokens = f"{usage.inputTokens:,} in, {usage.outputTokens:,} out tokens"
    if status.costUsd is None:
        return f"{tokens}: cost unknown, {status.costNote or 'no price'}"
    return f"{tokens}: {_usd(status.costUsd)}"


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a dry run prints: the photos, their tokens, and the price in each mode."""

    images: int
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    fast_usd: float | None
    economy_usd: float | None
    notes: tuple[str, ...] = ()
    cached_images: int = 0  # rated before (the result cache): free, and counted in `images`
    flex_usd: float | None = None  # the model's flex price, where it has one
    budget: dict[str, Any] | None = None  # --budget: {"budgetUsd", "fits", "photos"}

    def document(self) -> dict[str, Any]:
        """The `process --dry-run --json` document of DESIGN.md, with the notes."""
        return {
            "images": self.images,
            "provider": self.provider,
            "model": self.model,
            "estimate": {
                "inputTokens": self.input_tokens,
                "outputTokens": self.output_tokens,
                "fastUsd": self.fast_usd,
                "economyUsd": self.economy_usd,
                **({} if self.flex_usd is None else {"flexUsd": self.flex_usd}),
            },
            "cachedImages": self.cached_images,
            "notes": list(self.notes),
            **({} if self.budget is None else {"budget": self.budget}),
        }

    def lines(self) -> list[str]:
        """The same in words, for the terminal."""
        no_economy = "no price" if self.fast_usd is None else "no batch API"
        return [
            f"dry run: {self.images} photos for {self.provider} {self.model}; nothing was sent",
            f"  tokens (estimated): {self.input_tokens:,} in, {self.output_tokens:,} out",
            f"  fast mode:    {_usd(self.fast_usd)}",
            f"  economy mode: {_usd(self.economy_usd, no_economy)}",
            *(
                [f"  {self.cached_images} photos rated before: from the cache, free"]
                if self.cached_images
                else []
            ),
            *([] if self.flex_usd is None else [f"  flex mode:    {_usd(self.flex_usd)}"]),
            *_budget_lines(self.budget),
            *(f"  note: {note}" for note in self.notes),
        ]


def _budget_lines(budget: dict[str, Any] | None) -> list[str]:
    if budget is None:
        return []
    fits = "fits" if budget["fits"] else f"does not fit: {budget['photos']} photos would be rated"
    return [f"  budget {_usd(budget['budgetUsd'])}: the shoot {fits}"]


def _usd(value: float | None, missing: str = "no price") -> str:
    return missing if value is None else f"${value:,.4f}"


def estimate(
    table: PriceTable,
    provider: str,
    model: str,
    sizes: Sequence[tuple[int, int] | None],
    prompt_tokens: int,
    *,
    economy: bool,
    unreadable: Sequence[str] = (),
    cached: int = 0,
) -> Estimate:
    """Tokens and price of rating photos of `sizes` (None: a URL of unknown size).

    Each photo costs its image tokens by the provider's rule plus `prompt_tokens`, and answers
    with about ANSWER_TOKENS. `economy` says whether the provider has a batch API here;
    `unreadable` are the photos left out, each with why; `cached` photos (not in `sizes`)
    were rated before and cost nothing.
    """
    rule = table.image_rule(provider, model)
    notes = []
    if unreadable:
        more = " …" if len(unreadable) > 3 else ""  # noqa: PLR2004
        listed = "; ".join(unreadable[:3])
        notes.append(f"{len(unreadable)} photos cannot be read and are not counted: {listed}{more}")
    urls = sum(size is None for size in sizes)
    if urls:
        width, height = URL_IMAGE_SIZE
        notes.append(f"{urls} photos are URLs of unknown size: each counted as {width}x{height}")
    if rule is None:
        notes.append(f"no image rule for {provider}: image tokens are not counted")
        image_tokens = 0
    else:
        image_tokens = sum(rule.tokens(*(size or URL_IMAGE_SIZE)) for size in sizes)
    count = 0 if table.offline(provider) else len(sizes)
    usage = Usage(image_tokens + prompt_tokens * count, ANSWER_TOKENS * count)
    price = table.price(provider, model)
    fast = economy_usd = flex_usd = None
    if price is None:
        notes.append(table.no_price(provider, model))
    else:
        fast = price.cost(usage)
        flex_usd = None if price.flex is None else price.cost(usage, flex=True)
        if economy and price.batch_discount is not None:
            economy_usd = price.cost(usage, batch=True)
    return Estimate(
        images=len(sizes) + len(unreadable) + cached,
        provider=provider,
        model=model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        fast_usd=fast,
        economy_usd=economy_usd,
        notes=tuple(notes),
        cached_images=cached,
        flex_usd=flex_usd,
    )
