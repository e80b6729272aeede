"""The contact sheet in a real headless Chromium: a 200-photo job's grid, its burst stacked,
ratings from the keyboard saved through the API, the filters, the orders and the large view.

The server runs in the test's loop on 127.0.0.1 with the `local` rater; Chromium is driven over
the DevTools protocol (tests/cdp.py), with real key events. A screenshot of the sheet at
1280x800 is written to the test's own folder (`contact-sheet.png`) for people to look at.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from kullbatch.service import jobs
from kullbatch.web import server
from kullbatch.web.hub import Hub
from tests import cdp
from tests.sheet_shoot import BROKEN, BURST, make_sheet_shoot
from tests.test_server import HeldProvider

CHROMIUM = cdp.find_chromium()
pytestmark = pytest.mark.needs("chromium")

TOKEN = "sheet-br0wser"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHOTOS = 200
NO_POLL = "window.setInterval = () => 0;"

# key -> (code, Windows virtual key code, text it types)
KEYS = {
    "ArrowLeft": ("ArrowLeft", 37, ""),
    "ArrowUp": ("ArrowUp", 38, ""),
    "ArrowRight": ("ArrowRight", 39, ""),
    "ArrowDown": ("ArrowDown", 40, ""),
    "Enter": ("Enter", 13, "\r"),
    " ": ("Space", 32, " "),
    "Escape": ("Escape", 27, ""),
    **{str(n): (f"Digit{n}", 48 + n, str(n)) for n in range(6)},
    "x": ("KeyX", 88, "x"),
    "u": ("KeyU", 85, "u"),
}

FOCUSED = "(document.activeElement?.dataset?.imageId ?? null)"
SETTLED = "document.getElementById('sheet').dataset.saving === '0'"
# every photo the grid shows from top to bottom, scrolled a screen at a time, and the most
# cells the document held at once
COLLECT = """(async () => {
  const grid = document.getElementById("grid");
  const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const seen = new Map();
  let most = 0;
  for (let top = 0; ; top += grid.clientHeight) {
    grid.scrollTop = top;
    await frame();
    const cells = [...grid.querySelectorAll(".cell")];
    most = Math.max(most, cells.length);
    for (const c of cells) seen.set(Number(c.dataset.index), {
      imageId: c.dataset.imageId, group: c.dataset.group ?? null, stack: c.dataset.stack ?? null,
      count: c.dataset.count ?? null, stars: c.dataset.stars, rating: c.dataset.rating,
      kept: c.dataset.kept, issues: c.dataset.issues, state: c.dataset.state,
    });
    if (top + grid.clientHeight >= grid.scrollHeight) break;
  }
  grid.scrollTop = 0;
  await frame();
  return {cells: [...seen.keys()].sort((a, b) => a - b).map((i) => seen.get(i)), most};
})()"""


async def press(page: cdp.Page, key: str) -> None:
    code, virtual, text = KEYS[key]
    down = {"key": key, "code": code, "windowsVirtualKeyCode": virtual}
    await page.call("Input.dispatchKeyEvent", type="keyDown", text=text, **down)
    await page.call("Input.dispatchKeyEvent", type="keyUp", **down)


async def viewport(page: cdp.Page, width: int, height: int, *, mobile: bool = False) -> None:
    await page.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=mobile,
    )


async def screenshot(page: cdp.Page, path: Path) -> None:
    shot = await page.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))


class Sheet:
    """Chromium on the server's dashboard, and a REST client of the same server."""

    def __init__(
        self, page: cdp.Page, http: aiohttp.ClientSession, base: URL, images: list[dict]
    ) -> None:
        self.page = page
        self.http = http
        self.base = base
        self.images = images  # the 200-photo shoot's manifest entries

    async def post(self, path: str, payload: dict | None = None) -> dict:
        async with self.http.post(self.api(path), json=payload, headers=AUTH) as response:
            assert response.status in {200, 202}, await response.text()
            return await response.json()

    async def get(self, path: str) -> dict:
        async with self.http.get(self.api(path), headers=AUTH) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    def api(self, path: str) -> URL:
        return self.base.join(URL(f"api/batch/{path}"))

    async def run(self, images: list[dict], provider: str = "local") -> str:
        """Post the shoot and wait, on the WebSocket, for its end; the job's id."""
        async with self.http.ws_connect(self.base.join(URL(f"ws?token={TOKEN}"))) as ws:
            job_id = (await self.post("process", shoot(images, provider)))["jobId"]
            async for message in ws:
                data = json.loads(message.data)["data"]
                if data["jobId"] == job_id and data["status"] != "processing":
                    assert data["status"] == "completed", data
                    return job_id
        raise AssertionError("the WebSocket closed before the job ended")

    async def results(self, job_id: str) -> list[dict]:
        return (await self.get(f"results/{job_id}"))["results"]

    async def open(self, job_id: str) -> None:
        """`/?token=…#job=JOBID`, until the first photo holds the keyboard focus."""
        await self.page.navigate(str(self.base.with_query(token=TOKEN)) + f"#job={job_id}")
        await self.page.wait_for(
            f"{FOCUSED} !== null && document.querySelector('#grid .cell.focused') !== null",
            what="the contact sheet with its first photo focused",
        )


def shoot(images: list[dict], provider: str) -> dict:
    return {"shootId": "sheet", "images": images, "providerId": provider}


@pytest.fixture
async def held(aiohttp_server):
    fake = await HeldProvider().start(aiohttp_server)
    yield fake
    fake.release.set()


@pytest.fixture
async def sheet(tmp_path, aiohttp_server, held):
    root = tmp_path / "root"
    images = make_sheet_shoot(root / "shoot", PHOTOS)
    env = {"OPENAI_COMPATIBLE_BASE_URL": str(held.server.make_url("/v1"))}
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        app = server.build_app(service, Hub(TOKEN), root=root)
        web_server = await aiohttp_server(app, host="127.0.0.1")
        async with aiohttp.ClientSession() as http, cdp.launch(CHROMIUM) as page:
            await page.call("Page.addScriptToEvaluateOnNewDocument", source=NO_POLL)
            await viewport(page, 1280, 800)
            yield Sheet(page, http, web_server.make_url("/"), images)
            held.release.set()
        await web_server.close()


async def test_the_sheet_shows_every_photo_of_a_200_photo_job_with_the_burst_as_one_stack(
    sheet, tmp_path
):
    """Every photo appears once, the burst behind its best frame with a count badge; Enter and a
    click open it; only the cells in view exist; the job list links to the sheet; a phone in
    portrait gets a narrower grid; the screenshot lands in the test's folder."""
    page = sheet.page
    job_id = await sheet.run(sheet.images)
    results = await sheet.results(job_id)
    by_id = {r["imageId"]: r for r in results}
    best = next(r["imageId"] for r in results if r["imageId"] in BURST and r["bestInGroup"])
    # the job list's link opens the sheet
    await page.navigate(str(sheet.base.with_query(token=TOKEN)))
    link = f"document.querySelector('#jobs tr[data-job-id={json.dumps(job_id)}] a[data-action=results]')"
    await page.wait_for(f"{link} !== null", what="the job's link to its contact sheet")
    assert await page.evaluate(f"{link}.getAttribute('href')") == f"#job={job_id}"
    await page.evaluate(f"{link}.click()")
    await page.wait_for(f"{FOCUSED} !== null", what="the sheet opened from the job list")
    assert await page.evaluate(FOCUSED) == best  # the burst comes first in capture order

    grid = await page.evaluate(COLLECT)
    cells = grid["cells"]
    shown = [c["imageId"] for c in cells]
    hidden = set(BURST) - {best}
    assert len(shown) == len(set(shown)) == PHOTOS - len(hidden)
    assert set(shown) | hidden == set(by_id)
    assert cells[0] == cells[0] | {"group": by_id[best]["group"], "stack": "closed", "count": "3"}
    assert [c["stars"] for c in cells] == [str(by_id[i].get("starRating", "")) for i in shown]
    assert [c["state"] for c in cells].count("failed") == 1
    assert grid["most"] < 100  # 200 photos, never all in the document at once

    await screenshot(page, tmp_path / "contact-sheet.png")
    assert (tmp_path / "contact-sheet.png").stat().st_size > 10_000

    # Enter opens the stack (its three frames, each with data-group), Enter closes it again
    await press(page, "Enter")
    opened = await page.wait_for(
        "(() => { const cells = [...document.querySelectorAll('#grid .cell[data-stack=open]')];"
        " return cells.length === 3 ? cells.map((c) => [c.dataset.imageId, c.dataset.group]) :"
        " null; })()",
        what="the burst's three frames",
    )
    assert sorted(opened) == sorted([i, by_id[best]["group"]] for i in BURST)
    assert await page.evaluate(FOCUSED) == best
    await press(page, "Enter")
    await page.wait_for(
        "document.querySelectorAll('#grid .cell[data-stack=open]').length === 0 &&"
        " document.querySelectorAll('#grid .cell[data-stack=closed]').length === 1",
        what="the stack closed again",
    )
    # a click on a closed stack opens it too
    await page.evaluate("document.querySelector('#grid .cell[data-stack=closed]').click()")
    await page.wait_for(
        "document.querySelectorAll('#grid .cell[data-stack=open]').length === 3",
        what="the stack opened by a click",
    )

    # a phone in portrait: fewer columns, nothing wider than the screen
    await viewport(page, 390, 844, mobile=True)
    narrow = await page.wait_for(
        "(() => { const cells = [...document.querySelectorAll('#grid .cell')];"
        " const lefts = new Set(cells.map((c) => c.getBoundingClientRect().left));"
        " return lefts.size <= 2 && cells.length ? {columns: lefts.size,"
        " wide: document.documentElement.scrollWidth} : null; })()",
        what="the grid reflowed for a phone",
    )
    assert narrow == {"columns": 2, "wide": 390}
    await screenshot(page, tmp_path / "contact-sheet-phone.png")
    assert page.errors == []


async def test_keys_1_to_5_0_x_and_u_change_the_photographers_rating_and_it_is_saved(sheet):
    """Arrows move the focus; each key is saved at once (read back through the API) and shown;
    `u` takes back the last change; a reloaded sheet shows what was saved."""
    page = sheet.page
    job_id = await sheet.run(sheet.images)
    await sheet.open(job_id)
    order = [c["imageId"] for c in (await page.evaluate(COLLECT))["cells"]]
    columns = await page.evaluate(
        "Math.round(document.getElementById('grid').clientWidth / 150 - 0.5)"
    )
    assert await page.evaluate(FOCUSED) == order[0]
    await press(page, "ArrowRight")
    assert await page.evaluate(FOCUSED) == order[1]
    await press(page, "ArrowDown")
    assert await page.evaluate(FOCUSED) == order[1 + columns]
    await press(page, "ArrowUp")
    await press(page, "ArrowLeft")
    await press(page, "ArrowRight")
    target = order[1]
    assert await page.evaluate(FOCUSED) == target
    cell = f"document.querySelector('#grid .cell[data-image-id={json.dumps(target)}]')"

    async def saved() -> tuple[str, int | None]:
        await page.wait_for(SETTLED, what="the ratings saved")
        mine = next(r for r in await sheet.results(job_id) if r["imageId"] == target)
        return await page.evaluate(f"{cell}.dataset.rating"), mine["photographerRating"]

    for key, stored in (("3", 3), ("5", 5), ("1", 1), ("0", None), ("x", -1)):
        await press(page, key)
        assert await saved() == ("" if stored is None else str(stored), stored), key
    assert await page.evaluate(f"{cell}.dataset.kept") == "rejected"
    await press(page, "u")  # back before x: cleared
    assert await saved() == ("", None)
    await press(page, "u")  # back before 0: one star
    assert await saved() == ("1", 1)
    await press(page, "4")
    assert await saved() == ("4", 4)
    assert await page.evaluate(f"{cell}.dataset.kept") == "kept"
    # another photo, then a reload: both as saved
    await press(page, "ArrowRight")
    await press(page, "2")
    await page.wait_for(SETTLED, what="the ratings saved")
    await sheet.open(job_id)
    ratings = await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#grid .cell')]"
        ".filter((c) => c.dataset.rating).map((c) => [c.dataset.imageId, c.dataset.rating]))"
    )
    assert ratings == {target: "4", order[2]: "2"}
    stored = {r["imageId"]: r["photographerRating"] for r in await sheet.results(job_id)}
    assert {k: v for k, v in stored.items() if v is not None} == {target: 4, order[2]: 2}
    assert page.errors == []


async def select(page: cdp.Page, select_id: str, value: str) -> None:
    await page.evaluate(
        f"(() => {{ const s = document.getElementById({json.dumps(select_id)});"
        f" s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})()"
    )


async def test_the_filters_and_orders_choose_the_photos_and_the_large_view_shows_one(sheet):
    """Stars at least N, kept, rejected, has issues and failed show exactly those photos, with
    their counts; the orders sort; Space and a double click open the large view from the
    server's larger picture with the title and description; Escape closes it."""
    page = sheet.page
    job_id = await sheet.run(sheet.images)
    await sheet.open(job_id)
    # reject the focused photo and give the next four stars
    await press(page, "x")
    await press(page, "ArrowRight")
    await press(page, "4")
    await page.wait_for(SETTLED, what="the ratings saved")
    results = {r["imageId"]: r for r in await sheet.results(job_id)}
    hidden = {i for i, r in results.items() if r.get("group") and not r["bestInGroup"]}

    def effective(r: dict) -> int:
        if r["photographerRating"] is not None:
            return r["photographerRating"]
        return r.get("starRating", -3)

    expected = {
        "rejected": {i for i, r in results.items() if r["photographerRating"] == -1},
        "kept": {i for i, r in results.items() if (r["photographerRating"] or 0) >= 1},
        "issues": {i for i, r in results.items() if r.get("issues")},
        "failed": {BROKEN},
    }
    assert len(expected["rejected"]) == len(expected["kept"]) == 1 and expected["issues"]
    for show, ids in expected.items():
        await select(page, "filter-show", show)
        cells = (await page.evaluate(COLLECT))["cells"]
        assert {c["imageId"] for c in cells} <= ids, show  # a closed stack stands for the rest
        assert sum(int(c["count"] or 1) for c in cells) == len(ids), show
        count = await page.evaluate(
            f"document.querySelector('#filter-show option[value={show}]').dataset.count"
        )
        assert count == str(len(ids)), show
    await select(page, "filter-show", "all")
    await select(page, "filter-stars", "4")
    cells = (await page.evaluate(COLLECT))["cells"]
    four = {i for i, r in results.items() if effective(r) >= 4}
    assert {c["imageId"] for c in cells} <= four
    assert sum(int(c["count"] or 1) for c in cells) == len(four)
    shown = await page.evaluate("document.getElementById('sheet-counts').dataset.shown")
    assert shown == str(sum(1 for r in results.values() if effective(r) >= 4))
    await select(page, "filter-stars", "-9")
    await select(page, "order", "stars")
    cells = (await page.evaluate(COLLECT))["cells"]
    stars = [effective(results[c["imageId"]]) for c in cells]
    assert stars == sorted(stars, reverse=True) and len(cells) == PHOTOS - len(hidden)
    await select(page, "order", "capture")

    # the large view: Space on the focused photo
    await page.evaluate("document.querySelector('#grid .cell.focused').focus()")
    focused = await page.evaluate(FOCUSED)
    await press(page, " ")
    viewer = await page.wait_for(
        "(() => { const v = document.getElementById('viewer'); const img ="
        " document.getElementById('viewer-img'); if (v.hidden || !img.src) return null;"
        " return img.decode().then(() => ({id: v.dataset.imageId, width: img.naturalWidth,"
        " title: document.getElementById('viewer-title').textContent, description:"
        " document.getElementById('viewer-description').textContent})); })()",
        what="the large view with its picture",
    )
    photo = results[focused]
    assert viewer == {
        "id": focused,
        "width": 240,  # the photo whole, larger than its 320-px thumbnail would allow at most
        "title": photo["title"],
        "description": photo["description"],
    }
    await press(page, "Escape")
    await page.wait_for("document.getElementById('viewer').hidden", what="the large view closed")
    assert await page.evaluate(FOCUSED) == focused  # the focus is back on the photo
    # a double click on another photo opens it
    await page.evaluate(
        "document.querySelectorAll('#grid .cell')[3].dispatchEvent("
        "new MouseEvent('dblclick', {bubbles: true}))"
    )
    opened = await page.wait_for(
        "!document.getElementById('viewer').hidden && document.getElementById('viewer').dataset.imageId",
        what="the large view from a double click",
    )
    assert opened == await page.evaluate(
        "document.querySelectorAll('#grid .cell')[3].dataset.imageId"
    )
    assert page.errors == []


async def test_the_counts_follow_a_running_job_over_the_websocket(sheet, held):
    """A job held by its provider opens as processing with nothing rated; once the provider
    answers, the counts and the stars arrive without a reload."""
    page = sheet.page
    images = sheet.images[3:5]
    job_id = (await sheet.post("process", shoot(images, "openai-compatible")))["jobId"]
    await held.asked.wait()
    await sheet.open(job_id)
    counts = "document.getElementById('sheet-counts').dataset"
    assert await page.evaluate(f"{counts}.processed") == "0"
    assert await page.evaluate(
        "[...document.querySelectorAll('#grid .cell')].map((c) => c.dataset.state)"
    ) == ["pending", "pending"]
    held.release.set()
    await page.wait_for(
        f"{counts}.processed === '2' && {counts}.status === 'completed' &&"
        " [...document.querySelectorAll('#grid .cell')].every((c) => c.dataset.state === 'rated')",
        what="the counts and the stars over the WebSocket",
    )
    assert page.errors == []
