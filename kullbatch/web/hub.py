"""The WebSocket hub: one more subscriber to engine events, fanning progress out to clients.

Clients hear the spec's message,
``{"type": "SHOOT_PROGRESS", "data": {"shootId", "jobId", "status", "processedCount",
"totalCount", "failedCount", "provider", "eta"}}``, with a job's latest state at most every
`FLUSH_INTERVAL` while it runs, and a last one with its end status.

The engine calls `handle` synchronously and must never wait for a browser: `handle` only
remembers the job's latest event and marks it changed. A flush, `FLUSH_INTERVAL` after the first
change, serializes each changed job's state once and hands the same text to every client that
may see it; a job's end is flushed at once and is never superseded. Each client keeps only what
it has not been sent yet: per job its latest state (a newer one replaces it in place) and the end
messages, in order, each after the states that came before it. A writer task per client sends
them. A slow client so gets the latest state when it can, and holds at most one state per job;
a client whose one send stays stuck while `stall_limit` flushes had something for it has stopped
reading: it is disconnected. aiohttp's heartbeat catches a silent peer on a quiet job.

With users (`serve --users`), a client hears only about the jobs of the user whose token it
connected with, and an admin about every job: the server tells the hub each job's owner (`own`)
before the job runs; a job of no known owner goes to admins only. A browser's WebSocket must come
from the server's own page: an `Origin` naming another site is refused (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from kullbatch.models import EventKind
from kullbatch.service.users import User, Users

if TYPE_CHECKING:
    from kullbatch.models import ProgressEvent

# the events after which clients hear about a job: its start, each photo, its end
_ANNOUNCED = frozenset({EventKind.STARTED, EventKind.RATED, EventKind.FAILED, EventKind.ENDED})
HEARTBEAT = 30.0  # seconds between pings; a peer that does not answer is closed
# Seconds between two progress messages about one job. Four a second still moves a bar and an
# ETA smoothly to the eye, while a job rating hundreds of photos a second costs each client four
# messages a second instead of hundreds (50 clients were sent every event: 1.31x the job's wall).
FLUSH_INTERVAL = 0.25
# Flushes that may find a client's one send still stuck before it is cut off: about a minute
# of a running job at FLUSH_INTERVAL (nothing piles up meanwhile: one state per job is kept).
STALL_LIMIT = 240

# what one flush hands out: (job id, the job's owner, the message's text, is it the job's end)
_Message = tuple[str, str | None, str, bool]


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the token cannot be guessed a character at a time."""
    if not given:
        return False
    try:
        offered = given.encode()
    except UnicodeEncodeError:  # a header's bytes that are not text: no token of ours
        return False
    return hmac.compare_digest(offered, expected.encode())


def same_origin(request: web.Request) -> bool:
    """No `Origin` (not a browser), or the server's own address as the browser reached it."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == request.host.lower()


def progress_message(event: ProgressEvent) -> dict[str, Any]:
    """The spec's SHOOT_PROGRESS message for an engine event."""
    return {
        "type": "SHOOT_PROGRESS",
        "data": {
            "shootId": event.shoot_id,
            "jobId": event.job_id,
            "status": event.status.value,
            "processedCount": event.rated,
            "totalCount": event.total,
            "failedCount": event.failed,
            "provider": event.provider,
            "eta": event.eta,
        },
    }


class _Client:
    """One connection: what it has not been sent yet, and the bookkeeping of a stuck send."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, user: User) -> None:
        self.ws = ws
        self.user = user
        self.request = request
        # in sending order: a job id keys its latest state, (job id, n) its n-th end message
        self.pending: dict[str | tuple[str, int], str] = {}
        self._ends = 0
        self.ready = asyncio.Event()
        self.sending = False
        self.stalled_flushes = 0
        self.closing = False

    def offer(self, job_id: str, text: str, *, final: bool) -> None:
        """Queue a job's state: it replaces the job's state not yet sent; an end is kept apart,
        so a state the job reaches later (a resume) cannot replace it."""
        if final:
            self.pending.pop(job_id, None)  # the end says all the state said, and is newer
            self._ends += 1
            self.pending[(job_id, self._ends)] = text
        else:
            self.pending[job_id] = text
        self.ready.set()

    def next_message(self) -> str:
        key = next(iter(self.pending))
        return self.pending.pop(key)

    def abort(self) -> None:
        """Cut the connection without a goodbye: a peer that does not read would not hear it."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class Hub:
    """Subscribe `handle` to every job's events; serve clients with `websocket`."""

    def __init__(
        self,
        users: Users | str,
        *,
        interval: float = FLUSH_INTERVAL,
        stall_limit: int = STALL_LIMIT,
    ) -> None:
        self.users = Users.single(users) if isinstance(users, str) else users
        self.token = self.users.users[0].token
        self._interval = interval
        self._stall_limit = stall_limit
        self._clients: dict[_Client, asyncio.Task[None]] = {}
        self._latest: dict[str, ProgressEvent] = {}
        self._owners: dict[str, str] = {}
        self._changed: dict[str, None] = {}  # jobs whose state clients have not been sent, in order
        self._timer: asyncio.TimerHandle | None = None

    @property
    def clients(self) -> int:
        return len(self._clients)

    def own(self, job_id: str, owner: str) -> None:
        """Whose job this is: only they (and admins) hear about it."""
        self._owners[job_id] = owner

    def handle(self, event: ProgressEvent) -> None:
        """The engine's subscriber: remember the job's state; its end goes out at once, any
        other change at the next flush."""
        if event.kind not in _ANNOUNCED:
            return
        job_id = event.job_id
        self._latest[job_id] = event
        if not self._clients:  # a client that connects is sent `_latest` first
            return
        if event.kind is EventKind.ENDED:
            self._changed.pop(job_id, None)
            self._deliver([(job_id, self._owners.get(job_id), _text(event), True)])
            return
        self._changed[job_id] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Send each job's state changed since the last flush, serialized once for all."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        changed, self._changed = self._changed, {}
        if changed and self._clients:
            owners = self._owners
            self._deliver(
                [(job, owners.get(job), _text(self._latest[job]), False) for job in changed]
            )

    def _deliver(self, messages: list[_Message]) -> None:
        """Queue each message for every client that may see it; a stuck client is cut off."""
        for client in list(self._clients):
            offered = False
            for job_id, owner, text, final in messages:
                if client.user.may_see(owner):
                    client.offer(job_id, text, final=final)
                    offered = True
            if offered and client.sending:
                client.stalled_flushes += 1
                if client.stalled_flushes >= self._stall_limit:
                    self._disconnect(client)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """`GET /ws?token=…`: refused with 401 before the upgrade unless the token is a user's,
        and with 403 when a browser opens it from another site's page."""
        user = self.users.find(request.query.get("token"))
        if user is None:
            raise web.HTTPUnauthorized(text="a valid ?token= is required\n")
        if not same_origin(request):
            raise web.HTTPForbidden(text="this WebSocket serves only this server's own page\n")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT)
        await ws.prepare(request)
        client = _Client(ws, request, user)
        for job_id, event in self._latest.items():  # a late joiner sees the current state first
            if user.may_see(self._owners.get(job_id)):
                client.offer(job_id, _text(event), final=False)
        self._clients[client] = asyncio.create_task(self._write(client), name="kullbatch-ws")
        try:
            async for _ in ws:  # clients have nothing to say; reading shows the close
                pass
        finally:
            writer = self._clients.pop(client, None)
            if writer is not None and not client.closing:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        return ws

    async def _write(self, client: _Client) -> None:
        """Send what the client has not been sent, in order; after `close`, finish it, close."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await client.ready.wait()
                client.ready.clear()
                while client.pending:
                    text = client.next_message()
                    client.sending = True
                    await client.ws.send_str(text)
                    client.sending = False
                    client.stalled_flushes = 0
                if client.closing:
                    await client.ws.close()
                    return

    def _disconnect(self, client: _Client) -> None:
        """A client that stopped reading: its connection is cut, what it was owed forgotten."""
        writer = self._clients.pop(client)
        writer.cancel()
        client.pending.clear()
        client.abort()

    async def close(self, grace: float = 5.0) -> None:
        """Flush, let every client receive what it is owed (the end status), then close them."""
        self.flush()
        for client in self._clients:
            client.closing = True
            client.ready.set()
        writers = list(self._clients.values())
        if writers:
            _, late = await asyncio.wait(writers, timeout=grace)
            for client, writer in list(self._clients.items()):
                if writer in late:
                    self._disconnect(client)


def _text(event: ProgressEvent) -> str:
    return json.dumps(progress_message(event))
