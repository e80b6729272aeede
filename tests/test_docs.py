"""Every command explains itself, and the README documents every command and provider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.providers import PROVIDERS

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
COMMANDS = ["process", "status", "results", "cancel", "resume", "jobs", "providers", "agreement"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_a_readme_entry(command):
    """`kullbatch COMMAND --help` explains it, and the README shows it."""
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
    assert len(result.output.splitlines()) > 3
    assert f"kullbatch {command}" in README


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_every_provider_is_documented(provider):
    """The README's provider table names each provider."""
    assert f"| {provider}" in README


def _readme_block_after(command: str) -> str:
    """The output block the README shows right after the block holding `command`."""
    at = README.index(command)
    start = README.index("```\n", README.index("```\n", at) + 4) + 4
    return README[start : README.index("```", start)]


def test_the_culling_walkthrough_ends_as_the_readme_shows(tmp_path: Path) -> None:
    """The bundled shoot rated offline, compared with the hand cull in examples/culled: the
    agreement table is the README's, and its keep rate's `--keep` keeps as the table says."""
    root = Path(__file__).parent.parent
    db = str(tmp_path / "k.db")
    runner = CliRunner()
    shoot = str(root / "examples" / "shoot.json")
    job = runner.invoke(app, ["process", shoot, "--db", db, "--rubric", "portrait", "--quiet"])
    assert job.exit_code == 0, job.output
    job_id = job.stdout.strip()
    culled = str(root / "examples" / "culled")
    agreement = runner.invoke(app, ["agreement", job_id, "--db", db, "--against", culled])
    assert agreement.exit_code == 0, agreement.output
    assert "kullbatch agreement JOBID --against examples/culled" in README
    assert agreement.stdout == _readme_block_after("kullbatch agreement JOBID --against")
    kept = runner.invoke(app, ["results", job_id, "--db", db, "--keep", "53%"])
    assert "kullbatch results JOBID --keep 53% --format xmp" in README
    assert "kept 10 of 19 rated photos" in kept.stderr
    assert sum(1 for r in json.loads(kept.stdout)["results"] if r["kept"]) == 10
