"""The providers: the registry (from `registry`), the taxonomy, and adapters and batch clients
imported lazily, by the module names the registry gives."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kullbatch.errors import (
    ContentBlocked,
    FatalJobError,
    FlexUnavailable,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Refused,
    Retryable,
    Transient,
    provider_specific,
)
from kullbatch.providers.base import (
    BatchAdapter,
    BatchClient,
    Capabilities,
    Credentials,
    Provider,
    WireRequest,
)
from kullbatch.providers.registry import PROVIDERS, ProviderSpec, key_hint, resolve

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "PROVIDERS",
    "BatchAdapter",
    "BatchClient",
    "Capabilities",
    "ContentBlocked",
    "Credentials",
    "FatalJobError",
    "FlexUnavailable",
    "PermanentImageError",
    "Provider",
    "ProviderError",
    "ProviderSpec",
    "RateLimited",
    "Refused",
    "Retryable",
    "Transient",
    "WireRequest",
    "create_batch_client",
    "create_provider",
    "key_hint",
    "provider_specific",
    "resolve",
]


def create_provider(
    spec: ProviderSpec,
    model: str,
    session: aiohttp.ClientSession,
    credentials: Credentials,
) -> Provider:
    """Build the adapter with the job's credentials (`spec.credentials(env)`, which refuses a
    missing key before any request is sent)."""
    module = importlib.import_module(f"kullbatch.providers.{spec.module}")
    provider: Provider = module.create(model=model, session=session, credentials=credentials)
    return provider


def create_batch_client(
    spec: ProviderSpec,
    model: str,
    session: aiohttp.ClientSession,
    credentials: Credentials,
) -> BatchClient | None:
    """The provider's batch client, with the adapter whose requests it batches (`adapter`),
    built with the job's credentials; None for a provider without a batch API."""
    if spec.batch is None:
        return None
    module = importlib.import_module(f"kullbatch.providers.{spec.batch}")
    client: BatchClient = module.create_client(
        model=model, session=session, credentials=credentials
    )
    return client
