"""The provider registry: names, aliases, key and base URL variables, default models.

Plain data with no import of any adapter, so that adapters can read it (an auth error names the
variable to set) while the package's `create_provider` loads adapters lazily by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PROVIDERS", "ProviderSpec", "key_hint", "resolve"]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What `kullbatch providers` lists and how an adapter is found."""

    name: str
    module: str
    default_model: str
    key_vars: tuple[str, ...]
    base_url_vars: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    key_optional: bool = False
    economy: bool = False

    def key_is_set(self, env: Mapping[str, str]) -> bool:
        return any(env.get(var) for var in self.key_vars)

    @property
    def key_hint(self) -> str:
        """`[check GEMINI_API_KEY or GOOGLE_API_KEY]`: appended to an auth error's message."""
        return f"[check {' or '.join(self.key_vars)}]" if self.key_vars else ""


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec("local", "local", "local-v1", (), ()),
        ProviderSpec(
            "openai",
            "openai",
            "gpt-5.4-mini",
            ("OPENAI_API_KEY",),
            ("OPENAI_BASE_URL",),
            economy=True,
        ),
        ProviderSpec(
            "anthropic",
            "anthropic",
            "claude-haiku-4-5",
            ("ANTHROPIC_API_KEY",),
            ("ANTHROPIC_BASE_URL",),
            economy=True,
        ),
        ProviderSpec(
            "gemini",
            "gemini",
            "gemini-2.5-flash",
            ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
            ("GOOGLE_GEMINI_BASE_URL", "GEMINI_BASE_URL"),
            aliases=("google",),
        ),
        ProviderSpec(
            "grok",
            "grok",
            "grok-4-1-fast-non-reasoning",
            ("XAI_API_KEY",),
            ("XAI_BASE_URL",),
            aliases=("xai",),
        ),
        ProviderSpec(
            "groq",
            "groq",
            "meta-llama/llama-4-scout-17b-16e-instruct",
            ("GROQ_API_KEY",),
            ("GROQ_BASE_URL",),
        ),
        ProviderSpec(
            "openai-compatible",
            "openai_compatible",
            "qwen3-vl:8b",
            ("OPENAI_COMPATIBLE_API_KEY",),
            ("OPENAI_COMPATIBLE_BASE_URL",),
            key_optional=True,
        ),
    )
}


def key_hint(provider_name: str) -> str:
    """The hint naming the variables that hold `provider_name`'s key, for auth errors."""
    return PROVIDERS[provider_name].key_hint


_ALIASES = {alias: spec.name for spec in PROVIDERS.values() for alias in spec.aliases}


def resolve(provider_id: str, model: str | None) -> tuple[ProviderSpec, str]:
    """Map `openai`, `xai`, or the spec's `openai-gpt-5` onto (spec, model).

    Raises ValueError for an unknown name, so the CLI can exit 2 with the list of names.
    """
    wanted = provider_id.strip().lower()
    name = _ALIASES.get(wanted, wanted)
    if name in PROVIDERS:
        spec = PROVIDERS[name]
        return spec, model or spec.default_model
    # longest provider name first, so "openai-compatible-x" is not read as openai + "compatible-x"
    for candidate in sorted([*PROVIDERS, *_ALIASES], key=len, reverse=True):
        prefix = candidate + "-"
        if wanted.startswith(prefix) and len(wanted) > len(prefix):
            spec = PROVIDERS[_ALIASES.get(candidate, candidate)]
            return spec, model or provider_id.strip()[len(prefix) :]
    known = ", ".join(sorted(PROVIDERS))
    raise ValueError(f"unknown provider {provider_id!r}; choose one of: {known}")
