"""`serve --users`: each token is one user, who sees and acts on only their own jobs."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.errors import UsageError
from kullbatch.manifest import load_manifest
from kullbatch.service import jobs
from kullbatch.service.users import User, Users, load_users, users_from_document
from kullbatch.web import server
from kullbatch.web.hub import Hub

EXAMPLES = Path(__file__).parent.parent / "examples"
ALICE = User("alice", "alice-token-0123456789")
BOB = User("bob", "bob-token-abcdefghijkl")
BOSS = User("boss", "boss-token-ABCDEFGHIJ", admin=True)


def auth(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"}


def body(n: int = 2) -> dict:
    photos = sorted((EXAMPLES / "photos").iterdir())[:n]
    images = [
        {"id": f"img{i}", "filename": p.name, "path": f"photos/{p.name}"}
        for i, p in enumerate(photos)
    ]
    return {"shootId": "wedding", "images": images, "providerId": "local"}


class Studio:
    """A test client of one server with three users."""

    def __init__(self, client, db: Path) -> None:
        self.client = client
        self.db = db

    async def call(self, method: str, path: str, user: User, payload=None):
        response = await self.client.request(
            method, f"/api/batch/{path}", json=payload, headers=auth(user)
        )
        if response.content_type != "application/json":
            return response.status, await response.read()
        return response.status, await response.json()

    async def post_job(self, user: User) -> str:
        status, answer = await self.call("POST", "process", user, body())
        assert status == 202, answer
        return answer["jobId"]

    async def until_ended(self, user: User, job_id: str) -> None:
        for _ in range(500):
            status, answer = await self.call("GET", f"status/{job_id}", user)
            if answer["status"] != "processing":
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{job_id} did not end")


@pytest.fixture
async def studio(tmp_path, aiohttp_client):
    root = tmp_path / "root"
    shutil.copytree(EXAMPLES / "photos", root / "photos")
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        hub = Hub(Users([ALICE, BOB, BOSS]))
        client = await aiohttp_client(server.build_app(service, hub, root=root))
        yield Studio(client, tmp_path / "k.db")
        await client.close()


async def test_a_posted_job_records_its_user(studio):
    """The token's user is the job's user_id in the database."""
    job_id = await studio.post_job(ALICE)
    await studio.until_ended(ALICE, job_id)
    with sqlite3.connect(studio.db) as db:
        owner, served = db.execute(
            "SELECT user_id, served FROM batch_jobs WHERE id = ?", (job_id,)
        ).fetchone()
    assert (owner, served) == ("alice", 1)


async def test_another_users_job_is_404_on_every_route_as_if_it_did_not_exist(studio):
    """Status, results, cancel, resume, thumbnail and the contact sheet's rating: bob gets
    exactly what no job gets."""
    job_id = await studio.post_job(ALICE)
    await studio.until_ended(ALICE, job_id)
    routes = [
        ("GET", "status/{}"),
        ("GET", "results/{}"),
        ("GET", "results/{}?thumbnails=1"),
        ("POST", "cancel/{}"),
        ("POST", "resume/{}"),
        ("GET", "thumbnail/{}/img0"),
        ("PUT", "results/{}/img0/rating"),
    ]
    for method, route in routes:
        payload = {"rating": 5} if method == "PUT" else None
        status, answer = await studio.call(method, route.format(job_id), BOB, payload)
        missing_status, missing = await studio.call(
            method, route.format("batch_1_nojob1"), BOB, payload
        )
        assert status == missing_status == 404, (route, answer)
        assert answer["error"] == missing["error"].replace("batch_1_nojob1", job_id)
    # the owner still reaches it, and bob's tries changed nothing
    status, answer = await studio.call("GET", f"status/{job_id}", ALICE)
    assert status == 200 and answer["status"] == "completed"
    status, _ = await studio.call("GET", f"thumbnail/{job_id}/img0", ALICE)
    assert status == 200
    status, answer = await studio.call("GET", f"results/{job_id}", ALICE)
    ratings = {result["imageId"]: result["photographerRating"] for result in answer["results"]}
    assert ratings["img0"] is None


async def test_each_user_lists_only_their_jobs_and_an_admin_lists_all(studio):
    alice_job = await studio.post_job(ALICE)
    bob_job = await studio.post_job(BOB)
    await studio.until_ended(ALICE, alice_job)
    await studio.until_ended(BOB, bob_job)
    listed = {}
    for user in (ALICE, BOB, BOSS):
        status, answer = await studio.call("GET", "jobs", user)
        assert status == 200
        listed[user.name] = {job["jobId"] for job in answer}
    assert listed == {"alice": {alice_job}, "bob": {bob_job}, "boss": {alice_job, bob_job}}
    # an admin acts on anyone's job
    status, answer = await studio.call("GET", f"results/{bob_job}", BOSS)
    assert status == 200 and answer["jobId"] == bob_job


async def read_progress(ws, until: set[str]) -> set[str]:
    """The job ids a client hears about, until each job in `until` has ended."""
    seen: set[str] = set()
    ended: set[str] = set()
    while not until <= ended:
        message = await asyncio.wait_for(ws.receive(), 20)
        data = json.loads(message.data)["data"]
        seen.add(data["jobId"])
        if data["status"] != "processing":
            ended.add(data["jobId"])
    return seen


async def test_the_websocket_delivers_a_jobs_progress_only_to_its_owner_and_admins(studio):
    sockets = {
        user.name: await studio.client.ws_connect(f"/ws?token={user.token}")
        for user in (ALICE, BOB, BOSS)
    }
    alice_job = await studio.post_job(ALICE)
    bob_job = await studio.post_job(BOB)
    heard = await asyncio.gather(
        read_progress(sockets["alice"], {alice_job}),
        read_progress(sockets["bob"], {bob_job}),
        read_progress(sockets["boss"], {alice_job, bob_job}),
    )
    await studio.until_ended(ALICE, alice_job)
    await studio.until_ended(BOB, bob_job)
    # whatever is still queued: the end messages of the other job must not be among them
    for ws in sockets.values():
        await ws.close()
    assert heard[0] == {alice_job} and heard[1] == {bob_job}
    assert heard[2] == {alice_job, bob_job}
    # a late joiner's first messages (the jobs' current states) are filtered the same way
    late = await studio.client.ws_connect(f"/ws?token={BOB.token}")
    first = json.loads((await asyncio.wait_for(late.receive(), 5)).data)["data"]
    assert first["jobId"] == bob_job
    await late.close()


async def test_a_wrong_token_and_a_header_that_is_not_text_are_401(studio):
    """Bytes that are not UTF-8 in Authorization are a 401, not a 500."""
    status, _ = await studio.call("GET", "jobs", User("x", "not-a-token-of-anyone"))
    assert status == 401
    host, port = studio.client.host, studio.client.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /api/batch/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xc3\x28"
        b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


async def test_a_websocket_from_another_sites_page_is_refused(studio):
    """A browser sends Origin: another site's page may not follow the jobs; ours may."""
    token = ALICE.token
    response = await studio.client.get(
        f"/ws?token={token}", headers={"Origin": "https://evil.example", "Upgrade": "websocket"}
    )
    assert response.status == 403
    own = f"http://{studio.client.host}:{studio.client.port}"
    ws = await studio.client.ws_connect(f"/ws?token={token}", headers={"Origin": own})
    await ws.close()


def test_users_are_found_by_token_in_constant_time_and_never_by_a_prefix():
    users = Users([ALICE, BOB, BOSS])
    assert users.find(BOB.token) == BOB
    assert users.find(BOB.token[:-1]) is None
    assert users.find(BOB.token + "x") is None
    assert users.find("") is None and users.find(None) is None
    assert users.find("\udcff" * 20) is None  # a header's undecodable bytes


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"users": [{"name": "a", "token": "short", "admin": False}]}, "users[0].token"),
        ({"users": [{"name": "a", "token": " " * 20}]}, "users[0].token"),
        ({"users": [{"name": "", "token": "x" * 20}]}, "users[0].name"),
        ({"users": [{"name": "a", "token": "x" * 20, "admin": "yes"}]}, "users[0].admin"),
        ({"users": [{"name": "a", "token": "x" * 20, "role": "admin"}]}, "users[0].role"),
        (
            {"users": [{"name": "a", "token": "x" * 20}, {"name": "b", "token": "x" * 20}]},
            "users[1].token",
        ),
        (
            {"users": [{"name": "a", "token": "x" * 20}, {"name": "a", "token": "y" * 20}]},
            "users[1].name",
        ),
        ({"users": []}, "users"),
        ([], "users"),
    ],
)
def test_a_bad_users_document_names_the_field(document, field):
    with pytest.raises(UsageError) as caught:
        users_from_document(document, "users.json")
    assert f"users.json: {field}: " in str(caught.value)


def test_a_users_file_that_is_not_json_names_the_line(tmp_path):
    path = tmp_path / "users.json"
    path.write_text('{"users": [\n  {"name": "a",}\n]}')
    with pytest.raises(UsageError, match="line 2, column"):
        load_users(path)


def test_serve_with_a_bad_users_file_exits_2_with_one_line(tmp_path):
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"users": [{"name": "a", "token": "short"}]}))
    result = CliRunner().invoke(
        app, ["serve", "--users", str(path), "--port", "0", "--db", str(tmp_path / "k.db")]
    )
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "users[0].token" in result.output and "at least 16" in result.output
    assert not (tmp_path / "k.db").exists()


def test_serve_refuses_a_short_token(tmp_path):
    result = CliRunner().invoke(
        app, ["serve", "--token", "short", "--port", "0", "--db", str(tmp_path / "k.db")]
    )
    assert result.exit_code == 2 and "at least 16" in result.output


async def test_a_job_started_from_the_cli_belongs_to_the_local_user(tmp_path):
    manifest = load_manifest(EXAMPLES / "shoot.json")
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        job = await service.create(manifest, jobs.ProcessSettings())
    assert job.user_id == jobs.local_user_name() and job.user_id
