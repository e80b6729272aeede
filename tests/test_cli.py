"""The command line, through Typer's runner and as a real subprocess (exit codes, signals)."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kullbatch.cli.app import app
from tests.dngfile import preview_jpeg, write_dng
from tests.fakes import rating_for
from tests.threaded_server import chat_server, url_manifest

EXAMPLES = Path(__file__).parent.parent / "examples"
runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private database and no provider keys from the developer's shell."""
    db = tmp_path / "k.db"
    monkeypatch.setenv("KULLBATCH_DB", str(db))
    for var in ("KULLBATCH_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return {**os.environ, "KULLBATCH_DB": str(db)}


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def process_json(*args: str) -> tuple[int, dict]:
    result = invoke("process", *args, "--json", "--quiet")
    job_id, document = result.stdout.split("\n", 1)
    status = json.loads(document)
    assert status["jobId"] == job_id.strip()
    return result.exit_code, status


def test_process_rates_the_bundled_example_offline(env):
    """The README's main command: every example photo rated by `local`, exit 0."""
    code, status = process_json(str(EXAMPLES / "shoot.json"))
    assert code == 0
    assert (
        status["status"] == "completed" and status["processedImages"] == status["totalImages"] >= 12
    )
    assert status["providerId"] == "local" and status["progress"] == 1.0
    results = json.loads(invoke("results", status["jobId"]).stdout)["results"]
    assert {(r["provider"], r["model"]) for r in results} == {("local", "local-v1")}


def test_process_accepts_a_csv_manifest_and_a_folder(env):
    """shoot.csv and the photos folder are sources too."""
    assert process_json(str(EXAMPLES / "shoot.csv"))[0] == 0
    code, status = process_json(str(EXAMPLES / "photos"))
    assert code == 0 and status["shootId"] == "photos"


def test_a_bad_manifest_exits_2_with_one_line_and_creates_no_job(env, tmp_path):
    """Malformed JSON: exit 2, the file and line in the message, no traceback, no job."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": "a",}\n]}')
    result = invoke("process", str(bad))
    assert result.exit_code == 2
    assert "bad.json" in result.stderr and "line 2" in result.stderr
    assert "Traceback" not in result.output
    assert json.loads(invoke("jobs", "--json").stdout) == []


def test_an_unknown_provider_exits_2(env):
    """A typo in --provider is a usage error that lists the known providers."""
    result = invoke("process", str(EXAMPLES / "shoot.json"), "--provider", "opnai")
    assert result.exit_code == 2 and "anthropic" in result.stderr


def test_a_bad_retry_window_exits_2(env):
    """--max-retry-time takes durations like 90s, 10m, 6h."""
    result = invoke("process", str(EXAMPLES / "shoot.json"), "--max-retry-time", "soon")
    assert result.exit_code == 2 and "--max-retry-time" in result.stderr


def test_economy_mode_is_refused_clearly_for_now(env):
    """Economy mode is not built yet: exit 2 before any job exists."""
    result = invoke("process", str(EXAMPLES / "shoot.json"), "--mode", "economy")
    assert result.exit_code == 2 and "economy" in result.stderr


def test_a_missing_key_fails_the_job_with_exit_3(env):
    """openai without OPENAI_API_KEY: exit 3, the job failed, the message names the variable."""
    code, status = process_json(str(EXAMPLES / "shoot.json"), "--provider", "openai")
    assert code == 3 and status["status"] == "failed"
    assert "OPENAI_API_KEY" in status["error"]


def test_results_export_csv_json_jsonl_and_xmp(env, tmp_path):
    """Every format, in manifest order, written atomically to --output."""
    _, status = process_json(str(EXAMPLES / "shoot.json"))
    job = status["jobId"]
    out = tmp_path / "ratings.csv"
    assert invoke("results", job, "--format", "csv", "--output", str(out)).exit_code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    manifest = json.loads((EXAMPLES / "shoot.json").read_text())
    assert [r["imageId"] for r in rows] == [i["id"] for i in manifest["images"]]
    assert all(1 <= int(r["starRating"]) <= 5 for r in rows)
    document = json.loads(invoke("results", job).stdout)
    assert document["jobId"] == job and len(document["results"]) == len(rows)
    lines = invoke("results", job, "--format", "jsonl").stdout.splitlines()
    assert json.loads(lines[0])["imageId"] == rows[0]["imageId"]
    sidecars = tmp_path / "xmp"
    assert invoke("results", job, "--format", "xmp", "--output", str(sidecars)).exit_code == 0
    assert len(list(sidecars.glob("*.xmp"))) == len(rows)


def test_status_jobs_and_providers_report_without_secrets(env, monkeypatch):
    """status/jobs --json give status objects; providers says a key is set, never shows it."""
    _, status = process_json(str(EXAMPLES / "shoot.json"))
    shown = json.loads(invoke("status", status["jobId"], "--json").stdout)
    assert shown["status"] == "completed" and shown["jobId"] == status["jobId"]
    assert "completed" in invoke("status", status["jobId"]).stdout
    assert [j["jobId"] for j in json.loads(invoke("jobs", "--json").stdout)] == [status["jobId"]]
    assert status["jobId"] in invoke("jobs").stdout
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    listing = invoke("providers").stdout
    assert "sk-secret-value-123" not in listing and "set" in listing and "local" in listing


def test_unknown_job_ids_exit_2(env):
    """status, results, cancel and resume of a job that does not exist: exit 2, clear message."""
    for command in ("status", "results", "cancel", "resume"):
        result = invoke(command, "batch_0_nope00")
        assert result.exit_code == 2 and "no job" in result.stderr


def test_cancel_and_resume_of_a_finished_job_say_so(env):
    """A completed job has nothing to cancel or resume."""
    _, status = process_json(str(EXAMPLES / "shoot.json"))
    assert "already completed" in invoke("cancel", status["jobId"]).stdout
    result = invoke("resume", status["jobId"])
    assert result.exit_code == 2 and "already completed" in result.stderr


# --- as a real subprocess ---------------------------------------------------------------------


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kullbatch", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def rated_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT count(*) FROM batch_items WHERE status = 'rated'").fetchone()
    except sqlite3.OperationalError:  # the child is still creating the schema
        return 0
    return row[0]


def openai_env(env: dict[str, str], base_url: str) -> dict[str, str]:
    return {**env, "OPENAI_API_KEY": "sk-test-key", "OPENAI_BASE_URL": base_url}


def test_subprocess_exit_codes_0_2_and_3(env, tmp_path):
    """The entry point exits 0 on the example, 2 on a missing file, 3 without a needed key."""
    done = subprocess.run(
        [sys.executable, "-m", "kullbatch", "process", str(EXAMPLES / "shoot.json"), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith("batch_")
    missing = subprocess.run(
        [sys.executable, "-m", "kullbatch", "process", str(tmp_path / "nope.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        missing.returncode == 2
        and "nope.json" in missing.stderr
        and "Traceback" not in missing.stderr
    )
    no_key = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    fatal = subprocess.run(
        [
            sys.executable,
            "-m",
            "kullbatch",
            "process",
            str(EXAMPLES / "shoot.json"),
            "--provider",
            "openai",
            "--json",
            "-q",
        ],
        env=no_key,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fatal.returncode == 3 and "OPENAI_API_KEY" in fatal.stdout


def test_ctrl_c_marks_the_job_interrupted_and_exits_130(env, tmp_path):
    """SIGINT while requests are in flight: exit 130, job interrupted, resume finishes it."""
    slow = {"on": True}
    manifest = tmp_path / "shoot.json"
    with chat_server(
        delay=lambda url: 30.0 if slow["on"] and not url.endswith("img0.jpg") else 0.0
    ) as server:
        url_manifest(manifest, f"http://127.0.0.1:{server.port}", 6)
        child_env = openai_env(env, server.base_url)
        child = start(["process", str(manifest), "--provider", "openai", "-q"], child_env)
        db = Path(env["KULLBATCH_DB"])
        wait_for(lambda: rated_count(db) == 1 and sum(server.requests.values()) == 6)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
        assert child.returncode == 130, err
        job_id = out.strip()
        status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "kullbatch", "status", job_id, "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        assert status["status"] == "interrupted" and status["processedImages"] == 1
        slow["on"] = False
        resumed = subprocess.run(
            [sys.executable, "-m", "kullbatch", "resume", job_id, "-q"],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert server.requests[f"http://127.0.0.1:{server.port}/photos/img0.jpg"] == 1


def test_cancel_from_another_process_stops_the_job_within_2_s(env, tmp_path):
    """`kullbatch cancel` while process waits on slow answers: process exits 1, job cancelled."""
    manifest = tmp_path / "shoot.json"
    with chat_server(delay=lambda url: 0.0 if url.endswith("img0.jpg") else 60.0) as server:
        url_manifest(manifest, f"http://127.0.0.1:{server.port}", 5)
        child = start(
            ["process", str(manifest), "--provider", "openai", "-q"],
            openai_env(env, server.base_url),
        )
        db = Path(env["KULLBATCH_DB"])
        wait_for(lambda: rated_count(db) == 1 and sum(server.requests.values()) == 5)
        job_id = child.stdout.readline().strip()
        cancel = subprocess.run(
            [sys.executable, "-m", "kullbatch", "cancel", job_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        asked = time.monotonic()  # the flag is in the database now
        assert "cancel requested" in cancel.stdout
        child.wait(timeout=20)
        # 2 s promised, plus the child's own teardown on a loaded machine; the answers it
        # waits on take 60 s, so a cancel that did not land fails this by far
        assert time.monotonic() - asked < 2.0 + 6.0
        assert child.returncode == 1
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT status FROM batch_jobs").fetchone()[0] == "cancelled"


def test_a_killed_process_keeps_its_results_and_resume_sends_only_the_rest(env, tmp_path):
    """kill -9 mid-job: rated results survive, status says interrupted, resume sends the rest once."""
    manifest = tmp_path / "shoot.json"
    hang = {"on": True}

    def delay(url: str) -> float:
        number = int(url.rsplit("img", 1)[1].removesuffix(".jpg"))
        return 120.0 if hang["on"] and number % 2 else 0.0

    with chat_server(delay=delay) as server:
        url_manifest(manifest, f"http://127.0.0.1:{server.port}", 10)
        child_env = openai_env(env, server.base_url)
        child = start(["process", str(manifest), "--provider", "openai", "-q"], child_env)
        db = Path(env["KULLBATCH_DB"])
        wait_for(lambda: rated_count(db) == 5)  # durable within the writer's flush interval
        job_id = child.stdout.readline().strip()
        child.kill()
        child.wait(timeout=10)
        status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "kullbatch", "status", job_id, "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        assert status["status"] == "interrupted" and status["processedImages"] == 5
        hang["on"] = False
        before = dict(server.requests)
        resumed = subprocess.run(
            [sys.executable, "-m", "kullbatch", "resume", job_id, "--json", "-q"],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert resumed.returncode == 0, resumed.stderr
        sent_again = {url for url, n in server.requests.items() if n > before.get(url, 0)}
        assert sent_again == {
            f"http://127.0.0.1:{server.port}/photos/img{i}.jpg" for i in (1, 3, 5, 7, 9)
        }
        results = json.loads(
            subprocess.run(
                [sys.executable, "-m", "kullbatch", "results", job_id],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        assert [r["starRating"] for r in results["results"]] == [
            rating_for(f"img{i}").starRating for i in range(10)
        ]


def test_a_db_that_is_not_a_database_exits_2(env, tmp_path):
    """--db pointing at some other file: one clear line, exit 2, no traceback."""
    bogus = tmp_path / "notes.db"
    bogus.write_text("this is not SQLite " * 100)
    result = invoke("jobs", "--db", str(bogus))
    assert result.exit_code == 2 and "not a database" in result.stderr


def test_a_broken_existing_sidecar_is_reported_not_overwritten(env, tmp_path):
    """results --format xmp next to a sidecar that is not XMP: that photo fails (exit 1), the
    file is left alone and the other photos get theirs."""
    _, status = process_json(str(EXAMPLES / "shoot.json"))
    out = tmp_path / "xmp"
    out.mkdir()
    first = json.loads(invoke("results", status["jobId"]).stdout)["results"][0]["filename"]
    broken = out / (Path(first).stem + ".xmp")
    broken.write_text("<not-xmp")
    result = invoke("results", status["jobId"], "--format", "xmp", "--output", str(out))
    assert result.exit_code == 1
    assert f"{broken}: the existing XMP is not valid XML" in result.stderr
    assert "1 photos failed" in result.stderr
    assert broken.read_text() == "<not-xmp"
    assert len(list(out.glob("*.xmp"))) == status["processedImages"]


def _rated_folder(tmp_path: Path, count: int) -> tuple[Path, str]:
    folder = tmp_path / "shoot"
    folder.mkdir()
    for name in sorted(os.listdir(EXAMPLES / "photos"))[:count]:
        (folder / name).write_bytes((EXAMPLES / "photos" / name).read_bytes())
    code, status = process_json(str(folder))
    assert code == 0
    return folder, status["jobId"]


def test_results_embed_writes_into_the_jpegs_and_a_read_only_one_fails_alone(env, tmp_path):
    """--embed: two JPEGs carry their XMP, the locked third is named on stderr, exit 1."""
    folder, job = _rated_folder(tmp_path, 3)
    locked = min(folder.iterdir())
    before = locked.read_bytes()
    locked.chmod(0o444)
    result = invoke("results", job, "--format", "xmp", "--embed")
    assert result.exit_code == 1
    assert f"kullbatch: error: {locked}: read-only" in result.stderr
    assert "wrote 0 XMP sidecars, embedded XMP in 2 photos; 1 photos failed" in result.stderr
    assert locked.read_bytes() == before
    assert sorted(p.suffix for p in folder.iterdir()) == [".jpg"] * 3  # no sidecars
    locked.chmod(0o644)
    again = invoke("results", job, "--format", "xmp", "--embed")
    assert again.exit_code == 0 and "embedded XMP in 3 photos" in again.stderr


def test_results_darktable_style_names_sidecars_after_the_whole_file_name(env, tmp_path):
    """--sidecar-style darktable: IMG.jpg gets IMG.jpg.xmp."""
    folder, job = _rated_folder(tmp_path, 2)
    result = invoke("results", job, "--format", "xmp", "--sidecar-style", "darktable")
    assert result.exit_code == 0
    photos = sorted(p.name for p in folder.glob("*.jpg"))
    assert sorted(p.name for p in folder.glob("*.xmp")) == [f"{name}.xmp" for name in photos]


@pytest.mark.parametrize("flag", [["--embed"], ["--sidecar-style", "darktable"]])
def test_xmp_options_without_format_xmp_are_a_usage_error(env, flag):
    """--embed and --sidecar-style mean nothing for CSV: exit 2 rather than ignore them."""
    result = invoke("results", "batch_1_abcdef", "--format", "csv", *flag)
    assert result.exit_code == 2 and "--format xmp" in result.stderr


def test_a_raw_shoot_is_rated_through_previews_and_its_raws_get_sidecars(env, tmp_path):
    """A folder of a DNG, a CR3+JPEG pair and a broken CR2: three photos, the pair rated once
    through its JPEG, the broken RAW failed alone (exit 1); with --embed the DNG and the JPEG
    carry their XMP and the CR3 gets a sidecar."""
    folder = tmp_path / "raw shoot"
    folder.mkdir()
    write_dng(folder / "IMG_0001.dng", preview=preview_jpeg((800, 600)), preview_size=(800, 600))
    (folder / "IMG_0002.JPG").write_bytes(
        (EXAMPLES / "photos" / "01_harbour_sharp.jpg").read_bytes()
    )
    (folder / "IMG_0002.CR3").write_bytes(b"never read: the pair's JPEG is sent")
    (folder / "IMG_0003.CR2").write_bytes(b"not a raw file at all" * 20)
    code, status = process_json(str(folder))
    assert code == 1
    assert (status["totalImages"], status["processedImages"], status["failedImages"]) == (3, 2, 1)
    document = json.loads(invoke("results", status["jobId"]).stdout)
    errors = {r["imageId"]: r.get("error") for r in document["results"]}
    assert "IMG_0003.CR2: cannot read this RAW file" in errors["IMG_0003"]
    result = invoke("results", status["jobId"], "--format", "xmp", "--embed")
    assert result.exit_code == 0
    assert "wrote 1 XMP sidecars, embedded XMP in 2 photos" in result.stderr
    assert sorted(p.name for p in folder.glob("*.xmp")) == ["IMG_0002.xmp"]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--reject-duplicates"], "--reject-duplicates goes"),
        (["--embed", "--sidecar-style", "darktable"], "--embed and --sidecar-style go"),
    ],
)
def test_xmp_only_flags_with_another_format_are_refused_by_name(env, flags, named):
    """A flag that only XMP export reads is not silently ignored: exit 2, the flag named."""
    result = invoke("results", "any-job", "--format", "csv", *flags)
    assert result.exit_code == 2
    assert f"kullbatch: error: {named} with --format xmp, not --format csv" in result.stderr
