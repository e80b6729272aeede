"""The provider registry: names, aliases, key and base URL variables, default models.

Plain data with no import of any adapter, so that adapters can read it (an auth error names the
variable to set) while the package's `create_provider` and `create_batch_client` load adapters
and batch clients lazily by module name. A provider's credentials are read from the
environment here, once per job (`ProviderSpec.credentials`), for its adapter, its batch client
and its rate-limit gate alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kullbatch.errors import FatalJobError
from kullbatch.providers.base import Credentials

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PROVIDERS", "ProviderSpec", "key_hint", "resolve"]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What `kullbatch providers` lists, how a provider's adapter (and batch client) is found,
    and how its credentials are read.

    `key_vars` in the order the provider's SDK reads them: the first one set wins. The key
    goes in `key_header`, after `key_scheme`; `header_vars` name optional variables sent as
    headers too (OpenAI's organisation and project). `batch` is the module, under
    `kullbatch.providers`, of the provider's batch client: None without a batch API.
    """

    name: str
    module: str
    default_model: str
    key_vars: tuple[str, ...]
    base_url_vars: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    key_optional: bool = False
    default_base_url: str = ""
    key_header: str = "Authorization"
    key_scheme: str = "Bearer "
    header_vars: tuple[tuple[str, str], ...] = ()
    batch: str | None = None

    @property
    def economy(self) -> bool:
        """The provider has a batch API: economy mode is possible."""
        return self.batch is not None

    def key_is_set(self, env: Mapping[str, str]) -> bool:
        return self._key(env) is not None

    def _key(self, env: Mapping[str, str]) -> tuple[str, str] | None:
        """(variable, key) of the first key variable set, blank values skipped."""
        found = ((var, env.get(var, "").strip()) for var in self.key_vars)
        return next(((var, key) for var, key in found if key), None)

    def credentials(self, env: Mapping[str, str]) -> Credentials:
        """The key, base URL and auth headers, read once: what the adapter sends, what the
        batch client sends and whose account the rate-limit gate paces are the same.

        A missing key (unless optional) or a base URL that is not one is a FatalJobError
        naming the variable, before any request is sent.
        """
        found = self._key(env)
        if found is None and self.key_vars and not self.key_optional:
            raise FatalJobError(
                f"{self.name}: set {' or '.join(self.key_vars)} in the environment",
                env_var=self.key_vars,
            )
        base_url = self.base_url(env, self.default_base_url)
        if found is None:
            return Credentials(self.name, base_url)
        key_var, key = found
        headers = {self.key_header: f"{self.key_scheme}{key}"}
        for var, header in self.header_vars:
            if value := env.get(var, "").strip():
                headers[header] = value
        return Credentials(self.name, base_url, key, key_var, headers)

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
                        " (it needs http:// or https:// and a host, e.g. https://host/v1)",
                        env_var=var,
                    )
                return value.rstrip("/")
        return default

    @property
    def key_hint(self) -> str:
        """`[check GOOGLE_API_KEY or GEMINI_API_KEY]`: appended to an auth error's message."""
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
            default_base_url="https://api.openai.com/v1",
            header_vars=(
                ("OPENAI_ORG_ID", "OpenAI-Organization"),
                ("OPENAI_PROJECT_ID", "OpenAI-Project"),
            ),
            batch="batch.openai",
        ),
        ProviderSpec(
            "anthropic",
            "anthropic",
            "claude-haiku-4-5",
            ("ANTHROPIC_API_KEY",),
            ("ANTHROPIC_BASE_URL",),
            default_base_url="https://api.anthropic.com",
            key_header="x-api-key",
            key_scheme="",
            batch="batch.anthropic",
        ),
        ProviderSpec(
            "gemini",
            "gemini",
            "gemini-2.5-flash",
            # python-genai's order: with both set, GOOGLE_API_KEY is used
            ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
            ("GOOGLE_GEMINI_BASE_URL", "GEMINI_BASE_URL"),
            aliases=("google",),
            default_base_url="https://generativelanguage.googleapis.com",
            key_header="x-goog-api-key",
            key_scheme="",
        ),
        ProviderSpec(
            "grok",
            "grok",
            "grok-4-1-fast-non-reasoning",
            ("XAI_API_KEY",),
            ("XAI_BASE_URL",),
            aliases=("xai",),
            default_base_url="https://api.x.ai/v1",
        ),
        ProviderSpec(
            "groq",
            "groq",
            "meta-llama/llama-4-scout-17b-16e-instruct",
            ("GROQ_API_KEY",),
            ("GROQ_BASE_URL",),
            default_base_url="https://api.groq.com",
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
