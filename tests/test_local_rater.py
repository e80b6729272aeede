"""The offline `local` rater: real Pillow measurements on real JPEGs, no network."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFilter

from kullbatch.errors import PermanentImageError
from kullbatch.models import PreparedImage, Prompt, Rating, Usage
from kullbatch.providers import PROVIDERS, create_provider
from kullbatch.providers.local import LocalRater, Measurements, create, rating_for

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARP_PHOTO = EXAMPLES / "photos" / "01_harbour_sharp.jpg"
PROMPT = Prompt("Rate this photo", system="You are an expert photo editor")


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def sharp_photo() -> Image.Image:
    with Image.open(SHARP_PHOTO) as opened:
        return opened.convert("RGB")


async def rate(data: bytes, filename: str = "frame.jpg") -> Rating:
    rater = create(model="local-v1", session=None, credentials=PROVIDERS["local"].credentials({}))
    answer = await rater.rate(PreparedImage(image_id="img", filename=filename, data=data), PROMPT)
    assert answer.usage == Usage(0, 0)
    return answer.rating


async def test_a_sharp_photo_ranks_above_a_gaussian_blurred_copy_of_itself():
    """Missed focus costs stars, and the tags say why."""
    photo = sharp_photo()
    sharp = await rate(jpeg(photo))
    blurred = await rate(jpeg(photo.filter(ImageFilter.GaussianBlur(6))))

    assert sharp.starRating > blurred.starRating
    assert "sharp" in sharp.tags
    assert "blurry" in blurred.tags
    assert blurred.colorLabel == "red"


async def test_an_underexposed_copy_is_tagged_underexposed_and_gets_fewer_stars():
    """A frame shot three stops too dark loses stars against the well-exposed original."""
    photo = sharp_photo()
    original = await rate(jpeg(photo))
    dark = await rate(jpeg(photo.point(lambda v: v // 8)))

    assert "underexposed" in dark.tags
    assert "well-exposed" in original.tags
    assert dark.starRating < original.starRating


async def test_an_overexposed_copy_is_tagged_overexposed_and_gets_fewer_stars():
    """Blown highlights are reported as overexposure."""
    photo = sharp_photo()
    original = await rate(jpeg(photo))
    bright = await rate(jpeg(photo.point(lambda v: min(255, v * 2 + 60))))

    assert "overexposed" in bright.tags
    assert bright.starRating < original.starRating


async def test_a_hazy_copy_is_tagged_low_contrast():
    """Squeezing the tones towards grey is reported as low contrast, not as bad focus."""
    hazy = await rate(jpeg(sharp_photo().point(lambda v: 110 + v // 8)))

    assert "low-contrast" in hazy.tags
    assert "sharp" in hazy.tags


async def test_a_url_image_is_a_permanent_image_error():
    """The local rater cannot fetch URLs, and says so instead of retrying."""
    image = PreparedImage(image_id="img", filename="a.jpg", url="https://example.com/a.jpg")

    with pytest.raises(PermanentImageError, match=r"local files only; https://example\.com/a\.jpg"):
        await LocalRater().rate(image, PROMPT)


@pytest.mark.parametrize(
    "data",
    [b"this is not a jpeg", b"", jpeg(Image.new("RGB", (64, 64), "red"))[:200]],
    ids=["text", "empty", "truncated-jpeg"],
)
async def test_bytes_that_are_not_a_readable_image_are_a_permanent_image_error(data):
    """Corrupt data fails this image at once, naming the file."""
    with pytest.raises(PermanentImageError, match=r"broken\.jpg: the local rater cannot read"):
        await rate(data, filename="broken.jpg")


async def test_a_tiny_or_uniform_image_is_rated_rather_than_crashing():
    """A 1x1 grey frame has no detail and no contrast, and gets the lowest honest rating."""
    rating = await rate(jpeg(Image.new("L", (1, 1), 128)))

    assert rating.starRating == 1
    assert "blurry" in rating.tags


def test_every_flaw_at_once_still_gives_one_star_and_a_red_label():
    """Penalties add up but the scale stops at one star."""
    worst = Measurements(detail=0.0, mean=5.0, shadows=0.95, highlights=0.0, contrast=2.0)

    rating = rating_for(worst)

    assert (rating.starRating, rating.colorLabel) == (1, "red")
    assert rating.tags == ["blurry", "underexposed"]
    assert "95.0% crushed shadows" in rating.description


def test_a_flawless_frame_gets_five_stars_and_a_green_label():
    """Crisp, well exposed and contrasty is a pick."""
    best = Measurements(detail=3000.0, mean=120.0, shadows=0.0, highlights=0.01, contrast=45.0)

    rating = rating_for(best)

    assert (rating.starRating, rating.colorLabel) == (5, "green")
    assert rating.title == "Crisp, well-exposed frame"
    assert rating.tags == ["sharp", "well-exposed"]


async def test_the_example_shoot_spreads_over_at_least_three_star_values():
    """The generated examples are rated from reject to pick, with labels that follow the stars."""
    ratings = {
        path.name: await rate(path.read_bytes(), path.name)
        for path in sorted((EXAMPLES / "photos").glob("*.jpg"))
    }
    stars = {name: rating.starRating for name, rating in ratings.items()}

    assert len(set(stars.values())) >= 3
    assert stars["01_harbour_sharp.jpg"] >= 4
    assert stars["07_harbour_blurry.jpg"] <= 2
    for rating in ratings.values():
        expected = {5: "green", 4: "green", 3: "yellow"}.get(rating.starRating, "red")
        assert rating.colorLabel == expected


def test_the_example_manifests_list_every_generated_photo():
    """shoot.json and shoot.csv name the same images, and every path exists on disk."""
    shoot = json.loads((EXAMPLES / "shoot.json").read_text(encoding="utf-8"))
    with (EXAMPLES / "shoot.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))

    assert shoot["providerId"] == "local"
    assert [image["id"] for image in shoot["images"]] == [row["id"] for row in rows]
    assert all((EXAMPLES / image["path"]).is_file() for image in shoot["images"])
    assert len(list((EXAMPLES / "photos").glob("*.jpg"))) == len(rows)


async def test_the_registry_builds_the_local_rater_without_a_key_or_session():
    """`--provider local` needs no environment and no HTTP session."""
    credentials = PROVIDERS["local"].credentials({})
    provider = create_provider(PROVIDERS["local"], "local-v1", None, credentials)  # type: ignore[arg-type]

    assert (provider.name, provider.model) == ("local", "local-v1")
    answer = await provider.rate(
        PreparedImage(image_id="img", filename="a.jpg", data=SHARP_PHOTO.read_bytes()), PROMPT
    )
    assert answer.rating.starRating >= 4


def noisy(photo: Image.Image, strength: int = 25) -> Image.Image:
    """Heavy sensor grain: +-`strength` levels of seeded noise on every channel."""
    grain = Image.frombytes("L", photo.size, random.Random(7).randbytes(photo.width * photo.height))
    grain = grain.point(lambda v: v * (2 * strength + 1) // 256)
    return ImageChops.add(photo, Image.merge("RGB", (grain,) * 3), 1.0, -strength)


async def test_the_local_rater_speaks_the_shared_issues_vocabulary():
    """Blur, bad exposure and grain come back as out-of-focus, under/overexposed and noise."""
    photo = sharp_photo()
    assert (await rate(jpeg(photo))).issues == []
    assert (await rate(jpeg(photo.filter(ImageFilter.GaussianBlur(6))))).issues == ["out-of-focus"]
    assert (await rate(jpeg(photo.point(lambda v: v // 5)))).issues == ["underexposed"]
    assert (await rate(jpeg(photo.point(lambda v: min(255, v * 2 + 60))))).issues == ["overexposed"]


async def test_a_grainy_copy_is_flagged_noise_and_loses_a_star():
    """Grain the Laplacian would read as detail is measured apart and costs one star."""
    photo = sharp_photo()
    clean, grainy = await rate(jpeg(photo)), await rate(jpeg(noisy(photo)))
    assert "noise" in grainy.issues and "noise" not in clean.issues
    assert grainy.starRating == clean.starRating - 1
    assert "noisy" in grainy.title.lower()
