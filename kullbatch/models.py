"""The vocabulary every module shares: what goes in, what comes out, what is reported."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

# The product's defaults for a job's settings (`JobOptions`), shared by the command line, the
# engine and the photo encoder.
DEFAULT_MAX_EDGE = 1568  # Anthropic's and OpenAI's sweet spot: larger is downscaled server-side
DEFAULT_MAX_RETRY_TIME = 6 * 3600.0  # --max-retry-time: how long one photo is retried
DEFAULT_FALLBACK_AFTER = 600.0  # --fallback-after: 10 minutes of retrying, then the next one
DEFAULT_FLEX_WAIT = 900.0  # --flex-wait: a photo the flex tier refuses this long goes standard
DEFAULT_GAP = 2.0  # seconds between a frame and the previous frame of its burst, at most
DEFAULT_DISTANCE = 12  # bits of the 64-bit pHash two frames of one moment may differ in

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


def _a_score(value: object) -> object:
    """`true` and `"80"` are not scores either."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("a score is a whole number from 0 to 100")  # noqa: TRY004
    return value


Stars = Annotated[int, BeforeValidator(_a_number), Field(ge=1, le=5)]
# A finer measure than stars, 0-100, that orders photos of equal stars (`results --keep`)
Score = Annotated[int, BeforeValidator(_a_score), Field(ge=0, le=100)]


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
    # None for results stored before the field existed; every provider is asked for it
    score: Score | None = None


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
    # the result cache (`run.cache`): this answer's key (a local photo's content, provider,
    # model, max edge, prompt), and whether it was copied from an earlier rating, not sent
    cache_key: str | None = None
    cached: bool = False
    tier: str | None = None  # "flex" when the flex tier answered; None: standard (or batch)


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
    PAUSED = "paused"  # the budget was reached; `resume --budget` goes on


# A process works on a job in these states (sending, or waiting on its provider batches);
# whether that process still lives is its heartbeat's word (`JobRow.is_live`).
ACTIVE_STATES: frozenset[JobState] = frozenset({JobState.PROCESSING, JobState.SUBMITTED})
# Not ended yet: `cancel` ends a job in these states (one nobody runs, at once).
CANCELLABLE_STATES: frozenset[JobState] = ACTIVE_STATES | {JobState.INTERRUPTED, JobState.PAUSED}
# The error a cancelled job records, whoever stopped it (`cancel`, the API, the dashboard).
CANCELLED_BY_USER = "cancelled by the user"


class ItemState(enum.StrEnum):
    PENDING = "pending"
    RATED = "rated"
    FAILED = "failed"


class Mode(enum.StrEnum):
    """How a job's photos go out: fast (every photo at once, at the list price) or economy
    (the provider's batch API, at half the price, results within 24 h)."""

    FAST = "fast"
    ECONOMY = "economy"
    FLEX = "flex"  # fast mode's engine, every request at the provider's flex tier


class Fallback(BaseModel):
    """A `--fallback` provider and the model asked of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    model: str

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: object) -> object:
        """Jobs stored before JobOptions keep each fallback as a [provider, model] pair."""
        if isinstance(value, list | tuple) and len(value) == 2:  # noqa: PLR2004
            return {"provider": value[0], "model": value[1]}
        return value


class GroupingOptions(BaseModel):
    """`--no-groups`, `--burst-gap` and `--burst-distance`: whether and how bursts are found."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    gap: float = DEFAULT_GAP
    max_distance: int = DEFAULT_DISTANCE
    compare: bool = False  # --compare-bursts: each burst's frames judged together by the model


class JobOptions(BaseModel):
    """What a job remembers of its settings, so that `resume` runs it the same way.

    Stored as JSON with the job. A setting a job stored by an older kullbatch lacks (or stored
    as null) takes its default; keys this version does not know are ignored.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    concurrency: int = 0  # 0 = every photo at once; else requests in flight at most
    max_retry_time: float = DEFAULT_MAX_RETRY_TIME
    max_edge: int = DEFAULT_MAX_EDGE
    rpm: float | None = None  # a known requests-per-minute limit
    fallback_after: float = DEFAULT_FALLBACK_AFTER
    economy_only: bool = False  # economy mode: photos a batch did not finish fail, not go fast
    fallbacks: tuple[Fallback, ...] = ()  # in order
    rubric: str | None = None
    grouping: GroupingOptions = Field(default_factory=GroupingOptions)
    cache: bool = True  # --no-cache: False sends every photo, even one rated before
    flex_wait: float = DEFAULT_FLEX_WAIT  # flex mode: refused this long, a photo goes standard

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, value: object) -> object:
        if isinstance(value, dict):
            return {key: item for key, item in value.items() if item is not None}
        return value


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
    mode: Mode
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
    cachedImages: int = 0  # noqa: N815  (photos whose rating was copied from the cache)
    budgetUsd: float | None = None  # noqa: N815  (--budget: the job's ceiling; None: none)
    tiers: dict[str, int] = Field(default_factory=dict)  # photos rated at each tier
    flexSavedUsd: float | None = None  # noqa: N815  (what the flex tier saved; flex mode only)


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
    photographer_rating: int | None = None  # -1..5 set by the photographer; None: untouched
    cached: bool = False  # its rating was copied from an earlier one (no request, no cost)
    kept: bool | None = None  # `results --keep`: kept (True) or not (False); None: not asked
    group_rank: int | None = None  # --compare-bursts: 1 = the frame the model judged best
    group_reason: str | None = None  # the comparison's reason, on every frame of the burst


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
    """What the engine tells its subscribers (progress display, WebSocket hub): what they show.

    Results do not ride on events: the engine hands them to the job's result sink (the store).
    """

    kind: EventKind
    job_id: str
    total: int
    rated: int
    failed: int
    retrying: int
    image_id: str | None = None
    error: str | None = None  # FAILED, RETRYING: why
    attempt: int = 0  # FAILED, RETRYING: the request that failed (1 = the first)
    wait: float = 0.0
    rate: float | None = None  # GATE: the pace new sends are held to, requests per minute
    status: JobState = JobState.PROCESSING
    # what a remote viewer (the WebSocket hub) shows without asking the store
    shoot_id: str = ""
    provider: str = ""  # the job's provider; on RATED, the one that rated (maybe a fallback)
    eta: int | None = None  # seconds left at this run's pace; None until an image ended
    note: str | None = None  # BATCH: the provider's state and counts, in words


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """`90s`, `10m`, `6h`, `1.5h`, `500ms` or plain seconds -> seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 10m, 6h)")
    number, unit = match.groups()
    seconds = float(number) * _UNIT_SECONDS[(unit or "s").lower()]
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds
