"""Bursts: pHash and capture-time grouping, the best frame, and rejected duplicates in XMP."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.media.bursts import Burst, Frame, capture_time, group_frames, parse_exif_time
from kullbatch.media.bursts import distance as distance_of
from tests.burst_shoot import SHOOT, Shot, make_shoot, write

runner = CliRunner()


def frame(
    key: str, position: int, captured: float | None, phash: int, stars: int = 3, detail: float = 0.0
) -> Frame:
    return Frame(key, position, captured, phash, stars, detail)


A, B = 0x0F0F_0F0F_0F0F_0F0F, 0xF0F0_F0F0_F0F0_F0F0  # 64 bits apart


def test_near_duplicates_within_the_gap_form_one_group_with_the_most_starred_frame_best() -> None:
    """Three frames of one subject 0.3 s apart group; stars pick the best, then detail."""
    frames = [
        frame("a", 0, 10.0, A, stars=3, detail=900),
        frame("b", 1, 10.3, A ^ 0b11, stars=4, detail=100),
        frame("c", 2, 10.6, A ^ 0b101, stars=4, detail=500),
    ]
    assert group_frames(frames) == [Burst("a", ("a", "b", "c"), "c")]


def test_different_subjects_in_the_same_second_are_never_grouped() -> None:
    """Two interleaved subjects make two bursts, each frame with its own subject."""
    frames = [
        frame("a1", 0, 5.0, A),
        frame("b1", 1, 5.1, B),
        frame("a2", 2, 5.2, A ^ 1),
        frame("b2", 3, 5.3, B ^ 1),
    ]
    assert group_frames(frames) == [
        Burst("a1", ("a1", "a2"), "a1"),
        Burst("b1", ("b1", "b2"), "b1"),
    ]


def test_the_same_subject_later_than_the_gap_is_another_moment() -> None:
    """The gap is measured from the previous frame of the burst, not from its first."""
    frames = [
        frame("a", 0, 0.0, A),
        frame("b", 1, 1.5, A),
        frame("c", 2, 3.0, A),
        frame("d", 3, 5.1, A),
    ]
    assert group_frames(frames, gap=2.0) == [Burst("a", ("a", "b", "c"), "a")]
    assert group_frames(frames, gap=1.0) == []


def test_a_long_burst_follows_a_drifting_scene_from_frame_to_frame() -> None:
    """Each frame is compared with the burst's last frames: a slow pan stays one moment."""
    hashes = [(1 << (4 * n)) - 1 for n in range(8)]  # each 4 bits from the one before
    frames = [frame(f"f{n}", n, n * 0.2, h) for n, h in enumerate(hashes)]
    assert distance_of(hashes[0], hashes[-1]) > 12
    assert group_frames(frames) == [Burst("f0", tuple(f"f{n}" for n in range(8)), "f0")]


def test_the_distance_threshold_decides_what_counts_as_the_same_subject() -> None:
    """Frames 12 bits apart group at the default and not under --burst-distance 11."""
    frames = [frame("a", 0, 0.0, A), frame("b", 1, 0.5, A ^ 0xFFF)]
    assert group_frames(frames) == [Burst("a", ("a", "b"), "a")]
    assert group_frames(frames, max_distance=11) == []


def test_frames_without_a_time_group_with_their_neighbours_in_manifest_order() -> None:
    """Untimed frames never join timed ones; among themselves the next frame is close."""
    frames = [
        frame("x", 0, None, A),
        frame("t", 1, 0.0, A),
        frame("y", 2, None, A ^ 1, detail=5),
        frame("z", 4, None, A),
        frame("far", 3, None, B),
    ]
    assert group_frames(frames) == [Burst("x", ("x", "y"), "y")]


def test_ties_on_stars_and_detail_go_to_the_first_frame_and_ids_never_hold_a_bar() -> None:
    """The group id is the first frame's id with `|` replaced, so it stays one keyword level."""
    frames = [frame("shoot|1", 0, 0.0, A), frame("shoot|2", 1, 0.1, A)]
    assert group_frames(frames) == [Burst("shoot-1", ("shoot|1", "shoot|2"), "shoot|1")]


@pytest.mark.parametrize(
    ("stamp", "subsec", "seconds"),
    [
        ("2024:06:11 14:03:07", "25", 1718114587.25),
        ("2024:06:11 14:03:07\x00", None, 1718114587.0),
        ("2024:06:11 14:03:07", "x", 1718114587.0),
        ("    :  :     :  :  ", None, None),
        (None, "25", None),
    ],
)
def test_exif_times_read_with_their_fraction_of_a_second(stamp, subsec, seconds) -> None:
    """SubSecTimeOriginal adds the fraction; a blank or missing stamp is no time."""
    assert parse_exif_time(stamp, subsec) == seconds


def test_capture_time_comes_from_the_file_header(tmp_path: Path) -> None:
    """A written EXIF time reads back; a file without EXIF or a broken one has none."""
    timed = write(Shot("t", "01_harbour_sharp", time="14:03:07.40"), tmp_path)
    plain = write(Shot("p", "01_harbour_sharp"), tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert capture_time(timed) == pytest.approx(1718114587.4)
    assert capture_time(plain) is None
    assert capture_time(broken) is None


# --- the whole path: process, results, sidecars ----------------------------------------------


def invoke(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


def run_shoot(tmp_path: Path, *extra: str) -> tuple[str, dict[str, dict]]:
    manifest = make_shoot(tmp_path / "shoot", SHOOT)
    db = str(tmp_path / "k.db")
    result = invoke("process", str(manifest), "--db", db, "--quiet", *extra)
    assert result.exit_code == 0, result.stderr
    job = result.stdout.strip()
    exported = invoke("results", job, "--db", db)
    results = {r["imageId"]: r for r in json.loads(exported.stdout)["results"]}
    return job, results


def test_a_shoot_with_bursts_gets_exactly_its_groups_and_best_frames(tmp_path: Path) -> None:
    """The harbour burst and the untimed portrait pair group; the city, the harbour an hour
    later and the market street stay alone; the sharp frames are picked."""
    _, results = run_shoot(tmp_path)
    groups = {key: (r["group"], r["bestInGroup"]) for key, r in results.items()}
    assert groups == {
        "h1": ("h1", True),
        "h2": ("h1", False),
        "c1": (None, False),
        "h3": ("h1", False),
        "h4": (None, False),
        "p1": ("p1", False),
        "p2": ("p1", True),
        "m1": (None, False),
    }


def test_no_groups_skips_grouping(tmp_path: Path) -> None:
    """--no-groups: every photo alone, none picked."""
    _, results = run_shoot(tmp_path, "--no-groups")
    assert {(r["group"], r["bestInGroup"]) for r in results.values()} == {(None, False)}


def test_csv_carries_group_and_best_in_group(tmp_path: Path) -> None:
    """group and bestInGroup come just before groupRank and groupReason."""
    job, _ = run_shoot(tmp_path)
    out = invoke("results", job, "--db", str(tmp_path / "k.db"), "--format", "csv").stdout
    rows = [line.split(",")[-4:-2] for line in out.splitlines()[1:]]  # groupRank, groupReason
    assert rows[:3] == [["h1", "true"], ["h1", "false"], ["", "false"]]


def sidecars(tmp_path: Path, job: str, *extra: str) -> Path:
    folder = tmp_path / "xmp"
    result = invoke(
        "results",
        job,
        "--db",
        str(tmp_path / "k.db"),
        "--format",
        "xmp",
        "--output",
        str(folder),
        *extra,
    )
    assert result.exit_code == 0, result.stderr
    return folder


@pytest.mark.needs("exiftool")
def test_rejected_duplicates_read_back_with_exiftool(tmp_path: Path) -> None:
    """--reject-duplicates: the other frames are -1, the best keeps its stars, all carry the burst."""
    job, results = run_shoot(tmp_path)
    folder = sidecars(tmp_path, job, "--reject-duplicates")
    read = subprocess.run(
        [
            "exiftool",
            "-j",
            "-XMP:Rating",
            "-XMP:HierarchicalSubject",
            *sorted(map(str, folder.glob("*.xmp"))),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = {
        Path(r["SourceFile"]).stem: (r.get("Rating"), r.get("HierarchicalSubject"))
        for r in json.loads(read.stdout)
    }
    assert seen["h1"] == (results["h1"]["starRating"], "kullbatch|burst|h1")
    assert seen["h2"] == (-1, "kullbatch|burst|h1")
    assert seen["h3"] == (-1, "kullbatch|burst|h1")
    assert seen["p1"] == (-1, "kullbatch|burst|p1")
    assert seen["p2"] == (results["p2"]["starRating"], "kullbatch|burst|p1")
    assert seen["c1"] == (results["c1"]["starRating"], None)


def test_without_the_flag_duplicates_keep_their_own_stars(tmp_path: Path) -> None:
    """Plain xmp: no -1 anywhere, the burst keyword still there."""
    job, results = run_shoot(tmp_path)
    text = (sidecars(tmp_path, job) / "h2.xmp").read_text(encoding="utf-8")
    assert f"<xmp:Rating>{results['h2']['starRating']}</xmp:Rating>" in text
    assert "<rdf:li>kullbatch|burst|h1</rdf:li>" in text


def test_an_existing_sidecar_keeps_its_own_hierarchical_keywords(tmp_path: Path) -> None:
    """A second export replaces our burst keyword and keeps the photographer's."""
    job, _ = run_shoot(tmp_path)
    folder = sidecars(tmp_path, job)
    target = folder / "h2.xmp"
    text = target.read_text(encoding="utf-8").replace(
        "<rdf:li>kullbatch|burst|h1</rdf:li>",
        "<rdf:li>kullbatch|burst|old</rdf:li><rdf:li>People|Anna</rdf:li>",
    )
    target.write_text(text, encoding="utf-8")
    sidecars(tmp_path, job, "--reject-duplicates")
    again = target.read_text(encoding="utf-8")
    assert "People|Anna" in again and "kullbatch|burst|h1" in again and "burst|old" not in again
    assert "<xmp:Rating>-1</xmp:Rating>" in again


def test_frames_tied_on_stars_are_told_apart_by_their_focus(tmp_path: Path) -> None:
    """Two five-star frames of one burst: the one without the slight blur is picked."""
    shots = [
        Shot("a", "04_mountain_lake_sharp", shift=4, blur=0.4, time="10:00:00.00"),
        Shot("b", "04_mountain_lake_sharp", time="10:00:00.30"),
    ]
    manifest = make_shoot(tmp_path / "tie", shots)
    db = str(tmp_path / "k.db")
    job = invoke("process", str(manifest), "--db", db, "--quiet").stdout.strip()
    results = json.loads(invoke("results", job, "--db", db).stdout)["results"]
    assert [r["starRating"] for r in results] == [5, 5]
    assert [(r["group"], r["bestInGroup"]) for r in results] == [("a", False), ("a", True)]
