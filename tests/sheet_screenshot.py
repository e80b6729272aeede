"""The README's picture of the contact sheet: the bundled shoot rated by `local`, shown at
1280x800 in headless Chromium with the same harness as the browser tests (tests/cdp.py).

    python -m tests.sheet_screenshot docs/contact-sheet.png

A copy of examples/photos is served from a temporary folder; two photos get the
photographer's stars and one is rejected from the keyboard, so the marks show.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from kullbatch.service import jobs
from kullbatch.web import server
from kullbatch.web.hub import Hub
from tests import cdp
from tests.test_sheet_browser import FOCUSED, SETTLED, press, screenshot, viewport

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOKEN = "readme"


async def make(target: Path) -> None:
    chromium = cdp.find_chromium()
    if chromium is None:
        raise SystemExit("no chromium: install Debian's `chromium` first")
    with tempfile.TemporaryDirectory(prefix="kullbatch-sheet-") as folder:
        root = Path(folder) / "root"
        shutil.copytree(EXAMPLES / "photos", root / "photos")
        shoot = json.loads((EXAMPLES / "shoot.json").read_text(encoding="utf-8"))
        shoot["providerId"] = "local"
        async with jobs.Service.open(Path(folder) / "k.db", {}) as service:
            runner = web.AppRunner(server.build_app(service, Hub(TOKEN), root=root))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            try:
                await shoot_and_show(chromium, base, shoot, target)
            finally:
                await runner.cleanup()


async def shoot_and_show(chromium: str, base: str, shoot: dict, target: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{base}/ws?token={TOKEN}") as ws:
            async with http.post(f"{base}/api/batch/process", json=shoot, headers=auth) as r:
                job_id = (await r.json())["jobId"]
            async for message in ws:
                data = json.loads(message.data)["data"]
                if data["jobId"] == job_id and data["status"] != "processing":
                    break
        async with cdp.launch(chromium) as page:
            await viewport(page, 1280, 800)
            await page.navigate(f"{base}/?token={TOKEN}#job={job_id}")
            await page.wait_for(f"{FOCUSED} !== null", what="the contact sheet")
            for key in ("5", "ArrowRight", "ArrowRight", "4", "ArrowRight", "x", "ArrowRight"):
                await press(page, key)
            await page.wait_for(SETTLED, what="the ratings saved")
            await page.wait_for(
                "[...document.querySelectorAll('#grid .cell img')].every((i) => i.complete"
                " && i.naturalWidth > 0)",
                what="every thumbnail drawn",
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            await screenshot(page, target)


if __name__ == "__main__":
    asyncio.run(make(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/contact-sheet.png")))
