"""`serve`'s users: who a token belongs to, and which jobs each one may see.

`serve --users FILE` reads ``{"users": [{"name": "alice", "token": "…", "admin": false}]}``
once, at start; a bad file is a UsageError naming the line or the field (exit 2). Without a
file, the one `--token` is one admin user. A token is looked up in constant time: every user's
token is compared whole, so neither a match's position nor a shared prefix shows in the timing.

A job belongs to the user who posted it (`batch_jobs.user_id`); another user's job is reported
exactly as a job that does not exist. Jobs the CLI starts belong to the local user name.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kullbatch.errors import UsageError
from kullbatch.service.jobs import JobNotFoundError, get_job, local_user_name

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from kullbatch.models import JobStatus
    from kullbatch.service.jobs import Service
    from kullbatch.store.rows import JobRow

MIN_TOKEN_LENGTH = 16
_USER_KEYS = frozenset({"name", "token", "admin"})


@dataclass(frozen=True, slots=True)
class User:
    name: str
    token: str
    admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        """An admin sees every job; anyone else only their own."""
        return self.admin or owner == self.name


class Users:
    """The users a server knows, found by token."""

    def __init__(self, users: Iterable[User]) -> None:
        self.users = tuple(users)
        if not self.users:
            raise ValueError("a server needs at least one user")

    @classmethod
    def single(cls, token: str, name: str | None = None) -> Users:
        """`--token` alone: one admin user, named after the local user."""
        return cls([User(name or local_user_name(), token, admin=True)])

    def find(self, given: str | None) -> User | None:
        """The user whose token is `given`, compared with every token in constant time; None
        for no match, an empty token or one that is not text."""
        if not given:
            return None
        try:
            offered = given.encode("utf-8")
        except UnicodeEncodeError:  # a header's undecodable bytes: not a token of ours
            return None
        found: User | None = None
        for user in self.users:  # no early exit: the time does not say which one matched
            if hmac.compare_digest(offered, user.token.encode("utf-8")):
                found = user
        return found


def token_problem(token: str) -> str | None:
    """Why a token is too weak to guard a server, or None."""
    if not token.strip():
        return "is blank"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is {len(token)} characters; a token needs at least {MIN_TOKEN_LENGTH}"
    if token != token.strip():
        return "starts or ends with white space"
    return None


def load_users(path: Path) -> Users:
    """Read and check a users file; any problem is a UsageError naming the line or field."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--users {path}: cannot read: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise UsageError(f"--users {path}: {where}: malformed JSON: {exc.msg}") from None
    return users_from_document(document, str(path))


def users_from_document(document: object, name: str) -> Users:
    """Check a parsed users file; errors name the field (``users[2].token``)."""
    if not isinstance(document, dict) or not isinstance(document.get("users"), list):
        raise _problem(name, "users", 'expected {"users": [{"name", "token", "admin"}, …]}')
    entries: list[object] = document["users"]
    if not entries:
        raise _problem(name, "users", "lists nobody; name at least one user")
    users: list[User] = []
    for index, entry in enumerate(entries):
        place = f"users[{index}]"
        user = _user(entry, name, place)
        if any(other.name == user.name for other in users):
            raise _problem(name, f"{place}.name", f"{user.name!r} is listed twice")
        if any(other.token == user.token for other in users):
            raise _problem(name, f"{place}.token", "is another user's too; one token, one user")
        users.append(user)
    return Users(users)


def _user(entry: object, name: str, place: str) -> User:
    if not isinstance(entry, dict):
        raise _problem(name, place, "must be an object with name, token and admin")
    unknown = sorted(set(entry) - _USER_KEYS)
    if unknown:
        raise _problem(name, f"{place}.{unknown[0]}", "unknown; a user has name, token, admin")
    user_name, token, admin = entry.get("name"), entry.get("token"), entry.get("admin", False)
    if not isinstance(user_name, str) or not user_name.strip():
        raise _problem(name, f"{place}.name", "must be a non-empty string")
    if not isinstance(token, str):
        raise _problem(name, f"{place}.token", "must be a string")
    problem = token_problem(token)
    if problem is not None:
        raise _problem(name, f"{place}.token", problem)
    if not isinstance(admin, bool):
        raise _problem(name, f"{place}.admin", "must be true or false")
    return User(user_name, token, admin)


def _problem(name: str, field: str, problem: str) -> UsageError:
    return UsageError(f"--users {name}: {field}: {problem}")


async def owned_job(service: Service, job_id: str, user: User) -> JobRow:
    """The job, if `user` may see it; another user's job is as missing as an unknown one."""
    job = await get_job(service.store, job_id)
    if not user.may_see(job.user_id):
        raise JobNotFoundError(job_id, service.store.path)
    return job


async def statuses_of(service: Service, user: User) -> list[JobStatus]:
    """The status of each of `user`'s own jobs, newest first."""
    return [await service.status(job.id) for job in await service.store.owners.jobs_of(user.name)]
