"""The command line's edges: a reader that stops early, a table at 80 columns, and the exit
code of each kind of error, decided by its class in one place."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.cli.exits import EXIT_BROKEN_PIPE, exit_code_of
from kullbatch.cli.tables import render_providers
from kullbatch.errors import (
    ConflictError,
    FatalJobError,
    KullbatchError,
    NotFoundError,
    Transient,
    UsageError,
)
from kullbatch.manifest import ManifestError
from kullbatch.providers import PROVIDERS
from kullbatch.rubrics.loader import RubricError
from kullbatch.run.runtime import JobTakenError

PIPE_BUFFER = 64 * 1024  # Linux's default pipe capacity
runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """A private database and no provider keys from the developer's shell."""
    db = tmp_path / "k.db"
    monkeypatch.setenv("KULLBATCH_DB", str(db))
    keys = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
    for var in ("KULLBATCH_PROVIDER", "COLUMNS", *keys):
        monkeypatch.delenv(var, raising=False)
    return {**os.environ, "KULLBATCH_DB": str(db)}


def big_job(tmp_path: Path, photos: int) -> str:
    """A job of `photos` URL photos, stopped at once (no key): every photo is in its results."""
    images = [
        {"id": f"img{n}", "filename": f"IMG_{n:05d}.jpg", "url": f"https://example.com/{n}.jpg"}
        for n in range(photos)
    ]
    manifest = tmp_path / "big.json"
    manifest.write_text(json.dumps({"shootId": "big", "images": images}))
    result = runner.invoke(app, ["process", str(manifest), "--provider", "openai", "-q"])
    assert result.exit_code == 3, result.output
    return result.stdout.split()[0]


def kullbatch(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "kullbatch", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


# --- a reader that stops early ----------------------------------------------------------------


def test_results_into_head_ends_quietly_when_the_reader_closes_the_pipe(env, tmp_path):
    """`results JOB --format csv | head -1` on a job bigger than the pipe buffer: the reader
    takes one line and closes; kullbatch ends with nothing on stderr, as SIGPIPE would end it."""
    job = big_job(tmp_path, 4000)
    full = runner.invoke(app, ["results", job, "--format", "csv"]).stdout
    assert len(full.encode()) > 2 * PIPE_BUFFER  # the writer must meet the closed pipe
    child = kullbatch("results", job, "--format", "csv", env=env)
    assert child.stdout is not None and child.stderr is not None
    header = child.stdout.readline()
    child.stdout.close()
    errors = child.stderr.read()
    code = child.wait(timeout=60)
    assert header.startswith(b"imageId,filename,")
    assert errors == b""
    assert code == EXIT_BROKEN_PIPE


def test_every_command_writing_to_stdout_ends_quietly_on_a_closed_pipe(env, tmp_path):
    """Nobody reads at all (`| true`): each command's first write meets a closed pipe, and each
    ends with exit 141 and nothing on stderr: Rich tables, plain lines and JSON documents."""
    job = big_job(tmp_path, 3)
    commands = [
        ["providers"],
        ["jobs"],
        ["status", job],
        ["status", job, "--json"],
        ["results", job, "--format", "json"],
    ]
    children = []
    for command in commands:
        child = kullbatch(*command, env=env)
        assert child.stdout is not None
        child.stdout.close()  # at once: the child, still importing, has written nothing
        children.append((command, child))
    for command, child in children:
        assert child.stderr is not None
        errors = child.stderr.read()
        assert (child.wait(timeout=60), errors) == (EXIT_BROKEN_PIPE, b""), command


# --- kullbatch providers at 80 columns --------------------------------------------------------


def test_providers_fits_80_columns_with_every_variable_name_whole(env):
    """No cell is cut ('…' nowhere), no line passes 80 columns, and every key and base URL
    variable of every provider appears whole; a set key says set, never its value."""
    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    render_providers(list(PROVIDERS.values()), {"OPENAI_API_KEY": "sk-secret-1"}, console)
    assert isinstance(console.file, io.StringIO)
    text = console.file.getvalue()
    assert "…" not in text and "sk-secret-1" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    words = set(re.findall(r"[A-Za-z0-9_.:/-]+", text))
    for spec in PROVIDERS.values():
        assert {spec.name, spec.default_model, *spec.key_vars, *spec.base_url_vars} <= words
    assert "set (OPENAI_API_KEY)" in text and "missing: ANTHROPIC_API_KEY" in text


def test_the_providers_command_prints_the_same_blocks_on_stdout(env):
    """Through the CLI (80 columns, not a terminal): one block per provider, nothing cut."""
    result = runner.invoke(app, ["providers"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "…" not in result.stdout
    assert "GOOGLE_GEMINI_BASE_URL or GEMINI_BASE_URL" in result.stdout
    assert "OPENAI_COMPATIBLE_API_KEY" in result.stdout


# --- exit codes by class ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("--mode must be fast or economy"), 2),
        (ManifestError("shoot.json", "images[0].url", "must be an http(s) URL"), 2),
        (RubricError("--rubric nope: unknown rubric"), 2),
        (NotFoundError("no job 'batch_0_nope00'"), 2),
        (ConflictError("job batch_1_x is already completed"), 2),
        (JobTakenError("batch_1_x"), 2),
        (FatalJobError("openai: set OPENAI_API_KEY", env_var="OPENAI_API_KEY"), 3),
        (Transient("HTTP 503"), 1),
        (KullbatchError("anything else"), 1),
    ],
)
def test_the_exit_code_of_an_error_is_decided_by_its_class(error, code):
    """Usage, not found and conflict exit 2, a fatal provider error 3, the rest of the tree 1."""
    assert exit_code_of(error) == code


def test_an_output_file_that_cannot_be_written_names_the_format_not_the_database(env, tmp_path):
    """`--output` naming a folder: `CSV: ...` (exit 2), not a database error."""
    job = big_job(tmp_path, 2)
    result = runner.invoke(app, ["results", job, "--format", "csv", "--output", str(tmp_path)])
    assert result.exit_code == 2
    assert "kullbatch: error: CSV: " in result.stderr and "database" not in result.stderr


def test_the_summary_of_a_job_stopped_for_a_missing_key_names_the_variable(env, tmp_path):
    """The fatal error's `env_vars` reach the end-of-run summary through the job's outcome."""
    manifest = tmp_path / "one.json"
    image = {"id": "a", "filename": "a.jpg", "url": "https://example.com/a.jpg"}
    manifest.write_text(json.dumps({"images": [image]}))
    result = runner.invoke(app, ["process", str(manifest), "--provider", "anthropic"])
    assert result.exit_code == 3
    assert re.search(r"Fix\s+│?\s*set ANTHROPIC_API_KEY in the environment", result.stderr)
