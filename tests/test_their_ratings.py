"""A rating the photographer set is never overwritten, and never taken for kullbatch's."""

from __future__ import annotations

import dataclasses
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kullbatch.catalogue import SidecarError, TheirRatings, XmpOptions, rating_in, write_xmp
from kullbatch.cli.app import app
from kullbatch.models import ImageInput, ItemRecord, ItemState, Rating, Usage
from tests.xmp_readback import camera_jpeg, exiftool, needs_exiftool

RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
XMP = "{http://ns.adobe.com/xap/1.0/}"
KB = "{https://kullbatch.dev/ns/xmp/1.0/}"
DC = "{http://purl.org/dc/elements/1.1/}"
LR = "{http://ns.adobe.com/lightroom/1.0/}"
JOB = "batch_1700000000000_abc123"
# what kullbatch writes besides xmp:Rating: its own namespace, and the fields it always fills
OUR_FIELDS = (
    f"{XMP}Label",
    f"{DC}title",
    f"{DC}description",
    f"{DC}subject",
    f"{LR}hierarchicalSubject",
)

# A photographer's Lightroom sidecar: their 3 stars, develop settings, a structure, a location
THEIRS = """<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
   xmp:Rating="3"
   xmp:ModifyDate="2026-11-28T18:02:11+01:00"
   crs:Exposure2012="+0.35"
   photoshop:City="Lyon">
   <crs:ToneCurvePV2012>
    <rdf:Seq>
     <rdf:li>0, 0</rdf:li>
     <rdf:li>255, 255</rdf:li>
    </rdf:Seq>
   </crs:ToneCurvePV2012>
   <xmpMM:History>
    <rdf:Seq>
     <rdf:li xmpMM:action="saved" xmpMM:when="2026-11-28T18:02:11+01:00"/>
    </rdf:Seq>
   </xmpMM:History>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def rated(path: Path, stars: int = 4, **changes: object) -> ItemRecord:
    rating = Rating(
        starRating=stars,
        colorLabel="green",
        title="Harbour at dusk",
        description="Sharp, well exposed.",
        tags=["harbour"],
        score=77,
    )
    image = ImageInput(id=path.stem, filename=path.name, path=path)
    record = ItemRecord(0, image, ItemState.RATED, 1, None, rating, Usage())
    return dataclasses.replace(record, **changes)


def description_of(path: Path) -> ET.Element:
    found = ET.parse(path).getroot().find(f"{RDF}RDF/{RDF}Description")
    assert found is not None
    return found


def without_ours(text: str) -> str:
    """The packet in canonical XML (C14N 2.0, whitespace-only text dropped), with kullbatch's
    own fields taken out: what must be equal, byte for byte, before and after an export."""
    root = ET.fromstring(text)
    for description in root.iter(f"{RDF}Description"):
        for child in list(description):
            if child.tag in OUR_FIELDS or child.tag.startswith(KB):
                description.remove(child)
        for name in list(description.attrib):
            if name in OUR_FIELDS or name.startswith(KB):
                del description.attrib[name]
    return ET.canonicalize(ET.tostring(root, encoding="unicode"), strip_text=True)


def test_a_photographers_sidecar_survives_the_export_outside_our_own_fields(tmp_path: Path) -> None:
    """Their 3 stars stay where they were; our 4 go in kullbatch:Rating with the job id; every
    other byte of their packet is as it was (canonical XML)."""
    sidecar = tmp_path / "IMG_0001.xmp"
    sidecar.write_text(THEIRS, encoding="utf-8")
    report = write_xmp([rated(tmp_path / "IMG_0001.CR3")], None, XmpOptions(job_id=JOB))
    assert report.sidecars == (sidecar,) and report.failures == ()
    written = sidecar.read_text(encoding="utf-8")
    assert without_ours(written) == without_ours(THEIRS)
    description = description_of(sidecar)
    assert description.get(f"{XMP}Rating") == "3"
    assert description.findall(f"{XMP}Rating") == []
    assert description.findtext(f"{KB}Rating") == "4"
    assert description.findtext(f"{KB}Job") == JOB
    assert description.find(f"{KB}WroteRating") is None  # the xmp:Rating is not ours
    assert rating_in(sidecar) == 3
    # a second export changes nothing: their rating is still theirs, not taken for ours
    write_xmp([rated(tmp_path / "IMG_0001.CR3", stars=2)], None, XmpOptions(job_id=JOB))
    again = sidecar.read_text(encoding="utf-8")
    assert without_ours(again) == without_ours(THEIRS)
    assert description_of(sidecar).findtext(f"{KB}Rating") == "2"


@needs_exiftool
def test_exiftool_reads_their_rating_and_ours_apart(tmp_path: Path) -> None:
    (tmp_path / "IMG_0001.xmp").write_text(THEIRS, encoding="utf-8")
    write_xmp([rated(tmp_path / "IMG_0001.CR3")], None, XmpOptions(job_id=JOB))
    tags = exiftool(tmp_path / "IMG_0001.xmp", "-XMP:all")
    assert tags["XMP-xmp:Rating"] == 3
    assert tags["XMP-kullbatch:Rating"] == 4 and tags["XMP-kullbatch:Job"] == JOB
    assert tags["XMP-crs:Exposure2012"] == "+0.35" and tags["XMP-photoshop:City"] == "Lyon"


def test_our_own_rating_is_ours_to_replace_until_they_change_it(tmp_path: Path) -> None:
    """A rating kullbatch wrote is replaced by the next export; once the photographer changed
    it, it is theirs and stays."""
    photo = tmp_path / "a.jpg"
    write_xmp([rated(photo, stars=4)], None, XmpOptions(job_id=JOB))
    sidecar = tmp_path / "a.xmp"
    assert description_of(sidecar).findtext(f"{XMP}Rating") == "4"
    assert description_of(sidecar).findtext(f"{KB}WroteRating") == "4"
    assert rating_in(sidecar) is None  # kullbatch's, not the photographer's
    write_xmp([rated(photo, stars=2)], None, XmpOptions(job_id=JOB))
    assert description_of(sidecar).findtext(f"{XMP}Rating") == "2"
    # the photographer sets 5 stars in Lightroom, which writes the sidecar back
    text = sidecar.read_text(encoding="utf-8")
    sidecar.write_text(text.replace("<xmp:Rating>2<", "<xmp:Rating>5<"), encoding="utf-8")
    assert rating_in(sidecar) == 5
    write_xmp([rated(photo, stars=1)], None, XmpOptions(job_id=JOB, reject_duplicates=True))
    description = description_of(sidecar)
    assert description.findtext(f"{XMP}Rating") == "5"
    assert description.findtext(f"{KB}Rating") == "1"
    assert description.find(f"{KB}WroteRating") is None


def test_overwrite_ratings_replaces_theirs_and_marks_it_ours(tmp_path: Path) -> None:
    sidecar = tmp_path / "IMG_0001.xmp"
    sidecar.write_text(THEIRS, encoding="utf-8")
    options = XmpOptions(job_id=JOB, overwrite_ratings=True)
    write_xmp([rated(tmp_path / "IMG_0001.CR3")], None, options)
    description = description_of(sidecar)
    assert description.get(f"{XMP}Rating") is None
    assert description.findtext(f"{XMP}Rating") == "4"
    assert description.findtext(f"{KB}WroteRating") == "4"
    assert rating_in(sidecar) is None


@pytest.mark.parametrize("existing", [None, THEIRS])
def test_stars_set_in_the_dashboard_are_written_as_theirs(
    tmp_path: Path, existing: str | None
) -> None:
    """photographerRating wins over any xmp:Rating, and reads back as the photographer's."""
    sidecar = tmp_path / "IMG_0001.xmp"
    if existing is not None:
        sidecar.write_text(existing, encoding="utf-8")
    item = rated(tmp_path / "IMG_0001.CR3", photographer_rating=-1)
    write_xmp([item], None, XmpOptions(job_id=JOB, overwrite_ratings=existing is None))
    description = description_of(sidecar)
    assert [e.text for e in description.findall(f"{XMP}Rating")] == ["-1"]
    assert description.get(f"{XMP}Rating") is None
    assert description.findtext(f"{KB}Rating") == "4"
    assert rating_in(sidecar) == -1


@needs_exiftool
def test_an_embedded_rating_of_theirs_survives_embed(tmp_path: Path) -> None:
    photo = camera_jpeg(tmp_path / "a.jpg")
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-XMP-xmp:Rating=2", str(photo)], check=True
    )
    assert rating_in(photo) == 2
    write_xmp([rated(photo)], None, XmpOptions(embed=True, job_id=JOB))
    tags = exiftool(photo, "-XMP:all")
    assert tags["XMP-xmp:Rating"] == 2 and tags["XMP-kullbatch:Rating"] == 4
    assert rating_in(photo) == 2


def test_overwrite_ratings_goes_with_xmp_only(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["results", JOB, "--db", str(tmp_path / "k.db"), "--overwrite-ratings"]
    )
    assert result.exit_code == 2
    assert "--overwrite-ratings goes with --format xmp" in result.stderr


def test_reading_their_rating_passes_over_what_is_not_one(tmp_path: Path) -> None:
    """No file, a rating that is not a number, an unrated 0: none is theirs."""
    assert rating_in(tmp_path / "none.xmp") is None
    assert rating_in(tmp_path / "none.jpg") is None
    odd = tmp_path / "odd.xmp"
    odd.write_text(THEIRS.replace('xmp:Rating="3"', 'xmp:Rating="three"'), encoding="utf-8")
    assert rating_in(odd) is None
    odd.write_text(THEIRS.replace('xmp:Rating="3"', 'xmp:Rating="0"'), encoding="utf-8")
    assert rating_in(odd) is None
    odd.write_text(THEIRS.replace('xmp:Rating="3"', 'xmp:Rating="4.0"'), encoding="utf-8")
    assert rating_in(odd) == 4
    odd.write_text("", encoding="utf-8")
    assert rating_in(odd) is None


def test_a_file_that_cannot_be_read_as_xmp_is_named(tmp_path: Path) -> None:
    (tmp_path / "folder.xmp").mkdir()  # a sidecar name that is not a file
    with pytest.raises(SidecarError, match=r"folder\.xmp"):
        rating_in(tmp_path / "folder.xmp")
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"not a JPEG at all")
    with pytest.raises(SidecarError, match=r"fake\.jpg"):
        rating_in(fake)
    with pytest.raises(SidecarError, match="not a folder"):
        TheirRatings(fake)


def test_a_sidecar_an_older_kullbatch_wrote_is_still_kullbatchs(tmp_path: Path) -> None:
    """Before kullbatch:WroteRating, kullbatch wrote xmp:Rating with no mark of its own: its
    very description and stars (or a rejection) still tell it apart from the photographer's."""
    photo = tmp_path / "a.jpg"
    write_xmp([rated(photo, stars=4)], None, XmpOptions(job_id=JOB, reject_duplicates=True))
    sidecar = tmp_path / "a.xmp"
    old = "\n".join(line for line in sidecar.read_text().splitlines() if "kullbatch:" not in line)
    for stars in ("4", "-1"):
        sidecar.write_text(old.replace("<xmp:Rating>4<", f"<xmp:Rating>{stars}<"))
        item = rated(photo, stars=4)
        assert rating_in(sidecar) == int(stars)  # without kullbatch's rating to compare
        assert rating_in(sidecar, item.rating) is None
        kept = stars == "-1"  # a keep target now writes the other one: ours to replace
        write_xmp([rated(photo, stars=4, kept=kept)], None, XmpOptions(job_id=JOB))
        assert description_of(sidecar).findtext(f"{XMP}Rating") == ("4" if kept else "-1")
    changed = old.replace("<xmp:Rating>4<", "<xmp:Rating>5<")  # they changed it: theirs
    sidecar.write_text(changed)
    assert rating_in(sidecar, rated(photo, stars=4).rating) == 5
    write_xmp([rated(photo, stars=4, kept=False)], None, XmpOptions(job_id=JOB))
    assert description_of(sidecar).findtext(f"{XMP}Rating") == "5"
    assert description_of(sidecar).findtext(f"{KB}Rating") == "-1"


# --- score and --compare-bursts in kullbatch's own namespace -----------------------------------


def compared(path: Path) -> ItemRecord:
    """A burst frame that `--compare-bursts` ranked second, with the reason the model gave."""
    reason = 'Eyes closed & soft focus <frame 2>; "best" is 1'
    return rated(path, group="g1", best_in_group=False, group_rank=2, group_reason=reason)


def test_score_and_the_burst_comparison_go_in_our_namespace_beside_their_fields(
    tmp_path: Path,
) -> None:
    """kullbatch:Score, kullbatch:GroupRank and kullbatch:GroupReason are written; the
    photographer's rating and every other field of theirs stay as they were."""
    sidecar = tmp_path / "IMG_0001.xmp"
    sidecar.write_text(THEIRS, encoding="utf-8")
    write_xmp([compared(tmp_path / "IMG_0001.CR3")], None, XmpOptions(job_id=JOB))
    assert without_ours(sidecar.read_text(encoding="utf-8")) == without_ours(THEIRS)
    description = description_of(sidecar)
    assert description.get(f"{XMP}Rating") == "3"
    assert description.findtext(f"{KB}Score") == "77"
    assert description.findtext(f"{KB}GroupRank") == "2"
    assert description.findtext(f"{KB}GroupReason") == (
        'Eyes closed & soft focus <frame 2>; "best" is 1'
    )
    assert rating_in(sidecar) == 3
    # exported again without a comparison (nor a score): our stale fields go, theirs stay
    plain = rated(tmp_path / "IMG_0001.CR3")
    assert plain.rating is not None
    bare = dataclasses.replace(plain, rating=plain.rating.model_copy(update={"score": None}))
    write_xmp([bare], None, XmpOptions(job_id=JOB))
    description = description_of(sidecar)
    for name in ("Score", "GroupRank", "GroupReason"):
        assert description.find(f"{KB}{name}") is None, name
    assert description.get(f"{XMP}Rating") == "3"
    assert without_ours(sidecar.read_text(encoding="utf-8")) == without_ours(THEIRS)


def test_a_fresh_packet_and_a_merged_one_carry_the_comparison_alike(tmp_path: Path) -> None:
    """A new sidecar holds the same fields as one merged into an existing packet, and a
    character XML forbids in the model's reason is dropped, not written broken."""
    item = dataclasses.replace(compared(tmp_path / "a.jpg"), group_reason="sharp\x07 eyes")
    write_xmp([item], None, XmpOptions(job_id=JOB))
    fresh = ours_in(tmp_path / "a.xmp")
    assert fresh["GroupReason"] == "sharp eyes" and fresh["GroupRank"] == "2"
    assert fresh["Score"] == "77" and fresh["Job"] == JOB
    write_xmp([item], None, XmpOptions(job_id=JOB))  # now merged into the packet written above
    assert ours_in(tmp_path / "a.xmp") == fresh


def ours_in(sidecar: Path) -> dict[str, str | None]:
    """kullbatch's own fields in a sidecar, by local name (each written once)."""
    found = [child for child in description_of(sidecar) if child.tag.startswith(KB)]
    names = [child.tag.removeprefix(KB) for child in found]
    assert len(names) == len(set(names)), names
    return {name: child.text for name, child in zip(names, found, strict=True)}


@needs_exiftool
def test_exiftool_reads_score_and_the_comparison_from_a_sidecar_and_an_embedded_packet(
    tmp_path: Path,
) -> None:
    (tmp_path / "IMG_0001.xmp").write_text(THEIRS, encoding="utf-8")
    write_xmp([compared(tmp_path / "IMG_0001.CR3")], None, XmpOptions(job_id=JOB))
    tags = exiftool(tmp_path / "IMG_0001.xmp", "-XMP:all")
    assert tags["XMP-xmp:Rating"] == 3 and tags["XMP-crs:Exposure2012"] == "+0.35"
    assert tags["XMP-kullbatch:Score"] == 77 and tags["XMP-kullbatch:GroupRank"] == 2
    assert tags["XMP-kullbatch:GroupReason"] == 'Eyes closed & soft focus <frame 2>; "best" is 1'
    photo = camera_jpeg(tmp_path / "b.jpg")
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-XMP-xmp:Rating=2", str(photo)], check=True
    )
    write_xmp([compared(photo)], None, XmpOptions(embed=True, job_id=JOB))
    tags = exiftool(photo, "-XMP:all")
    assert tags["XMP-xmp:Rating"] == 2 and tags["XMP-kullbatch:Rating"] == 4
    assert tags["XMP-kullbatch:GroupRank"] == 2 and tags["XMP-kullbatch:Score"] == 77
    assert rating_in(photo) == 2
