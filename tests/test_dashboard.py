"""The dashboard page: served without a build step, offline, driven by the token in its address."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kullbatch.service import jobs
from kullbatch.web import server
from kullbatch.web.hub import Hub

TOKEN = "dash"


async def test_the_dashboard_is_one_self_contained_page_that_loads_nothing_from_outside(
    tmp_path, aiohttp_client
):
    """GET / needs no token and serves inline script and style, with no outside address."""
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        client = await aiohttp_client(server.build_app(service, Hub(TOKEN)))
        response = await client.get("/")
        page = await response.text()
        assert response.status == 200 and response.content_type == "text/html"
        assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
        assert not re.search(r"https?://", page)
        assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
        await client.close()


async def test_the_dashboard_lists_jobs_with_its_token_and_follows_the_websocket(
    tmp_path, aiohttp_client
):
    """The page reads ?token=, calls /api/batch/jobs with it as a Bearer, opens /ws?token=."""
    async with jobs.Service.open(tmp_path / "k.db", {}) as service:
        client = await aiohttp_client(server.build_app(service, Hub(TOKEN)))
        page = await (await client.get(f"/?token={TOKEN}")).text()
        assert "new URLSearchParams(location.search)" in page and 'params.get("token")' in page
        assert 'const API = "/api/batch/"' in page and 'api("jobs")' in page
        assert 'Authorization: "Bearer " + token' in page
        assert '"/ws?token=" + encodeURIComponent(token)' in page
        assert 'api("cancel/"' in page and '"results/"' in page and "?thumbnails=1" in page
        # what the page calls answers with the token it carries
        listed = await client.get("/api/batch/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert listed.status == 200 and await listed.json() == []
        ws = await client.ws_connect(f"/ws?token={TOKEN}")
        await ws.close()
        await client.close()


@pytest.mark.needs("node")
def test_the_dashboards_script_parses_where_node_is_installed(tmp_path):
    """A syntax error in the inline script would leave the page blank; node --check finds it."""
    node = shutil.which("node")
    page = (Path(server.__file__).parent / "dashboard.html").read_text(encoding="utf-8")
    script = tmp_path / "dashboard.js"
    script.write_text(re.search(r"<script>(.*)</script>", page, re.DOTALL).group(1))
    subprocess.run([node, "--check", str(script)], check=True)


def test_the_readme_documents_serve_serve_ws_the_api_and_the_message():
    """A section per command, the routes and the WebSocket message's fields."""
    readme = (Path(server.__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for text in (
        "kullbatch serve",
        "--serve-ws",
        "--ws-token",
        "/api/batch/process",
        "/api/batch/resume/:jobId",
        '"type": "SHOOT_PROGRESS"',
        '"failedCount"',
    ):
        assert text in readme


def test_the_readme_shows_the_contact_sheet_and_explains_its_keys():
    """The screenshot is in the repository as a PNG, and each key is named."""
    root = Path(server.__file__).parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "![The contact sheet of the bundled shoot](docs/contact-sheet.png)" in readme
    assert (root / "docs" / "contact-sheet.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    for text in ("`1`-`5`", "`0`", "`x`", "`u`", "Enter", "Space", "#job=JOBID"):
        assert text in readme
    assert "/api/batch/results/:jobId/:imageId/rating" in readme


def test_the_page_saves_ratings_with_its_token_and_opens_a_job_from_its_address():
    """The sheet is routed by `#job=`, keeps the hash when it drops the token, and PUTs each
    rating as JSON with the Bearer token."""
    page = (Path(server.__file__).parent / "dashboard.html").read_text(encoding="utf-8")
    assert 'history.replaceState(null, "", location.pathname + location.hash)' in page
    assert "/^#job=(.+)$/" in page and '"/rating"' in page and 'method: "PUT"' in page
    assert "JSON.stringify({rating: value})" in page
