"""Every command explains itself, and the README documents every command and provider."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.providers import PROVIDERS

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
COMMANDS = ["process", "status", "results", "cancel", "resume", "jobs", "providers"]


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
