"""The vocabulary every module shares: what goes in, what comes out, what is reported."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

ColorLabel = Literal["red", "yellow", "green", "blue", "purple", "none"]
COLOR_LABELS: tuple[str, ...] = ("red", "yellow", "green", "blue", "purple", "none")
# Camera RAW files: rated through their embedded preview, and given sidecars, never embedded XMP
# (except DNG, which is a TIFF that Lightroom reads the embedded XMP of).
RAW_SUFFIXES = frozenset({".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".dng", ".pef"})

# What can be wrong with a frame: the fixed vocabulary of `Rating.issues`, for every provider.
Issue = Literal[
    "eyes-closed",
    "motion-blur",
    "out-of-focus",
    "underexposed",
    "overexposed",
    "subject-cut-off",
    "tilted",
    "noise",
]
ISSUES: tuple[str, ...] = get_args(Issue)


class ImageInput(BaseModel):
    """One photo of a shoot as the manifest describes it: a URL or a local path, never both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    filename: str
    url: str | None = None
    path: Path | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    # Other files of the same shutter press (the RAW of a RAW+JPEG pair): rated once, through
    # `path`, and given the same XMP.
    companions: list[Path] = Field(default_factory=list)


def _a_number(value: object) -> object:
    """`true` and `"4"` are not stars (pydantic's lax mode would take them as 1 and 4)."""
    if isinstance(value, bool | str | bytes):
        # a ValueError (not TypeError): pydantic reports only those as invalid input
        raise ValueError("a star rating is a whole number from 1 to 5")  # noqa: TRY004
    return value


Stars = Annotated[int, BeforeValidator(_a_number), Field(ge=1, le=5)]


class Rating(BaseModel):
    """The answer a model gives for one photo; the same shape for every provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    starRating: Stars  # noqa: N815  (the spec's wire name)
    colorLabel: ColorLabel  # noqa: N815
    title: str
    description: str
    tags: list[str]
    # empty for results stored before the field existed; every provider is asked for it
    issues: list[Issue] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one answer cost, for the cost report."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What a provider's headers said about its limits; resets are seconds from the answer."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A local photo as burst grouping sees it, taken while the photo is prepared for sending,
    so that grouping after the run does not decode the photo again."""

    phash: int  # the 64-bit perceptual hash of the prepared image
    captured: float | None  # EXIF capture time in seconds; None when the photo has none


@dataclass(frozen=True, slots=True)
class Answer:
    """What a provider returns for one image."""

    rating: Rating
    usage: Usage = field(default_factory=Usage)
    limits: RateLimits | None = None
    fingerprint: Fingerprint | None = None  # set by the engine from the prepared photo


@dataclass(frozen=True, slots=True)
class Prompt:
    """The instructions sent with every image of a job."""

    text: str
    system: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image ready to send: a URL the provider may fetch, or JPEG bytes made just in time."""

    image_id: str
    filename: str
    url: str | None = None
    data: bytes | None = None
    media_type: str = "image/jpeg"
    fingerprint: Fingerprint | None = None  # when the job groups bursts and the photo is local

    def base64(self) -> str:
        """Base64 of the bytes; providers call it once per request."""
        import base64  # noqa: PLC0415  (cheap, and keeps the hot import list short)

        if self.data is None:
            raise ValueError(f"image {self.image_id} has no local data")
        return base64.b64encode(self.data).decode("ascii")

    def data_uri(self) -> str:
        return f"data:{self.media_type};base64,{self.base64()}"


class JobState(enum.StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    SUBMITTED = "submitted"


class ItemState(enum.StrEnum):
    PENDING = "pending"
    RATED = "rated"
    FAILED = "failed"


class ProviderBatch(BaseModel):
    """One provider batch of an economy job, as its last poll saw it (the provider's counts)."""

    model_config = ConfigDict(frozen=True)

    id: str | None  # None for a file uploaded whose batch is not created yet
    state: str
    requests: int
    counts: dict[str, int] = Field(default_factory=dict)


class TokenUsage(BaseModel):
    """A job's tokens so far: `usage` in the status object."""

    model_config = ConfigDict(frozen=True)

    inputTokens: int = 0  # noqa: N815  (DESIGN.md's wire names)
    outputTokens: int = 0  # noqa: N815


class JobStatus(BaseModel):
    """The status object of DESIGN.md: `status --json`, `process --json`, the REST API."""

    model_config = ConfigDict(frozen=True)

    jobId: str  # noqa: N815
    shootId: str  # noqa: N815
    providerId: str  # noqa: N815
    mode: str
    status: JobState
    totalImages: int  # noqa: N815
    processedImages: int  # noqa: N815
    failedImages: int  # noqa: N815
    progress: float
    eta: int | None
    providerJobId: str | None  # noqa: N815
    error: str | None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    costUsd: float | None = None  # noqa: N815  (None: not priced, `costNote` says why)
    costNote: str | None = None  # noqa: N815
    createdAt: str  # noqa: N815
    startedAt: str | None  # noqa: N815
    completedAt: str | None  # noqa: N815
    providerBatches: list[ProviderBatch] = Field(default_factory=list)  # noqa: N815


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One image of a stored job with its outcome, in manifest order."""

    position: int
    image: ImageInput
    state: ItemState
    attempts: int
    error: str | None
    rating: Rating | None
    usage: Usage
    provider: str | None = None  # who rated it (a fallback shows here); None until rated
    model: str | None = None
    pricing: str = "standard"  # "batch" for answers that came through a batch API
    cost_usd: float | None = None  # filled in by `pricing.priced`; None: no price for the model
    group: str | None = None  # the burst (moment) this photo belongs to; None when alone
    best_in_group: bool = False  # the frame picked in its group
    fingerprint: Fingerprint | None = None  # stored with the rating when the engine took one


class EventKind(enum.StrEnum):
    STARTED = "started"
    RATED = "rated"
    FAILED = "failed"
    RETRYING = "retrying"
    GATE = "gate"
    BATCH = "batch"  # economy mode: what the provider says of its batches
    NOTE = "note"  # something the user should read: a provider down, the job moving on
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """What the engine tells its subscribers (progress display, WebSocket hub, store)."""

    kind: EventKind
    job_id: str
    total: int
    rated: int
    failed: int
    retrying: int
    image_id: str | None = None
    answer: Answer | None = None
    error: str | None = None
    attempt: int = 0
    wait: float = 0.0
    rate: float | None = None  # GATE: the pace new sends are held to, requests per minute
    status: JobState = JobState.PROCESSING
    # what a remote viewer (the WebSocket hub) shows without asking the store
    shoot_id: str = ""
    provider: str = ""
    eta: int | None = None  # seconds left at this run's pace; None until an image ended
    note: str | None = None  # BATCH: the provider's state and counts, in words
    model: str = ""  # the model of `provider` that this event's answer came from
    batch_priced: bool = False  # RATED through a provider batch API (half price)
