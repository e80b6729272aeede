"""The error tree: one root, built whole, never changed, one retryable base, the bottom layer."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import kullbatch.errors
import kullbatch.providers.base
from kullbatch.catalogue import EmbedError, SidecarError
from kullbatch.errors import (
    ConflictError,
    FatalJobError,
    KullbatchError,
    NotFoundError,
    PermanentImageError,
    ProviderError,
    RateLimited,
    Retryable,
    Transient,
    UsageError,
)
from kullbatch.manifest import ManifestError
from kullbatch.models import RateLimits
from kullbatch.pricing.prices import PriceFileError
from kullbatch.rubrics.loader import RubricError
from kullbatch.run.runtime import JobTakenError
from kullbatch.service.jobs import JobNotFoundError

PACKAGE = Path(__file__).parent.parent / "kullbatch"
LIMITS = RateLimits(requests_limit=500, requests_remaining=0, requests_reset=1.5)
ERROR_FIELDS = {"message", "status", "headers", "retry_after", "limits", "args", "env_vars"}


def test_an_error_carries_everything_it_was_built_with():
    """Message, status, lower-cased headers, hint and limits are constructor arguments."""
    error = RateLimited(
        "openai HTTP 429", status=429, headers={"Retry-After": "2"}, retry_after=2.0, limits=LIMITS
    )
    assert (error.message, str(error), error.status) == ("openai HTTP 429", "openai HTTP 429", 429)
    assert dict(error.headers) == {"retry-after": "2"}
    assert (error.retry_after, error.limits) == (2.0, LIMITS)


def test_an_error_without_an_answer_has_empty_readings():
    """A transport failure has no status, no headers, no hint and no limits."""
    error = Transient("connection dropped")
    assert (error.status, dict(error.headers), error.retry_after, error.limits) == (
        None,
        {},
        None,
        None,
    )
    assert RateLimited().message == "Rate limit exceeded"


def test_headers_cannot_be_changed_after_the_error_is_built():
    """The headers mapping is read-only."""
    error = Transient("HTTP 503", headers={"x-a": "1"})
    with pytest.raises(TypeError):
        error.headers["x-a"] = "2"  # type: ignore[index]


@pytest.mark.parametrize(
    "kind", [RateLimited, Transient, PermanentImageError, FatalJobError, ProviderError]
)
def test_with_limits_builds_a_copy_and_leaves_the_original_alone(kind):
    """Adding limits gives a new error of the same kind with everything else kept."""
    original = kind("HTTP 400", status=400, headers={"a": "b"}, retry_after=3.0)

    copy = original.with_limits(LIMITS)

    assert type(copy) is kind and copy is not original
    assert (copy.message, copy.status, dict(copy.headers), copy.retry_after) == (
        "HTTP 400",
        400,
        {"a": "b"},
        3.0,
    )
    assert (copy.limits, original.limits) == (LIMITS, None)


def test_a_fatal_error_carries_the_variables_to_check_and_its_copies_keep_them():
    """`env_var` is data (one name or its alternatives), not words to read back from the text."""
    one = FatalJobError("openai: set OPENAI_API_KEY in the environment", env_var="OPENAI_API_KEY")
    both = FatalJobError("gemini HTTP 400", env_var=("GEMINI_API_KEY", "GOOGLE_API_KEY"))
    assert one.env_vars == ("OPENAI_API_KEY",)
    assert both.with_limits(LIMITS).env_vars == ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    assert FatalJobError("openai HTTP 404: no such model").env_vars == ()


@pytest.mark.parametrize(
    ("error", "branch"),
    [
        (ManifestError, UsageError),
        (RubricError, UsageError),
        (PriceFileError, UsageError),
        (JobNotFoundError, NotFoundError),
        (JobTakenError, ConflictError),
        (FatalJobError, ProviderError),
        (EmbedError, KullbatchError),
        (SidecarError, KullbatchError),
    ],
)
def test_every_error_kullbatch_raises_has_one_root(error, branch):
    """Usage, not found, conflict and provider errors descend from KullbatchError, by branch."""
    assert issubclass(error, branch) and issubclass(branch, KullbatchError)


# Signals that never leave the module that raises them: not errors a user or a caller meets.
CONTROL_FLOW = {"GaveUp", "Stopped"}


def test_no_exception_class_of_the_package_stands_outside_the_tree():
    """Every exception class defined under kullbatch/ is a KullbatchError (control flow aside)."""
    outside = []
    for path, tree in sources():
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name not in CONTROL_FLOW:
                found = getattr(importlib.import_module(module), node.name, None)
                if (
                    isinstance(found, type)
                    and issubclass(found, BaseException)
                    and not issubclass(found, KullbatchError)
                ):
                    outside.append(f"{module}.{node.name}")
    assert outside == []


def test_rate_limits_and_transient_failures_share_one_retryable_base():
    """The engine and the retry policy ask `Retryable`, never a list of two classes."""
    assert issubclass(RateLimited, Retryable) and issubclass(Transient, Retryable)
    assert not issubclass(PermanentImageError, Retryable)
    assert not issubclass(FatalJobError, Retryable)
    assert issubclass(Retryable, ProviderError)


def sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_code_sets_an_errors_fields_after_building_it():
    """Nothing assigns `message`, `limits`, `args`, … on another object, or through setattr."""
    offenders = []
    for path, tree in sources():
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in ERROR_FIELDS
                    and ast.unparse(target.value) != "self"
                ):
                    offenders.append(f"{path.name}:{node.lineno} {ast.unparse(target)}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "setattr":
                offenders.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert offenders == []


def test_no_code_lists_rate_limited_and_transient_together():
    """`RateLimited | Transient` or `(RateLimited, Transient)` means the base was forgotten."""
    for path, tree in sources():
        for node in ast.walk(tree):
            names: set[str] = set()
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
                names = {ast.unparse(node.left), ast.unparse(node.right)}
            elif isinstance(node, ast.Tuple):
                names = {ast.unparse(element) for element in node.elts}
            assert not {"RateLimited", "Transient"} <= names, f"{path.name}:{node.lineno}"


def kullbatch_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kullbatch"):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names if alias.name.startswith("kullbatch")}
    return modules


def test_errors_is_the_bottom_layer_with_models():
    """errors.py imports only models; images.py imports errors, not the providers (no loop)."""
    assert kullbatch_imports(PACKAGE / "errors.py") <= {"kullbatch.models"}
    images = kullbatch_imports(PACKAGE / "media" / "images.py")
    assert "kullbatch.errors" in images
    assert not any(module.startswith("kullbatch.providers") for module in images)


def test_kullbatch_code_and_tests_import_the_tree_from_errors():
    """providers/base.py re-exports none of it; code and tests import it from kullbatch.errors
    (the packages' `__init__.py` face aside)."""
    taxonomy = set(kullbatch.errors.__all__)
    assert not taxonomy & set(kullbatch.providers.base.__all__)
    offenders = []
    tests = [(path, ast.parse(path.read_text())) for path in Path(__file__).parent.rglob("*.py")]
    for path, tree in [*sources(), *tests]:
        if path.name == "__init__.py":
            continue  # the package's public face
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module not in {"kullbatch.errors", "kullbatch"}
                and taxonomy & {alias.name for alias in node.names}
            ):
                offenders.append(f"{path.name}: from {node.module}")
    assert offenders == []
