"""`serve` goes on by itself with the jobs it was running when it stopped: after SIGKILL (a
crash, a reboot) and after SIGTERM (a service manager), with no resume call; a real
`kullbatch serve` process against a local OpenAI server that checks the key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kullbatch.manifest import manifest_from_document
from kullbatch.models import JobState
from kullbatch.service import jobs, restart
from kullbatch.web import server
from kullbatch.web.hub import Hub
from tests.held_chat import HeldChat, held_chat, url_images

KEY = "sk-restart-test-key-42"
TOKEN = "restart-test-token-0123"
IDS = [f"img{i}" for i in range(6)]
HELD = {"img4", "img5"}


class Serve:
    """One `kullbatch serve` process on a free port; `url` once it announced itself."""

    def __init__(self, db: Path, chat: HeldChat, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KULLBATCH_", "OPENAI"))}
        env |= {"OPENAI_BASE_URL": chat.base_url, "OPENAI_API_KEY": KEY}
        command = [sys.executable, "-m", "kullbatch", "serve", "--port", "0", "--token", TOKEN]
        self.process = subprocess.Popen(
            [*command, "--db", str(db), *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # "kullbatch serving DB: open http://…/?token=…"
        assert "open http://" in line, line
        self.url = line.split("open ", 1)[1].split("/?", 1)[0]

    def call(self, method: str, path: str, payload: object = None) -> tuple[int, dict]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/api/batch/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def status(self, job_id: str) -> dict:
        return self.call("GET", f"status/{job_id}")[1]

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


@contextmanager
def serving(db: Path, chat: HeldChat, *extra: str) -> Iterator[Serve]:
    served = Serve(db, chat, *extra)
    try:
        yield served
    finally:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait(timeout=30)


def until(check, what: str, timeout: float = 60.0):
    """Poll `check` (a real process and its HTTP answers: nothing to wait on but time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_job_and_stop(db: Path, chat: HeldChat, sig: signal.Signals) -> tuple[str, int]:
    """Post a job; once the photos not held are rated and stored, stop the server by `sig`."""
    with serving(db, chat) as served:
        code, answer = served.call(
            "POST", "process", {"images": url_images(IDS), "providerId": "openai"}
        )
        assert code == 202, answer
        job_id = answer["jobId"]
        rated = len(IDS) - len(HELD)
        until(lambda: served.status(job_id)["processedImages"] == rated, "the free photos")
        until(lambda: sum(chat.counts()[0][i] for i in HELD) == len(HELD), "the held requests")
        return job_id, served.stop(sig)


def assert_each_photo_paid_once(chat: HeldChat) -> None:
    received, answered = chat.counts()
    for image_id in IDS:
        assert answered[image_id] == 1, (image_id, answered)
        # photos rated before the stop are never sent again; held ones were sent twice
        assert received[image_id] == (2 if image_id in HELD else 1), (image_id, received)
    assert chat.refused == 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_job_goes_on_by_itself_when_serve_starts_again(tmp_path, sig):
    db = tmp_path / "k.db"
    with held_chat(KEY, hold=HELD) as chat:
        job_id, code = start_job_and_stop(db, chat, sig)
        if sig is signal.SIGTERM:
            assert code == 0  # as cleanly as Ctrl-C
        else:
            assert code == -signal.SIGKILL
        chat.release()
        with serving(db, chat) as served:
            ended = until(
                lambda: (s := served.status(job_id))["status"] == "completed" and s,
                "the job to complete without a resume call",
            )
            assert (ended["processedImages"], ended["failedImages"]) == (len(IDS), 0)
            assert served.stop(signal.SIGTERM) == 0
        assert_each_photo_paid_once(chat)


def test_no_resume_leaves_the_job_interrupted(tmp_path):
    db = tmp_path / "k.db"
    with held_chat(KEY, hold=HELD) as chat:
        job_id, _ = start_job_and_stop(db, chat, signal.SIGTERM)
        chat.release()
        with serving(db, chat, "--no-resume") as served:
            status = served.status(job_id)
            assert status["status"] == "interrupted"
            time.sleep(1.0)  # long enough for a restart to have sent something
            assert served.status(job_id)["status"] == "interrupted"
            received, _ = chat.counts()
            assert all(received[i] == 1 for i in IDS)
            served.stop(signal.SIGTERM)
        # a later start without --no-resume still goes on with it
        with serving(db, chat) as served:
            until(lambda: served.status(job_id)["status"] == "completed", "the job to complete")
            served.stop(signal.SIGTERM)
        assert_each_photo_paid_once(chat)


async def test_two_servers_starting_on_one_database_never_both_run_a_job(tmp_path):
    """The restart claims each job with the store's compare-and-swap: one server runs it."""
    db = tmp_path / "k.db"
    manifest = manifest_from_document({"images": url_images(IDS)}, base=tmp_path)
    with held_chat(KEY) as chat:
        env = {"OPENAI_BASE_URL": chat.base_url, "OPENAI_API_KEY": KEY}
        async with jobs.Service.open(db, env) as first, jobs.Service.open(db, env) as second:
            job = await first.create(manifest, jobs.ProcessSettings(provider="openai"), "ann")
            await restart.mark_served(first, job.id)
            await first.store.finish_job(job.id, JobState.INTERRUPTED)
            apps = [server.build_app(service, Hub(TOKEN)) for service in (first, second)]
            started = await asyncio.gather(*(app[server.API].restart() for app in apps))
            assert started == [[job.id], [job.id]]  # both try ...
            for _ in range(1000):
                if (await first.status(job.id)).status is JobState.COMPLETED:
                    break
                await asyncio.sleep(0.02)
            for app in apps:
                await app[server.API].stop()
            assert (await first.status(job.id)).status is JobState.COMPLETED
        received, answered = chat.counts()
        assert received == answered == Counter(IDS)  # ... and each photo is sent once
