"""The one error tree of kullbatch; the bottom layer with models.

    KullbatchError                    the root: every error kullbatch raises on purpose
    ├── UsageError                    a request that cannot run as asked: exit 2, HTTP 400
    │                                 (ManifestError, RubricError, PriceFileError, FieldError)
    ├── NotFoundError                 no such job (JobNotFoundError): exit 2, HTTP 404
    ├── ConflictError                 the job cannot do that now (running, done, JobTakenError):
    │                                 exit 2, HTTP 409
    ├── EmbedError, SidecarError      one photo's XMP cannot be written: that photo fails
    └── ProviderError                 what a provider's answer (or its absence) means
        ├── Retryable                 worth another attempt, after a wait
        │   ├── RateLimited           429, Anthropic 529  -> rate-limit schedule
        │   │   └── FlexUnavailable   the flex tier had no capacity: same schedule, no slower gate
        │   └── Transient             408, 409, 5xx, drops, timeouts, bad answers -> other schedule
        │       └── Refused           the model declined the photo (refusal, content filter)
        ├── PermanentImageError       this image cannot be rated (400/413/422 about the image)
        │   └── ContentBlocked        the provider's policy blocked the photo itself
        └── FatalJobError             the whole job must stop (auth, model, credit, missing key):
                                      exit 3; `env_vars` names the variables to check

The front ends map these by class, each in one place: the exit code in `kullbatch.cli.exits`,
the HTTP status in `kullbatch.web.api`. The errors named in brackets, EmbedError and
SidecarError live beside their code (manifest, rubrics, pricing, service, run, catalogue) and
subclass one of these.

`Refused` and `ContentBlocked` are this provider's verdict, which another model may not share:
with `--fallback`, the photo goes to the next provider at once.

Every error carries everything as constructor arguments and is never changed after it is
built: to add what an answer's headers said about the limits, build a copy (`with_limits`).
"""

from __future__ import annotations

import stat
from types import MappingProxyType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from kullbatch.models import RateLimits

__all__ = [
    "ConflictError",
    "ContentBlocked",
    "FatalJobError",
    "FieldError",
    "FlexUnavailable",
    "KullbatchError",
    "NotFoundError",
    "PermanentImageError",
    "ProviderError",
    "RateLimited",
    "Refused",
    "Retryable",
    "Transient",
    "UsageError",
    "provider_specific",
]


class KullbatchError(Exception):
    """The root of every error kullbatch raises on purpose; its text is what the user sees."""


class UsageError(KullbatchError):
    """A request that cannot run as asked (exit 2, HTTP 400), found before anything is sent."""


class FieldError(UsageError):
    """A usage error about one field of the request (`providerId`, `mode`): the API's 400 names
    the field; the CLI prints the message alone."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(KullbatchError):
    """What the request names does not exist (exit 2, HTTP 404)."""


class ConflictError(KullbatchError):
    """The job cannot do what is asked in the state it is in (exit 2, HTTP 409)."""


class ProviderError(KullbatchError):
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


class FlexUnavailable(RateLimited):
    """The flex tier turned the request away for want of capacity (OpenAI's 429 "resource
    unavailable", Groq's 498 `capacity_exceeded`, Gemini's flex 429/503): retried on the
    rate-limit schedule, but the account is not sending too fast, so the gate is not slowed.

    `standard_in` is how long until the photo goes at the standard tier (`--flex-wait` from its
    first refusal): no wait is longer, so the photo leaves at `--flex-wait`, not a doubling later.
    """

    standard_in: float | None = None


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
    """Every image would fail the same way (bad key, unknown model, no credit): the job stops.

    `env_var` names the environment variable to check (a missing or refused key, an unusable
    base URL), or its alternatives (`("GEMINI_API_KEY", "GOOGLE_API_KEY")`); it is kept as
    `env_vars`, so that a front end says what to set without reading the message.
    """

    def __init__(
        self,
        message: str,
        *,
        env_var: str | Sequence[str] = (),
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        super().__init__(
            message, status=status, headers=headers, retry_after=retry_after, limits=limits
        )
        self.env_vars: tuple[str, ...] = (env_var,) if isinstance(env_var, str) else tuple(env_var)

    def with_limits(self, limits: RateLimits | None) -> Self:
        """A copy carrying `limits`, the variables to check kept."""
        return type(self)(
            self.message,
            env_var=self.env_vars,
            status=self.status,
            headers=self.headers,
            retry_after=self.retry_after,
            limits=limits,
        )


def file_kind(mode: int) -> str | None:
    """What a file that is not a regular one is, in words (for the manifest's check and for
    every open of a photo); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
