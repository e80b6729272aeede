"""The prompt a job sends with every photo, composed in one place for a run and its estimate.

`create_job` stores what `compose` returns and the engine sends it; `process --dry-run` prices
the same text, so an estimate is of the prompt the run would send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from kullbatch.models import Prompt
from kullbatch.rubrics.loader import DEFAULT_RUBRIC, load_rubric

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kullbatch.manifest import Manifest

__all__ = ["PromptRequest", "compose"]


class PromptRequest(Protocol):
    """What the user asked for about the prompt (the command line's `ProcessSettings`)."""

    @property
    def rubric(self) -> str | None: ...
    @property
    def prompt(self) -> str | None: ...
    @property
    def system_prompt(self) -> str | None: ...


def compose(asked: PromptRequest, manifest: Manifest, env: Mapping[str, str]) -> Prompt:
    """The instructions and the system prompt of a job.

    `--rubric` gives the instructions, a `--prompt` with it is added as the user's note;
    without a rubric, the prompt asked for, else the manifest's, else the general rubric.
    The system prompt is the one asked for, else the manifest's. An unknown or broken rubric
    is a `RubricError` (a usage error).
    """
    if asked.rubric is not None:
        rubric = load_rubric(asked.rubric, env).prompt()
        text = rubric if not asked.prompt else f"{rubric}\n\n{asked.prompt}"
    else:
        text = asked.prompt or manifest.prompt or load_rubric(DEFAULT_RUBRIC, env).prompt()
    return Prompt(text, asked.system_prompt or manifest.system_prompt)
