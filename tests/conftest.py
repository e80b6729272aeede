"""Shared test setup."""

from __future__ import annotations

import inspect
import os
import shutil
from typing import Any

import aiohttp
import pytest
from aioresponses import core as aioresponses_core

# --- programs some tests run -----------------------------------------------------------------
# A test that runs exiftool, Chromium or node says so with `@pytest.mark.needs("exiftool")` (or
# calls `need_tool`). On a developer's machine without the program it is skipped, and `-rs`
# prints why; under CI (`CI=true`, which `.ci/run` sets) it fails instead, so a CI machine that
# lost a tool cannot pass by running fewer tests.

# each program: the Debian package that installs it
TOOLS = {"exiftool": "libimage-exiftool-perl", "chromium": "chromium", "node": "nodejs"}


def under_ci() -> bool:
    """CI=true (or any value but empty, 0, false, no): every test must run."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def find_tool(name: str) -> str | None:
    """The program's executable, or None; Chromium is Debian's /usr/bin/chromium first."""
    if name == "chromium":
        from tests.cdp import find_chromium  # noqa: PLC0415  (the one definition of where)

        return find_chromium()
    return shutil.which(name)


def need_tool(name: str) -> str:
    """The program's path; without it the test skips with the reason, or fails under CI."""
    found = find_tool(name)
    if found is None:
        reason = f"{name} is not installed (Debian package {TOOLS[name]})"
        if under_ci():
            pytest.fail(f"{reason}; CI=true runs every test: install it", pytrace=False)
        pytest.skip(reason)
    return found


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(*programs): the test runs these programs (exiftool, chromium, node); without "
        "one it skips, or fails under CI=true",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        for name in marker.args:
            need_tool(name)


# --- aioresponses compatibility shim ---------------------------------------------------------
# aioresponses 0.7.9 builds mocked responses as `ClientResponse(method, url, writer=None, ...)`;
# aiohttp 3.14 added a required keyword-only `stream_writer` argument (and reads
# `stream_writer.output_size` when `writer` is None), so every mocked response fails with
# "ClientResponse.__init__() missing 1 required keyword-only argument: 'stream_writer'"
# (pnuckowski/aioresponses#289, fix pending in #288). Until a fixed release is out, mocked
# responses are built from a subclass that supplies a finished stream writer. The shim switches
# itself off when aiohttp does not need it or aioresponses already passes the argument.


class _SentStreamWriter:
    """Stands in for the request's stream writer: the request was "sent", nothing was written."""

    output_size = 0


_response_classes: dict[type[aiohttp.ClientResponse], type[aiohttp.ClientResponse]] = {}


def _with_stream_writer(base: type[aiohttp.ClientResponse]) -> type[aiohttp.ClientResponse]:
    """A subclass of `base` (ClientResponse or a test's own) that defaults `stream_writer`."""
    if base not in _response_classes:

        def __init__(self: aiohttp.ClientResponse, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", _SentStreamWriter())
            base.__init__(self, *args, **kwargs)

        _response_classes[base] = type(base.__name__, (base,), {"__init__": __init__})
    return _response_classes[base]


def _needs_shim() -> bool:
    wants = "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters
    passes = "stream_writer" in inspect.getsource(aioresponses_core.RequestMatch._build_response)
    return wants and not passes


if _needs_shim():
    _original_build_response = aioresponses_core.RequestMatch._build_response

    def _build_response(self: Any, *args: Any, response_class: Any = None, **kwargs: Any) -> Any:
        response_class = _with_stream_writer(response_class or aiohttp.ClientResponse)
        return _original_build_response(self, *args, response_class=response_class, **kwargs)

    aioresponses_core.RequestMatch._build_response = _build_response  # type: ignore[method-assign]
# --- end of the aioresponses shim ------------------------------------------------------------
