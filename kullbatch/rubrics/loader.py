"""Rubrics: what matters in one kind of shoot, and what each number of stars means there.

A rubric is a small data file: `summary`, `instructions` (what to judge, in the words a
photographer of that kind of shoot would use) and `stars` (a meaning for each of 1 to 5, so that
a 4 means the same across shoots of one kind). The package ships `general` (the default),
`wedding`, `portrait`, `event`, `sports`, `landscape` and `product` as
`kullbatch/rubrics/<name>.toml`. A user's `<name>.toml` or `<name>.json` in the rubrics folder
(`$KULLBATCH_RUBRICS`, else `rubrics/` in the user config folder) adds a rubric or overrides the
package's one of that name; `--rubric path/to/file.toml` reads a file directly.

The prompt a rubric makes ends with the answer's fields and the `issues` vocabulary, so every
provider is asked for the same structured answer whatever the rubric.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from kullbatch.errors import UsageError
from kullbatch.models import ISSUES

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_RUBRIC = "general"
RUBRICS_VAR = "KULLBATCH_RUBRICS"
SUFFIXES = (".toml", ".json")


class RubricError(UsageError):
    """A rubric that does not exist or whose file is not a rubric (a usage error)."""


@dataclass(frozen=True, slots=True)
class Rubric:
    """One shoot type's instructions and star scale."""

    name: str
    summary: str
    instructions: str
    stars: tuple[str, str, str, str, str]  # what 1, 2, 3, 4 and 5 stars mean
    source: str  # the file it came from, for messages

    def prompt(self) -> str:
        """The instructions sent with every photo of a job rated with this rubric."""
        scale = "\n".join(
            f"{number} stars: {meaning}"
            for number, meaning in zip(range(5, 0, -1), self.stars[::-1], strict=True)
        )
        return (
            f"{self.instructions.strip()}\n\n"
            f"Give 1 to 5 stars on this scale, the same for every {self.name} shoot:\n{scale}\n\n"
            "Also give a colour label (green = pick, yellow = maybe, red = reject, blue or purple "
            "for special sets, none), a short title, a one-sentence description, a few lowercase "
            f"keywords, the issues you see (any of: {', '.join(ISSUES)}; an empty list for "
            "a clean frame), and a score from 0 to 100 that ranks the photo finer than its "
            "stars (a better frame of the same stars scores higher)."
        )


def user_folder(env: Mapping[str, str]) -> Path:
    if value := env.get(RUBRICS_VAR):
        return Path(value).expanduser()
    return Path(platformdirs.user_config_dir("kullbatch", appauthor=False)) / "rubrics"


def load_rubric(name: str, env: Mapping[str, str]) -> Rubric:
    """The rubric NAME: a file path, else the user's file of that name, else the package's."""
    if name.endswith(SUFFIXES) or "/" in name or "\\" in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise RubricError(f"--rubric {name}: no such file")
        return parse_rubric(path.read_text(encoding="utf-8"), path.stem, str(path))
    folder = user_folder(env)
    for suffix in SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return parse_rubric(path.read_text(encoding="utf-8"), name, str(path))
    packaged = resources.files("kullbatch.rubrics") / f"{name}.toml"
    if packaged.is_file():
        return parse_rubric(
            packaged.read_text(encoding="utf-8"), name, f"kullbatch/rubrics/{name}.toml"
        )
    raise RubricError(
        f"--rubric {name}: unknown rubric; choose one of {', '.join(rubric_names(env))}"
    )


def rubric_names(env: Mapping[str, str]) -> list[str]:
    """Every rubric `--rubric` accepts by name: the package's and the user's."""
    names = {
        entry.name.removesuffix(".toml")
        for entry in (resources.files("kullbatch.rubrics")).iterdir()
        if entry.name.endswith(".toml")
    }
    folder = user_folder(env)
    if folder.is_dir():
        names |= {path.stem for path in folder.iterdir() if path.suffix in SUFFIXES}
    return sorted(names)


def parse_rubric(text: str, name: str, source: str) -> Rubric:
    """A rubric from TOML or JSON text; every field is checked, with the file named."""
    try:
        data: Any = json.loads(text) if source.endswith(".json") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RubricError(f"{source}: not a rubric file: {exc}") from exc
    if not isinstance(data, dict):
        raise RubricError(f"{source}: a rubric is a table of summary, instructions and stars")
    instructions = data.get("instructions")
    if not isinstance(instructions, str) or not instructions.strip():
        raise RubricError(f"{source}: instructions: a non-empty text is required")
    stars = data.get("stars")
    if not isinstance(stars, dict) or set(stars) != {"1", "2", "3", "4", "5"}:
        raise RubricError(f"{source}: stars: give a meaning for each of 1, 2, 3, 4 and 5")
    meanings = tuple(str(stars[str(number)]).strip() for number in range(1, 6))
    if not all(meanings):
        raise RubricError(f"{source}: stars: every meaning must be a non-empty text")
    summary = data.get("summary", "")
    return Rubric(
        name=name,
        summary=summary if isinstance(summary, str) else "",
        instructions=instructions,
        stars=(meanings[0], meanings[1], meanings[2], meanings[3], meanings[4]),
        source=source,
    )
