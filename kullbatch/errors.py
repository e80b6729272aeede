"""The error taxonomy every provider raises and the engine reads; the bottom layer with models.

    ProviderError
    ├── Retryable                     worth another attempt, after a wait
    │   ├── RateLimited               429, Anthropic 529  -> rate-limit schedule
    │   └── Transient                 408, 409, 5xx, drops, timeouts, bad answers -> other schedule
    │       └── Refused               the model declined the photo (refusal, content filter)
    ├── PermanentImageError           this image cannot be rated (400/413/422 about the image)
    │   └── ContentBlocked            the provider's policy blocked the photo itself
    └── FatalJobError                 the whole job must stop (auth, model, credit, missing key)

`Refused` and `ContentBlocked` are this provider's verdict, which another model may not share:
with `--fallback`, the photo goes to the next provider at once.

Every error carries everything as constructor arguments and is never changed after it is
built: to add what an answer's headers said about the limits, build a copy (`with_limits`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kullbatch.models import RateLimits

__all__ = [
    "ContentBlocked",
    "FatalJobError",
    "PermanentImageError",
    "ProviderError",
    "RateLimited",
    "Refused",
    "Retryable",
    "Transient",
    "provider_specific",
]


class ProviderError(Exception):
    """Base of the taxonomy; `message` is what users and the admin log see.

    `status` and `headers` (lower-cased) are the HTTP answer's, when there was one;
    `retry_after` is the server's hint in seconds; `limits` what its rate-limit headers said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers: Mapping[str, str] = MappingProxyType(
            {name.lower(): value for name, value in (headers or {}).items()}
        )
        self.retry_after = retry_after
        self.limits = limits

    def with_limits(self, limits: RateLimits | None) -> Self:
        """A copy of this error (same kind, message, status, headers, hint) carrying `limits`."""
        return type(self)(
            self.message,
            status=self.status,
            headers=self.headers,
            retry_after=self.retry_after,
            limits=limits,
        )


class Retryable(ProviderError):
    """Another attempt may succeed: the engine waits on a schedule, or on `retry_after`."""


class RateLimited(Retryable):
    """The provider said slow down: the rate-limit schedule, and the shared gate holds."""

    def __init__(
        self,
        message: str = "Rate limit exceeded",
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        super().__init__(
            message, status=status, headers=headers, retry_after=retry_after, limits=limits
        )


class Transient(Retryable):
    """A passing failure (a 5xx, a dropped connection, an unusable answer): the other schedule."""


class Refused(Transient):
    """The model declined to rate this photo; it may not next time, another model may not."""


class PermanentImageError(ProviderError):
    """This image cannot be rated; the others go on."""


class ContentBlocked(PermanentImageError):
    """This provider's content policy blocks the photo; another provider may take it."""


def provider_specific(error: ProviderError) -> bool:
    """A verdict of this provider alone: with a fallback, the photo moves on at once."""
    return isinstance(error, Refused | ContentBlocked)


class FatalJobError(ProviderError):
    """Every image would fail the same way (bad key, unknown model, no credit): the job stops."""
