"""The contact sheet's server side: the photographer's rating route, and pictures the browser
keeps (ETag, Cache-Control, 304) in two sizes, a RAW file's through its embedded preview."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from kullbatch.service import jobs
from kullbatch.web import server
from kullbatch.web.hub import Hub
from tests.dngfile import preview_jpeg, write_dng
from tests.test_server import Api, HeldProvider, body

EXAMPLES = Path(__file__).parent.parent / "examples"
TOKEN = "sheet-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def held(aiohttp_server):
    fake = await HeldProvider().start(aiohttp_server)
    yield fake
    fake.release.set()


@pytest.fixture
async def api(tmp_path, aiohttp_client, held):
    root = tmp_path / "root"
    shutil.copytree(EXAMPLES / "photos", root / "photos")
    env = {"OPENAI_COMPATIBLE_BASE_URL": str(held.server.make_url("/v1"))}
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        hub = Hub(TOKEN)
        client = await aiohttp_client(server.build_app(service, hub, root=root))
        yield Api(client, hub)
        held.release.set()
        await client.close()


async def put(api: Api, path: str, payload: object, headers=AUTH) -> tuple[int, dict]:
    response = await api.client.put(f"/api/batch/{path}", json=payload, headers=headers)
    return response.status, await response.json()


async def finished_job(api: Api, n: int = 3) -> str:
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")
    job_id = (await api.post("process", body(n), headers=AUTH))[1]["jobId"]
    await api.until_ended(ws, job_id)
    await ws.close()
    return job_id


async def photographer_ratings(api: Api, job_id: str) -> dict[str, int | None]:
    status, results = await api.get(f"results/{job_id}", headers=AUTH)
    assert status == 200
    return {r["imageId"]: r["photographerRating"] for r in results["results"]}


async def test_each_rating_is_stored_answered_and_in_the_results_and_0_clears_it(api):
    """-1..5 are stored as given and answered; 0 stores null; untouched photos read null."""
    job_id = await finished_job(api)
    assert await photographer_ratings(api, job_id) == {"img0": None, "img1": None, "img2": None}
    for value in (5, 1, -1, 3):
        status, answer = await put(api, f"results/{job_id}/img1/rating", {"rating": value})
        assert (status, answer) == (200, {"imageId": "img1", "photographerRating": value})
        assert (await photographer_ratings(api, job_id))["img1"] == value
    status, answer = await put(api, f"results/{job_id}/img2/rating", {"rating": 4})
    assert status == 200
    status, answer = await put(api, f"results/{job_id}/img1/rating", {"rating": 0})
    assert (status, answer) == (200, {"imageId": "img1", "photographerRating": None})
    assert await photographer_ratings(api, job_id) == {"img0": None, "img1": None, "img2": 4}


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        ({"rating": 6}, "got 6"),
        ({"rating": -2}, "got -2"),
        ({"rating": 3.5}, "got float"),
        ({"rating": True}, "got bool"),
        ({"rating": "3"}, "got str"),
        ({"rating": None}, "got NoneType"),
        ({"stars": 3}, "missing"),
        ([3], "missing"),
    ],
)
async def test_a_bad_rating_is_a_400_naming_rating_and_changes_nothing(api, payload, said):
    """Out of range, the wrong type or no `rating` at all: 400 with field `rating`."""
    job_id = await finished_job(api, 1)
    await put(api, f"results/{job_id}/img0/rating", {"rating": 2})
    status, refused = await put(api, f"results/{job_id}/img0/rating", payload)
    assert status == 400 and refused["field"] == "rating" and said in refused["error"]
    assert await photographer_ratings(api, job_id) == {"img0": 2}


async def test_a_body_that_is_not_json_is_a_400_naming_rating(api):
    """Malformed JSON is refused before anything is stored."""
    job_id = await finished_job(api, 1)
    response = await api.client.put(
        f"/api/batch/results/{job_id}/img0/rating", data=b"{rating: 3", headers=AUTH
    )
    refused = await response.json()
    assert response.status == 400 and refused["field"] == "rating"
    assert "malformed JSON" in refused["error"]


async def test_an_unknown_job_or_photo_is_a_404_and_the_route_wants_the_token(api):
    """404 names the job or the photo; no token or a wrong one is a 401 and stores nothing."""
    job_id = await finished_job(api, 1)
    status, answer = await put(api, "results/batch_0_nothin/img0/rating", {"rating": 3})
    assert status == 404 and "batch_0_nothin" in answer["error"]
    status, answer = await put(api, f"results/{job_id}/nope/rating", {"rating": 3})
    assert status == 404 and "'nope'" in answer["error"]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, answer = await put(api, f"results/{job_id}/img0/rating", {"rating": 3}, headers)
        assert status == 401 and "token" in answer["error"]
    assert await photographer_ratings(api, job_id) == {"img0": None}


async def test_a_rating_set_while_the_job_runs_survives_the_run_a_cancel_and_a_resume(api, held):
    """Set while the provider holds the photos, kept through cancel, resume and the ratings
    the provider finally gives: the photographer's word is never overwritten."""
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")
    job_id = (await api.post("process", body(2, "openai-compatible"), headers=AUTH))[1]["jobId"]
    await held.asked.wait()
    assert (await put(api, f"results/{job_id}/img0/rating", {"rating": -1}))[0] == 200
    assert (await put(api, f"results/{job_id}/img1/rating", {"rating": 4}))[0] == 200
    assert (await api.post(f"cancel/{job_id}", headers=AUTH))[0] == 200
    assert (await api.until_ended(ws, job_id))["status"] == "cancelled"
    held.release.set()
    assert (await api.post(f"resume/{job_id}", headers=AUTH))[0] == 202
    assert (await api.until_ended(ws, job_id))["status"] == "completed"
    _, results = await api.get(f"results/{job_id}", headers=AUTH)
    assert [(r["starRating"], r["photographerRating"]) for r in results["results"]] == [
        (r["starRating"], mine) for r, mine in zip(results["results"], (-1, 4), strict=True)
    ]
    assert all(r["title"] for r in results["results"])  # rated by the provider meanwhile
    await ws.close()


async def test_thumbnails_carry_an_etag_and_a_cache_control_and_answer_304(api):
    """The browser keeps a thumbnail for a day and revalidates it for nothing; `size=large`
    is a bigger picture with a tag of its own; a bad size is a 400 naming `size`."""
    job_id = await finished_job(api, 1)
    _, results = await api.get(f"results/{job_id}?thumbnails=1", headers=AUTH)
    entry = results["results"][0]
    assert "captured" in entry  # the sheet's capture-time order reads it
    small = await api.client.get(entry["thumbnail"], headers=AUTH)
    assert small.status == 200 and small.headers["Cache-Control"] == "private, max-age=86400"
    tag = small.headers["ETag"]
    with Image.open(io.BytesIO(await small.read())) as picture:
        assert max(picture.size) == 320
    again = await api.client.get(entry["thumbnail"], headers=AUTH | {"If-None-Match": tag})
    assert again.status == 304 and await again.read() == b"" and again.headers["ETag"] == tag
    large = await api.client.get(entry["thumbnail"] + "?size=large", headers=AUTH)
    assert large.status == 200 and large.headers["ETag"] != tag
    with Image.open(io.BytesIO(await large.read())) as picture:
        assert picture.size == (1200, 800)  # the example photo whole: under 1600 px
    stale = await api.client.get(
        entry["thumbnail"] + "?size=large", headers=AUTH | {"If-None-Match": tag}
    )
    assert stale.status == 200  # the small picture's tag does not stand for the large one
    status, refused = await api.get(f"thumbnail/{job_id}/img0?size=huge", headers=AUTH)
    assert status == 400 and refused["field"] == "size"


async def test_a_changed_photo_gets_a_new_etag(api, tmp_path):
    """The tag follows the file: a photo replaced on disk is drawn again, not served stale."""
    job_id = await finished_job(api, 1)
    url = f"/api/batch/thumbnail/{job_id}/img0"
    first = (await api.client.get(url, headers=AUTH)).headers["ETag"]
    photo = min((tmp_path / "root" / "photos").iterdir())
    Image.new("RGB", (400, 300), "red").save(photo, "JPEG")
    changed = await api.client.get(url, headers=AUTH | {"If-None-Match": first})
    assert changed.status == 200 and changed.headers["ETag"] != first
    with Image.open(io.BytesIO(await changed.read())) as picture:
        assert picture.size == (320, 240)


async def test_the_large_view_of_a_raw_photo_is_its_embedded_preview(api, tmp_path):
    """A DNG's large picture is its embedded preview at full size, upright."""
    photos = tmp_path / "root" / "photos"
    write_dng(photos / "a.dng", preview=preview_jpeg((1024, 768)), preview_size=(1024, 768))
    shoot = body(0)
    shoot["images"] = [{"id": "raw", "filename": "a.dng", "path": "photos/a.dng"}]
    ws = await api.client.ws_connect(f"/ws?token={TOKEN}")
    job_id = (await api.post("process", shoot, headers=AUTH))[1]["jobId"]
    await api.until_ended(ws, job_id)
    large = await api.client.get(f"/api/batch/thumbnail/{job_id}/raw?size=large", headers=AUTH)
    assert large.status == 200 and large.content_type == "image/jpeg"
    with Image.open(io.BytesIO(await large.read())) as picture:
        assert picture.size == (1024, 768)
    await ws.close()


async def test_the_store_refuses_a_rating_outside_minus_1_to_5(tmp_path):
    """The column only ever holds -1..5 or null, whoever calls the store."""
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        with pytest.raises(ValueError, match=r"-1\.\.5"):
            await service.store.ratings.set("batch_0_nothin", "img0", 6)
        assert await service.store.ratings.set("batch_0_nothin", "img0", 3) is False
