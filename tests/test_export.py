"""Results writers: JSON, JSON Lines, CSV and XMP sidecars."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kullbatch.models import (
    ImageInput,
    ItemRecord,
    ItemState,
    JobState,
    JobStatus,
    Rating,
    Usage,
)
from kullbatch.service import export
from kullbatch.service.export import (
    CSV_HEADER,
    results_document,
    write_csv,
    write_json,
    write_jsonl,
    write_xmp,
    xmp_targets,
)

RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
XMP = "{http://ns.adobe.com/xap/1.0/}"
DC = "{http://purl.org/dc/elements/1.1/}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def status(total: int = 3, rated: int = 1, failed: int = 1) -> JobStatus:
    return JobStatus(
        jobId="batch_1700000000000_abc123",
        shootId="shoot-1",
        providerId="local",
        mode="fast",
        status=JobState.PROCESSING,
        totalImages=total,
        processedImages=rated,
        failedImages=failed,
        progress=(rated + failed) / total if total else 1.0,
        eta=None,
        providerJobId=None,
        error=None,
        createdAt="2025-01-01T00:00:00Z",
        startedAt="2025-01-01T00:00:01Z",
        completedAt=None,
    )


def rating(**changes: object) -> Rating:
    values: dict[str, object] = {
        "starRating": 4,
        "colorLabel": "green",
        "title": "Bride at the window",
        "description": "Soft light, sharp eyes.",
        "tags": ["wedding", "portrait"],
        "issues": ["tilted"],
        "score": 81,
    }
    return Rating.model_validate(values | changes)


def rated(position: int, image_id: str, path: Path | None = None, **changes: object) -> ItemRecord:
    name = path.name if path else f"{image_id}.jpg"
    url = None if path else f"https://example.com/{name}"
    image = ImageInput(id=image_id, filename=name, path=path, url=url)
    return ItemRecord(
        position,
        image,
        ItemState.RATED,
        1,
        None,
        rating(**changes),
        Usage(1200, 80),
        "openai",
        "gpt-x",
        cost_usd=0.00126,
    )


def failed(position: int, image_id: str, error: str = "Image too large") -> ItemRecord:
    image = ImageInput(id=image_id, filename=f"{image_id}.jpg", url="https://example.com/x.jpg")
    return ItemRecord(position, image, ItemState.FAILED, 5, error, None, Usage(), cost_usd=0.0)


def pending(position: int, image_id: str) -> ItemRecord:
    image = ImageInput(id=image_id, filename=f"{image_id}.jpg", url="https://example.com/x.jpg")
    return ItemRecord(position, image, ItemState.PENDING, 0, None, None, Usage(), cost_usd=0.0)


def mixed() -> list[ItemRecord]:
    return [rated(0, "img1"), failed(1, "img2"), pending(2, "img3")]


def parse_sidecar(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    description = root.find(f"{RDF}RDF/{RDF}Description")
    assert description is not None
    return description


# --- JSON -------------------------------------------------------------------------------------


def test_results_document_has_the_spec_shape_with_failed_and_pending_images() -> None:
    """Rated images carry the rating, failed ones an error, pending ones a status."""
    document = results_document(status(), mixed())
    assert document == {
        "jobId": "batch_1700000000000_abc123",
        "results": [
            {
                "imageId": "img1",
                "filename": "img1.jpg",
                "starRating": 4,
                "colorLabel": "green",
                "title": "Bride at the window",
                "description": "Soft light, sharp eyes.",
                "tags": ["wedding", "portrait"],
                "issues": ["tilted"],
                "score": 81,
                "provider": "openai",
                "model": "gpt-x",
                "tier": "standard",
                "inputTokens": 1200,
                "outputTokens": 80,
                "costUsd": 0.00126,
                "group": None,
                "bestInGroup": False,
                "photographerRating": None,
                "cached": False,
                "kept": None,
                "groupRank": None,
                "groupReason": None,
            },
            {
                "imageId": "img2",
                "filename": "img2.jpg",
                "error": "Image too large",
                "inputTokens": 0,
                "outputTokens": 0,
                "costUsd": 0.0,
                "photographerRating": None,
                "kept": None,
            },
            {
                "imageId": "img3",
                "filename": "img3.jpg",
                "status": "pending",
                "inputTokens": 0,
                "outputTokens": 0,
                "costUsd": 0.0,
                "photographerRating": None,
                "kept": None,
            },
        ],
        "totalImages": 3,
        "processedImages": 1,
        "failedImages": 1,
        "completedAt": None,
    }


def test_write_json_streams_the_same_document_as_results_document() -> None:
    """The streamed JSON parses to exactly the results document, keys in the same order."""
    out = io.StringIO()
    write_json(status(), mixed(), out)
    parsed = json.loads(out.getvalue())
    expected = results_document(status(), mixed())
    assert parsed == expected
    assert list(parsed) == list(expected)


def test_write_json_of_a_job_without_items_is_valid_json() -> None:
    """An empty results list is still a well-formed document."""
    out = io.StringIO()
    write_json(status(total=0, rated=0, failed=0), [], out)
    assert json.loads(out.getvalue())["results"] == []


def test_write_json_accepts_a_one_shot_iterator() -> None:
    """Writers iterate once, so a generator from the store is enough."""
    out = io.StringIO()
    write_json(status(), iter(mixed()), out)
    assert len(json.loads(out.getvalue())["results"]) == 3


def test_write_jsonl_writes_one_result_object_per_line() -> None:
    """Each line is one per-image object, in manifest order."""
    out = io.StringIO()
    write_jsonl(status(), mixed(), out)
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == results_document(status(), mixed())["results"]


def test_write_jsonl_keeps_newlines_inside_one_line() -> None:
    """A description with newlines and unicode still takes exactly one line."""
    out = io.StringIO()
    write_jsonl(status(), [rated(0, "a", description="line one\nline two — é ✓")], out)
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["description"] == "line one\nline two — é ✓"


# --- CSV --------------------------------------------------------------------------------------


def test_csv_round_trips_commas_quotes_newlines_and_unicode() -> None:
    """What the csv module reads back is exactly what the model said."""
    tricky = 'She said "wow", then left;\nsecond line, ünïcødé 日本 🎉'
    items = [rated(0, "img,1", title='A "quoted", title', description=tricky, tags=["a b", "c"])]
    out = io.StringIO(newline="")
    write_csv(status(), items, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert rows == [
        {
            "imageId": "img,1",
            "filename": "img,1.jpg",
            "starRating": "4",
            "colorLabel": "green",
            "title": 'A "quoted", title',
            "description": tricky,
            "tags": "a b;c",
            "error": "",
            "provider": "openai",
            "model": "gpt-x",
            "inputTokens": "1200",
            "outputTokens": "80",
            "costUsd": "0.00126",
            "issues": "tilted",
            "group": "",
            "bestInGroup": "false",
            "cached": "false",
            "score": "81",
            "photographerRating": "",
            "kept": "",
            "groupRank": "",
            "groupReason": "",
            "tier": "standard",
        }
    ]


def test_csv_has_the_fixed_header_and_rows_in_manifest_order() -> None:
    """One row per image in the given order; failed rows carry only the error."""
    out = io.StringIO(newline="")
    write_csv(status(), mixed(), out)
    header, *rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert tuple(header) == CSV_HEADER
    assert [row[0] for row in rows] == ["img1", "img2", "img3"]
    costs = ["0", "0", "0.0"]
    culling = ["", "", "", "", "", "", "", "", "", ""]
    failed = ["img2", "img2.jpg", "", "", "", "", "", "Image too large", "", ""]
    assert rows[1] == [*failed, *costs, *culling]
    assert rows[2] == ["img3", "img3.jpg", "", "", "", "", "", "", "", "", *costs, *culling]


def test_a_photo_whose_model_has_no_price_has_an_empty_cost_in_csv_and_null_in_json() -> None:
    """No price is not zero: CSV leaves the cell empty, JSON says null, tokens still show."""
    item = dataclasses.replace(rated(0, "img1"), cost_usd=None)
    out = io.StringIO(newline="")
    write_csv(status(), [item], out)
    (row,) = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert (row["inputTokens"], row["outputTokens"], row["costUsd"]) == ("1200", "80", "")
    assert export.result_object(item)["costUsd"] is None


def test_csv_carries_the_tier_as_json_does() -> None:
    """A flex answer says `flex` in CSV as in JSON; failed and pending rows leave it empty."""
    flex = dataclasses.replace(rated(0, "img1"), pricing="flex")
    out = io.StringIO(newline="")
    write_csv(status(), [flex, failed(1, "img2"), pending(2, "img3")], out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert [row["tier"] for row in rows] == ["flex", "", ""]
    assert export.result_object(flex)["tier"] == "flex"


# --- XMP --------------------------------------------------------------------------------------


def test_xmp_sidecar_parses_and_carries_rating_label_title_description_and_subjects(
    tmp_path: Path,
) -> None:
    """The sidecar is valid XML with the XMP properties Lightroom reads."""
    photo = tmp_path / "IMG_0001.CR3"
    (written,) = write_xmp([rated(0, "a", photo, colorLabel="purple")], None).sidecars
    assert written == tmp_path / "IMG_0001.xmp"
    description = parse_sidecar(written)
    assert description.findtext(f"{XMP}Rating") == "4"
    assert description.findtext(f"{XMP}Label") == "Purple"
    title = description.find(f"{DC}title/{RDF}Alt/{RDF}li")
    assert title is not None
    assert title.text == "Bride at the window"
    assert title.get(XML_LANG) == "x-default"
    assert description.findtext(f"{DC}description/{RDF}Alt/{RDF}li") == "Soft light, sharp eyes."
    subjects = [li.text for li in description.findall(f"{DC}subject/{RDF}Bag/{RDF}li")]
    assert subjects == ["wedding", "portrait", "tilted"]


def test_xmp_sidecar_has_no_label_when_the_colour_is_none(tmp_path: Path) -> None:
    """`none` is the absence of a label, not a label called None."""
    (written,) = write_xmp([rated(0, "a", tmp_path / "a.jpg", colorLabel="none")], None).sidecars
    assert parse_sidecar(written).find(f"{XMP}Label") is None


def test_xmp_escapes_markup_and_drops_characters_xml_forbids(tmp_path: Path) -> None:
    """Angle brackets, ampersands and control characters never break the XML."""
    text = "<b>Tom & Jerry</b> \x00\x07\x1b ]]> \ud800 done"
    item = rated(0, "a", tmp_path / "a.jpg", title=text, tags=["<tag>", "a&b"])
    (written,) = write_xmp([item], None).sidecars
    description = parse_sidecar(written)
    assert description.findtext(f"{DC}title/{RDF}Alt/{RDF}li") == "<b>Tom & Jerry</b>  ]]>  done"
    assert [li.text for li in description.findall(f"{DC}subject/{RDF}Bag/{RDF}li")] == [
        "<tag>",
        "a&b",
        "tilted",
    ]


def test_xmp_skips_failed_pending_and_url_images(tmp_path: Path) -> None:
    """Only rated images with a local path get a sidecar."""
    items = [
        rated(0, "url"),
        failed(1, "f"),
        pending(2, "p"),
        rated(3, "local", tmp_path / "x.jpg"),
    ]
    assert write_xmp(items, None).sidecars == (tmp_path / "x.xmp",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.xmp"]


def test_xmp_goes_to_out_dir_when_given_and_creates_it(tmp_path: Path) -> None:
    """With --output DIR the sidecars land there, named by the image's stem."""
    out_dir = tmp_path / "sidecars" / "nested"
    written = write_xmp([rated(0, "a", tmp_path / "shoot" / "a.jpg")], out_dir).sidecars
    assert written == (out_dir / "a.xmp",)
    assert written[0].is_file()


def test_same_stem_in_one_out_dir_gets_distinct_deterministic_names(tmp_path: Path) -> None:
    """The first keeps <stem>.xmp; the next get <name>.xmp, then <stem>_2.xmp."""
    items = [rated(i, f"i{i}", tmp_path / d / "IMG_1.jpg") for i, d in enumerate("abc")]
    written = write_xmp(items, tmp_path / "out").sidecars
    assert [p.name for p in written] == ["IMG_1.xmp", "IMG_1.jpg.xmp", "IMG_1_2.xmp"]
    assert len({p.read_text() for p in written}) == 1  # same rating, three files
    assert (
        write_xmp(items, tmp_path / "out").sidecars == written
    )  # a second run picks the same names


def test_raw_and_jpeg_pair_beside_each_other_do_not_overwrite(tmp_path: Path) -> None:
    """IMG_1.CR2 (first in the manifest) keeps IMG_1.xmp; IMG_1.JPG gets IMG_1.JPG.xmp."""
    items = [
        rated(0, "raw", tmp_path / "IMG_1.CR2", starRating=5),
        rated(1, "jpg", tmp_path / "IMG_1.JPG", starRating=2),
    ]
    written = write_xmp(items, None).sidecars
    assert [p.name for p in written] == ["IMG_1.xmp", "IMG_1.JPG.xmp"]
    assert parse_sidecar(written[0]).findtext(f"{XMP}Rating") == "5"
    assert parse_sidecar(written[1]).findtext(f"{XMP}Rating") == "2"


def test_sidecar_names_collide_case_insensitively(tmp_path: Path) -> None:
    """img_1.jpg and IMG_1.jpg would share one file on macOS and Windows, so they do not."""
    items = [
        rated(0, "a", tmp_path / "a" / "IMG_1.jpg"),
        rated(1, "b", tmp_path / "b" / "img_1.jpg"),
    ]
    written = write_xmp(items, tmp_path / "o").sidecars
    assert [p.name for p in written] == ["IMG_1.xmp", "img_1.jpg.xmp"]


def test_a_later_images_natural_name_is_not_taken_by_a_disambiguated_one(tmp_path: Path) -> None:
    """P_2.jpg keeps P_2.xmp even though a third P.jpg comes before it in the manifest."""
    paths = [tmp_path / "a" / "P.jpg", tmp_path / "b" / "P.jpg", tmp_path / "c" / "P.jpg"]
    items = [rated(i, f"i{i}", p) for i, p in enumerate([*paths, tmp_path / "d" / "P_2.jpg"])]
    names = [target.sidecar.name for target in xmp_targets(items, tmp_path / "o")]
    assert names == ["P.xmp", "P.jpg.xmp", "P_3.xmp", "P_2.xmp"]


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """After writing, the folder holds only the sidecars."""
    items = [rated(i, f"i{i}", tmp_path / f"{i}.jpg") for i in range(5)]
    write_xmp(items, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i}.xmp" for i in range(5)]


def test_a_crash_while_writing_keeps_the_old_sidecar_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rename never happens, the previous sidecar is intact and the temp file is gone."""
    photo = tmp_path / "a.jpg"
    write_xmp([rated(0, "a", photo, starRating=1)], None)
    before = (tmp_path / "a.xmp").read_bytes()

    def crash(self: Path, target: Path) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", crash)
    report = write_xmp([rated(0, "a", photo, starRating=5)], None)
    assert report.failures == (f"{photo}: cannot write its XMP: disk full",)
    assert (tmp_path / "a.xmp").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xmp"]


def test_sidecar_file_mode_follows_the_umask(tmp_path: Path) -> None:
    """A sidecar is readable like any new file, not 0600 like a raw temp file."""
    umask = os.umask(0o022)
    try:
        (written,) = write_xmp([rated(0, "a", tmp_path / "a.jpg")], None).sidecars
    finally:
        os.umask(umask)
    assert written.stat().st_mode & 0o777 == 0o644


LIGHTROOM_SIDECAR = """<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
   xmp:Rating="1"
   xmp:Label="Red"
   crs:Exposure2012="+0.35">
   <dc:subject><rdf:Bag><rdf:li>old</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_an_existing_lightroom_sidecar_keeps_its_develop_settings(tmp_path: Path) -> None:
    """Our properties replace the old ones, but the photographer's own rating stays (ours goes
    in kullbatch:Rating beside it); raw develop settings survive."""
    (tmp_path / "IMG_1.xmp").write_text(LIGHTROOM_SIDECAR, encoding="utf-8")
    (written,) = write_xmp(
        [rated(0, "a", tmp_path / "IMG_1.CR2", colorLabel="none")], None
    ).sidecars
    description = parse_sidecar(written)
    assert description.get("{http://ns.adobe.com/camera-raw-settings/1.0/}Exposure2012") == "+0.35"
    assert 'crs:Exposure2012="+0.35"' in written.read_text(encoding="utf-8")  # prefix kept
    assert description.get(f"{XMP}Rating") == "1"  # theirs, where it was
    assert description.get(f"{XMP}Label") is None
    assert description.findall(f"{XMP}Rating") == []
    assert description.findtext("{https://kullbatch.dev/ns/xmp/1.0/}Rating") == "4"
    assert description.find(f"{XMP}Label") is None
    subjects = [li.text for li in description.iter(f"{RDF}li") if li.get(XML_LANG) is None]
    assert subjects == ["wedding", "portrait", "tilted"]


def test_a_bare_rdf_sidecar_is_wrapped_in_xmpmeta_and_kept(tmp_path: Path) -> None:
    """Old tools write rdf:RDF without x:xmpmeta; its properties survive the update."""
    bare = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
        ' photoshop:City="Lyon"/></rdf:RDF>'
    )
    (tmp_path / "a.xmp").write_text(bare, encoding="utf-8")
    (written,) = write_xmp([rated(0, "a", tmp_path / "a.jpg")], None).sidecars
    description = parse_sidecar(written)
    assert description.get("{http://ns.adobe.com/photoshop/1.0/}City") == "Lyon"
    assert description.findtext(f"{XMP}Rating") == "4"


def test_an_rdf_without_description_gets_one(tmp_path: Path) -> None:
    """An empty packet is filled in rather than rejected."""
    empty = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'
    )
    (tmp_path / "a.xmp").write_text(empty, encoding="utf-8")
    (written,) = write_xmp([rated(0, "a", tmp_path / "a.jpg")], None).sidecars
    assert parse_sidecar(written).findtext(f"{XMP}Rating") == "4"


@pytest.mark.parametrize(
    "content", ["<html><body/></html>", "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"]
)
def test_an_existing_xml_file_that_is_not_an_xmp_packet_is_left_untouched(
    tmp_path: Path, content: str
) -> None:
    """Well-formed XML of another kind is not ours to replace."""
    (tmp_path / "a.xmp").write_text(content, encoding="utf-8")
    (failure,) = write_xmp([rated(0, "a", tmp_path / "a.jpg")], None).failures
    assert "not an XMP packet" in failure
    assert (tmp_path / "a.xmp").read_text(encoding="utf-8") == content


def test_an_unreadable_existing_sidecar_fails_that_photo_only(tmp_path: Path) -> None:
    """A sidecar path that cannot be read (here a folder) is reported; the next photo is written."""
    (tmp_path / "a.xmp").mkdir()
    report = write_xmp([rated(0, "a", tmp_path / "a.jpg"), rated(1, "b", tmp_path / "b.jpg")], None)
    (failure,) = report.failures
    assert "a.xmp: cannot read the existing sidecar" in failure
    assert report.sidecars == (tmp_path / "b.xmp",)


def test_an_existing_sidecar_that_is_not_xmp_is_left_untouched(tmp_path: Path) -> None:
    """A broken sidecar is reported as that photo's failure instead of being silently replaced."""
    (tmp_path / "a.xmp").write_text("not xml <", encoding="utf-8")
    (failure,) = write_xmp([rated(0, "a", tmp_path / "a.jpg")], None).failures
    assert "not valid XML" in failure
    assert (tmp_path / "a.xmp").read_text(encoding="utf-8") == "not xml <"


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"colorLabel": "none", "tags": []},
        {"title": "", "description": "", "tags": ["", "x"]},
        {"title": "a < b & c > d \"q\" 'q'", "description": "two\nlines\ttab \x01 ✓ 日本"},
    ],
)
def test_writing_sidecars_twice_gives_the_same_bytes(
    tmp_path: Path, changes: dict[str, object]
) -> None:
    """The template (new file) and the merge (existing file) paths agree byte for byte."""
    items = [rated(0, "a", tmp_path / "a.jpg", **changes)]
    (written,) = write_xmp(items, None).sidecars
    first = written.read_bytes()
    ET.fromstring(first)
    write_xmp(items, None)
    assert written.read_bytes() == first


# --- scale ------------------------------------------------------------------------------------


def test_ten_thousand_items_export_completely_from_a_generator() -> None:
    """Writers stream from any iterable: 10,000 images, one pass, every row written."""
    items = (rated(i, f"img{i}", description="x" * 200) for i in range(10_000))
    out = io.StringIO()
    write_jsonl(status(total=10_000, rated=10_000, failed=0), items, out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10_000 and json.loads(lines[-1])["imageId"] == "img9999"


def test_module_exports_are_what_all_lists() -> None:
    """Every name in __all__ exists."""
    assert all(hasattr(export, name) for name in export.__all__)


def test_issues_become_keywords_after_the_tags_each_once(tmp_path: Path) -> None:
    """An issue already among the tags is not repeated in dc:subject."""
    item = rated(0, "a", tmp_path / "a.jpg", tags=["noise", "night"], issues=["noise", "tilted"])
    (written,) = write_xmp([item], None).sidecars
    subjects = [li.text for li in parse_sidecar(written).findall(f"{DC}subject/{RDF}Bag/{RDF}li")]
    assert subjects == ["noise", "night", "tilted"]
