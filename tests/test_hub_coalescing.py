"""The hub coalesces: a client gets each job's latest state a few times a second, not every
event; each message is serialized once for every client; ends are never lost."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from kullbatch.models import EventKind, JobState, ProgressEvent
from kullbatch.service.users import User, Users
from kullbatch.web import hub as hub_module
from kullbatch.web.hub import FLUSH_INTERVAL, Hub, _Client
from tests.test_hub import FakeRequest

ALICE = User("alice", "alice-token-0123456789")
BOB = User("bob", "bob-token-abcdefghijkl")
BOSS = User("boss", "boss-token-ABCDEFGHIJ", admin=True)
X, Y = "batch_1_xxxxxx", "batch_1_yyyyyy"


def event(
    kind: EventKind,
    rated: int,
    job_id: str = X,
    status: JobState = JobState.PROCESSING,
    total: int = 1000,
) -> ProgressEvent:
    return ProgressEvent(
        kind=kind,
        job_id=job_id,
        total=total,
        rated=rated,
        failed=0,
        retrying=0,
        status=status,
        shoot_id="wedding",
        provider="local",
        eta=5,
    )


def ended(rated: int, job_id: str = X, status: JobState = JobState.COMPLETED) -> ProgressEvent:
    return event(EventKind.ENDED, rated, job_id, status)


def said(text: str) -> tuple[str, str, int]:
    data = json.loads(text)["data"]
    return data["jobId"], data["status"], data["processedCount"]


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[tuple[str, str, int]]:
    messages = []
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            messages.append(said(message.data))
    return messages


async def connected(aiohttp_client, hub: Hub, *tokens: str) -> list:
    """A test server for `hub` and one WebSocket per token, each registered by the hub."""
    application = web.Application()
    application.router.add_get("/ws", hub.websocket)
    client = await aiohttp_client(application)
    sockets = [await client.ws_connect(f"/ws?token={token}") for token in tokens]
    while hub.clients < len(tokens):  # the server registers a client just after the upgrade
        await asyncio.sleep(0)
    return sockets


async def test_a_burst_of_1000_photos_is_a_handful_of_messages_each_serialized_once(
    aiohttp_client, monkeypatch
):
    """Four flushes and the end: five messages per client, the last with the final counts, and
    five serializations for the three clients together."""
    serialized = []
    original = hub_module.progress_message

    def counting(event: ProgressEvent) -> dict:
        serialized.append(event.rated)
        return original(event)

    hub = Hub("t", interval=3600)  # no timer fires: the test flushes, as the timer would
    sockets = await connected(aiohttp_client, hub, "t", "t", "t")
    monkeypatch.setattr(hub_module, "progress_message", counting)
    heard: list[list[tuple[str, str, int]]] = [[], [], []]
    hub.handle(event(EventKind.STARTED, 0))
    for rated in range(1, 1001):
        hub.handle(event(EventKind.RATED, rated))
        hub.handle(event(EventKind.RETRYING, rated))  # not announced: changes nothing
        if rated % 250 == 0:
            hub.flush()
            for ws, seen in zip(sockets, heard, strict=True):  # as a tick would find them
                seen.append(said(await asyncio.wait_for(ws.receive_str(), 10)))
    hub.handle(ended(1000))
    await hub.close()
    for ws, seen in zip(sockets, heard, strict=True):
        seen.extend(await read_until_closed(ws))
    expected = [(X, "processing", n) for n in (250, 500, 750, 1000)] + [(X, "completed", 1000)]
    assert heard == [expected] * 3
    assert serialized == [250, 500, 750, 1000, 1000]


async def test_the_timer_sends_a_bursts_latest_state_unasked(aiohttp_client):
    """With the default interval, a burst handled at once arrives as one message, its last
    count; the end follows."""
    hub = Hub("t")
    assert 0.1 <= FLUSH_INTERVAL <= 0.5  # a few a second: smooth to the eye, cheap to send
    (ws,) = await connected(aiohttp_client, hub, "t")
    for rated in range(1, 101):
        hub.handle(event(EventKind.RATED, rated))
    assert said(await asyncio.wait_for(ws.receive_str(), 10)) == (X, "processing", 100)
    hub.handle(ended(100))
    assert said(await asyncio.wait_for(ws.receive_str(), 10)) == (X, "completed", 100)
    await hub.close()


class GatedSocket:
    """A WebSocket whose first send waits for `release`; it records what it sent."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()
        self.release = asyncio.Event()
        self.sent: list[str] = []

    async def send_str(self, text: str) -> None:
        self.sending.set()
        await self.release.wait()
        self.sent.append(text)

    async def close(self) -> None:
        pass


def attach(hub: Hub, socket: object, user: User = BOSS) -> tuple[_Client, FakeRequest]:
    request = FakeRequest()
    client = _Client(socket, request, user)
    hub._clients[client] = asyncio.create_task(hub._write(client))
    return client, request


async def test_every_end_reaches_a_slow_client_in_order_and_no_later_state_replaces_it():
    """A job cancelled, resumed and completed while the client's send is stuck: the client
    gets the cancel, then the completion; a state after an end waits behind it."""
    hub = Hub("t", interval=3600)
    socket = GatedSocket()
    client, _ = attach(hub, socket)
    hub.handle(event(EventKind.RATED, 1))
    hub.flush()
    await socket.sending.wait()  # stuck in sending the first state
    hub.handle(event(EventKind.RATED, 2))
    hub.handle(ended(2, status=JobState.CANCELLED))
    hub.handle(event(EventKind.STARTED, 2))  # resumed
    hub.handle(event(EventKind.RATED, 3))
    hub.flush()
    hub.handle(event(EventKind.RATED, 7, job_id=Y))
    hub.flush()
    assert [said(text) for text in client.pending.values()] == [
        (X, "cancelled", 2),
        (X, "processing", 3),
        (Y, "processing", 7),
    ]
    hub.handle(ended(4))  # the end replaces the state before it, not the cancel
    socket.release.set()
    await hub.close()
    assert [said(text) for text in socket.sent] == [
        (X, "processing", 1),
        (X, "cancelled", 2),
        (Y, "processing", 7),
        (X, "completed", 4),
    ]


class StuckSocket:
    """A WebSocket whose first send never returns: a peer that stopped reading."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()

    async def send_str(self, _text: str) -> None:
        self.sending.set()
        await asyncio.Event().wait()


async def test_a_never_reading_client_holds_one_state_per_job_through_10000_events():
    """Two jobs, 10,000 photos, 100 flushes while the client's send is stuck: it holds at most
    two messages, the jobs' latest states, then their two ends; it is not cut off before
    stall_limit flushes."""
    hub = Hub("t", interval=3600, stall_limit=150)
    socket = StuckSocket()
    client, request = attach(hub, socket)
    hub.handle(event(EventKind.STARTED, 0))
    hub.flush()
    await socket.sending.wait()
    held = []
    for n in range(1, 10_001):
        hub.handle(event(EventKind.RATED, (n + 1) // 2, job_id=X if n % 2 else Y, total=5000))
        if n % 100 == 0:
            hub.flush()
            held.append(len(client.pending))
    assert max(held) == 2 and client.stalled_flushes == 100
    assert [said(text) for text in client.pending.values()] == [
        (X, "processing", 5000),
        (Y, "processing", 5000),
    ]
    hub.handle(ended(5000, job_id=X))
    hub.handle(ended(5000, job_id=Y))
    assert [said(text)[1] for text in client.pending.values()] == ["completed", "completed"]
    assert hub.clients == 1 and not request.transport.aborted
    await hub.close(grace=0)
    assert hub.clients == 0 and request.transport.aborted and not client.pending


async def test_coalesced_messages_reach_only_the_jobs_owner_and_admins(aiohttp_client):
    """Alice's, Bob's and an ownerless job, interleaved and flushed together: each user hears
    only their own job, up to its end; the admin hears all three."""
    hub = Hub(Users([ALICE, BOB, BOSS]), interval=3600)
    hub.own(X, "alice")
    hub.own(Y, "bob")
    orphan = "batch_1_zzzzzz"  # no known owner: admins only
    sockets = await connected(aiohttp_client, hub, ALICE.token, BOB.token, BOSS.token)
    heard: list[list[tuple[str, str, int]]] = [[], [], []]
    for rated in range(1, 301):
        for job_id in (X, Y, orphan):
            hub.handle(event(EventKind.RATED, rated, job_id=job_id))
        if rated % 50 == 0:
            hub.flush()
            # as a tick would find them: one message each for alice and bob, three for the admin
            for ws, seen, count in zip(sockets, heard, (1, 1, 3), strict=True):
                for _ in range(count):
                    seen.append(said(await asyncio.wait_for(ws.receive_str(), 10)))
    for job_id in (X, Y, orphan):
        hub.handle(ended(300, job_id=job_id))
    await hub.close()
    for ws, seen in zip(sockets, heard, strict=True):
        seen.extend(await read_until_closed(ws))
    alice, bob, boss = heard

    def of(heard: list[tuple[str, str, int]], job_id: str) -> list[tuple[str, int]]:
        return [(status, count) for job, status, count in heard if job == job_id]

    expected = [("processing", n) for n in range(50, 301, 50)] + [("completed", 300)]
    assert {job for job, _, _ in alice} == {X} and of(alice, X) == expected
    assert {job for job, _, _ in bob} == {Y} and of(bob, Y) == expected
    assert {job for job, _, _ in boss} == {X, Y, orphan}
    assert of(boss, X) == of(boss, Y) == of(boss, orphan) == expected
