"""Image preparation and URL downloads: upright, downscaled JPEG; bounded, sniffed downloads."""

from __future__ import annotations

import io

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from kullbatch.errors import PermanentImageError, Transient
from kullbatch.media.images import (
    encode_file,
    fit_image,
    fit_within,
    prepare,
    sniff_media_type,
    to_jpeg,
)
from kullbatch.models import ImageInput, PreparedImage
from kullbatch.providers.download import inline_url_image


def jpeg(size=(3000, 2000), orientation: int | None = None, noise: bool = False) -> bytes:
    image = (
        Image.effect_noise(size, 80).convert("RGB")
        if noise
        else Image.new("RGB", size, (90, 120, 200))
    )
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


async def test_a_local_photo_is_rotated_upright_downscaled_and_reencoded(tmp_path):
    """EXIF orientation 6 (rotated 90°) on a 3000x2000 frame becomes a 1045x1568 JPEG."""
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg(orientation=6))
    prepared = await prepare(ImageInput(id="a", filename="a.jpg", path=path))
    with Image.open(io.BytesIO(prepared.data)) as result:
        assert result.format == "JPEG" and result.size == (1045, 1568)
    assert prepared.url is None and prepared.media_type == "image/jpeg"
    assert prepared.data_uri().startswith("data:image/jpeg;base64,/9j/")


async def test_png_with_alpha_and_heic_become_jpeg(tmp_path):
    """Formats a provider may not take are re-encoded as JPEG (HEIC through pillow-heif)."""
    for name in ("a.png", "b.heic"):
        Image.new(
            "RGBA" if name.endswith("png") else "RGB",
            (100, 80),
            (1, 2, 3, 4)[: 4 if name.endswith("png") else 3],
        ).save(tmp_path / name)
        prepared = await prepare(ImageInput(id=name, filename=name, path=tmp_path / name))
        assert sniff_media_type(prepared.data) == "image/jpeg"


async def test_a_url_passes_through_untouched():
    """URL images are not downloaded by prepare."""
    prepared = await prepare(ImageInput(id="u", filename="u.jpg", url="https://e.test/u.jpg"))
    assert prepared.url == "https://e.test/u.jpg" and prepared.data is None
    with pytest.raises(ValueError, match="no local data"):
        prepared.base64()


def test_a_missing_or_broken_file_fails_that_image(tmp_path):
    """A photo moved after the manifest was read, or a corrupt one, is a permanent image error."""
    with pytest.raises(PermanentImageError, match="file not found"):
        encode_file(tmp_path / "gone.jpg", 1568)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(PermanentImageError, match="cannot be read"):
        encode_file(tmp_path / "bad.jpg", 1568)


def test_fit_within_shrinks_until_the_limit_or_says_why_not():
    """A 3 MB noisy frame fits 500 KB after shrinking; 100 bytes is impossible."""
    big = jpeg(size=(2000, 2000), noise=True)
    assert len(big) > 1_000_000
    assert fit_within(big, len(big)) is big
    smaller = fit_within(big, 500_000)
    assert len(smaller) <= 500_000
    with pytest.raises(PermanentImageError, match="cannot be shrunk"):
        fit_within(big, 100)
    with pytest.raises(PermanentImageError, match="cannot be decoded"):
        fit_within(b"x" * 200, 100)


JPEG_ONLY = frozenset({"image/jpeg"})
JPEG_OR_PNG = frozenset({"image/jpeg", "image/png"})


def webp(size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buffer, "WEBP")
    return buffer.getvalue()


async def test_fit_image_converts_a_media_type_the_provider_refuses_to_jpeg():
    """WebP for a JPEG/PNG-only provider becomes a JPEG of the same picture."""
    image = PreparedImage(image_id="w", filename="w.webp", data=webp(), media_type="image/webp")

    fitted = await fit_image(image, max_bytes=10_000_000, media_types=JPEG_OR_PNG)

    assert fitted.media_type == "image/jpeg" and fitted.data is not None
    with Image.open(io.BytesIO(fitted.data)) as opened:
        assert (opened.format, opened.size) == ("JPEG", (40, 30))
    assert (fitted.image_id, fitted.filename) == ("w", "w.webp")


async def test_fit_image_shrinks_an_accepted_image_under_the_limit():
    """A noisy 2000 px JPEG over the limit is re-encoded smaller until it fits."""
    big = jpeg(size=(2000, 2000), noise=True)
    image = PreparedImage(image_id="b", filename="big.jpg", data=big)

    fitted = await fit_image(image, max_bytes=400_000, media_types=JPEG_ONLY)

    assert fitted.data is not None and len(fitted.data) <= 400_000 < len(big)
    assert fitted.data[:3] == b"\xff\xd8\xff"


async def test_fit_image_leaves_what_already_fits_and_urls_alone():
    """An accepted image under the limit is the same object; a URL image is the provider's."""
    small = PreparedImage(image_id="s", filename="s.jpg", data=jpeg(size=(50, 50)))
    url = PreparedImage(image_id="u", filename="u.jpg", url="https://e.test/u.jpg")

    assert await fit_image(small, max_bytes=1_000_000, media_types=JPEG_ONLY) is small
    assert await fit_image(url, max_bytes=10, media_types=JPEG_ONLY) is url


async def test_fit_image_names_the_file_the_limit_and_the_providers_rule():
    """An image that cannot fit fails alone, saying which file, which limit and whose rule."""
    big = PreparedImage(image_id="b", filename="big.jpg", data=jpeg(noise=True))
    broken = PreparedImage(image_id="x", filename="x.gif", data=b"GIF89a", media_type="image/gif")
    empty = PreparedImage(image_id="e", filename="e.jpg")

    with pytest.raises(PermanentImageError, match=r"^big\.jpg: .*100-byte limit \(the rule\)$"):
        await fit_image(big, max_bytes=100, media_types=JPEG_ONLY, why="the rule")
    with pytest.raises(PermanentImageError, match=r"^x\.gif: image cannot be converted to JPEG"):
        await fit_image(broken, max_bytes=1_000_000, media_types=JPEG_ONLY)
    with pytest.raises(PermanentImageError, match=r"^e\.jpg: no image data and no URL"):
        await fit_image(empty, max_bytes=1_000_000, media_types=JPEG_ONLY)


def test_to_jpeg_keeps_the_picture():
    """The converted JPEG has the original size when it is within the edge already."""
    with Image.open(io.BytesIO(to_jpeg(webp((40, 30))))) as opened:
        assert (opened.format, opened.size) == ("JPEG", (40, 30))


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"GIF89a...", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"<html>", None),
    ],
)
def test_media_types_are_sniffed_from_magic_numbers(data, media_type):
    """Downloaded bytes are identified by content, not by the server's word."""
    assert sniff_media_type(data) == media_type


@pytest.fixture
async def photo_server(aiohttp_server):
    photo = jpeg(size=(64, 48))

    async def ok(request):
        return web.Response(body=photo, content_type="image/jpeg")

    async def huge(request):
        return web.Response(body=b"\xff\xd8\xff" + b"0" * 5000, content_type="image/jpeg")

    async def html(request):
        return web.Response(text="<html>not an image</html>", content_type="text/html")

    async def status(request):
        return web.Response(status=int(request.match_info["code"]))

    app = web.Application()
    app.router.add_get("/ok.jpg", ok)
    app.router.add_get("/huge.jpg", huge)
    app.router.add_get("/page.html", html)
    app.router.add_get("/status/{code}", status)
    return await aiohttp_server(app)


async def test_url_images_are_downloaded_and_inlined(photo_server):
    """inline_url_image returns the bytes with their sniffed media type and no URL."""

    async with aiohttp.ClientSession() as session:
        image = PreparedImage("a", "a.jpg", url=str(photo_server.make_url("/ok.jpg")))
        inlined = await inline_url_image(session, image)
        assert (
            inlined.url is None
            and inlined.media_type == "image/jpeg"
            and inlined.data[:3] == b"\xff\xd8\xff"
        )
        local = PreparedImage("b", "b.jpg", data=b"x")
        assert await inline_url_image(session, local) is local


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/status/404", PermanentImageError, "HTTP 404"),
        ("/status/503", Transient, "HTTP 503"),
        ("/page.html", PermanentImageError, "did not return"),
        ("/huge.jpg", PermanentImageError, "1000-byte limit"),
    ],
)
async def test_download_failures_are_classified(photo_server, path, error, message):
    """Gone is permanent, an outage is transient, HTML or an oversized body fail the image."""

    async with aiohttp.ClientSession() as session:
        image = PreparedImage("a", "a.jpg", url=str(photo_server.make_url(path)))
        with pytest.raises(error, match=message):
            await inline_url_image(session, image, max_bytes=1000)
