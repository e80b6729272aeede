"""The provider registry: names, aliases, key and base URL variables, default models.

Plain data with no import of any adapter, so that adapters can read it (an auth error names the
variable to set) while the package's `create_provider` loads adapters lazily by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kullbatch.errors import FatalJobError

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

    def base_url(self, env: Mapping[str, str], default: str = "") -> str:
        """The first base URL variable that is set (trimmed, no trailing slash), else `default`.

        A value that is not an http(s) URL with a host is a FatalJobError naming the variable:
        every request would fail the same way, so the job stops before the first one.
        """
        for var in self.base_url_vars:
            if value := env.get(var, "").strip():
                if not usable_url(value):
                    raise FatalJobError(
                        f"{self.name}: {var} is not a usable URL: {without_credentials(value)!r}"
                        " (it needs http:// or https:// and a host, e.g. https://host/v1)"
                    )
                return value.rstrip("/")
        return default

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


def usable_url(value: str) -> bool:
    """An http or https URL with a host (and a port that is a port, if any)."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # ValueError for a port out of range or not a number
    except ValueError:
        return False
    return parts.scheme.lower() in {"http", "https"} and bool(parts.hostname)


_CREDENTIALS = re.compile(r"^([a-z][a-z0-9+.-]*://)?.*@", re.IGNORECASE | re.DOTALL)


def without_credentials(url: str) -> str:
    """`https://user:secret@host/v1` -> `https://***@host/v1`: a URL fit for a message."""
    return _CREDENTIALS.sub(r"\1***@", url)


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
