"""The public surface is exactly what `kullbatch.__all__` lists."""

import kullbatch
import kullbatch.errors
import kullbatch.providers


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
    }


# The provider errors of `kullbatch.errors`: the root's other branches (usage, not found,
# conflict) are no provider's.
PROVIDER_TAXONOMY = {
    name
    for name in kullbatch.errors.__all__
    if name == "provider_specific"
    or issubclass(getattr(kullbatch.errors, name), kullbatch.errors.ProviderError)
}


def test_the_providers_package_exports_the_taxonomy_and_the_registry():
    """`kullbatch.providers` re-exports the provider errors of `kullbatch.errors`, the same
    classes."""
    assert all(hasattr(kullbatch.providers, name) for name in kullbatch.providers.__all__)
    for name in PROVIDER_TAXONOMY:
        assert getattr(kullbatch.providers, name) is getattr(kullbatch.errors, name)
    assert set(kullbatch.providers.__all__) == {
        *PROVIDER_TAXONOMY,
        "PROVIDERS",
        "BatchAdapter",
        "BatchClient",
        "Capabilities",
        "Credentials",
        "Provider",
        "ProviderSpec",
        "WireRequest",
        "create_batch_client",
        "create_provider",
        "key_hint",
        "resolve",
    }
