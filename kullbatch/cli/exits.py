"""How a command ends: kullbatch's errors become exit codes, and a closed stdout ends quietly.

The exit code of each kind of error is decided here, by its class, and nowhere else:
2 a usage error, an unknown job or a conflict (a job still running, already done), 3 a fatal
provider error. A reader that stops reading (`kullbatch results JOB --format csv | head`) ends
any command the way it ends every Unix tool: no message, and the status of a process SIGPIPE
stopped (141).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from kullbatch.cli.terminal import EXIT_FATAL, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_USAGE
from kullbatch.errors import (
    ConflictError,
    FatalJobError,
    KullbatchError,
    NotFoundError,
    UsageError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["EXIT_BROKEN_PIPE", "QuietPipeGroup", "exit_code_of", "fail", "failed", "run"]

T = TypeVar("T")

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: how the shell reports a tool that SIGPIPE stopped

# The exit code of each kind of error, first match wins: decided here, by class, only.
_EXIT_CODES: tuple[tuple[type[KullbatchError], int], ...] = (
    (UsageError, EXIT_USAGE),
    (NotFoundError, EXIT_USAGE),
    (ConflictError, EXIT_USAGE),
    (FatalJobError, EXIT_FATAL),
)


def exit_code_of(exc: KullbatchError) -> int:
    """2 usage, not found or conflict; 3 fatal; 1 any other error of the tree."""
    return next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)), EXIT_INCOMPLETE)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"kullbatch: error: {message}", err=True)
    raise typer.Exit(code)


def failed(exc: KullbatchError) -> NoReturn:
    """One line on stderr and the exit code of the error's class."""
    fail(str(exc), exit_code_of(exc))


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; the errors every command shares become clear exits."""
    try:
        return asyncio.run(work())
    except KullbatchError as exc:
        failed(exc)
    except BrokenPipeError:
        raise  # stdout's reader went away: QuietPipeGroup ends the command
    except (sqlite3.Error, OSError) as exc:  # a --db that is not a database, or not writable
        fail(f"database: {exc}")
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


class QuietPipeGroup(TyperGroup):
    """Every command: once stdout's reader has gone (`| head`), the command ends quietly.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError wherever it
    happens; here it becomes exit 141 with nothing on stderr. Stdout is flushed before the
    command returns, so what is still buffered meets the closed pipe here too, not at exit.
    """

    def invoke(self, ctx: Any) -> Any:  # click's Context, which typer vendors privately
        try:
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for the closed pipe goes nowhere, and
    Python's flush at exit has nothing left to complain about."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's runner captures it)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
