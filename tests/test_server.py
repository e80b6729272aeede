"""`kullbatch serve`: the REST API end to end, its token, its limits, and its lifecycle."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.errors import ConflictError, FatalJobError, NotFoundError, UsageError
from kullbatch.manifest import ManifestError, manifest_from_document
from kullbatch.rubrics.loader import RubricError
from kullbatch.run.runtime import JobTakenError
from kullbatch.service import jobs
from kullbatch.web import api as api_module
from kullbatch.web import server
from kullbatch.web.hub import Hub
from tests.dngfile import preview_jpeg, write_dng
from tests.fault_server import completion, expected_rating

EXAMPLES = Path(__file__).parent.parent / "examples"
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET_KEY = "sk-very-secret-key-123"


def body(n: int = 3, provider: str = "local", **extra) -> dict:
    photos = sorted((EXAMPLES / "photos").iterdir())[:n]
    images = [
        {"id": f"img{i}", "filename": p.name, "path": f"photos/{p.name}"}
        for i, p in enumerate(photos)
    ]
    return {"shootId": "wedding", "images": images, "providerId": provider, **extra}


class HeldProvider:
    """An OpenAI-compatible chat server that answers only once `release` is set.

    As strict about the key as the server it stands for: with `key` set, a request must
    carry `Bearer <key>`; without one (a local Ollama), kullbatch must send no Authorization
    at all, since OPENAI_COMPATIBLE_API_KEY is unset in these tests.
    """

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self.release = asyncio.Event()
        self.asked = asyncio.Event()
        self.requests = 0  # received so far, each held until `release`
        self._counted = asyncio.Condition()

    async def start(self, aiohttp_server) -> HeldProvider:
        """Serve /v1/chat/completions on 127.0.0.1; `server` is the running test server."""
        application = web.Application()
        application.router.add_post("/v1/chat/completions", self.chat)
        self.server = await aiohttp_server(application)
        return self

    async def chat(self, request: web.Request) -> web.Response:
        await request.read()
        sent = request.headers.get("Authorization")
        if sent != (None if self.key is None else f"Bearer {self.key}"):
            error = {"message": "Incorrect API key provided", "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        self.asked.set()
        async with self._counted:
            self.requests += 1
            self._counted.notify_all()
        await self.release.wait()
        rating = json.dumps(expected_rating("x"))
        return web.json_response(completion(rating, "qwen3-vl:8b"))

    async def until_asked(self, n: int) -> None:
        """Wait until `n` requests in all have come (and are held)."""
        async with self._counted:
            await self._counted.wait_for(lambda: self.requests >= n)


class Api:
    """A test client of one server, with the WebSocket to wait on jobs' ends."""

    def __init__(self, client, hub: Hub) -> None:
        self.client = client
        self.hub = hub

    async def post(self, path: str, payload=None, headers=AUTH):
        response = await self.client.post(f"/api/batch/{path}", json=payload, headers=headers)
        return response.status, await response.json()

    async def get(self, path: str, headers=AUTH):
        response = await self.client.get(f"/api/batch/{path}", headers=headers)
        return response.status, await response.json()

    async def until_ended(self, ws, job_id: str) -> dict:
        """Read the WebSocket until this job's last message (event-driven: no polling)."""
        async for message in ws:
            data = json.loads(message.data)["data"]
            if data["jobId"] == job_id and data["status"] != "processing":
                return data
        raise AssertionError("the WebSocket closed before the job ended")


@pytest.fixture
async def held(aiohttp_server):
    fake = await HeldProvider(key=SECRET_KEY).start(aiohttp_server)
    yield fake
    fake.release.set()


@pytest.fixture
async def api(tmp_path, aiohttp_client, held):
    root = tmp_path / "root"
    shutil.copytree(EXAMPLES / "photos", root / "photos")
    env = {
        "OPENAI_COMPATIBLE_BASE_URL": str(held.server.make_url("/v1")),
        "OPENAI_COMPATIBLE_API_KEY": SECRET_KEY,
    }
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        hub = Hub(TOKEN)
        client = await aiohttp_client(server.build_app(service, hub, root=root, max_body=64 * 1024))
        yield Api(client, hub)
        held.release.set()
        await client.close()


async def test_a_posted_shoot_is_accepted_run_and_its_results_served(api):
    """202 with the spec's fields; the job completes; status, results and jobs report it."""
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")
    status, accepted = await api.post("process", body(3))
    assert status == 202
    assert accepted == {
        "jobId": accepted["jobId"],
        "message": "Batch processing started",
        "mode": "fast",
        "totalImages": 3,
    }
    ended = await api.until_ended(ws, accepted["jobId"])
    assert ended["status"] == "completed" and ended["processedCount"] == 3
    status, current = await api.get(f"status/{accepted['jobId']}")
    assert status == 200 and current["status"] == "completed" and current["progress"] == 1.0
    status, results = await api.get(f"results/{accepted['jobId']}")
    assert status == 200 and [r["imageId"] for r in results["results"]] == ["img0", "img1", "img2"]
    assert all(1 <= r["starRating"] <= 5 and "thumbnail" not in r for r in results["results"])
    status, listed = await api.get("jobs")
    assert status == 200 and [j["jobId"] for j in listed] == [accepted["jobId"]]


async def test_two_jobs_posted_together_run_at_once_in_one_server(api):
    """Both jobs run in the server's one runtime and both complete."""
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")
    first = (await api.post("process", body(2)))[1]["jobId"]
    second = (await api.post("process", body(4)))[1]["jobId"]
    ended = {}
    async for message in ws:
        data = json.loads(message.data)["data"]
        if data["status"] != "processing":
            ended[data["jobId"]] = data
        if len(ended) == 2:
            break
    assert ended[first]["processedCount"] == 2 and ended[second]["processedCount"] == 4


async def test_results_can_name_thumbnails_and_a_local_photo_is_served_small(api):
    """?thumbnails=1 adds each photo's thumbnail URL; the URL serves a JPEG of at most 320 px."""
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")
    job_id = (await api.post("process", body(2)))[1]["jobId"]
    await api.until_ended(ws, job_id)
    _, results = await api.get(f"results/{job_id}?thumbnails=1")
    url = results["results"][0]["thumbnail"]
    assert url == f"/api/batch/thumbnail/{job_id}/img0"
    response = await api.client.get(url, headers=AUTH)
    assert response.status == 200 and response.content_type == "image/jpeg"
    again = await api.client.get(url, headers=AUTH)  # the job's photos are looked up once
    assert (await again.read()) == await response.read()
    status, missing = await api.get(f"thumbnail/{job_id}/nope")
    assert status == 404 and "nope" in missing["error"]


async def test_a_raw_photo_is_shown_through_its_preview_and_a_vanished_one_is_404(api, tmp_path):
    """A DNG's thumbnail is its embedded preview, upright and small; a photo deleted since
    the run is a 404 naming the file, not the server's path."""
    photos = tmp_path / "root" / "photos"
    write_dng(photos / "a.dng", preview=preview_jpeg((640, 480)), preview_size=(640, 480))
    shoot = body(1)
    shoot["images"].append({"id": "raw", "filename": "a.dng", "path": "photos/a.dng"})
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")
    job_id = (await api.post("process", shoot))[1]["jobId"]
    await api.until_ended(ws, job_id)
    response = await api.client.get(f"/api/batch/thumbnail/{job_id}/raw", headers=AUTH)
    assert response.status == 200 and response.content_type == "image/jpeg"
    with Image.open(io.BytesIO(await response.read())) as thumbnail:
        assert thumbnail.size == (320, 240)
        red, green, blue = thumbnail.convert("RGB").getpixel((10, 120))
        assert green > 120 and red < 100 and blue < 100  # the preview's green half
    first = photos / shoot["images"][0]["filename"]
    first.unlink()
    status, gone = await api.get(f"thumbnail/{job_id}/img0")
    assert status == 404 and gone["error"].startswith(f"cannot read {first.name}: file not found")
    assert str(tmp_path) not in gone["error"]


async def test_every_api_route_wants_the_bearer_token(api):
    """No header, another scheme or a wrong token: 401 with a JSON body; the page itself is open."""
    for headers in ({}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer nope"}):
        status, refused = await api.get("jobs", headers=headers)
        assert status == 401 and "token" in refused["error"]
        status, _ = await api.post("process", body(1), headers=headers)
        assert status == 401
    assert (await api.client.get("/")).status == 200


async def test_unknown_jobs_are_404_on_every_route(api):
    """status, results, cancel, resume and thumbnail all say the job is unknown."""
    for method, path in [
        (api.get, "status/batch_0_nothin"),
        (api.get, "results/batch_0_nothin"),
        (api.post, "cancel/batch_0_nothin"),
        (api.post, "resume/batch_0_nothin"),
        (api.get, "thumbnail/batch_0_nothin/img0"),
    ]:
        status, answer = await method(path)
        assert status == 404 and "batch_0_nothin" in answer["error"]


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"images": [{"id": "a", "filename": "a.jpg"}]}, "images[0]", "url"),
        ({"images": "x"}, "images", "must be a list"),
        (
            {"images": [{"id": "a", "filename": "a", "url": "file:///etc/passwd"}]},
            "images[0].url",
            "http",
        ),
        (
            {"images": [{"id": "a", "filename": "a", "path": "../outside.jpg"}]},
            "images[0].path",
            "beneath",
        ),
        (
            {"images": [{"id": "a", "filename": "a", "path": "/etc/passwd"}]},
            "images[0].path",
            "beneath",
        ),
        ([{"id": "a", "filename": "a", "path": "~/x.jpg"}], "[0].path", "beneath"),
    ],
)
async def test_a_bad_body_is_400_naming_the_field_and_paths_outside_root_are_never_read(
    api, payload, field, words
):
    """Manifest errors name the field; a path out of --root is refused before it is opened."""
    status, answer = await api.post("process", payload)
    assert status == 400 and answer["field"] == field and words in answer["error"]


def stored_options(tmp_path: Path, job_id: str) -> dict:
    """The options the job stored (what `resume` runs it with)."""
    with sqlite3.connect(tmp_path / "k.db") as db:
        (text,) = db.execute("SELECT options FROM batch_jobs WHERE id = ?", (job_id,)).fetchone()
    return json.loads(text)


async def test_the_body_asks_for_a_budget_no_cache_and_burst_comparison(api, tmp_path):
    """`budgetUsd`, `cache: false`, `compareBursts: true` and `flexWait` are `--budget`,
    `--no-cache`, `--compare-bursts` and `--flex-wait`: the job stores them and runs with them;
    absent, the defaults hold."""
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")

    async def run(**extra) -> str:
        status, accepted = await api.post("process", body(2, **extra))
        assert status == 202, accepted
        assert (await api.until_ended(ws, accepted["jobId"]))["status"] == "completed"
        return accepted["jobId"]

    async def cached(job_id: str) -> list[bool]:
        return [r["cached"] for r in (await api.get(f"results/{job_id}"))[1]["results"]]

    plain = await run()
    assert (await api.get(f"status/{plain}"))[1]["budgetUsd"] is None
    options = stored_options(tmp_path, plain)
    assert options["cache"] is True and options["grouping"]["compare"] is False
    assert options["flex_wait"] == 900.0
    asked = await run(budgetUsd=5, cache=False, compareBursts=True, flexWait="10m")
    status, current = await api.get(f"status/{asked}")
    assert status == 200 and current["budgetUsd"] == 5.0
    options = stored_options(tmp_path, asked)
    assert options["cache"] is False and options["grouping"]["compare"] is True
    assert options["flex_wait"] == 600.0
    # the photos were rated before: `cache: false` sent them again, a default job does not
    assert await cached(asked) == [False, False]
    assert await cached(await run()) == [True, True]


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"budgetUsd": "5"}, "budgetUsd", "must be a number of USD, got string"),
        ({"budgetUsd": True}, "budgetUsd", "must be a number of USD, got boolean"),
        ({"budgetUsd": 0}, "budgetUsd", "positive"),
        ({"budgetUsd": -2.5}, "budgetUsd", "positive"),
        ({"budgetUsd": [5]}, "budgetUsd", "must be a number of USD, got list"),
        ({"cache": "no"}, "cache", "must be true or false, got string"),
        ({"compareBursts": 1}, "compareBursts", "must be true or false, got number"),
        ({"mode": "flexible"}, "mode", "'flex'"),
        ({"flexWait": "a while"}, "flexWait", 'must be a duration like "90s" or "10m"'),
        ({"flexWait": -1}, "flexWait", "must be a positive duration"),
        ({"flexWait": {"m": 5}}, "flexWait", "or seconds, got object"),
    ],
)
async def test_a_run_option_of_the_wrong_type_is_400_naming_it(api, tmp_path, extra, field, words):
    status, answer = await api.post("process", body(1, **extra))
    assert status == 400 and answer["field"] == field and words in answer["error"], answer
    with sqlite3.connect(tmp_path / "k.db") as db:
        assert db.execute("SELECT COUNT(*) FROM batch_jobs").fetchone() == (0,)


async def test_the_body_asks_for_flex_mode_where_the_provider_has_a_flex_tier(api):
    """`mode: "flex"` is `--mode flex`: a provider without a flex tier is refused before
    anything is made; one with a flex tier gets a flex job."""
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")
    status, answer = await api.post("process", body(1, mode="flex"))
    assert status == 400 and "no flex tier" in answer["error"] and answer["field"] == "mode"
    status, accepted = await api.post("process", body(1, provider="openai", mode="flex"))
    assert status == 202 and accepted["mode"] == "flex"
    await api.until_ended(ws, accepted["jobId"])  # this server has no OpenAI key: it fails
    status, current = await api.get(f"status/{accepted['jobId']}")
    assert current["mode"] == "flex" and "OPENAI_API_KEY" in current["error"]


async def test_a_budget_for_a_model_without_a_price_is_400_naming_budget_usd(api, tmp_path):
    """The price table cannot bound what it cannot price: refused before a job is made."""
    unpriced = body(1, provider="openai-gpt-unpriced-test", budgetUsd=5)
    status, answer = await api.post("process", unpriced)
    assert status == 400 and answer["field"] == "budgetUsd", answer
    assert "needs a price" in answer["error"]
    with sqlite3.connect(tmp_path / "k.db") as db:
        assert db.execute("SELECT COUNT(*) FROM batch_jobs").fetchone() == (0,)


async def test_a_symlink_out_of_root_is_refused_like_a_path(api, tmp_path):
    """A link beneath --root that leads outside it is outside it."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not a photo")
    (tmp_path / "root" / "link.jpg").symlink_to(outside)
    payload = {"images": [{"id": "a", "filename": "a", "path": "link.jpg"}]}
    status, answer = await api.post("process", payload)
    assert status == 400 and "beneath" in answer["error"]


async def test_malformed_json_an_unknown_provider_and_a_huge_body_are_refused(api):
    """Malformed JSON and a bad provider are 400; a body over the limit is 413."""
    response = await api.client.post("/api/batch/process", data=b"{nope", headers=AUTH)
    assert response.status == 400 and "malformed JSON" in (await response.json())["error"]
    status, answer = await api.post("process", body(1, provider="nobody"))
    assert status == 400 and "nobody" in answer["error"]
    status, answer = await api.post("process", body(1, padding="x" * 70_000))
    assert status == 413 and answer["error"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UsageError("--mode must be fast or economy"), 400),
        (ManifestError("request body", "images[0].url", "must be an http(s) URL"), 400),
        (RubricError("--rubric nope: unknown rubric"), 400),
        (NotFoundError("no job 'batch_0_nope00'"), 404),
        (ConflictError("job batch_1_x is still running"), 409),
        (JobTakenError("batch_1_x"), 409),
        (FatalJobError("openai: set OPENAI_API_KEY"), None),
    ],
)
def test_the_http_status_of_an_error_is_decided_by_its_class(error, status):
    """400 usage, 404 not found, 409 conflict; an error no request causes is the server's."""
    assert api_module.http_status(error) == status


async def test_a_running_job_is_cancelled_at_once_and_resumed_to_the_end(api, held):
    """cancel stops our own job now; resume runs it again; the key never shows in an answer."""
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")
    job_id = (await api.post("process", body(2, provider="openai-compatible")))[1]["jobId"]
    await held.asked.wait()  # the probe is out and held: the job is surely running
    status, answer = await api.post(f"resume/{job_id}")
    assert status == 409 and "already running" in answer["error"]
    status, answer = await api.post(f"cancel/{job_id}")
    assert status == 200 and answer == {"jobId": job_id, "message": "Job cancelled successfully"}
    assert (await api.until_ended(ws, job_id))["status"] == "cancelled"
    status, answer = await api.post(f"cancel/{job_id}")
    assert status == 409 and "already cancelled" in answer["error"]
    held.release.set()
    status, answer = await api.post(f"resume/{job_id}")
    assert status == 202 and answer["message"] == "Batch processing resumed"
    ended = await api.until_ended(ws, job_id)
    assert ended["status"] == "completed" and ended["processedCount"] == 2
    for path in (f"status/{job_id}", f"results/{job_id}", "jobs"):
        response = await api.client.get(f"/api/batch/{path}", headers=AUTH)
        assert SECRET_KEY not in await response.text()
    status, answer = await api.post(f"resume/{job_id}")
    assert status == 409 and "already completed" in answer["error"]


async def test_a_resume_while_an_ended_job_is_grouping_waits_for_it(api, monkeypatch):
    """The job's status says completed, its task is still grouping bursts: a resume then is
    not refused as "already running here"; it waits the moment out and answers as for any
    ended job (here: nothing left to rate). Held past `FINISHING_WAIT`: "still finishing"."""
    grouping, real_group_job = asyncio.Event(), jobs.group_job
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")

    async def held_group_job(*args, **kwargs):
        await grouping.wait()
        return await real_group_job(*args, **kwargs)

    monkeypatch.setattr(jobs, "group_job", held_group_job)
    job_id = (await api.post("process", body(2)))[1]["jobId"]
    try:
        while (await api.get(f"status/{job_id}"))[1]["status"] != "completed":
            await asyncio.sleep(0.01)
        monkeypatch.setattr(api_module, "FINISHING_WAIT", 0.05, raising=False)
        status, answer = await api.post(f"resume/{job_id}")
        assert status == 409 and "still finishing here" in answer["error"]
        monkeypatch.setattr(api_module, "FINISHING_WAIT", 30.0, raising=False)
        resumed = asyncio.ensure_future(api.post(f"resume/{job_id}"))
        await asyncio.sleep(0.05)
        assert not resumed.done()  # waiting for the grouping, not refused
    finally:
        grouping.set()  # a failed check must not leave the server's job held for ever
    status, answer = await resumed
    assert status == 409 and "already completed" in answer["error"]
    assert (await api.until_ended(ws, job_id))["status"] == "completed"


async def test_a_job_nobody_runs_is_cancelled_through_the_store(api, tmp_path):
    """A job this server does not run (say, an orphan of the CLI) is cancelled in the database."""
    async with jobs.Service.open(tmp_path / "k.db", {}) as other:
        job = await other.create(server_manifest(tmp_path), jobs.ProcessSettings(provider="local"))
    with sqlite3.connect(tmp_path / "k.db") as conn:  # its creator died long ago
        conn.execute("UPDATE batch_jobs SET heartbeat_at = '2000-01-01T00:00:00.000Z'")
    status, answer = await api.post(f"cancel/{job.id}")
    assert status == 200 and answer["message"] == f"job {job.id} cancelled"
    assert (await api.get(f"status/{job.id}"))[1]["status"] == "cancelled"


def server_manifest(tmp_path: Path):
    return manifest_from_document(body(1), base=tmp_path / "root")


async def test_stopping_the_server_interrupts_its_jobs_and_resume_finishes_them(
    tmp_path, aiohttp_client, held
):
    """A job running when the server stops reads interrupted; a new server's resume ends it."""
    root = tmp_path / "root"
    shutil.copytree(EXAMPLES / "photos", root / "photos")
    env = {
        "OPENAI_COMPATIBLE_BASE_URL": str(held.server.make_url("/v1")),
        "OPENAI_COMPATIBLE_API_KEY": SECRET_KEY,
    }
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        client = await aiohttp_client(server.build_app(service, Hub(TOKEN), root=root))
        response = await client.post(
            "/api/batch/process", json=body(2, provider="openai-compatible"), headers=AUTH
        )
        job_id = (await response.json())["jobId"]
        await held.asked.wait()
        await client.close()
        assert (await service.status(job_id)).status.value == "interrupted"
    held.release.set()
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        client = await aiohttp_client(server.build_app(service, Hub(TOKEN), root=root))
        ws = await client.ws_connect(f"/ws?token={TOKEN}")
        response = await client.post(f"/api/batch/resume/{job_id}", headers=AUTH)
        assert response.status == 202
        ended = await Api(client, Hub(TOKEN)).until_ended(ws, job_id)
        assert ended["status"] == "completed"
        await client.close()


async def test_run_server_announces_the_dashboard_with_its_token_and_stops_on_request(tmp_path):
    """The printed address opens the dashboard; setting `stop` ends the server cleanly."""
    announced: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    settings = server.ServeSettings(host="127.0.0.1", port=0, token="abc")
    running = asyncio.create_task(
        server.run_server(
            tmp_path / "k.db", settings, announce=announced.set_result, stop=stop, env={}
        )
    )
    url = await announced
    assert url.startswith("http://127.0.0.1:") and url.endswith("/?token=abc")
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200 and "kullbatch" in await response.text()
    stop.set()
    await running


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("nas", False)],
)
def test_a_token_is_made_up_on_loopback_and_required_elsewhere(host, loopback):
    """Loopback gets a random token when none is given; any other address refuses to start."""
    assert server.choose_token("given", {}, host) == "given"
    assert server.choose_token(None, {"KULLBATCH_TOKEN": "env"}, host) == "env"
    if loopback:
        assert len(server.choose_token(None, {}, host)) >= 20
    else:
        with pytest.raises(ValueError, match="needs a token"):
            server.choose_token(None, {}, host)


def test_serve_off_loopback_without_a_token_exits_2(tmp_path):
    """`kullbatch serve --host 0.0.0.0` with no token refuses to start."""
    result = CliRunner().invoke(
        app,
        ["serve", "--host", "0.0.0.0", "--db", str(tmp_path / "k.db")],
        env={"KULLBATCH_TOKEN": ""},
    )
    assert result.exit_code == 2 and "needs a token" in result.output


def test_serve_runs_until_stopped_and_prints_its_address(tmp_path, monkeypatch):
    """The command prints the dashboard's address with the token, then serves until stopped."""

    async def stop_at_once(db, settings, *, announce):
        announce(f"http://{settings.host}:{settings.port}/?token={settings.token}")

    monkeypatch.setattr(server, "run_server", stop_at_once)
    result = CliRunner().invoke(
        app, ["serve", "--port", "0", "--token", "tk" * 8, "--db", str(tmp_path / "k.db")]
    )
    assert result.exit_code == 0 and f"open http://127.0.0.1:0/?token={'tk' * 8}" in result.output
