"""XMP where each program looks for it: embedded in JPEG, TIFF, PNG and DNG, sidecars for RAW,
Adobe or darktable names, read back with exiftool and an XML parser."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rawpy
from PIL import Image

from kullbatch.catalogue import XmpOptions, read_embedded, write_xmp
from kullbatch.models import ImageInput, ItemRecord, ItemState, Rating, Usage
from tests.dngfile import preview_jpeg, write_dng
from tests.xmp_readback import (
    CRS,
    DC,
    RDF,
    XMP,
    XMP_APP1,
    camera_jpeg,
    embedded_packet,
    exiftool,
    jpeg_segments,
    needs_exiftool,
    pixels,
)

EMBED = XmpOptions(embed=True)


def rating(**changes: object) -> Rating:
    values: dict[str, object] = {
        "starRating": 4,
        "colorLabel": "green",
        "title": "Bride at the window",
        "description": "Soft light, sharp eyes.",
        "tags": ["wedding", "portrait"],
    }
    return Rating.model_validate(values | changes)


def rated(path: Path, position: int = 0, companions: tuple[Path, ...] = (), **changes: object):
    image = ImageInput(id=path.stem, filename=path.name, path=path, companions=list(companions))
    return ItemRecord(position, image, ItemState.RATED, 1, None, rating(**changes), Usage())


def tiff(path: Path) -> Path:
    Image.new("RGB", (64, 48), (200, 100, 20)).save(path, "TIFF", compression="tiff_lzw")
    return path


def png(path: Path) -> Path:
    Image.new("RGB", (64, 48), (10, 120, 200)).save(path, "PNG")
    return path


# --- embedded in JPEG -------------------------------------------------------------------------


@needs_exiftool
def test_embed_writes_the_five_fields_into_the_jpeg_as_exiftool_reads_them(tmp_path: Path) -> None:
    """Rating, label, title, description and keywords land in the JPEG's own XMP packet."""
    photo = camera_jpeg(tmp_path / "IMG_0001.jpg")
    report = write_xmp([rated(photo, colorLabel="purple")], None, EMBED)
    assert report.embedded == (photo,) and report.sidecars == () and report.failures == ()
    tags = exiftool(photo, "-XMP:all")
    assert tags["XMP-xmp:Rating"] == 4
    assert tags["XMP-xmp:Label"] == "Purple"
    assert tags["XMP-dc:Title"] == "Bride at the window"
    assert tags["XMP-dc:Description"] == "Soft light, sharp eyes."
    assert tags["XMP-dc:Subject"] == ["wedding", "portrait"]
    description = embedded_packet(photo)
    assert description.findtext(f"{XMP}Rating") == "4"
    assert [li.text for li in description.findall(f"{DC}subject/{RDF}Bag/{RDF}li")] == [
        "wedding",
        "portrait",
    ]
    assert list(tmp_path.iterdir()) == [photo]  # no sidecar, no temporary file


@needs_exiftool
def test_embedding_keeps_the_image_data_and_the_camera_exif_byte_for_byte(tmp_path: Path) -> None:
    """The scan and every segment but the XMP one are unchanged; exiftool sees the same EXIF."""
    photo = camera_jpeg(tmp_path / "a.jpg")
    before = photo.read_bytes()
    exif_before = exiftool(photo, "-EXIF:all")
    write_xmp([rated(photo)], None, EMBED)
    after = photo.read_bytes()
    segments_before, scan_before = jpeg_segments(before)
    segments_after, scan_after = jpeg_segments(after)
    assert scan_after == scan_before
    assert [s for s in segments_after if XMP_APP1 not in s] == segments_before
    assert exiftool(photo, "-EXIF:all") == exif_before
    assert exif_before["IFD0:Model"] == "EOS R5"


@needs_exiftool
def test_embedding_twice_leaves_one_packet_with_the_latest_rating(tmp_path: Path) -> None:
    """A second run replaces our fields in the one packet rather than adding a second."""
    photo = camera_jpeg(tmp_path / "a.jpg")
    write_xmp([rated(photo, starRating=2, tags=["old"])], None, EMBED)
    write_xmp([rated(photo, starRating=5, tags=["new"])], None, EMBED)
    segments, _ = jpeg_segments(photo.read_bytes())
    assert sum(XMP_APP1 in segment for segment in segments) == 1
    tags = exiftool(photo, "-XMP:all")
    assert tags["XMP-xmp:Rating"] == 5
    assert tags["XMP-dc:Subject"] == ["new"]


@needs_exiftool
def test_an_existing_embedded_packet_keeps_its_other_properties(tmp_path: Path) -> None:
    """Develop settings and IPTC Core fields another program embedded survive our update."""
    photo = camera_jpeg(tmp_path / "a.jpg")
    subprocess.run(
        [
            "exiftool",
            "-q",
            "-overwrite_original",
            "-XMP-crs:Exposure2012=+0.35",
            "-XMP-photoshop:City=Lyon",
            "-XMP-xmp:Rating=1",
            "-XMP-xmp:Label=Red",
            str(photo),
        ],
        check=True,
    )
    write_xmp([rated(photo, colorLabel="none")], None, EMBED)
    tags = exiftool(photo, "-XMP:all")
    assert tags["XMP-crs:Exposure2012"] == "+0.35"
    assert tags["XMP-photoshop:City"] == "Lyon"
    assert tags["XMP-xmp:Rating"] == 1  # the photographer's, kept; ours beside it
    assert tags["XMP-kullbatch:Rating"] == 4
    assert "XMP-xmp:Label" not in tags  # `none` removes the old label
    assert embedded_packet(photo).get(f"{CRS}Exposure2012") == "+0.35"


# --- TIFF, PNG, DNG ---------------------------------------------------------------------------


@needs_exiftool
@pytest.mark.parametrize(("name", "make"), [("a.tif", tiff), ("a.png", png)])
def test_embed_writes_into_tiff_and_png_without_touching_pixels(
    tmp_path: Path, name: str, make
) -> None:
    """TIFF gets tag 700, PNG an iTXt chunk; the decoded pixels are the same; a second run
    leaves one packet."""
    photo = make(tmp_path / name)
    before = pixels(photo)
    report = write_xmp([rated(photo)], None, EMBED)
    assert report.embedded == (photo,)
    tags = exiftool(photo, "-XMP:all")
    assert tags["XMP-xmp:Rating"] == 4 and tags["XMP-xmp:Label"] == "Green"
    assert pixels(photo) == before
    write_xmp([rated(photo, starRating=2)], None, EMBED)
    assert read_embedded(photo).count("<?xpacket begin") == 1
    assert photo.read_bytes().count(b"XML:com.adobe.xmp") == (name == "a.png")  # one iTXt chunk
    assert exiftool(photo, "-XMP-xmp:Rating")["XMP-xmp:Rating"] == 2


@needs_exiftool
def test_embed_writes_into_a_dng_keeping_its_raw_data_and_preview(tmp_path: Path) -> None:
    """A DNG is a TIFF: the XMP goes inside, the CFA data and the preview JPEG are untouched."""
    preview = preview_jpeg((640, 480))
    photo = write_dng(tmp_path / "IMG_0002.dng", preview=preview, preview_size=(640, 480))
    with rawpy.imread(str(photo)) as raw:
        mosaic = raw.raw_image.copy()
    report = write_xmp([rated(photo)], None, EMBED)
    assert report.embedded == (photo,) and report.sidecars == ()
    assert exiftool(photo, "-XMP-xmp:Rating")["XMP-xmp:Rating"] == 4
    with rawpy.imread(str(photo)) as raw:
        assert (raw.raw_image == mosaic).all()
    extracted = subprocess.run(
        ["exiftool", "-b", "-PreviewImage", str(photo)], check=True, capture_output=True
    ).stdout
    assert extracted == preview


def test_raw_files_get_sidecars_even_with_embed(tmp_path: Path) -> None:
    """A CR3 is never written into: it gets IMG_0003.xmp beside it."""
    photo = tmp_path / "IMG_0003.CR3"
    photo.write_bytes(b"not really a CR3")
    report = write_xmp([rated(photo)], None, EMBED)
    assert report.sidecars == (tmp_path / "IMG_0003.xmp",) and report.embedded == ()
    assert photo.read_bytes() == b"not really a CR3"


@needs_exiftool
def test_embed_also_updates_an_existing_sidecar_so_the_two_agree(tmp_path: Path) -> None:
    """A JPEG that already has a sidecar gets both updated; one without gets none created.
    (The sidecar's rating of 0 is "unrated", nobody's pick: ours replaces it.)"""
    with_sidecar = camera_jpeg(tmp_path / "a.jpg")
    (tmp_path / "a.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        '22-rdf-syntax-ns#"><rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmp:Rating="0"/></rdf:RDF></x:xmpmeta>'
    )
    without = camera_jpeg(tmp_path / "b.jpg")
    report = write_xmp([rated(with_sidecar), rated(without, 1)], None, EMBED)
    assert report.embedded == (with_sidecar, without)
    assert report.sidecars == (tmp_path / "a.xmp",)
    assert "<xmp:Rating>4</xmp:Rating>" in (tmp_path / "a.xmp").read_text()
    assert not (tmp_path / "b.xmp").exists()
    assert exiftool(without, "-XMP-xmp:Rating")["XMP-xmp:Rating"] == 4


# --- one photo fails, the others are written --------------------------------------------------


@needs_exiftool
def test_a_read_only_photo_fails_alone(tmp_path: Path) -> None:
    """A locked JPEG is left byte for byte; the next photo still gets its XMP."""
    locked = camera_jpeg(tmp_path / "locked.jpg")
    before = locked.read_bytes()
    locked.chmod(0o444)
    free = camera_jpeg(tmp_path / "free.jpg")
    report = write_xmp([rated(locked), rated(free, 1)], None, EMBED)
    assert report.failures == (f"{locked}: read-only; its XMP was not written (make it writable)",)
    assert report.embedded == (free,)
    assert locked.read_bytes() == before
    assert exiftool(free, "-XMP-xmp:Rating")["XMP-xmp:Rating"] == 4


def test_a_vanished_photo_fails_alone(tmp_path: Path) -> None:
    """A photo deleted since the job ran is reported, not recreated."""
    gone = tmp_path / "gone.jpg"
    here = camera_jpeg(tmp_path / "here.jpg")
    report = write_xmp([rated(gone), rated(here, 1)], None, EMBED)
    assert report.failures == (f"{gone}: not found (moved or deleted?); its XMP was not written",)
    assert report.embedded == (here,)
    assert not gone.exists()
    assert "Bride at the window" in read_embedded(here)


def test_a_file_exiv2_cannot_read_fails_alone_and_is_left_as_it_was(tmp_path: Path) -> None:
    """A .jpg that is not a JPEG: a clear failure, the file unchanged, no temporary file left."""
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"this is text")
    report = write_xmp([rated(fake)], None, EMBED)
    (failure,) = report.failures
    assert failure.startswith(f"{fake}: cannot write its XMP")
    assert fake.read_bytes() == b"this is text"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.jpg"]


def test_a_broken_embedded_packet_fails_that_photo_and_is_kept(tmp_path: Path) -> None:
    """An embedded packet that is not XML is not ours to replace."""
    photo = camera_jpeg(tmp_path / "a.jpg")
    data = photo.read_bytes()
    junk = XMP_APP1 + b"<x:xmpmeta><unclosed"
    segment = b"\xff\xe1" + (len(junk) + 2).to_bytes(2, "big") + junk
    photo.write_bytes(data[:2] + segment + data[2:])
    before = photo.read_bytes()
    (failure,) = write_xmp([rated(photo)], None, EMBED).failures
    assert str(photo) in failure
    assert photo.read_bytes() == before


def test_the_photos_mode_is_kept_when_embedding(tmp_path: Path) -> None:
    """The replaced file keeps the photo's permissions."""
    photo = camera_jpeg(tmp_path / "a.jpg")
    photo.chmod(0o640)
    write_xmp([rated(photo)], None, EMBED)
    assert photo.stat().st_mode & 0o777 == 0o640


def test_without_embed_jpegs_get_sidecars_and_stay_untouched(tmp_path: Path) -> None:
    """Embedding happens only when asked."""
    photo = camera_jpeg(tmp_path / "a.jpg")
    before = photo.read_bytes()
    report = write_xmp([rated(photo)], None)
    assert report.sidecars == (tmp_path / "a.xmp",) and report.embedded == ()
    assert photo.read_bytes() == before


# --- darktable sidecars -----------------------------------------------------------------------

DARKTABLE_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
   xmp:Rating="1"
   xmpMM:DerivedFrom="IMG_0001.CR3"
   darktable:xmp_version="5"
   darktable:history_end="2">
   <darktable:colorlabels><rdf:Seq><rdf:li>0</rdf:li></rdf:Seq></darktable:colorlabels>
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:num="0" darktable:operation="exposure" darktable:enabled="1"
      darktable:params="0000000000000000cdcc4c3e"/>
     <rdf:li darktable:num="1" darktable:operation="filmicrgb" darktable:enabled="1"
      darktable:params="gz12eJxjYGBgYAJiM2AsAGJmBggAAA"/>
    </rdf:Seq>
   </darktable:history>
   <lr:hierarchicalSubject>
    <rdf:Bag><rdf:li>darktable|format|cr3</rdf:li><rdf:li>wedding</rdf:li></rdf:Bag>
   </lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
DT = "{http://darktable.sf.net/}"
LR = "{http://ns.adobe.com/lightroom/1.0/}"


def _history(description) -> list[dict[str, str]]:
    return [dict(li.attrib) for li in description.iter(f"{RDF}li") if f"{DT}operation" in li.attrib]


def test_darktable_style_merges_into_darktables_sidecar_keeping_its_history(
    tmp_path: Path,
) -> None:
    """IMG_0001.CR3.xmp keeps every history step and darktable attribute, and its rating (the
    photographer's: ours goes beside it); our keywords join its hierarchical ones, which
    darktable reads first."""
    sidecar = tmp_path / "IMG_0001.CR3.xmp"
    sidecar.write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    original = ET.fromstring(DARKTABLE_SIDECAR).find(f"{RDF}RDF/{RDF}Description")
    report = write_xmp([rated(tmp_path / "IMG_0001.CR3")], None, XmpOptions(style="darktable"))
    assert report.sidecars == (sidecar,)
    description = ET.parse(sidecar).getroot().find(f"{RDF}RDF/{RDF}Description")
    assert _history(description) == _history(original) and len(_history(original)) == 2
    for name in ("xmp_version", "history_end"):
        assert description.get(f"{DT}{name}") == original.get(f"{DT}{name}")
    assert description.get("{http://ns.adobe.com/xap/1.0/mm/}DerivedFrom") == "IMG_0001.CR3"
    assert description.findtext(f"{DT}colorlabels/{RDF}Seq/{RDF}li") == "0"
    assert description.get(f"{XMP}Rating") == "1"
    assert description.findtext("{https://kullbatch.dev/ns/xmp/1.0/}Rating") == "4"
    assert description.findtext(f"{XMP}Label") == "Green"
    keywords = [li.text for li in description.findall(f"{LR}hierarchicalSubject/{RDF}Bag/{RDF}li")]
    assert keywords == ["darktable|format|cr3", "wedding", "portrait"]
    assert 'darktable:operation="exposure"' in sidecar.read_text()  # darktable's prefix kept


def test_darktable_style_names_each_file_of_a_raw_jpeg_pair_separately(tmp_path: Path) -> None:
    """IMG_1.CR3 and IMG_1.JPG get IMG_1.CR3.xmp and IMG_1.JPG.xmp: no collision to resolve."""
    raw, jpeg = tmp_path / "IMG_1.CR3", tmp_path / "IMG_1.JPG"
    report = write_xmp([rated(jpeg, companions=(raw,))], None, XmpOptions(style="darktable"))
    assert report.sidecars == (tmp_path / "IMG_1.CR3.xmp", tmp_path / "IMG_1.JPG.xmp")


def test_darktable_names_in_one_out_dir_stay_distinct(tmp_path: Path) -> None:
    """Two folders' IMG_1.CR3 in one --output: IMG_1.CR3.xmp, then IMG_1_2.CR3.xmp."""
    items = [rated(tmp_path / d / "IMG_1.CR3", i) for i, d in enumerate("ab")]
    report = write_xmp(items, tmp_path / "out", XmpOptions(style="darktable"))
    assert [p.name for p in report.sidecars] == ["IMG_1.CR3.xmp", "IMG_1_2.CR3.xmp"]


def test_adobe_style_gives_a_pairs_raw_the_stem_name_and_the_jpeg_the_full_name(
    tmp_path: Path,
) -> None:
    """The pair is rated once; the RAW keeps IMG_1.xmp whichever file was sent."""
    raw, jpeg = tmp_path / "IMG_1.CR3", tmp_path / "IMG_1.JPG"
    report = write_xmp([rated(jpeg, companions=(raw,), starRating=5)], None)
    assert report.sidecars == (tmp_path / "IMG_1.xmp", tmp_path / "IMG_1.JPG.xmp")
    assert {p.read_text() for p in report.sidecars} == {report.sidecars[0].read_text()}


@needs_exiftool
def test_embed_puts_a_pairs_rating_in_the_jpeg_and_a_sidecar_beside_the_raw(
    tmp_path: Path,
) -> None:
    """RAW+JPEG with --embed: IMG_1.xmp for the CR3, the JPEG carries its own packet."""
    raw = tmp_path / "IMG_1.CR3"
    raw.write_bytes(b"raw bytes")
    jpeg = camera_jpeg(tmp_path / "IMG_1.JPG")
    report = write_xmp([rated(jpeg, companions=(raw,), starRating=5)], None, EMBED)
    assert report.sidecars == (tmp_path / "IMG_1.xmp",) and report.embedded == (jpeg,)
    assert exiftool(jpeg, "-XMP-xmp:Rating")["XMP-xmp:Rating"] == 5
    assert exiftool(tmp_path / "IMG_1.xmp", "-XMP-xmp:Rating")["XMP-xmp:Rating"] == 5
