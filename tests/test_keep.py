"""`results --keep N|P%`: a cull to a delivery count, from stored results only."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.models import ImageInput, ItemRecord, ItemState, Rating, Usage
from kullbatch.service.keep import KeepTarget, KeepTargetError, choose, parse_keep, sharpness
from kullbatch.store.database import Store
from tests.burst_shoot import SHOOT, make_shoot

runner = CliRunner()
XMP = "{http://ns.adobe.com/xap/1.0/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
KB = "{https://kullbatch.dev/ns/xmp/1.0/}"


def item(
    position: int,
    stars: int,
    score: int | None,
    *,
    group: str | None = None,
    best: bool = False,
    state: ItemState = ItemState.RATED,
) -> ItemRecord:
    rating = Rating(
        starRating=stars, colorLabel="none", title="", description="", tags=[], score=score
    )
    image = ImageInput(id=f"i{position}", filename=f"i{position}.jpg", url="https://x/y.jpg")
    rated = state is ItemState.RATED
    return ItemRecord(
        position,
        image,
        state,
        1,
        None,
        rating if rated else None,
        Usage(),
        group=group,
        best_in_group=best,
    )


def kept(items: list[ItemRecord]) -> list[str]:
    return [i.image.id for i in items if i.kept]


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("12", KeepTarget(count=12)),
        ("25%", KeepTarget(percent=25)),
        (" 2.5% ", KeepTarget(percent=2.5)),
    ],
)
def test_a_keep_target_is_a_count_or_a_share(text: str, target: KeepTarget) -> None:
    assert parse_keep(text) == target


@pytest.mark.parametrize("text", ["0%", "-3", "abc", "0", "2.5", "101%", "%", "10 %x", ""])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(KeepTargetError, match="--keep"):
        parse_keep(text)


def test_each_burst_offers_only_its_best_frame_then_stars_then_score() -> None:
    """A burst's other frames are never kept, however many stars they have; among equal stars
    the higher score goes first; a score missing (an old result) counts as the lowest."""
    items = [
        item(0, 5, 90, group="g", best=True),
        item(1, 5, 99, group="g"),  # the burst's second frame: not on offer
        item(2, 4, 10),
        item(3, 4, 80),
        item(4, 4, None),
        item(5, 3, 100),
        item(6, 2, 50, state=ItemState.FAILED),
    ]
    assert kept(choose(items, KeepTarget(count=3), measure=lambda i: 0.0)) == ["i0", "i2", "i3"]
    assert kept(choose(items, KeepTarget(count=4), measure=lambda i: 0.0)) == [
        "i0",
        "i2",
        "i3",
        "i4",
    ]
    everything = choose(items, KeepTarget(count=100), measure=lambda i: 0.0)
    assert kept(everything) == ["i0", "i2", "i3", "i4", "i5"]
    assert [i.kept for i in everything] == [True, False, True, True, True, True, False]


def test_a_share_is_of_the_rated_photos_rounded() -> None:
    """Six rated photos (the failed one is not): 25 % is 1.5, kept as 2; 20 % is 1.2: 1."""
    items = [item(n, 5 - n % 5, 50) for n in range(6)] + [item(6, 3, 1, state=ItemState.FAILED)]
    assert len(kept(choose(items, KeepTarget(percent=25), measure=lambda i: 0.0))) == 2
    assert len(kept(choose(items, KeepTarget(percent=20), measure=lambda i: 0.0))) == 1


def test_sharpness_breaks_a_tie_at_the_cut_and_only_there() -> None:
    """Only the photos tied on stars and score at the cut are measured; the sharpest win."""
    items = [item(0, 5, 90), item(1, 4, 70), item(2, 4, 70), item(3, 4, 70), item(4, 3, 70)]
    sharpness = {"i1": 100.0, "i2": 900.0, "i3": 500.0}
    measured: list[str] = []

    def measure(record: ItemRecord) -> float:
        measured.append(record.image.id)
        return sharpness[record.image.id]

    assert kept(choose(items, KeepTarget(count=3), measure=measure)) == ["i0", "i2", "i3"]
    assert sorted(measured) == ["i1", "i2", "i3"]
    measured.clear()
    assert kept(choose(items, KeepTarget(count=4), measure=measure)) == ["i0", "i1", "i2", "i3"]
    assert measured == []  # the cut falls between two star levels: nothing is decoded


def test_sharpness_is_measured_on_the_file_and_zero_without_one(tmp_path: Path) -> None:
    photos = Path(__file__).resolve().parents[1] / "examples" / "photos"
    sharp = dataclasses.replace(
        item(0, 4, 50),
        image=ImageInput(id="s", filename="s.jpg", path=photos / "01_harbour_sharp.jpg"),
    )
    blurry = dataclasses.replace(
        sharp, image=ImageInput(id="b", filename="b.jpg", path=photos / "07_harbour_blurry.jpg")
    )
    gone = dataclasses.replace(
        sharp, image=ImageInput(id="g", filename="g.jpg", path=tmp_path / "gone.jpg")
    )
    assert sharpness(sharp) > sharpness(blurry) > 0
    assert sharpness(gone) == 0.0
    assert sharpness(item(1, 4, 50)) == 0.0  # a URL photo


# --- through the command line ------------------------------------------------------------------


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def burst_job(tmp_path: Path) -> tuple[str, str, dict[str, dict]]:
    manifest = make_shoot(tmp_path / "shoot", SHOOT)
    db = str(tmp_path / "k.db")
    result = invoke("process", str(manifest), "--db", db, "--quiet")
    assert result.exit_code == 0, result.output
    job = result.stdout.strip()
    results = json.loads(invoke("results", job, "--db", db).stdout)["results"]
    return db, job, {r["imageId"]: r for r in results}


def test_every_format_carries_kept_and_a_burst_gives_one_frame(
    burst_job: tuple[str, str, dict[str, dict]],
) -> None:
    db, job, results = burst_job
    groups = {r["group"] for r in results.values() if r["group"]}
    assert groups  # the shoot has bursts
    everyone = len(results)
    out = invoke("results", job, "--db", db, "--keep", "100%")
    document = json.loads(out.stdout)["results"]
    chosen = {r["imageId"] for r in document if r["kept"]}
    duplicates = sum(1 for r in results.values() if r["group"] and not r["bestInGroup"])
    assert len(chosen) == everyone - duplicates
    assert f"kept {len(chosen)} of {everyone} rated photos" in out.stderr
    lines = invoke("results", job, "--db", db, "--keep", "2", "--format", "jsonl").stdout
    flags = {json.loads(line)["imageId"]: json.loads(line)["kept"] for line in lines.splitlines()}
    top = {key for key, value in flags.items() if value}
    assert len(top) == 2
    offered = [r for r in results.values() if r["group"] is None or r["bestInGroup"]]
    rank = {r["imageId"]: (r["starRating"], r["score"]) for r in offered}
    assert top <= set(rank)  # only a burst's best frame is on offer
    assert min(rank[k] for k in top) >= max(v for k, v in rank.items() if k not in top)
    rows = csv.DictReader(
        io.StringIO(invoke("results", job, "--db", db, "--keep", "2", "-f", "csv").stdout)
    )
    assert {r["imageId"] for r in rows if r["kept"] == "true"} == top
    plain = json.loads(invoke("results", job, "--db", db).stdout)["results"]
    assert {r["kept"] for r in plain} == {None}  # no keep target asked: null


def test_xmp_writes_the_photos_not_kept_as_rejected(
    tmp_path: Path, burst_job: tuple[str, str, dict[str, dict]]
) -> None:
    db, job, results = burst_job
    out = tmp_path / "xmp"
    done = invoke(
        "results", job, "--db", db, "--keep", "3", "--format", "xmp", "--output", str(out)
    )
    assert done.exit_code == 0, done.output
    flags = json.loads(invoke("results", job, "--db", db, "--keep", "3").stdout)["results"]
    for record in flags:
        sidecar = out / f"{Path(record['filename']).stem}.xmp"
        description = ET.parse(sidecar).getroot().find(f"{RDF}RDF/{RDF}Description")
        want = str(record["starRating"]) if record["kept"] else "-1"
        assert description.findtext(f"{XMP}Rating") == want, record["imageId"]
    assert sum(1 for r in flags if r["kept"]) == 3


def test_with_a_keep_target_the_photographers_own_rating_still_wins_in_xmp(
    tmp_path: Path, burst_job: tuple[str, str, dict[str, dict]]
) -> None:
    """A photo the keep target drops but the photographer starred keeps their stars; one it
    keeps but they rejected is -1; kullbatch's own choice goes in kullbatch:Rating."""
    db, job, _ = burst_job
    flags = json.loads(invoke("results", job, "--db", db, "--keep", "2").stdout)["results"]
    dropped = next(r for r in flags if r["kept"] is False)
    chosen = next(r for r in flags if r["kept"])

    async def set_theirs() -> None:
        store = await Store.open(Path(db))
        try:
            assert await store.ratings.set(job, dropped["imageId"], 5)
            assert await store.ratings.set(job, chosen["imageId"], -1)
        finally:
            await store.close()

    asyncio.run(set_theirs())
    out = tmp_path / "xmp"
    done = invoke("results", job, "--db", db, "--keep", "2", "--format", "xmp", "-o", str(out))
    assert done.exit_code == 0, done.output
    after = json.loads(invoke("results", job, "--db", db, "--keep", "2").stdout)["results"]
    for record in after:
        sidecar = out / f"{Path(record['filename']).stem}.xmp"
        description = ET.parse(sidecar).getroot().find(f"{RDF}RDF/{RDF}Description")
        assert description is not None
        ours = str(record["starRating"]) if record["kept"] else "-1"
        theirs = {dropped["imageId"]: "5", chosen["imageId"]: "-1"}.get(record["imageId"])
        assert description.findtext(f"{XMP}Rating") == (theirs or ours), record["imageId"]
        assert description.findtext(f"{KB}Rating") == ours, record["imageId"]
    assert {r["imageId"]: r["kept"] for r in after} == {r["imageId"]: r["kept"] for r in flags}


@pytest.mark.parametrize("value", ["0%", "-3", "abc"])
def test_a_bad_keep_target_exits_2_naming_it(
    burst_job: tuple[str, str, dict[str, dict]], value: str
) -> None:
    db, job, _ = burst_job
    result = invoke("results", job, "--db", db, "--keep", value)
    assert result.exit_code == 2
    assert "--keep" in result.stderr and result.stdout == ""
