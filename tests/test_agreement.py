"""`kullbatch agreement`: the job's stars against the photographer's own, figures by hand."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import sqlite3
from pathlib import Path

import exiv2
import pytest
from scipy import stats
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.models import ImageInput, ItemRecord, ItemState, Rating, Usage
from kullbatch.service.agreement import Pair, lines, pair_up, summary

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "photos"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


# --- the figures, by hand -----------------------------------------------------------------------


def average_ranks(values: list[int]) -> list[float]:
    """Ranks 1..n, ties given the mean of the ranks they share."""
    ordered = sorted(values)
    return [(ordered.index(v) + 1 + ordered.index(v) + ordered.count(v)) / 2 for v in values]


def pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    top = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return top / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def tau_b(x: list[int], y: list[int]) -> float:
    """(concordant - discordant) / sqrt((pairs - ties in x) * (pairs - ties in y))."""
    concordant = discordant = ties_x = ties_y = pairs = 0
    for (a1, b1), (a2, b2) in itertools.combinations(zip(x, y), 2):
        pairs += 1
        ties_x += a1 == a2
        ties_y += b1 == b2
        sign = (a1 - a2) * (b1 - b2)
        concordant += sign > 0
        discordant += sign < 0
    return (concordant - discordant) / math.sqrt((pairs - ties_x) * (pairs - ties_y))


# photographer, kullbatch: ties on both sides, a rejection (-1, counted as 0)
THEIRS = [5, 4, 3, 0, 3, 1]
OURS = [5, 5, 3, 1, 2, 1]
PAIRS = [Pair(f"p{i}", t, o) for i, (t, o) in enumerate(zip(THEIRS, OURS, strict=True))]


def test_the_figures_are_those_computed_by_hand() -> None:
    """3 of 6 equal, all within one; at 3 stars they keep 4, we keep 3, 3 in common."""
    document = summary("job", PAIRS, skipped=2, keep_stars=3)
    assert (document["compared"], document["skipped"]) == (6, 2)
    assert document["exact"] == 0.5 and document["withinOne"] == 1.0
    assert document["keep"] == {
        "stars": 3,
        "photographer": 4,
        "kullbatch": 3,
        "both": 3,
        "precision": 1.0,
        "recall": 0.75,
    }
    assert document["keepRate"] == pytest.approx(4 / 6, abs=1e-4)
    assert document["confusion"]["5"] == {"5": 1, "4": 0, "3": 0, "2": 0, "1": 0, "0": 0}
    assert document["confusion"]["4"]["5"] == 1 and document["confusion"]["3"]["2"] == 1
    assert document["confusion"]["0"]["1"] == 1
    assert sum(sum(row.values()) for row in document["confusion"].values()) == 6


def test_rank_correlations_average_ties_and_use_tau_b_as_scipy_does() -> None:
    """Spearman on averaged ranks and Kendall's tau-b, by hand, equal scipy's and ours."""
    assert average_ranks(THEIRS) == [6, 5, 3.5, 1, 3.5, 2]
    rho = pearson(average_ranks(THEIRS), average_ranks(OURS))
    tau = tau_b(THEIRS, OURS)
    assert rho == pytest.approx(stats.spearmanr(THEIRS, OURS).statistic)
    assert tau == pytest.approx(stats.kendalltau(THEIRS, OURS, variant="b").statistic)
    document = summary("job", PAIRS, skipped=0, keep_stars=3)
    assert document["spearman"] == pytest.approx(rho, abs=1e-4)
    assert document["kendallTau"] == pytest.approx(tau, abs=1e-4)
    assert tau != pytest.approx(stats.kendalltau(THEIRS, OURS, variant="c").statistic)


def test_one_value_on_a_side_has_no_rank_correlation() -> None:
    """Every photo 3 stars on one side: rho and tau are undefined, shown as null."""
    pairs = [Pair("a", 3, 4), Pair("b", 3, 2), Pair("c", 3, 3)]
    document = summary("job", pairs, skipped=0, keep_stars=4)
    assert document["spearman"] is None and document["kendallTau"] is None
    assert document["keep"]["precision"] == 0.0 and document["keep"]["recall"] is None
    assert "n/a" in "\n".join(lines(document))


def test_the_table_says_it_as_a_photographer_would() -> None:
    text = "\n".join(lines(summary("job", PAIRS, skipped=2, keep_stars=3)))
    assert "kullbatch kept 3, you kept 4, 3 in common" in text
    assert "(2 you left unrated were skipped)" in text
    assert "your keep rate   67%" in text


# --- a real job and the photographer's files ---------------------------------------------------

ADOBE = """<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
   xmp:Rating="{rating}"/>
 </rdf:RDF>
</x:xmpmeta>
"""


def embed_rating(photo: Path, rating: int) -> None:
    image = exiv2.ImageFactory.open(str(photo))
    image.readMetadata()
    image.setXmpPacket(ADOBE.format(rating=rating))
    image.writeXmpFromPacket(True)
    image.writeMetadata()


@pytest.fixture
def shoot(tmp_path: Path) -> tuple[Path, str, dict[str, int]]:
    """Eight example photos rated by the local rater; returns the db, the job, our stars."""
    folder = tmp_path / "shoot"
    folder.mkdir()
    for number, source in enumerate(sorted(EXAMPLES.glob("*.jpg"))[:8], start=1):
        shutil.copy(source, folder / f"p{number}.jpg")
    db = tmp_path / "k.db"
    result = invoke("process", str(folder), "--db", str(db), "--quiet", "--no-groups")
    assert result.exit_code == 0, result.output
    job = result.stdout.strip()
    exported = json.loads(invoke("results", job, "--db", str(db)).stdout)["results"]
    return db, job, {r["imageId"]: r["starRating"] for r in exported}


def test_agreement_reads_every_kind_of_their_xmp_and_never_ours(
    tmp_path: Path, shoot: tuple[Path, str, dict[str, int]]
) -> None:
    """An Adobe sidecar, a darktable one, an embedded packet, a rejection, an unrated 0, none
    at all, a rating they changed in our own sidecar and the dashboard's stars: each is
    counted as it should be, and kullbatch's own sidecars are never taken for theirs."""
    db, job, ours = shoot
    # kullbatch writes its sidecars beside every photo first: none of them is the photographer's
    assert invoke("results", job, "--db", str(db), "--format", "xmp").exit_code == 0
    against = tmp_path / "culled"
    against.mkdir()
    (against / "P1.XMP").write_text(ADOBE.format(rating=5))  # names match case-insensitively
    (against / "p2.jpg.xmp").write_text(ADOBE.format(rating=2))  # darktable style
    shutil.copy(tmp_path / "shoot" / "p3.jpg", against / "p3.jpg")
    embed_rating(against / "p3.jpg", 4)
    (against / "p4.xmp").write_text(ADOBE.format(rating=-1))  # rejected: 0 stars
    (against / "p5.xmp").write_text(ADOBE.format(rating=0))  # unrated: skipped
    # p6: nothing of theirs (only kullbatch's sidecar beside it): skipped
    beside = tmp_path / "shoot" / "p7.xmp"  # they changed our rating in Lightroom
    changed = ours["p7"] % 5 + 1
    text = beside.read_text()
    assert f"<xmp:Rating>{ours['p7']}</xmp:Rating>" in text
    beside.write_text(text.replace(f"<xmp:Rating>{ours['p7']}<", f"<xmp:Rating>{changed}<"))
    with sqlite3.connect(db) as connection:  # p8: set in the dashboard, no XMP of theirs
        connection.execute(
            "UPDATE batch_items SET photographer_rating = 1 WHERE job_id = ? AND image_id = 'p8'",
            (job,),
        )
    result = invoke("agreement", job, "--db", str(db), "--against", str(against), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    theirs = {"p1": 5, "p2": 2, "p3": 4, "p4": 0, "p7": changed, "p8": 1}
    assert (document["compared"], document["skipped"]) == (6, 2)
    expected = summary(job, [Pair(k, v, ours[k]) for k, v in theirs.items()], 2, 3)
    assert document == expected
    for image, stars in theirs.items():
        assert document["confusion"][str(stars)][str(ours[image])] >= 1


def test_without_against_their_sidecars_beside_the_photos_count(
    tmp_path: Path, shoot: tuple[Path, str, dict[str, int]]
) -> None:
    """The photo's own sidecars (both styles) and its embedded XMP are read when no folder
    is named; the text output gives the keep line."""
    db, job, ours = shoot
    folder = tmp_path / "shoot"
    (folder / "p1.xmp").write_text(ADOBE.format(rating=5))
    (folder / "p2.jpg.xmp").write_text(ADOBE.format(rating=1))
    embed_rating(folder / "p3.jpg", 3)
    result = invoke("agreement", job, "--db", str(db))
    assert result.exit_code == 0, result.output
    kept = sum(1 for k in ("p1", "p2", "p3") if ours[k] >= 3)
    both = sum(1 for k in ("p1", "p3") if ours[k] >= 3)  # p2: their 1 star is no keep
    assert "compared on 3 photos (5 you left unrated were skipped)" in result.stdout
    assert f"kullbatch kept {kept}, you kept 2, {both} in common" in result.stdout


def test_agreement_refuses_bad_input_with_exit_2(
    tmp_path: Path, shoot: tuple[Path, str, dict[str, int]]
) -> None:
    db, job, _ = shoot
    unknown = invoke("agreement", "batch_1_nosuch", "--db", str(db))
    assert unknown.exit_code == 2 and "batch_1_nosuch" in unknown.stderr
    missing = invoke("agreement", job, "--db", str(db), "--against", str(tmp_path / "nope"))
    assert missing.exit_code == 2
    stars = invoke("agreement", job, "--db", str(db), "--keep-stars", "6")
    assert stars.exit_code == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "p1.xmp").write_text("<x:xmpmeta><unclosed>")
    result = invoke("agreement", job, "--db", str(db), "--against", str(broken))
    assert result.exit_code == 2 and "p1.xmp" in result.stderr


def test_url_photos_count_the_dashboards_stars_and_unrated_photos_are_not_compared() -> None:
    """A URL photo has no XMP: its dashboard stars count; a failed photo is left out; with
    nothing of the photographer's the table says so."""
    rating = Rating(starRating=4, colorLabel="none", title="", description="", tags=[], score=1)

    def record(n: int, state: ItemState, theirs: int | None) -> ItemRecord:
        image = ImageInput(id=f"u{n}", filename=f"u{n}.jpg", url=f"https://x/u{n}.jpg")
        stars = rating if state is ItemState.RATED else None
        return ItemRecord(n, image, state, 1, None, stars, Usage(), photographer_rating=theirs)

    items = [
        record(0, ItemState.RATED, 2),
        record(1, ItemState.RATED, None),
        record(2, ItemState.FAILED, 5),
    ]
    pairs, skipped = pair_up(items, None)
    assert pairs == [Pair("u0", 2, 4)] and skipped == 1
    nothing = summary("job", [], skipped=3, keep_stars=3)
    assert nothing["exact"] is None and nothing["spearman"] is None
    assert lines(nothing)[0].startswith("no photo to compare: you rated none of the 3 photos")
