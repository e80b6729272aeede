"""The providers: the registry (from `registry`), the taxonomy, and adapters imported lazily."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kullbatch.errors import (
    ContentBlocked,
    FatalJobError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Refused,
    Retryable,
    Transient,
    provider_specific,
)
from kullbatch.providers.base import Capabilities, Provider, WireRequest
from kullbatch.providers.registry import PROVIDERS, ProviderSpec, key_hint, resolve

if TYPE_CHECKING:
    from collections.abc import Mapping

    import aiohttp

__all__ = [
    "PROVIDERS",
    "Capabilities",
    "ContentBlocked",
    "FatalJobError",
    "PermanentImageError",
    "Provider",
    "ProviderError",
    "ProviderSpec",
    "RateLimited",
    "Refused",
    "Retryable",
    "Transient",
    "WireRequest",
    "create_provider",
    "key_hint",
    "provider_specific",
    "resolve",
]


def create_provider(
    spec: ProviderSpec,
    model: str,
    session: aiohttp.ClientSession,
    env: Mapping[str, str],
) -> Provider:
    """Build the adapter; a missing key is a FatalJobError before any request is sent."""
    if spec.key_vars and not spec.key_optional and not spec.key_is_set(env):
        names = " or ".join(spec.key_vars)
        raise FatalJobError(f"{spec.name}: set {names} in the environment")
    module = importlib.import_module(f"kullbatch.providers.{spec.module}")
    provider: Provider = module.create(model=model, session=session, env=env)
    return provider
