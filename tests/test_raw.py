"""RAW input: a RAW file is sent as its embedded preview, upright; a full demosaic only when it
has no usable preview; an unreadable RAW fails that photo, not the job."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from kullbatch.errors import PermanentImageError
from kullbatch.media.images import encode_file, prepare
from kullbatch.media.raw import MIN_PREVIEW_EDGE, read_raw
from kullbatch.models import ImageInput
from tests.dngfile import preview_jpeg, write_dng

GREEN = (20, 180, 40)


def sent(path: Path, max_edge: int = 1568) -> Image.Image:
    return Image.open(io.BytesIO(encode_file(path, max_edge)[0]))


def is_green(pixel: tuple[int, int, int]) -> bool:
    red, green, blue = pixel
    return green > 120 and red < 100 and blue < 100


def test_a_dng_is_sent_as_its_embedded_jpeg_preview(tmp_path: Path) -> None:
    """The 640x480 preview is what gets sent (the raw mosaic is 96x64), as a JPEG."""
    photo = write_dng(tmp_path / "a.dng", preview=preview_jpeg((640, 480)), preview_size=(640, 480))
    image = sent(photo)
    assert image.format == "JPEG" and image.size == (640, 480)
    assert is_green(image.convert("RGB").getpixel((10, 240)))
    assert image.convert("RGB").getpixel((630, 240)) == pytest.approx((255, 255, 255), abs=8)


def test_the_preview_is_turned_by_the_raw_files_orientation(tmp_path: Path) -> None:
    """Orientation 6 (camera held turned right): the preview comes out portrait, left half on top."""
    photo = write_dng(
        tmp_path / "a.dng",
        preview=preview_jpeg((640, 480)),
        preview_size=(640, 480),
        orientation=6,
    )
    image = sent(photo).convert("RGB")
    assert image.size == (480, 640)
    assert is_green(image.getpixel((240, 10)))
    assert not is_green(image.getpixel((240, 630)))


def test_a_preview_with_its_own_exif_orientation_is_turned_once(tmp_path: Path) -> None:
    """A preview JPEG that says orientation 6 itself (EXIF first, as cameras write it) is turned
    by that, not twice."""
    plain = Image.open(io.BytesIO(preview_jpeg((640, 480))))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    plain.save(buffer, "JPEG", exif=exif.tobytes())
    data = buffer.getvalue()
    if data[2:4] == b"\xff\xe0":  # drop Pillow's JFIF segment so that the EXIF one comes first
        data = data[:2] + data[4 + int.from_bytes(data[4:6], "big") :]
    photo = write_dng(tmp_path / "a.dng", preview=data, preview_size=(640, 480), orientation=6)
    image = sent(photo).convert("RGB")
    assert image.size == (480, 640) and is_green(image.getpixel((240, 10)))


def test_a_bitmap_preview_is_used_too(tmp_path: Path) -> None:
    """LibRaw hands uncompressed previews over as RGB arrays; they are sent like JPEG ones."""
    rgb = bytes(GREEN) * (600 * 400)
    photo = write_dng(tmp_path / "a.dng", preview=rgb, preview_size=(600, 400), bitmap=True)
    image = sent(photo).convert("RGB")
    assert image.size == (600, 400) and is_green(image.getpixel((300, 200)))


def test_the_preview_is_downscaled_like_any_photo(tmp_path: Path) -> None:
    """max_edge applies to RAW previews as to JPEGs."""
    photo = write_dng(tmp_path / "a.dng", preview=preview_jpeg((640, 480)), preview_size=(640, 480))
    assert sent(photo, max_edge=320).size == (320, 240)


@pytest.mark.parametrize("preview", [None, preview_jpeg((160, 120))])
def test_without_a_usable_preview_the_raw_data_is_demosaiced(
    tmp_path: Path, preview: bytes | None
) -> None:
    """No preview, or a thumbnail under MIN_PREVIEW_EDGE: the 96x64 mosaic at half size."""
    assert MIN_PREVIEW_EDGE > 160
    photo = write_dng(tmp_path / "a.dng", preview=preview, orientation=6)
    assert read_raw(photo).size == (32, 48)  # half of 96x64, turned by the orientation


def test_a_preview_that_is_not_an_image_falls_back_to_the_raw_data(tmp_path: Path) -> None:
    """A preview whose bytes Pillow cannot decode is no usable preview."""
    photo = write_dng(tmp_path / "a.dng", preview=b"\xff\xd8\xff\xe0 broken" + bytes(600))
    assert read_raw(photo).size == (48, 32)


@pytest.mark.parametrize("name", ["IMG_0001.CR3", "IMG_0002.NEF", "IMG_0003.dng"])
def test_a_raw_file_that_cannot_be_read_fails_that_photo_with_a_clear_message(
    tmp_path: Path, name: str
) -> None:
    """Garbage with a RAW name is a PermanentImageError naming the file, not a crash."""
    photo = tmp_path / name
    photo.write_bytes(b"definitely not a raw file" * 10)
    with pytest.raises(PermanentImageError, match=f"{name}: cannot read this RAW file"):
        encode_file(photo, 1568)


def test_a_vanished_raw_file_says_so(tmp_path: Path) -> None:
    """A RAW deleted after loading: file not found, like any photo."""
    with pytest.raises(PermanentImageError, match="file not found"):
        read_raw(tmp_path / "gone.CR2")


async def test_prepare_sends_a_raw_as_jpeg_bytes(tmp_path: Path) -> None:
    """The engine's entry point: a RAW ImageInput becomes JPEG bytes."""
    photo = write_dng(tmp_path / "a.dng", preview=preview_jpeg((640, 480)), preview_size=(640, 480))
    prepared = await prepare(ImageInput(id="a", filename="a.dng", path=photo))
    assert prepared.data is not None and prepared.data.startswith(b"\xff\xd8\xff")


@pytest.mark.parametrize("bitmap", [False, True])
async def test_a_raw_is_fingerprinted_from_its_preview_with_its_capture_time(
    tmp_path: Path, bitmap: bool
) -> None:
    """Bursts of RAW files group: the hash is the preview's, as for the same photo as a JPEG,
    and the capture time is the RAW's (through LibRaw for a JPEG preview, from the file's own
    header for a bitmap one); a RAW without one has None (file order)."""
    preview = bytes((20, 180, 40)) * (640 * 480) if bitmap else preview_jpeg((640, 480))
    made = {"preview": preview, "preview_size": (640, 480), "bitmap": bitmap}
    timed = write_dng(tmp_path / "a.dng", taken="2024:06:11 14:03:07", **made)  # type: ignore[arg-type]
    untimed = write_dng(tmp_path / "b.dng", **made)  # type: ignore[arg-type]
    taken = [
        (
            await prepare(ImageInput(id=p.stem, filename=p.name, path=p), fingerprint=True)
        ).fingerprint
        for p in (timed, untimed)
    ]
    assert taken[0] is not None and taken[1] is not None
    assert taken[0].captured == pytest.approx(1718114587.0)
    assert taken[1].captured is None
    assert taken[0].phash == taken[1].phash
    if not bitmap:
        jpeg = tmp_path / "c.jpg"
        jpeg.write_bytes(preview_jpeg((640, 480)))
        _, as_jpeg = encode_file(jpeg, 1568, fingerprint=True)
        assert as_jpeg is not None and as_jpeg.phash == taken[0].phash
