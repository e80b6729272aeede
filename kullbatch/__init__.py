"""kullbatch: rate a whole photo shoot with vision models, all at once, through rate limits."""

from kullbatch.errors import (
    FatalJobError,
    KullbatchError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Retryable,
    Transient,
)
from kullbatch.manifest import Manifest, ManifestError, load_manifest
from kullbatch.models import (
    Answer,
    ImageInput,
    JobState,
    JobStatus,
    PreparedImage,
    ProgressEvent,
    Prompt,
    RateLimits,
    Rating,
    Usage,
)
from kullbatch.providers import PROVIDERS, Provider
from kullbatch.run.engine import BatchProcessor, EngineOptions, JobOutcome

__all__ = [
    "PROVIDERS",
    "Answer",
    "BatchProcessor",
    "EngineOptions",
    "FatalJobError",
    "ImageInput",
    "JobOutcome",
    "JobState",
    "JobStatus",
    "KullbatchError",
    "Manifest",
    "ManifestError",
    "PermanentImageError",
    "PreparedImage",
    "ProgressEvent",
    "Prompt",
    "Provider",
    "ProviderError",
    "RateLimited",
    "RateLimits",
    "Rating",
    "Retryable",
    "Transient",
    "Usage",
    "load_manifest",
]
