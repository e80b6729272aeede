"""The WebSocket hub: one more subscriber to engine events, fanning progress out to clients.

Every client gets the spec's message after each photo,
``{"type": "SHOOT_PROGRESS", "data": {"shootId", "jobId", "status", "processedCount",
"totalCount", "failedCount", "provider", "eta"}}``, and a last one with the end status.

The engine calls `handle` synchronously and must never wait for a browser: each client has a
small queue of its own, filled by `handle` and emptied by a writer task. When the queue is full
the oldest message is dropped (the latest count is what matters; order is kept, so counts never
go backwards), and a client whose one send stays stuck while `stall_limit` messages were dropped
has stopped reading: it is disconnected. aiohttp's heartbeat catches a silent peer on a quiet
job.

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
from collections import deque
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
    """One connection: a bounded queue and the bookkeeping of a stuck send."""

    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, limit: int, user: User
    ) -> None:
        self.ws = ws
        self.user = user
        self.request = request
        self.queue: deque[str] = deque(maxlen=limit)
        self.ready = asyncio.Event()
        self.sending = False
        self.dropped_while_sending = 0
        self.closing = False

    def offer(self, text: str) -> None:
        if len(self.queue) == self.queue.maxlen and self.sending:
            self.dropped_while_sending += 1
        self.queue.append(text)
        self.ready.set()

    def abort(self) -> None:
        """Cut the connection without a goodbye: a peer that does not read would not hear it."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class Hub:
    """Subscribe `handle` to every job's events; serve clients with `websocket`."""

    def __init__(
        self, users: Users | str, *, queue_limit: int = 16, stall_limit: int = 1000
    ) -> None:
        self.users = Users.single(users) if isinstance(users, str) else users
        self.token = self.users.users[0].token
        self._queue_limit = queue_limit
        self._stall_limit = stall_limit
        self._clients: dict[_Client, asyncio.Task[None]] = {}
        self._latest: dict[str, ProgressEvent] = {}
        self._owners: dict[str, str] = {}

    @property
    def clients(self) -> int:
        return len(self._clients)

    def own(self, job_id: str, owner: str) -> None:
        """Whose job this is: only they (and admins) hear about it."""
        self._owners[job_id] = owner

    def handle(self, event: ProgressEvent) -> None:
        """The engine's subscriber: remember the job's state, queue it for every client."""
        if event.kind not in _ANNOUNCED:
            return
        self._latest[event.job_id] = event
        if not self._clients:
            return
        text = json.dumps(progress_message(event))
        owner = self._owners.get(event.job_id)
        for client in list(self._clients):
            if not client.user.may_see(owner):
                continue
            client.offer(text)
            if client.dropped_while_sending >= self._stall_limit:
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
        client = _Client(ws, request, self._queue_limit, user)
        for event in self._latest.values():  # a late joiner sees the current state first
            if user.may_see(self._owners.get(event.job_id)):
                client.offer(json.dumps(progress_message(event)))
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
        """Send the client's queue in order; after `close`, finish the queue then close."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await client.ready.wait()
                client.ready.clear()
                while client.queue:
                    text = client.queue.popleft()
                    client.sending = True
                    await client.ws.send_str(text)
                    client.sending = False
                    client.dropped_while_sending = 0
                if client.closing:
                    await client.ws.close()
                    return

    def _disconnect(self, client: _Client) -> None:
        """A client that stopped reading: its connection is cut, its queue forgotten."""
        writer = self._clients.pop(client)
        writer.cancel()
        client.queue.clear()
        client.abort()

    async def close(self, grace: float = 5.0) -> None:
        """Let every client receive what is queued (the end status), then close them."""
        for client in self._clients:
            client.closing = True
            client.ready.set()
        writers = list(self._clients.values())
        if writers:
            _, late = await asyncio.wait(writers, timeout=grace)
            for client, writer in list(self._clients.items()):
                if writer in late:
                    self._disconnect(client)
