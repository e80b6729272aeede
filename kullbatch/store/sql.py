"""Statements that close their cursor on the database's own thread.

aiosqlite runs every call on one worker thread, but a cursor left to the garbage collector is
finalised on the event loop's thread, where it resets its statement. SQLite shares a prepared
statement between cursors running the same SQL, so that reset can land in the middle of
another cursor binding or stepping the same statement on the worker thread: seen as an
intermittent `sqlite3.InterfaceError: bad parameter or other API misuse` when several jobs
write at once. Every statement whose cursor is not otherwise closed goes through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    import aiosqlite


@dataclass(frozen=True, slots=True)
class Ran:
    """What a statement reports once its cursor is closed."""

    rowcount: int
    lastrowid: int | None


async def run(db: aiosqlite.Connection, sql: str, parameters: Any = ()) -> Ran:
    """Execute one statement and close its cursor on the worker thread."""
    async with db.execute(sql, parameters) as cursor:
        return Ran(cursor.rowcount, cursor.lastrowid)


async def run_many(db: aiosqlite.Connection, sql: str, rows: Iterable[Any]) -> None:
    """Execute one statement for each row and close its cursor on the worker thread."""
    async with db.executemany(sql, rows):
        pass


async def run_script(db: aiosqlite.Connection, script: str) -> None:
    """Execute a script of statements and close its cursor on the worker thread."""
    async with db.executescript(script):
        pass
