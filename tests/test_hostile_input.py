"""Nothing a request or a manifest holds can hang, crash or escape kullbatch (DESIGN.md,
"Hostile input"): each probe gets a clear error naming the field, and nothing is written."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.errors import PermanentImageError
from kullbatch.manifest import ManifestError, load_manifest, parse_json
from kullbatch.media import images
from kullbatch.media.confine import confined
from kullbatch.service import jobs
from kullbatch.web import server
from kullbatch.web.hub import Hub

EXAMPLES = Path(__file__).parent.parent / "examples"
TOKEN = "hostile-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with almost no pixel data: cheap to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header is rewritten to claim width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "grey").save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


class Server:
    def __init__(self, client, db: Path, root: Path) -> None:
        self.client = client
        self.db = db
        self.root = root

    async def post(self, payload) -> tuple[int, dict]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        response = await self.client.post(
            "/api/batch/process",
            data=data,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        return response.status, await response.json()

    async def get(self, path: str):
        return await self.client.get(path, headers=AUTH)

    async def until_ended(self, job_id: str) -> dict:
        for _ in range(1000):
            answer = await (await self.get(f"/api/batch/status/{job_id}")).json()
            if answer["status"] != "processing":
                return answer
            await asyncio.sleep(0.02)
        raise AssertionError(f"{job_id} did not end")

    def jobs_in_db(self) -> int:
        if not self.db.exists():
            return 0
        with sqlite3.connect(self.db) as db:
            return db.execute("SELECT count(*) FROM batch_jobs").fetchone()[0]


@pytest.fixture
async def served(tmp_path, aiohttp_client):
    root = tmp_path / "root"
    shutil.copytree(EXAMPLES / "photos", root / "photos")
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        client = await aiohttp_client(server.build_app(service, Hub(TOKEN), root=root))
        yield Server(client, tmp_path / "k.db", root)
        await client.close()


def photo_entry(image_id: str, path: str) -> dict:
    return {"id": image_id, "filename": Path(path).name or "x.jpg", "path": path}


# -- only regular files are read ------------------------------------------------------------


@pytest.fixture
def specials(tmp_path) -> dict[str, Path]:
    """A FIFO, a socket and a folder named like photos, beneath the root."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    fifo = root / "pipe.jpg"
    os.mkfifo(fifo)
    sock_path = root / "sock.jpg"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    folder = root / "folder.jpg"
    folder.mkdir()
    yield {"a FIFO": fifo, "a socket": sock_path, "a folder": folder}
    listener.close()


@pytest.mark.parametrize("kind", ["a FIFO", "a socket", "a folder"])
async def test_a_special_file_as_a_photo_is_a_400_naming_the_field(served, specials, kind):
    name = specials[kind].name
    status, answer = await asyncio.wait_for(
        served.post(
            {"images": [photo_entry("ok", "photos/01_harbour_sharp.jpg"), photo_entry("x", name)]}
        ),
        20,
    )
    assert status == 400 and answer["field"] == "images[1].path"
    assert f"is {kind}" in answer["error"]
    assert served.jobs_in_db() == 0


def test_a_device_or_fifo_in_a_manifest_is_refused_without_opening_it(tmp_path, specials):
    manifest = tmp_path / "shoot.json"
    for kind, path in [("a device", Path("/dev/null")), ("a FIFO", specials["a FIFO"])]:
        manifest.write_text(json.dumps({"images": [photo_entry("x", str(path))]}))
        with pytest.raises(ManifestError) as caught:
            load_manifest(manifest)
        assert caught.value.location == "images[0].path" and f"is {kind}" in str(caught.value)


def test_the_cli_given_a_fifo_exits_2_at_once_with_one_line(tmp_path, specials):
    """A real process: before the fix it hung forever in the manifest check."""
    manifest = tmp_path / "shoot.json"
    manifest.write_text(json.dumps({"images": [photo_entry("x", str(specials["a FIFO"]))]}))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kullbatch",
            "process",
            str(manifest),
            "--db",
            str(tmp_path / "k.db"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "images[0].path: is a FIFO" in done.stderr
    assert not (tmp_path / "k.db").exists()


def test_an_open_refuses_a_fifo_even_when_it_replaced_the_photo(specials):
    with pytest.raises(PermanentImageError, match="is a FIFO"):
        images.encode_file(specials["a FIFO"], 256)


# -- confinement beneath --root, on the file actually opened ------------------------------------


def test_a_photo_swapped_for_a_link_out_of_the_root_is_not_read(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.jpg"
    shutil.copy(EXAMPLES / "photos" / "01_harbour_sharp.jpg", outside)
    photo = root / "a.jpg"
    shutil.copy(EXAMPLES / "photos" / "02_city_skyline_sharp.jpg", photo)
    with confined(root):
        images.encode_file(photo, 256)  # inside: fine
        photo.unlink()
        photo.symlink_to(outside)
        with pytest.raises(PermanentImageError, match="lies outside --root"):
            images.encode_file(photo, 256)
    images.encode_file(photo, 256)  # the CLI has no root: a link is the user's own business


async def test_the_thumbnail_route_does_not_follow_a_link_swapped_in_later(served, tmp_path):
    outside = tmp_path / "secret.jpg"
    shutil.copy(EXAMPLES / "photos" / "03_portrait_sharp.jpg", outside)
    photo = served.root / "photos" / "01_harbour_sharp.jpg"
    status, answer = await served.post(
        {"images": [photo_entry("a", "photos/01_harbour_sharp.jpg")]}
    )
    assert status == 202
    job_id = answer["jobId"]
    await served.until_ended(job_id)
    first = await served.get(f"/api/batch/thumbnail/{job_id}/a")
    assert first.status == 200  # and its path is now cached
    photo.unlink()
    photo.symlink_to(outside)
    again = await served.get(f"/api/batch/thumbnail/{job_id}/a")
    assert again.status == 404
    assert "outside --root" in (await again.json())["error"]


async def test_a_resume_does_not_rate_a_photo_swapped_for_a_link_out_of_the_root(served, tmp_path):
    """A photo that failed is sent again by resume: a link put in its place leads nowhere."""
    broken = served.root / "photos" / "broken.jpg"
    broken.write_bytes((EXAMPLES / "photos" / "01_harbour_sharp.jpg").read_bytes()[:3000])
    entries = [
        photo_entry("ok", "photos/02_city_skyline_sharp.jpg"),
        photo_entry("b", "photos/broken.jpg"),
    ]
    status, answer = await served.post({"images": entries})
    job_id = answer["jobId"]
    ended = await served.until_ended(job_id)
    assert (ended["processedImages"], ended["failedImages"]) == (1, 1)
    outside = tmp_path / "secret.jpg"
    shutil.copy(EXAMPLES / "photos" / "03_portrait_sharp.jpg", outside)
    broken.unlink()
    broken.symlink_to(outside)
    for _ in range(200):  # the job's task ends just after its record says completed
        response = await served.client.post(f"/api/batch/resume/{job_id}", headers=AUTH)
        if response.status != 409:
            break
        await asyncio.sleep(0.02)
    assert response.status == 202
    ended = await served.until_ended(job_id)
    assert (ended["processedImages"], ended["failedImages"]) == (1, 1)
    results = await (await served.get(f"/api/batch/results/{job_id}")).json()
    failed = next(r for r in results["results"] if r["imageId"] == "b")
    assert "outside --root" in failed["error"] and str(tmp_path) not in failed["error"]


# -- bodies of the wrong shape ------------------------------------------------------------------


WRONG_SHAPES = [
    ({"images": [{"id": "a", "filename": "a.jpg", "path": ["x"]}]}, "images[0].path"),
    ({"images": [{"id": "a", "filename": "a.jpg", "url": {"a": 1}}]}, "images[0].url"),
    (
        {"images": [{"id": "a", "filename": ["a"], "url": "https://x.test/a.jpg"}]},
        "images[0].filename",
    ),
]


@pytest.mark.parametrize(("payload", "field"), WRONG_SHAPES)
async def test_a_value_of_the_wrong_type_is_a_400_naming_the_field(served, payload, field):
    status, answer = await served.post(payload)
    assert (status, answer["field"]) == (400, field)
    assert served.jobs_in_db() == 0


def deep(levels: int) -> bytes:
    return b'{"images": [{"id": "a", "filename": "a.jpg", "url": "https://x.test/a.jpg", ' + (
        b'"metadata": {"m": ' + b"[" * levels + b"]" * levels + b"}}]}"
    )


HUGE_ID = (
    b'{"images": [{"id": ' + b"7" * 5000 + b', "filename": "a.jpg", "url": "https://x.test/a"}]}'
)


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (deep(5000), "images[0].metadata.m[0][0][0][0]…", "nested deeper than 64"),
        (HUGE_ID, "images[0].id", "a number of 5000 digits"),
    ],
)
async def test_deep_nesting_and_huge_numbers_are_400s_naming_the_field(
    served, payload, field, words
):
    status, answer = await served.post(payload)
    assert status == 400 and answer["field"] == field and words in answer["error"]
    assert served.jobs_in_db() == 0


def test_nesting_up_to_the_limit_is_accepted():
    """64 levels are fine: the limit is the documented one, not lower."""
    assert parse_json(deep(60).decode(), "x")
    with pytest.raises(ManifestError):
        parse_json(deep(62).decode(), "x")  # 62 + the 3 levels around it


@pytest.mark.parametrize("payload", [deep(5000), HUGE_ID, json.dumps(WRONG_SHAPES[1][0]).encode()])
def test_the_cli_given_a_hostile_manifest_exits_2_with_one_line(tmp_path, payload):
    manifest = tmp_path / "shoot.json"
    manifest.write_bytes(payload)
    result = CliRunner().invoke(app, ["process", str(manifest), "--db", str(tmp_path / "k.db")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "images[0]" in result.output
    assert not (tmp_path / "k.db").exists()


# -- fields of the job itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"providerId": "no-such-provider"}, "providerId"), ({"mode": "economy"}, "mode")],
)
async def test_an_unknown_provider_and_economy_without_a_batch_api_name_their_field(
    served, extra, field
):
    payload = {"images": [photo_entry("a", "photos/01_harbour_sharp.jpg")], "providerId": "local"}
    status, answer = await served.post({**payload, **extra})
    assert (status, answer["field"]) == (400, field)
    assert served.jobs_in_db() == 0


# -- echoes and secrets -------------------------------------------------------------------------


async def test_an_error_echoes_at_most_200_characters_of_what_was_sent(served):
    long_name = "photos/" + "x" * 100_000 + ".jpg"
    status, answer = await served.post({"images": [photo_entry("a", long_name)]})
    assert status == 400 and answer["field"] == "images[0].path"
    assert len(answer["error"]) <= 400 and "x" * 201 not in answer["error"]


async def test_a_password_in_a_photo_url_never_comes_back_nor_is_stored(served, caplog):
    url = "https://alice:hunter2-secret@photos.example/a.jpg"
    status, answer = await served.post({"images": [{"id": "a", "filename": "a.jpg", "url": url}]})
    assert status == 400 and answer["field"] == "images[0].url"
    assert "hunter2" not in json.dumps(answer) and "alice" not in answer["error"]
    assert "hunter2" not in caplog.text
    assert served.jobs_in_db() == 0


# -- the image size limit and reduced-size decoding --------------------------------------------


async def test_a_photo_over_200_megapixels_fails_alone_with_its_size(served):
    (served.root / "photos" / "huge.png").write_bytes(png_header(20000, 20000))
    (served.root / "photos" / "huge.jpg").write_bytes(jpeg_claiming(15000, 14000))
    entries = [
        photo_entry("ok", "photos/01_harbour_sharp.jpg"),
        photo_entry("png", "photos/huge.png"),
        photo_entry("jpg", "photos/huge.jpg"),
    ]
    status, answer = await served.post({"images": entries})
    assert status == 202, answer
    ended = await served.until_ended(answer["jobId"])
    assert (ended["status"], ended["processedImages"], ended["failedImages"]) == ("completed", 1, 2)
    results = await (await served.get(f"/api/batch/results/{answer['jobId']}")).json()
    errors = {r["imageId"]: r.get("error") for r in results["results"]}
    assert errors["png"] == "image too large: 20000x20000 (400 MP, limit 200 MP)"
    assert errors["jpg"] == "image too large: 15000x14000 (210 MP, limit 200 MP)"
    assert errors["ok"] is None


def test_a_large_jpeg_is_decoded_at_reduced_size(tmp_path):
    """Pillow's draft mode: a 2400x1800 JPEG asked for 320 px comes out at a quarter."""
    photo = tmp_path / "big.jpg"
    Image.new("RGB", (2400, 1800), "teal").save(photo, "JPEG")
    upright, _ = images.upright_file(photo, 320, "RGB", timed=False)
    assert upright.size == (600, 450)


# -- thumbnails, and the page ---------------------------------------------------------------------


async def test_thumbnail_addresses_are_percent_encoded_and_served(served):
    ids = ["a/b", "c?d", "e#f", "g h%"]
    photos = sorted((served.root / "photos").iterdir())
    entries = [photo_entry(i, f"photos/{p.name}") for i, p in zip(ids, photos, strict=False)]
    status, answer = await served.post({"images": entries})
    job_id = answer["jobId"]
    await served.until_ended(job_id)
    results = await (await served.get(f"/api/batch/results/{job_id}?thumbnails=1")).json()
    addresses = {r["imageId"]: r["thumbnail"] for r in results["results"]}
    assert addresses["a/b"].endswith("/a%2Fb") and addresses["c?d"].endswith("/c%3Fd")
    assert addresses["e#f"].endswith("/e%23f") and addresses["g h%"].endswith("/g%20h%25")
    for address in addresses.values():
        response = await served.get(address)
        assert response.status == 200 and response.content_type == "image/jpeg"


async def test_the_dashboard_cannot_be_framed_by_another_site(served):
    response = await served.client.get("/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
