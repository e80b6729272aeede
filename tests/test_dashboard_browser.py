"""The dashboard in a real headless Chromium: a job run to 100 % with its results, and a cancel.

The server runs in the test's loop on 127.0.0.1; Chromium, a separate process, is driven over
the DevTools protocol (tests/cdp.py). Nothing is downloaded and no screenshot is written (the
contact sheet's own tests, tests/test_sheet_browser.py, write one). The
module is skipped where no `chromium` is installed (it fails under CI=true); `.ci/run` installs
Debian's.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from kullbatch.service import jobs
from kullbatch.web import server
from kullbatch.web.hub import Hub
from tests import cdp
from tests.test_server import HeldProvider

CHROMIUM = cdp.find_chromium()
# without Chromium: skipped with the reason, or failed under CI=true (tests/conftest.py)
pytestmark = pytest.mark.needs("chromium")

EXAMPLES = Path(__file__).parent.parent / "examples"
TOKEN = "br0wser-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHOTOS = 5


def body(n: int, provider: str) -> dict:
    photos = sorted((EXAMPLES / "photos").iterdir())[:n]
    images = [
        {"id": f"img{i}", "filename": p.name, "path": f"photos/{p.name}"}
        for i, p in enumerate(photos)
    ]
    return {"shootId": "browser", "images": images, "providerId": provider}


NO_POLL = "window.setInterval = () => 0;"
# every percentage each job's bar showed, in order, recorded as the table is redrawn
RECORD_PERCENTS = """
window.percents = {};
new MutationObserver(() => {
  for (const row of document.querySelectorAll("#jobs tr")) {
    const seen = (window.percents[row.dataset.jobId] ??= []);
    const percent = Number(row.querySelector(".bar").dataset.percent);
    if (seen.at(-1) !== percent) seen.push(percent);
  }
}).observe(document.getElementById("jobs"), {childList: true});
"""


def row(job_id: str) -> str:
    """A JavaScript expression for the job's row in the dashboard's table."""
    return f"document.querySelector('#jobs tr[data-job-id={json.dumps(job_id)}]')"


@pytest.fixture
async def held(aiohttp_server):
    fake = await HeldProvider().start(aiohttp_server)
    yield fake
    fake.release.set()


class Dashboard:
    """The page in Chromium, and a REST client of the same server for what the page does not do."""

    def __init__(self, page: cdp.Page, http: aiohttp.ClientSession, base: URL) -> None:
        self.page = page
        self.http = http
        self.base = base

    async def post(self, path: str, payload: dict | None = None) -> tuple[int, dict]:
        url = self.base / "api/batch" / path
        async with self.http.post(url, json=payload, headers=AUTH) as response:
            return response.status, await response.json()

    async def get(self, path: str) -> tuple[int, dict]:
        async with self.http.get(self.base / "api/batch" / path, headers=AUTH) as response:
            return response.status, await response.json()


@pytest.fixture
async def dashboard(tmp_path, aiohttp_server, held):
    """The server on 127.0.0.1 with a token, and Chromium showing its dashboard, live."""
    root = tmp_path / "root"
    shutil.copytree(EXAMPLES / "photos", root / "photos")
    env = {"OPENAI_COMPATIBLE_BASE_URL": str(held.server.make_url("/v1"))}
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        app = server.build_app(service, Hub(TOKEN), root=root)
        web_server = await aiohttp_server(app, host="127.0.0.1")
        base = web_server.make_url("/")
        async with aiohttp.ClientSession() as http, cdp.launch(CHROMIUM) as page:
            # no 10 s poll of the job list: what the rows show came over the WebSocket
            await page.call("Page.addScriptToEvaluateOnNewDocument", source=NO_POLL)
            await page.navigate(str(base.with_query(token=TOKEN)))
            await page.wait_for(
                "document.getElementById('conn').textContent === 'live'",
                what="the dashboard's WebSocket to open",
            )
            yield Dashboard(page, http, base)
            held.release.set()
        await web_server.close()


async def test_a_posted_job_runs_to_100_percent_in_the_dashboard_and_its_results_open(dashboard):
    """The row reaches completed, n / n and a full bar; its contact sheet shows the API's stars
    and titles."""
    page = dashboard.page
    # the page dropped the token from its address once it had read it
    assert "token" not in await page.evaluate("location.href")
    await page.evaluate(RECORD_PERCENTS)
    status, accepted = await dashboard.post("process", body(PHOTOS, "local"))
    assert status == 202
    job_id = accepted["jobId"]
    shown = await page.wait_for(
        f"""(() => {{
            const row = {row(job_id)};
            if (!row || row.dataset.status !== "completed") return null;
            return {{
                status: row.querySelector(".status").textContent,
                processed: row.querySelector(".processed").textContent,
                failed: row.querySelector(".failed").textContent,
                percent: row.querySelector(".bar").dataset.percent,
                title: row.querySelector(".bar").title,
                width: row.querySelector(".bar > div").style.width,
                cancel: row.querySelector("button[data-action=cancel]") !== null,
            }};
        }})()""",
        what=f"job {job_id}'s row to read completed",
    )
    assert shown == {
        "status": "completed",
        "processed": f"{PHOTOS} / {PHOTOS}",
        "failed": "0",
        "percent": "100",
        "title": "100 %",
        "width": "100%",
        "cancel": False,  # nothing left to cancel
    }
    percents = await page.evaluate(f"window.percents[{json.dumps(job_id)}]")
    assert percents == sorted(percents) and percents[-1] == 100, percents

    await page.evaluate(f"{row(job_id)}.querySelector('a[data-action=results]').click()")
    cells = await page.wait_for(
        f"""(() => {{
            const cells = [...document.querySelectorAll("#grid .cell")];
            if (document.getElementById("sheet").hidden || cells.length < {PHOTOS}) return null;
            if (!cells.every((c) => c.querySelector("img").src.startsWith("blob:"))) return null;
            return {{
                heading: document.getElementById("sheet-title").textContent,
                cells: cells.sort((a, b) => a.dataset.index - b.dataset.index).map((c) => ({{
                    imageId: c.dataset.imageId,
                    stars: c.querySelector(".stars").textContent,
                    title: c.title,
                }})),
            }};
        }})()""",
        what="the contact sheet with its thumbnails",
    )
    status, results = await dashboard.get(f"results/{job_id}")
    assert status == 200
    assert cells["heading"] == job_id
    assert cells["cells"] == [
        {
            "imageId": r["imageId"],
            "stars": "★" * r["starRating"] + "☆" * (5 - r["starRating"]),
            "title": f"{r['filename']}: {r['title']}",
        }
        for r in results["results"]
    ]
    # each thumbnail, fetched with the token in a header, decoded as a picture
    assert (
        await page.evaluate(
            "Promise.all([...document.querySelectorAll('#grid .cell img')].map("
            "(img) => img.decode().then(() => img.naturalWidth > 0)))"
        )
        == [True] * PHOTOS
    )
    assert page.errors == []


async def test_the_dashboards_cancel_button_stops_a_running_job(dashboard, held):
    """A job held by its provider shows Cancel; a click makes the row and the API read cancelled."""
    page = dashboard.page
    status, accepted = await dashboard.post("process", body(2, "openai-compatible"))
    assert status == 202
    job_id = accepted["jobId"]
    await held.asked.wait()  # the first request is out and held: the job is surely running
    await page.wait_for(
        f"{row(job_id)}?.querySelector('button[data-action=cancel]') != null",
        what=f"job {job_id}'s Cancel button",
    )
    assert await page.evaluate(f"{row(job_id)}.dataset.status") == "processing"

    await page.evaluate(f"{row(job_id)}.querySelector('button[data-action=cancel]').click()")
    shown = await page.wait_for(
        f"""(() => {{
            const row = {row(job_id)};
            if (!row || row.dataset.status !== "cancelled") return null;
            return {{
                status: row.querySelector(".status").textContent,
                className: row.className,
                cancel: row.querySelector("button[data-action=cancel]") !== null,
            }};
        }})()""",
        what=f"job {job_id}'s row to read cancelled",
    )
    assert shown == {"status": "cancelled", "className": "cancelled", "cancel": False}
    assert not held.release.is_set()  # cancelled while held, not finished
    status, current = await dashboard.get(f"status/{job_id}")
    assert status == 200 and current["status"] == "cancelled"
    assert current["processedImages"] < 2
    assert page.errors == []


# What the page showed and fetched, counted from the document's start: every status each job's
# row showed, in order; the job lists asked for and those drawn (the page draws a list in the
# turn its JSON is read); the cancels still unanswered (a list is asked for on each answer).
RECORD_STATUSES = """(() => {
  window.statuses = {};
  window.listsAsked = 0;
  window.listsDrawn = 0;
  window.cancelsPending = 0;
  addEventListener("DOMContentLoaded", () => new MutationObserver(() => {
    for (const row of document.querySelectorAll("#jobs tr")) {
      const seen = (window.statuses[row.dataset.jobId] ??= []);
      if (seen.at(-1) !== row.dataset.status) seen.push(row.dataset.status);
    }
  }).observe(document.getElementById("jobs"), {childList: true}));
  const fetch = window.fetch;
  window.fetch = (url, options) => {
    if (String(url).endsWith("/jobs")) window.listsAsked += 1;
    if (!String(url).includes("/cancel/")) return fetch(url, options);
    window.cancelsPending += 1;
    return fetch(url, options).finally(() => { window.cancelsPending -= 1; });
  };
  const json = Response.prototype.json;
  Response.prototype.json = async function () {
    const value = await json.call(this);
    if (this.url.endsWith("/jobs")) setTimeout(() => { window.listsDrawn += 1; });
    return value;
  };
})();"""

# As on a busy server: the list the page asks for on Cancel was read before the cancel landed,
# and arrives only once the WebSocket's end message is shown. (`staleSaid`: what it said.)
STALE_LIST_ON_CANCEL = """(() => {
  const fetch = window.fetch;
  let stale = null;
  window.fetch = async (url, options) => {
    if (String(url).includes("/cancel/")) {
      stale = await fetch("/api/batch/jobs", {headers: options.headers});
      window.staleSaid = JSON.parse(await stale.clone().text()).map((job) => job.status);
      return fetch(url, options);
    }
    if (stale === null || !String(url).endsWith("/jobs")) return fetch(url, options);
    const list = stale;
    stale = null;
    const deadline = Date.now() + 10000;
    while (!document.querySelector("#jobs tr[data-status=cancelled]") && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return list;
  };
})();"""

ROUNDS = 3
AT_ONCE = 10  # jobs cancelled together in each round: 30 cancels in all


async def reload_with(dashboard: Dashboard, *scripts: str) -> None:
    """Load the page again with `scripts` run before its own (the token is kept by the tab)."""
    page = dashboard.page
    for script in scripts:
        await page.call("Page.addScriptToEvaluateOnNewDocument", source=script)
    await page.navigate(str(dashboard.base.with_query(token=TOKEN)))
    await page.wait_for(
        "document.getElementById('conn').textContent === 'live'",
        what="the dashboard's WebSocket to open",
    )


def settled(job_ids: list[str]) -> str:
    """An expression: once every list is drawn, no cancel is unanswered and each job's row has
    shown `cancelled`, each job's row status now and every status it showed; else null."""
    return f"""(() => {{
        const ids = {json.dumps(job_ids)};
        if (window.cancelsPending > 0 || window.listsDrawn < window.listsAsked) return null;
        if (!ids.every((id) => (window.statuses[id] ?? []).includes("cancelled"))) return null;
        return ids.map((id) => ({{
            now: document.querySelector(`#jobs tr[data-job-id="${{id}}"]`).dataset.status,
            shown: window.statuses[id],
        }}));
    }})()"""


async def test_a_list_read_before_the_cancel_does_not_bring_back_processing(dashboard, held):
    """The list asked for on Cancel, read before the cancel landed and arriving after the
    WebSocket's end message, leaves the row cancelled: the WebSocket's word is the newer."""
    page = dashboard.page
    await reload_with(dashboard, RECORD_STATUSES, STALE_LIST_ON_CANCEL)
    status, accepted = await dashboard.post("process", body(2, "openai-compatible"))
    assert status == 202
    job_id = accepted["jobId"]
    await held.asked.wait()
    await page.wait_for(
        f"{row(job_id)}?.querySelector('button[data-action=cancel]') != null",
        what=f"job {job_id}'s Cancel button",
    )
    await page.evaluate(f"{row(job_id)}.querySelector('button[data-action=cancel]').click()")
    shown = await page.wait_for(settled([job_id]), what="the cancel and the stale list shown")
    assert await page.evaluate("window.staleSaid") == ["processing"]  # the list was stale
    assert shown == [{"now": "cancelled", "shown": ["processing", "cancelled"]}]
    assert (await dashboard.get(f"status/{job_id}"))[1]["status"] == "cancelled"
    assert page.errors == []


async def test_jobs_cancelled_together_with_requests_in_flight_all_show_cancelled(dashboard, held):
    """Ten jobs at once, each with its request held by the provider, cancelled by a click each,
    three rounds in a row: every row reads cancelled, and never went back to processing."""
    page = dashboard.page
    await reload_with(dashboard, RECORD_STATUSES)
    job_ids: list[str] = []
    for _ in range(ROUNDS):
        posted = await asyncio.gather(
            *(dashboard.post("process", body(2, "openai-compatible")) for _ in range(AT_ONCE))
        )
        assert [status for status, _ in posted] == [202] * AT_ONCE, posted
        batch = [accepted["jobId"] for _, accepted in posted]
        async with asyncio.timeout(20):
            await held.until_asked(len(job_ids) + AT_ONCE)  # every first request is out, held
        job_ids += batch
        buttons = " && ".join(
            f"{row(job_id)}?.querySelector('button[data-action=cancel]') != null"
            for job_id in batch
        )
        await page.wait_for(buttons, what="every new job's Cancel button")
        await page.evaluate(
            f"for (const id of {json.dumps(batch)}) document.querySelector("
            '`#jobs tr[data-job-id="${id}"] button[data-action=cancel]`).click()'
        )
        shown = await page.wait_for(settled(batch), what="every cancel shown")
        assert [s["now"] for s in shown] == ["cancelled"] * AT_ONCE, shown
        assert all(s["shown"] == ["processing", "cancelled"] for s in shown), shown
    for job_id in job_ids:
        status, current = await dashboard.get(f"status/{job_id}")
        assert status == 200 and current["status"] == "cancelled", current
    assert not held.release.is_set()
    assert page.errors == []
