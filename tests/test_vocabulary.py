"""One place for each concept: job statuses, item states and modes are the enums of
`kullbatch.models`, and the job's options are one typed `JobOptions`.

The source is read with `ast`: a status, state or mode spelled again as a string, in SQL or
in a comparison, fails here with the file and line to fix.
"""

from __future__ import annotations

import ast
import re
import sqlite3
from pathlib import Path

from kullbatch.models import (
    ACTIVE_STATES,
    CANCELLABLE_STATES,
    Fallback,
    GroupingOptions,
    ItemState,
    JobOptions,
    JobState,
    Mode,
)
from kullbatch.store.database import Store
from kullbatch.store.rows import NewJob
from tests.vtime import run_virtual

PACKAGE = Path(__file__).resolve().parents[1] / "kullbatch"
VOCABULARY = frozenset({*JobState, *ItemState, *Mode})
QUOTED = re.compile(r"'(" + "|".join(sorted(VOCABULARY)) + r")'")
# The schema's history is left as it was written (a DEFAULT 'pending' of an old migration).
SQL_FILES = sorted(p for p in (PACKAGE / "store").glob("*.py") if p.name != "migrations.py")
# Where statuses, states and modes are compared: the front ends, the service, the store, the run.
COMPARING_FILES = sorted(
    {
        *SQL_FILES,
        *(PACKAGE / "web").glob("*.py"),
        *(PACKAGE / "cli").glob("*.py"),
        *(PACKAGE / "service").glob("*.py"),
        PACKAGE / "run" / "runtime.py",
    }
)
# What a spelled value is compared with, for it to count: a status, a state or a mode.
STATUS_LIKE = re.compile(r"\b(status|state|mode)\b")


def shown(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent)) if path.is_relative_to(PACKAGE) else path.name


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the module's, classes' and functions' docstring nodes."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def spelled_in_sql(path: Path) -> list[str]:
    """Every string in `path` (docstrings aside) with a status, state or mode in SQL quotes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = docstrings(tree)
    return [
        f"{shown(path)}:{node.lineno}: {match.group(0)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
        for match in QUOTED.finditer(node.value)
    ]


def spelled_values(node: ast.expr) -> list[str]:
    """The vocabulary spelled as strings in `node`: a constant, or a literal collection of them
    (`{"processing", "submitted"}`, `frozenset(("fast",))`)."""
    if isinstance(node, ast.Constant):
        return [node.value] if node.value in VOCABULARY else []
    if isinstance(node, ast.Set | ast.Tuple | ast.List):
        return [value for element in node.elts for value in spelled_values(element)]
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") in {"set", "frozenset"}:
        return [value for arg in node.args for value in spelled_values(arg)]
    return []


def spelled_in_comparisons(path: Path) -> list[str]:
    """`status == "failed"`, `job.mode != "economy"`, `state in {"processing", ...}`, and
    collections or dict keys made only of spelled values (`_OPEN = {"processing", ...}`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = shown(path)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for side in sides:
                others = [ast.unparse(other) for other in sides if other is not side]
                values = spelled_values(side)
                if values and any(STATUS_LIKE.search(other) for other in others):
                    found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Set | ast.Tuple | ast.List):
            if len(node.elts) > 1 and len(spelled_values(node)) == len(node.elts):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Dict):
            keys = [key for key in node.keys if key is not None]
            if len(keys) > 1 and all(spelled_values(key) for key in keys):
                found.append((node.lineno, ast.unparse(node)))
    return [f"{where}:{line}: {text}" for line, text in sorted(found)]


def test_sql_binds_statuses_states_and_modes_instead_of_spelling_them():
    """The store's SQL takes `status = ?` with the enum, never `status = 'rated'`."""
    assert SQL_FILES
    spelled = [line for path in SQL_FILES for line in spelled_in_sql(path)]
    assert spelled == [], "bind these as parameters (ItemState/JobState/Mode):\n" + "\n".join(
        spelled
    )


def test_statuses_states_and_modes_are_compared_as_enums():
    """The API, the terminal, the service and the runtime compare with the enums' members
    (`job.mode is Mode.ECONOMY`, `status in CANCELLABLE_STATES`), never with strings."""
    checked = {path.relative_to(PACKAGE).as_posix() for path in COMPARING_FILES}
    assert {"web/api.py", "cli/tables.py", "cli/progress.py", "service/jobs.py"} <= checked
    spelled = [line for path in COMPARING_FILES for line in spelled_in_comparisons(path)]
    assert spelled == [], "use the enums of kullbatch.models:\n" + "\n".join(spelled)


def test_the_checks_see_what_they_look_for(tmp_path):
    """A spelled status in SQL, in a comparison and in a set of states is caught."""
    source = tmp_path / "bad.py"
    source.write_text(
        '"""Doc: \'rated\' here is prose."""\n'
        "Q = \"SELECT 1 FROM batch_items WHERE status = 'rated'\"\n"
        'OPEN = frozenset({"processing", "submitted"})\n'
        'STYLES = {"completed": "green", "failed": "red"}\n'
        'def f(job, name):\n    return job.mode == "economy" or name == "failed"\n',
        encoding="utf-8",
    )
    assert spelled_in_sql(source) == ["bad.py:2: 'rated'"]
    compared = [line.split(": ", 1)[1] for line in spelled_in_comparisons(source)]
    assert compared == [
        "{'processing', 'submitted'}",
        "{'completed': 'green', 'failed': 'red'}",
        "job.mode == 'economy'",
    ]


def listed_states(path: Path) -> list[tuple[int, frozenset[JobState]]]:
    """Each literal collection of `JobState.X` members in `path`, as the set it names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Set | ast.Tuple | ast.List) and node.elts:
            names = [
                element.attr
                for element in node.elts
                if isinstance(element, ast.Attribute)
                and isinstance(element.value, ast.Name)
                and element.value.id == "JobState"
            ]
            if len(names) == len(node.elts):
                found.append((node.lineno, frozenset(JobState[name] for name in names)))
    return found


def test_which_states_are_active_and_cancellable_is_said_once():
    """A live owner works on processing and submitted jobs; cancel also ends interrupted ones
    and those the budget paused. Nowhere but `models` lists either set again."""
    assert {JobState.PROCESSING, JobState.SUBMITTED} == ACTIVE_STATES
    assert ACTIVE_STATES | {JobState.INTERRUPTED, JobState.PAUSED} == CANCELLABLE_STATES
    assert not CANCELLABLE_STATES & {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
    again = [
        f"{shown(path)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "models.py"
        for line, states in listed_states(path)
        if states in {ACTIVE_STATES, CANCELLABLE_STATES}
    ]
    assert again == [], "use ACTIVE_STATES / CANCELLABLE_STATES of kullbatch.models:\n" + (
        "\n".join(again)
    )


def test_job_options_round_trip_through_their_json():
    options = JobOptions(
        concurrency=8,
        max_retry_time=90.0,
        max_edge=1024,
        rpm=120.0,
        fallback_after=30.0,
        economy_only=True,
        fallbacks=(Fallback(provider="anthropic", model="claude-haiku-4-5"),),
        rubric="wedding",
        grouping=GroupingOptions(enabled=False, gap=1.5, max_distance=8),
    )
    assert JobOptions.model_validate_json(options.model_dump_json()) == options


# What `process` stored before JobOptions: fallbacks as [name, model] pairs, the grouping as a
# plain object, rpm as null; a job older still has no fallback_after, grouping or rubric.
OLD_OPTIONS = (
    '{"concurrency": 0, "max_retry_time": 21600.0, "max_edge": 1568, "rpm": null,'
    ' "fallback_after": 600.0, "economy_only": false,'
    ' "fallbacks": [["anthropic", "claude-haiku-4-5"], ["openai", "gpt-5.4-mini"]],'
    ' "rubric": "portrait", "grouping": {"enabled": false, "gap": 3.0, "max_distance": 10}}'
)
OLDER_OPTIONS = '{"concurrency": 4, "max_retry_time": 60, "max_edge": 1024, "rpm": null}'


def test_options_stored_by_the_previous_version_read_back(tmp_path):
    """Jobs in an existing database keep their settings: `resume` runs them the same way."""

    async def main():
        store = await Store.open(tmp_path / "k.db")
        for job_id in ("batch_1_old000", "batch_1_older0"):
            job = NewJob(
                job_id, "me", "s", "fake", "fake-1", Mode.FAST, "p", None, "x", JobOptions()
            )
            await store.create_job(job, [])
        await store.close()
        with sqlite3.connect(tmp_path / "k.db") as db:  # as the previous version wrote them
            db.execute(
                "UPDATE batch_jobs SET options = ? WHERE id = ?", (OLD_OPTIONS, "batch_1_old000")
            )
            db.execute(
                "UPDATE batch_jobs SET options = ?, mode = 'economy' WHERE id = ?",
                (OLDER_OPTIONS, "batch_1_older0"),
            )
        store = await Store.open(tmp_path / "k.db")
        try:
            return await store.get_job("batch_1_old000"), await store.get_job("batch_1_older0")
        finally:
            await store.close()

    old, older = run_virtual(main())
    assert old.options == JobOptions(
        fallbacks=(
            Fallback(provider="anthropic", model="claude-haiku-4-5"),
            Fallback(provider="openai", model="gpt-5.4-mini"),
        ),
        rubric="portrait",
        grouping=GroupingOptions(enabled=False, gap=3.0, max_distance=10),
    )
    assert older.mode is Mode.ECONOMY
    assert older.options == JobOptions(concurrency=4, max_retry_time=60.0, max_edge=1024)
    assert older.options.grouping.enabled and older.options.fallbacks == ()
