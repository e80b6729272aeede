"""The public surface is exactly what `kullbatch.__all__` lists."""

import kullbatch


def test_all_lists_only_names_that_exist():
    """Every exported name is importable from the package."""
    assert all(hasattr(kullbatch, name) for name in kullbatch.__all__)


def test_the_public_surface_is_stable():
    """Adding or removing a public name is a deliberate change to this list."""
    assert set(kullbatch.__all__) == {
        "PROVIDERS",
        "Answer",
        "BatchProcessor",
        "EngineOptions",
        "FatalJobError",
        "ImageInput",
        "JobOutcome",
        "JobState",
        "JobStatus",
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
        "Transient",
        "Usage",
        "load_manifest",
    }
