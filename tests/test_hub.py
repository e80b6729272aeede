"""Live progress over the WebSocket: `process --serve-ws`, a stuck client and the token."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.manifest import load_manifest
from kullbatch.models import (
    EventKind,
    ImageInput,
    JobOptions,
    JobState,
    Mode,
    ProgressEvent,
    Prompt,
)
from kullbatch.run.engine import BatchProcessor, EngineOptions
from kullbatch.service import jobs
from kullbatch.service.users import User
from kullbatch.store.database import Store
from kullbatch.store.rows import NewJob
from kullbatch.web import server
from kullbatch.web.hub import Hub, _Client, progress_message, token_matches
from tests.fakes import ScriptedProvider

EXAMPLES = Path(__file__).parent.parent / "examples"


def event(kind: EventKind, rated: int, total: int = 10, **fields) -> ProgressEvent:
    return ProgressEvent(
        kind=kind,
        job_id="batch_1_aaaaaa",
        total=total,
        rated=rated,
        failed=0,
        retrying=0,
        shoot_id="wedding",
        provider="local",
        eta=5,
        **fields,
    )


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[dict]:
    messages = []
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            messages.append(json.loads(message.data))
    return messages


async def test_a_client_follows_a_cli_job_from_its_start_to_its_end_status(tmp_path):
    """Messages arrive in order, counts never decrease, and the last one is the end status."""
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        job = await service.create(load_manifest(EXAMPLES / "shoot.json"), jobs.ProcessSettings())
        async with server.serve_progress("127.0.0.1", 0, "s3cret") as served:
            assert served.url.startswith("ws://127.0.0.1:") and served.url.endswith("?token=s3cret")
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(served.url)
                outcome = await service.run(job, subscribers=[served.hub.handle])
                reading = asyncio.create_task(read_until_closed(ws))
        messages = await reading
    assert outcome.state is JobState.COMPLETED
    assert {m["type"] for m in messages} == {"SHOOT_PROGRESS"}
    counts = [m["data"]["processedCount"] for m in messages]
    assert counts == sorted(counts) and counts[-1] == job.total_images
    last = messages[-1]["data"]
    assert last == {
        "shootId": "example-shoot",
        "jobId": job.id,
        "status": "completed",
        "processedCount": job.total_images,
        "totalCount": job.total_images,
        "failedCount": 0,
        "provider": "local",
        "eta": last["eta"],
    }


async def test_a_wrong_or_missing_token_is_refused_with_401_before_the_upgrade():
    """No WebSocket is opened without the right ?token=."""
    async with (
        server.serve_progress("127.0.0.1", 0, "right") as served,
        aiohttp.ClientSession() as session,
    ):
        base = served.url.split("?")[0]
        for url in (f"{base}?token=wrong", base, f"{base}?token="):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url)
            assert refused.value.status == 401


async def test_a_client_that_connects_mid_job_gets_the_current_state_first(aiohttp_client):
    """The hub remembers each job's latest message and sends it on connect."""
    hub = Hub("t")
    application = web.Application()
    application.router.add_get("/ws", hub.websocket)
    client = await aiohttp_client(application)
    hub.handle(event(EventKind.STARTED, 0))
    hub.handle(event(EventKind.RATED, 3))
    hub.handle(event(EventKind.RETRYING, 3))  # not a photo's end: not announced
    ws = await client.ws_connect("/ws?token=t")
    first = await ws.receive_json()
    assert first["data"]["processedCount"] == 3 and first["data"]["status"] == "processing"
    hub.handle(event(EventKind.ENDED, 10, status=JobState.COMPLETED))
    assert (await ws.receive_json())["data"]["status"] == "completed"
    await hub.close()
    assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE


class StuckSocket:
    """A WebSocket whose first send never returns: a peer that stopped reading."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()

    async def send_str(self, _text: str) -> None:
        self.sending.set()
        await asyncio.Event().wait()


class FakeTransport:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeRequest:
    def __init__(self) -> None:
        self.transport = FakeTransport()


async def test_a_stuck_client_keeps_only_the_latest_state_and_is_cut_off_after_stall_limit():
    """While its send is stuck a client holds one state per job, the newest; once stall_limit
    flushes had something for it, the peer is cut."""
    hub = Hub("t", interval=3600, stall_limit=3)
    socket, request = StuckSocket(), FakeRequest()
    client = _Client(socket, request, User("t", "t", admin=True))
    hub._clients[client] = asyncio.create_task(hub._write(client))
    hub.handle(event(EventKind.RATED, 1))
    hub.flush()
    await socket.sending.wait()  # the writer is now stuck in its first send
    for rated in range(2, 6):
        hub.handle(event(EventKind.RATED, rated))
    hub.flush()
    hub.flush()  # nothing changed: not a flush that had something for the client
    assert [json.loads(text)["data"]["processedCount"] for text in client.pending.values()] == [5]
    hub.handle(event(EventKind.RATED, 6))
    hub.flush()
    assert hub.clients == 1 and not request.transport.aborted
    hub.handle(event(EventKind.RATED, 7))
    hub.flush()
    assert hub.clients == 0 and request.transport.aborted and not client.pending


async def test_a_client_that_never_reads_does_not_hold_up_a_job_of_2000_photos(tmp_path):
    """The job ends while a peer reads nothing; the hub holds at most the job's latest state
    and its end for it."""
    hub = Hub("t")
    store = await Store.open(tmp_path / "k.db")
    images = [
        ImageInput(id=f"i{n}", filename=f"{n}.jpg", url=f"https://e.test/{n}.jpg")
        for n in range(2000)
    ]
    job = NewJob(
        "batch_1_bbbbbb",
        "me",
        "shoot",
        "fake",
        "fake-1",
        Mode.FAST,
        "rate",
        None,
        "x",
        JobOptions(),
    )
    await store.create_job(job, images)
    store.start_writer()
    application = web.Application()
    application.router.add_get("/ws", hub.websocket)
    async with server.listening(application, "127.0.0.1", 0) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"GET /ws?token=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await writer.drain()
        while hub.clients == 0:
            await asyncio.sleep(0)
        processor = BatchProcessor(
            job_id=job.id,
            provider=ScriptedProvider(),
            prompt=Prompt("rate"),
            store=store,
            sink=store,
            options=EngineOptions(heartbeat_interval=3600, cancel_poll_interval=600),
            subscribers=[hub.handle],
            rng=random.Random(1),
        )
        outcome = await processor.run(images, total=len(images))
        assert outcome.rated == 2000
        assert hub.clients == 1
        assert all(len(client.pending) <= 2 for client in hub._clients)
        await hub.close(grace=0)
        writer.close()
    await store.stop_writer()
    await store.close()


def test_tokens_are_compared_whole_and_an_empty_one_never_matches():
    """Only the exact token opens; empty or absent never does."""
    assert token_matches("abc", "abc")
    assert not token_matches("abd", "abc") and not token_matches("", "abc")
    assert not token_matches(None, "abc")


def test_the_progress_message_has_the_specs_shape():
    """type SHOOT_PROGRESS, and the data fields of DESIGN.md."""
    data = progress_message(event(EventKind.FAILED, 2))["data"]
    assert list(data) == [
        "shootId",
        "jobId",
        "status",
        "processedCount",
        "totalCount",
        "failedCount",
        "provider",
        "eta",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8787", ("127.0.0.1", 8787)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        ("[::1]:0", ("::1", 0)),
        (":80", ("127.0.0.1", 80)),
    ],
)
def test_serve_ws_addresses_default_to_loopback(text, expected):
    """PORT alone binds 127.0.0.1; HOST:PORT and [IPv6]:PORT bind what they say."""
    assert server.parse_address(text) == expected


@pytest.mark.parametrize("text", ["web", "host:http", "70000"])
def test_a_malformed_serve_ws_address_is_a_usage_error(text, tmp_path):
    """`--serve-ws` with no usable port exits 2 before any job is created."""
    shoot = tmp_path / "shoot"
    shutil.copytree(EXAMPLES / "photos", shoot)
    result = CliRunner().invoke(
        app, ["process", str(shoot), "--db", str(tmp_path / "k.db"), "--serve-ws", text]
    )
    assert result.exit_code == 2 and "--serve-ws" in result.output
    assert not (tmp_path / "k.db").exists()


def test_process_with_serve_ws_prints_the_address_with_its_token(tmp_path):
    """The address and the token from --ws-token are shown on stderr; the job still completes."""
    result = CliRunner().invoke(
        app,
        [
            "process",
            str(EXAMPLES / "shoot.json"),
            "--db",
            str(tmp_path / "k.db"),
            "--serve-ws",
            "127.0.0.1:0",
            "--ws-token",
            "tok",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "live progress: ws://127.0.0.1:" in result.output and "/ws?token=tok" in result.output
