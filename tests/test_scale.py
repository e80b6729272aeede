"""A 100,000-photo job's memory and CPU: the steps after a run page or count in SQL, the manifest
keeps its photos compact and fails as before, a job's chat body is encoded once."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.manifest import ImageList, ManifestError, load_manifest
from kullbatch.media import bursts
from kullbatch.models import (
    Answer,
    Fingerprint,
    GroupingOptions,
    ImageInput,
    JobOptions,
    Mode,
    Prompt,
    Rating,
    Usage,
)
from kullbatch.providers._chat import build_body, json_schema_format
from kullbatch.providers.templates import BodyTemplate, EncodedBody, encode
from kullbatch.service import culling
from kullbatch.store.database import Store
from kullbatch.store.rows import NewJob

JOB = NewJob(
    "batch_1_scale0", "me", "shoot", "fake", "fake-1", Mode.FAST, "rate", None, "x", JobOptions()
)


def rating(stars: int) -> Rating:
    return Rating(
        starRating=stars, colorLabel="green", title="t", description="d", tags=[], issues=[]
    )


async def stored_job(tmp_path: Path, images: list[ImageInput], answers: dict[str, Answer]) -> Store:
    """A job whose photos in `answers` are rated (and on disk)."""
    store = await Store.open(tmp_path / "k.db")
    await store.create_job(JOB, images)
    for n, (image_id, answer) in enumerate(answers.items(), 1):
        store.rated(JOB.id, image_id, answer, attempt=1, provider="fake", model="m", counts=(n, 0))
    await store.flush()
    return store


def url_photos(n: int) -> list[ImageInput]:
    return [
        ImageInput(id=f"u{i}", filename=f"u{i}.jpg", url=f"https://e.test/u{i}.jpg")
        for i in range(n)
    ]


def test_grouping_a_url_only_job_reads_no_item(tmp_path, monkeypatch):
    """URL photos never burst: one SQL count, and not one item is read or decoded."""
    photos = url_photos(50)

    def must_not_read(*args, **kwargs):
        raise AssertionError("grouping read the items of a URL-only job")

    async def main() -> list[bursts.Burst]:
        answers = {p.id: Answer(rating(3), Usage(1, 1)) for p in photos}
        store = await stored_job(tmp_path, photos, answers)
        try:
            monkeypatch.setattr(store, "items", must_not_read)
            monkeypatch.setattr(store.pages, "rated_local", must_not_read)
            monkeypatch.setattr("kullbatch.store.rows.item_record", must_not_read)
            monkeypatch.setattr(culling, "frame_of", must_not_read)
            return await culling.group_job(store, JOB.id, GroupingOptions())
        finally:
            await store.close()

    assert asyncio.run(main()) == []


def local_photos(tmp_path: Path) -> tuple[list[ImageInput], dict[str, Answer]]:
    """Three bursts among nine local photos (stored fingerprints, so no file is read), a
    URL photo between them, and an unrated local photo."""
    photos, answers = [], {}
    plan = [  # (captured, phash, stars)
        (0.0, 0x0F0F, 2),
        (0.5, 0x0F0F, 5),
        (1.0, 0x0F0E, 3),
        (50.0, 0xFFFF_0000_FFFF_0000, 4),
        (50.8, 0xFFFF_0000_FFFF_0001, 1),
        (200.0, 0x1234_5678_9ABC_DEF0, 3),
        (300.0, 0xAAAA_AAAA_AAAA_AAAA, 2),
        (300.4, 0xAAAA_AAAA_AAAA_AAAB, 4),
        (300.9, 0xAAAA_AAAA_AAAA_AAAA, 1),
    ]
    for i, (captured, phash, stars) in enumerate(plan):
        image = ImageInput(id=f"p{i}", filename=f"p{i}.jpg", path=tmp_path / f"p{i}.jpg")
        photos.append(image)
        answers[image.id] = Answer(rating(stars), fingerprint=Fingerprint(phash, captured))
        if i == 4:
            photos.append(ImageInput(id="url", filename="u.jpg", url="https://e.test/u.jpg"))
            answers["url"] = Answer(rating(5))
    photos.append(ImageInput(id="unrated", filename="x.jpg", path=tmp_path / "x.jpg"))
    return photos, answers


@pytest.mark.parametrize("page", [1, 2, 4, 1000])
def test_grouping_reads_a_page_at_a_time_and_groups_as_if_it_read_all(tmp_path, page):
    """With a small page, grouping reads no page larger than it and stores the same groups
    as grouping every item at once."""
    photos, answers = local_photos(tmp_path)
    pages: list[int] = []

    async def main() -> tuple[list[bursts.Burst], list[bursts.Burst], set[tuple]]:
        store = await stored_job(tmp_path, photos, answers)
        try:
            everything = culling.find_bursts(await store.items(JOB.id), GroupingOptions())
            real = store.pages.rated_local

            async def counted(job_id, size):
                async for chunk in real(job_id, size):
                    pages.append(len(chunk))
                    yield chunk

            store.pages.rated_local = counted  # type: ignore[method-assign]
            paged = await culling.group_job(store, JOB.id, GroupingOptions(), page=page)
            stored = {
                (item.image.id, item.group, item.best_in_group)
                for item in await store.items(JOB.id)
                if item.group is not None
            }
            return everything, paged, stored
        finally:
            await store.close()

    everything, paged, stored = asyncio.run(main())
    assert sorted(b.keys for b in paged) == sorted(b.keys for b in everything)
    assert {b.best for b in paged} == {b.best for b in everything} == {"p1", "p3", "p7"}
    assert sum(pages) == 9 and max(pages) <= page  # the nine rated local photos, paged
    assert {(key, True) for key, _, best in stored if best} == {
        ("p1", True),
        ("p3", True),
        ("p7", True),
    }
    assert len(stored) == 8  # every frame of the three bursts, no URL or lone photo


def write_csv(path: Path, rows: int, bad_line: int | None = None) -> Path:
    lines = ["id,filename,url,camera"]
    for i in range(2, rows + 2):
        url = "ftp://nope" if i == bad_line else f"https://e.test/{i}.jpg"
        lines.append(f"i{i},{i}.jpg,{url},X-T{i % 5}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_big_manifest_is_kept_as_stored_json_and_reads_back_as_models(tmp_path):
    """5,000 photos come back as an ImageList whose entries equal the models they describe,
    and whose stored JSON is what the store always wrote (`model_dump_json`)."""
    manifest = load_manifest(write_csv(tmp_path / "big.csv", 5000))
    assert isinstance(manifest.images, ImageList) and len(manifest.images) == 5000
    third = manifest.images[2]
    expected = ImageInput(
        id="i4", filename="4.jpg", url="https://e.test/4.jpg", metadata={"camera": "X-T4"}
    )
    assert third == expected
    stored = dict(manifest.images.stored())
    assert stored["i4"] == expected.model_dump_json()
    assert manifest.images == [*manifest.images]


def test_unicode_nan_and_nested_metadata_store_as_pydantic_would(tmp_path):
    """The compact JSON equals `model_dump_json` for awkward values (NaN falls back to it),
    and so does the usual entry's, written without a dict (quotes, controls, U+2028, a path)."""
    source = tmp_path / "odd.json"
    Image.new("RGB", (8, 8)).save(tmp_path / 'ä "x".jpg')
    images = [
        {"id": 'c\u2028\x01"\\', "filename": "ü\n.jpg", "url": 'https://e.test/ü"q.jpg'},
        {"id": "p", "filename": "p.jpg", "path": 'ä "x".jpg'},
        {"id": "é1", "filename": "ü.jpg", "url": 'https://e.test/ü"q.jpg', "tags": ["ß"]},
        {"id": "n", "filename": "n.jpg", "url": "https://e.test/n.jpg", "depth": float("nan")},
        {"id": "m", "filename": "m.jpg", "url": "https://e.test/m.jpg", "metadata": {"a": [1]}},
    ]
    source.write_text(json.dumps({"images": images}))
    loaded = load_manifest(source).images
    for image_id, document in loaded.stored():
        image = next(i for i in loaded if i.id == image_id)
        assert document == image.model_dump_json()


def test_a_manifest_error_deep_in_a_big_file_names_file_line_and_field(tmp_path):
    """The same one-line error as ever: the file, the line, the column."""
    source = write_csv(tmp_path / "bad.csv", 5000, bad_line=4321)
    with pytest.raises(ManifestError) as caught:
        load_manifest(source)
    assert caught.value.file == source
    assert caught.value.location == "line 4321, column 'url'"
    assert "http(s) URL" in caught.value.problem


def test_a_bad_big_manifest_stores_nothing(tmp_path, monkeypatch):
    """`process` on a manifest whose 4,321st line is wrong exits 2 and leaves no job, no item."""
    db = tmp_path / "k.db"
    monkeypatch.setenv("KULLBATCH_DB", str(db))
    source = write_csv(tmp_path / "bad.csv", 5000, bad_line=4321)
    result = CliRunner().invoke(app, ["process", str(source), "--quiet"])
    assert result.exit_code == 2
    assert "line 4321, column 'url'" in result.stderr
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM batch_items").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM batch_jobs").fetchone() == (0,)


def test_the_store_writes_an_image_list_as_it_writes_models(tmp_path):
    """A job created from an ImageList holds the same rows as one from ImageInput models."""
    photos = url_photos(7)

    async def rows(images) -> list[tuple]:
        store = await Store.open(tmp_path / f"{type(images).__name__}.db")
        try:
            assert await store.create_job(JOB, images) == 7
            job = await store.get_job(JOB.id)
            assert job is not None and job.total_images == 7
            return [(i.position, i.image) for i in await store.items(JOB.id)]
        finally:
            await store.close()

    assert asyncio.run(rows(ImageList(photos))) == asyncio.run(rows(photos))


@pytest.mark.parametrize(
    "url",
    [
        "https://e.test/a.jpg",
        'https://e.test/quote"back\\slash/ü€/\u2028.jpg',
        "data:image/jpeg;base64," + "QUJD" * 1000,
    ],
)
@pytest.mark.parametrize("system", [None, 'sÿstem "prompt"\n'])
def test_a_templated_body_sends_the_bytes_json_dumps_would(url, system):
    """Each photo's body is the full dict to read and, beside it, exactly its JSON bytes."""
    prompt = Prompt('rate ✓ this\t"photo"', system)

    def build(**knobs):
        return build_body(
            model="gpt-x", prompt=prompt, response_format=json_schema_format(strict=True), **knobs
        )

    body = BodyTemplate(build).body(url)
    assert isinstance(body, EncodedBody)
    assert body == build(image_url=url)
    assert body.encoded == encode(build(image_url=url))
    assert json.loads(body.encoded)["messages"][-1]["content"][1]["image_url"]["url"] == url


def test_a_prompt_that_quotes_the_marker_falls_back_to_encoding_each_body():
    """Should a prompt hold the template's marker, bodies are encoded whole, still right."""
    marker = "kullbatch\x00image-url\x00mark"

    def build(**knobs):
        return build_body(
            model="m", prompt=Prompt(marker), response_format={"type": "json_object"}, **knobs
        )

    body = BodyTemplate(build).body("https://e.test/x.jpg")
    assert not isinstance(body, EncodedBody)
    assert body == build(image_url="https://e.test/x.jpg")
