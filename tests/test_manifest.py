"""Loading shoots from JSON, CSV and folders, and the one-line errors that point at the problem."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kullbatch import manifest as manifest_package
from kullbatch.manifest import Manifest, ManifestError, load_manifest, manifest_from_document
from kullbatch.manifest._folder import unique_id
from kullbatch.service.settings import ProcessSettings


def make_image(path: Path, fmt: str = "JPEG") -> Path:
    """Write a tiny real image so header checks see a genuine file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), (200, 100, 50)).save(path, fmt)
    return path


@pytest.fixture
def shoot(tmp_path: Path) -> Path:
    """A shoot folder with two photos in photos/, beside which manifests are written."""
    make_image(tmp_path / "photos" / "a.jpg")
    make_image(tmp_path / "photos" / "b.png", "PNG")
    return tmp_path


def write_json(folder: Path, data: Any, name: str = "shoot.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_csv(folder: Path, text: str, name: str = "shoot.csv", bom: bool = False) -> Path:
    path = folder / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def image(**fields: Any) -> dict[str, Any]:
    """A valid JSON image entry pointing at photos/a.jpg, with overrides."""
    entry: dict[str, Any] = {"id": "img1", "filename": "a.jpg", "path": "photos/a.jpg"}
    entry.update(fields)
    return {key: value for key, value in entry.items() if value is not ...}


def error_for(source: Path) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest(source)
    message = str(caught.value)
    assert "\n" not in message
    return message


def assert_names(message: str, source: Path, location: str, *words: str) -> None:
    """The message starts with file and location and mentions every given word."""
    assert message.startswith(f"{source}: {location}"), message
    for word in words:
        assert word in message, message


# Good paths ----------------------------------------------------------------------------------


def test_a_json_request_body_loads_images_and_job_options(shoot: Path) -> None:
    """The REST body's fields land on the Manifest; extra image keys become metadata."""
    source = write_json(
        shoot,
        {
            "shootId": "wedding",
            "providerId": "openai-gpt-5",
            "prompt": "Rate these",
            "systemPrompt": "You are a photographer",
            "mode": "economy",
            "images": [
                image(metadata={"iso": 100}, tags=["ceremony"], camera="X-T5"),
                {"id": "img2", "filename": "c.jpg", "url": "https://example.com/c.jpg"},
            ],
        },
    )
    manifest = load_manifest(source)
    assert isinstance(manifest, Manifest)
    assert manifest.source == source.resolve()
    assert (manifest.shoot_id, manifest.provider_id, manifest.mode) == (
        "wedding",
        "openai-gpt-5",
        "economy",
    )
    assert (manifest.prompt, manifest.system_prompt) == ("Rate these", "You are a photographer")
    first, second = manifest.images
    assert first.path == (shoot / "photos" / "a.jpg").resolve()
    assert first.metadata == {"iso": 100, "camera": "X-T5"}
    assert first.tags == ["ceremony"]
    assert (second.url, second.path) == ("https://example.com/c.jpg", None)


def test_explicit_metadata_wins_over_an_extra_key_of_the_same_name(shoot: Path) -> None:
    """When both say `camera`, the `metadata` object is the one the author meant."""
    source = write_json(shoot, [image(camera="extra", metadata={"camera": "explicit"})])
    assert load_manifest(source).images[0].metadata == {"camera": "explicit"}


def test_a_json_body_without_shoot_id_takes_the_file_stem(shoot: Path) -> None:
    """`wedding.json` without shootId is the shoot `wedding`; absent options stay None."""
    manifest = load_manifest(write_json(shoot, {"images": [image()]}, "wedding.json"))
    assert manifest.shoot_id == "wedding"
    assert (manifest.provider_id, manifest.prompt, manifest.system_prompt, manifest.mode) == (
        None,
        None,
        None,
        None,
    )


def test_a_bare_json_list_is_a_list_of_images(shoot: Path) -> None:
    """A bare list loads like the images of a body, with the stem as shoot id."""
    manifest = load_manifest(write_json(shoot, [image(), image(id="img2", path="photos/b.png")]))
    assert manifest.shoot_id == "shoot"
    assert [img.id for img in manifest.images] == ["img1", "img2"]


def test_integer_ids_and_shoot_ids_become_strings(shoot: Path) -> None:
    """Numbered exports (`"id": 7`) are accepted and stored as strings."""
    source = write_json(shoot, {"shootId": 42, "images": [image(id=7), image(id=8)]})
    manifest = load_manifest(source)
    assert manifest.shoot_id == "42"
    assert [img.id for img in manifest.images] == ["7", "8"]


def test_relative_paths_resolve_against_the_manifest_folder(
    shoot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`../photos/a.jpg` in manifests/ points at photos/, whatever the working directory."""
    (shoot / "manifests").mkdir()
    elsewhere = shoot / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    absolute = str((shoot / "photos" / "b.png").resolve())
    source = write_json(
        shoot / "manifests",
        [image(path="../photos/a.jpg"), image(id="img2", path=absolute)],
    )
    paths = [img.path for img in load_manifest(source).images]
    assert paths == [(shoot / "photos" / "a.jpg").resolve(), Path(absolute)]
    assert all(path is not None and path.is_absolute() for path in paths)


def test_null_url_or_path_counts_as_absent(shoot: Path) -> None:
    """Tools that emit `"url": null` beside a path are not punished for it."""
    manifest = load_manifest(write_json(shoot, [image(url=None, metadata=None, tags=None)]))
    assert manifest.images[0].url is None
    assert (manifest.images[0].metadata, manifest.images[0].tags) == ({}, [])


def test_a_csv_with_bom_metadata_columns_and_blank_rows_loads(shoot: Path) -> None:
    """Excel's BOM is ignored, tags split on `;`, other columns are metadata, blanks skipped."""
    source = write_csv(
        shoot,
        "ID,Filename,path,url,tags,camera,lens\r\n"
        "img1,a.jpg,photos/a.jpg,,wedding; ceremony ;,X-T5,\r\n"
        "\r\n"
        ",,,,,,\r\n"
        'img2,c.jpg,,https://example.com/c.jpg,,"Sony\nA7",35mm\r\n',
        bom=True,
    )
    manifest = load_manifest(source)
    assert manifest.shoot_id == "shoot"
    first, second = manifest.images
    assert (first.id, first.filename, first.path) == (
        "img1",
        "a.jpg",
        (shoot / "photos" / "a.jpg").resolve(),
    )
    assert first.tags == ["wedding", "ceremony"]
    assert first.metadata == {"camera": "X-T5"}
    assert (second.url, second.path, second.tags) == ("https://example.com/c.jpg", None, [])
    assert second.metadata == {"camera": "Sony\nA7", "lens": "35mm"}


def test_a_folder_loads_its_images_sorted_and_ignores_other_files(tmp_path: Path) -> None:
    """Non-images, hidden `._` files and subfolders are skipped; `.JPG` counts as an image."""
    folder = tmp_path / "Beach Day"
    make_image(folder / "b.JPG")
    make_image(folder / "a.png", "PNG")
    make_image(folder / "c.TIFF", "TIFF")
    make_image(folder / "sub" / "d.jpg")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "._b.JPG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    manifest = load_manifest(folder)
    assert manifest.shoot_id == "Beach Day"
    assert manifest.source == folder.resolve()
    assert [img.filename for img in manifest.images] == ["a.png", "b.JPG", "c.TIFF"]
    assert [img.id for img in manifest.images] == ["a", "b", "c"]
    assert manifest.images[0].path == folder.resolve() / "a.png"


def test_folder_files_sharing_a_stem_get_distinct_ids(tmp_path: Path) -> None:
    """The first by name keeps the stem, later ones use their full file name."""
    make_image(tmp_path / "a.jpg")
    make_image(tmp_path / "a.png", "PNG")
    make_image(tmp_path / "a.png.jpg")
    ids = [img.id for img in load_manifest(tmp_path).images]
    assert ids == ["a", "a.png", "a.png.jpg"]


def test_raw_files_in_a_folder_are_photos_and_raw_jpeg_pairs_are_one(tmp_path: Path) -> None:
    """IMG_1.CR3 + IMG_1.JPG is one photo (the JPEG sent, the RAW its companion); a RAW alone
    is a photo of its own; the RAW's contents are read only when it is sent."""
    make_image(tmp_path / "IMG_1.JPG")
    (tmp_path / "IMG_1.CR3").write_bytes(b"raw")
    (tmp_path / "IMG_2.NEF").write_bytes(b"raw")
    make_image(tmp_path / "IMG_3.jpg")
    images = load_manifest(tmp_path).images
    assert [(img.id, img.filename) for img in images] == [
        ("IMG_1", "IMG_1.JPG"),
        ("IMG_2", "IMG_2.NEF"),
        ("IMG_3", "IMG_3.jpg"),
    ]
    base = tmp_path.resolve()
    assert images[0].path == base / "IMG_1.JPG"
    assert images[0].companions == [base / "IMG_1.CR3"]
    assert images[1].path == base / "IMG_2.NEF" and images[1].companions == []


def test_a_stem_with_two_raws_is_not_paired(tmp_path: Path) -> None:
    """IMG_1.CR3, IMG_1.DNG and IMG_1.jpg: which RAW belongs is unclear, so all three stay."""
    make_image(tmp_path / "IMG_1.jpg")
    (tmp_path / "IMG_1.CR3").write_bytes(b"raw")
    (tmp_path / "IMG_1.DNG").write_bytes(b"raw")
    images = load_manifest(tmp_path).images
    assert [img.filename for img in images] == ["IMG_1.CR3", "IMG_1.DNG", "IMG_1.jpg"]
    assert all(img.companions == [] for img in images)


def test_a_raw_file_in_a_json_manifest_is_accepted(shoot: Path) -> None:
    """A manifest may list RAW files that Pillow cannot open; their preview is read when sent."""
    (shoot / "IMG_9.RAF").write_bytes(b"FUJIFILMCCD-RAW not for Pillow")
    source = write_json(shoot, {"images": [image(path="IMG_9.RAF", filename="IMG_9.RAF")]})
    (loaded,) = load_manifest(source).images
    assert loaded.path == (shoot / "IMG_9.RAF").resolve()


def test_heic_files_are_recognised_by_their_header(tmp_path: Path) -> None:
    """Pillow has no HEIC reader, so the ISO-BMFF brand vouches for an iPhone photo."""
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    assert [img.id for img in load_manifest(tmp_path).images] == ["IMG_0001"]


def test_ten_thousand_rows_load_without_quadratic_checks(shoot: Path) -> None:
    """A full-size shoot (the same photo 10,000 times) loads and keeps every id."""
    rows = "".join(f"img{i},a.jpg,photos/a.jpg\n" for i in range(10_000))
    manifest = load_manifest(write_csv(shoot, "id,filename,path\n" + rows))
    assert len(manifest.images) == 10_000


# Errors about the source itself ---------------------------------------------------------------


def test_a_missing_source_is_reported_as_not_found(tmp_path: Path) -> None:
    """A typo in SOURCE names the path and says it is not there."""
    source = tmp_path / "nope.json"
    assert error_for(source) == f"{source}: not found"


def test_an_unreadable_manifest_is_reported_with_the_reason(
    shoot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission problems name the file and the OS reason (faked: tests may run as root)."""
    source = write_json(shoot, [image()])

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert error_for(source) == f"{source}: cannot read: Permission denied"


def test_an_unsupported_extension_is_rejected(tmp_path: Path) -> None:
    """A .txt is neither manifest nor folder; the message lists what works."""
    source = tmp_path / "shoot.txt"
    source.write_text("a.jpg")
    assert_names(error_for(source), source, "unsupported manifest type '.txt'", ".json", ".csv")


def test_malformed_json_gives_line_and_column(tmp_path: Path) -> None:
    """A missing comma is located by the decoder's line and column."""
    source = tmp_path / "shoot.json"
    source.write_text('{\n  "images": [\n    {"id": "a" "filename": "a.jpg"}\n  ]\n}\n')
    assert_names(error_for(source), source, "line 3, column 16", "malformed JSON")


def test_a_manifest_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    """A Latin-1 CSV from an old Excel points at the line with the bad byte."""
    source = tmp_path / "shoot.csv"
    source.write_bytes(b"id,filename,path\nimg1,caf\xe9.jpg,a.jpg\n")
    assert_names(error_for(source), source, "line 2", "UTF-8")


def test_a_json_scalar_at_the_top_level_is_rejected(tmp_path: Path) -> None:
    """Only an object or a list can hold images."""
    source = write_json(tmp_path, "images")
    assert_names(error_for(source), source, "top level", "object or a list", "string")


def test_a_json_body_without_images_is_rejected(tmp_path: Path) -> None:
    """A body must carry the `images` key."""
    source = write_json(tmp_path, {"shootId": "s"})
    assert_names(error_for(source), source, "images: missing")


def test_json_images_that_are_not_a_list_are_rejected(tmp_path: Path) -> None:
    """`images` as an object is named with the type found."""
    source = write_json(tmp_path, {"images": {"id": "a"}})
    assert_names(error_for(source), source, "images: must be a list", "object")


@pytest.mark.parametrize(
    ("field", "value"),
    [("providerId", 5), ("prompt", ["x"]), ("systemPrompt", True), ("mode", 1)],
)
def test_job_options_that_are_not_strings_are_rejected(
    shoot: Path, field: str, value: object
) -> None:
    """providerId, prompt, systemPrompt and mode must be strings when present."""
    source = write_json(shoot, {"images": [image()], field: value})
    assert_names(error_for(source), source, f"{field}: must be a string")


def test_a_json_manifest_carries_the_run_options_a_cli_flag_would_set(shoot: Path) -> None:
    """budgetUsd, flexWait, cache and compareBursts (the API body's) complete the command line's
    options: a flag given wins, `cache: false` and `compareBursts: true` hold as the flags do."""
    fields = {"budgetUsd": 2.5, "flexWait": "90s", "cache": False, "compareBursts": True}
    manifest = load_manifest(write_json(shoot, {"images": [image()], **fields}))
    assert (manifest.budget_usd, manifest.cache, manifest.compare_bursts) == (2.5, False, True)
    assert manifest.flex_wait == 90.0
    merged = ProcessSettings().with_manifest(manifest)
    assert (merged.budget, merged.cache, merged.compare_bursts) == (2.5, False, True)
    assert merged.job_options().grouping.compare and not merged.job_options().cache
    assert merged.job_options().flex_wait == 90.0
    assert ProcessSettings(budget=9.0).with_manifest(manifest).budget == 9.0
    assert ProcessSettings(flex_wait=5.0).with_manifest(manifest).flex_wait == 5.0
    seconds = load_manifest(write_json(shoot, {"images": [image()], "flexWait": 600}))
    assert seconds.flex_wait == 600.0
    bare = load_manifest(write_json(shoot, {"images": [image()]}))
    assert (bare.budget_usd, bare.cache, bare.compare_bursts) == (None, None, None)
    merged = ProcessSettings(cache=False, compare_bursts=True).with_manifest(bare)
    assert (merged.budget, merged.cache, merged.compare_bursts) == (None, False, True)
    assert ProcessSettings().with_manifest(bare) == ProcessSettings()
    assert ProcessSettings().job_options().flex_wait == 900.0  # 15 minutes unless asked


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("budgetUsd", "5", "must be a number of USD, got string"),
        ("budgetUsd", 0, "must be a positive number"),
        ("budgetUsd", 10**400, "a number of 401 digits"),
        ("cache", "false", "must be true or false, got string"),
        ("flexWait", "soon", 'must be a duration like "90s" or "10m", got \'soon\''),
        ("flexWait", "-5m", 'must be a duration like "90s" or "10m"'),
        ("flexWait", 0, "must be a positive duration, got 0"),
        ("flexWait", True, 'must be a duration like "10m" or seconds, got'),
        ("flexWait", [], 'must be a duration like "10m" or seconds, got'),
        ("compareBursts", None, ""),
    ],
)
def test_run_options_of_the_wrong_type_are_named(
    shoot: Path, field: str, value: object, words: str
) -> None:
    source = write_json(shoot, {"images": [image()], field: value})
    if not words:  # null is as absent
        assert load_manifest(source).compare_bursts is None
        return
    assert_names(error_for(source), source, f"{field}: {words}")


def test_a_budget_too_large_for_a_float_is_named_from_memory_too(tmp_path: Path) -> None:
    """A parsed document handed over in memory gets the same check, never an OverflowError."""
    photo = {"id": "a", "filename": "a.jpg", "url": "https://example.com/a.jpg"}
    document = {"images": [photo], "budgetUsd": 10**400}
    with pytest.raises(ManifestError, match="budgetUsd: must be a positive number of USD"):
        manifest_from_document(document, base=tmp_path)


def test_an_unknown_mode_is_rejected(shoot: Path) -> None:
    """Only fast and economy exist."""
    source = write_json(shoot, {"images": [image()], "mode": "turbo"})
    assert_names(error_for(source), source, "mode:", "'turbo'", "fast", "economy")


def test_an_empty_shoot_id_is_rejected(shoot: Path) -> None:
    """A blank shootId would make jobs impossible to tell apart."""
    source = write_json(shoot, {"images": [image()], "shootId": " "})
    assert_names(error_for(source), source, "shootId: must be a non-empty string")


def test_an_empty_json_body_is_rejected(tmp_path: Path) -> None:
    """A job with nothing to rate is a mistake, not a no-op."""
    source = write_json(tmp_path, {"images": []})
    assert_names(error_for(source), source, "images: no images")


def test_an_empty_bare_list_is_rejected(tmp_path: Path) -> None:
    """An empty list is an empty manifest too."""
    source = write_json(tmp_path, [])
    assert_names(error_for(source), source, "no images")


# Errors in JSON image entries ----------------------------------------------------------------


def test_an_image_entry_that_is_not_an_object_is_rejected(shoot: Path) -> None:
    """A bare string where an image belongs names its index and type."""
    source = write_json(shoot, {"images": [image(), "a.jpg"]})
    assert_names(error_for(source), source, "images[1]: must be an object", "string")


def test_a_bare_list_entry_is_located_by_its_index(shoot: Path) -> None:
    """Bare lists use jq-style `[n]` locations."""
    source = write_json(shoot, [image(), 3])
    assert_names(error_for(source), source, "[1]: must be an object", "number")


def test_a_missing_id_is_rejected(shoot: Path) -> None:
    """Every image needs an id to be tracked through retries and results."""
    source = write_json(shoot, {"images": [image(), image(id=...)]})
    assert_names(error_for(source), source, "images[1].id: missing")


def test_an_empty_id_is_rejected(shoot: Path) -> None:
    """A whitespace id is as good as none."""
    source = write_json(shoot, {"images": [image(id="  ")]})
    assert_names(error_for(source), source, "images[0].id: is empty")


def test_a_boolean_id_is_rejected(shoot: Path) -> None:
    """Ints are accepted as ids, booleans are not."""
    source = write_json(shoot, {"images": [image(id=True)]})
    assert_names(error_for(source), source, "images[0].id: must be a string", "boolean")


def test_a_missing_filename_is_rejected(shoot: Path) -> None:
    """The contract requires filename; it is not guessed from the path."""
    source = write_json(shoot, {"images": [image(filename=...)]})
    assert_names(error_for(source), source, "images[0].filename: missing")


def test_a_filename_that_is_not_a_string_is_rejected(shoot: Path) -> None:
    """A numeric filename is a type error at its field."""
    source = write_json(shoot, {"images": [image(filename=12)]})
    assert_names(error_for(source), source, "images[0].filename: must be a string", "number")


def test_an_image_without_url_or_path_is_rejected(shoot: Path) -> None:
    """An image with nothing to fetch or open names both possible fields."""
    source = write_json(shoot, {"images": [image(path=...)]})
    assert_names(error_for(source), source, "images[0]: needs", "'url'", "'path'")


def test_an_image_with_both_url_and_path_is_rejected(shoot: Path) -> None:
    """One source per image, so it is clear what gets sent."""
    source = write_json(shoot, {"images": [image(url="https://example.com/a.jpg")]})
    assert_names(error_for(source), source, "images[0]: has both", "'url'", "'path'")


def test_a_duplicate_id_names_both_entries(shoot: Path) -> None:
    """The second use points back at the first, so either can be fixed."""
    source = write_json(
        shoot, {"images": [image(id="img0"), image(), image(id="img2"), image(id="img2")]}
    )
    message = error_for(source)
    assert message == f"{source}: images[3].id: 'img2' duplicates images[2]"


def test_a_non_http_url_is_rejected(shoot: Path) -> None:
    """Providers fetch only http(s); ftp:// or file:// would fail much later."""
    source = write_json(shoot, {"images": [image(path=..., url="ftp://example.com/a.jpg")]})
    assert_names(error_for(source), source, "images[0].url: must be an http(s) URL", "ftp://")


def test_a_url_without_host_is_rejected(shoot: Path) -> None:
    """`https:/a.jpg` has the right scheme but nowhere to go."""
    source = write_json(shoot, {"images": [image(path=..., url="https:/a.jpg")]})
    assert_names(error_for(source), source, "images[0].url: must be an http(s) URL")


URLS = [
    "https://example.com/a.jpg",
    "HTTP://Example.COM:8080/a b.jpg",
    "https://example.com/a.jpg?w=1&h=2#top",
    "https://example.com",
    "https://cdn.example.com/%E2%9C%93.jpg",
    "https://user:secret@example.com/a.jpg",
    "https://user@example.com/a.jpg",
    "https://@example.com/a.jpg",
    "https://example.com@evil.test/a.jpg",
    "https://[::1]:8080/a.jpg",
    "https://[::1/a.jpg",
    "https://exa\uff20mple.com/a.jpg",
    "https://例え.jp/a.jpg",
    "https://example.com\\@evil.test/a.jpg",
    " https://example.com/a.jpg",
    "https://example.com/a.jpg\t",
    "https:///a.jpg",
    "https:a.jpg",
    "ftp://example.com/a.jpg",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("url", URLS)
def test_an_ordinary_url_is_checked_as_splitting_it_would_check_it(
    tmp_path: Path, url: str
) -> None:
    """The quick check of an ordinary URL accepts exactly what `urlsplit` accepts (http or
    https, a host, no user name or password): the URL is stored as given or refused with the
    same error as before it existed."""
    from urllib.parse import urlsplit  # noqa: PLC0415 - the reference, only here

    try:
        parts = urlsplit(url)
        accepted = (
            parts.username is None
            and parts.password is None
            and parts.scheme.lower() in {"http", "https"}
            and bool(parts.netloc)
        )
    except ValueError:
        accepted = False
    document = {"images": [{"id": "a", "filename": "a.jpg", "url": url}]}
    if accepted:
        manifest = manifest_from_document(document, base=tmp_path)
        assert manifest.images[0].url == url
    else:
        with pytest.raises(ManifestError, match=r"images\[0\]\.url: must"):
            manifest_from_document(document, base=tmp_path)


def test_a_missing_local_file_is_rejected(shoot: Path) -> None:
    """The resolved path is shown, so a wrong base folder is obvious."""
    source = write_json(shoot, {"images": [image(path="photos/gone.jpg")]})
    message = error_for(source)
    assert_names(message, source, "images[0].path: file not found")
    assert str((shoot / "photos" / "gone.jpg").resolve()) in message


def test_a_local_file_that_is_not_an_image_is_rejected(shoot: Path) -> None:
    """A text file renamed .jpg is caught by its header, before any request."""
    (shoot / "photos" / "fake.jpg").write_text("hello")
    source = write_json(shoot, {"images": [image(path="photos/fake.jpg")]})
    assert_names(error_for(source), source, "images[0].path: not an image", "fake.jpg")


def test_a_local_path_that_is_a_folder_is_rejected(shoot: Path) -> None:
    """A path pointing at a folder says so."""
    source = write_json(shoot, {"images": [image(path="photos")]})
    assert_names(error_for(source), source, "images[0].path: is a folder")


def test_metadata_that_is_not_an_object_is_rejected(shoot: Path) -> None:
    """metadata must be a JSON object."""
    source = write_json(shoot, {"images": [image(metadata=["iso", 100])]})
    assert_names(error_for(source), source, "images[0].metadata: must be an object", "list")


def test_tags_that_are_not_a_list_are_rejected(shoot: Path) -> None:
    """A `"a;b"` string in JSON is a type error, not silently split."""
    source = write_json(shoot, {"images": [image(tags="a;b")]})
    assert_names(error_for(source), source, "images[0].tags: must be a list of strings")


def test_a_tag_that_is_not_a_string_is_located_by_index(shoot: Path) -> None:
    """The offending tag's index is part of the location."""
    source = write_json(shoot, {"images": [image(tags=["ok", 5])]})
    assert_names(error_for(source), source, "images[0].tags[1]: must be a string", "number")


# CSV errors -----------------------------------------------------------------------------------


def test_an_empty_csv_is_rejected(tmp_path: Path) -> None:
    """Without a header row there are no columns to read."""
    source = write_csv(tmp_path, "\n\n")
    assert_names(error_for(source), source, "is empty", "header")


def test_a_csv_without_a_header_row_names_the_missing_columns(shoot: Path) -> None:
    """Data in line 1 reads as a header that lacks the required columns."""
    source = write_csv(shoot, "img1,a.jpg,photos/a.jpg\n")
    assert_names(error_for(source), source, "line 1:", "id", "filename", "url or path", "header")


def test_a_csv_header_without_url_or_path_is_rejected(tmp_path: Path) -> None:
    """id and filename alone say nothing about where the photo is."""
    source = write_csv(tmp_path, "id,filename,camera\n")
    message = error_for(source)
    assert_names(message, source, "line 1:", "url or path")
    assert "lacks url or path;" in message


def test_a_csv_header_naming_a_column_twice_is_rejected(tmp_path: Path) -> None:
    """`ID` and `id` are the same column, so the second is ambiguous."""
    source = write_csv(tmp_path, "id,filename,path,ID\n")
    assert_names(error_for(source), source, "line 1, column 'id': appears twice")


def test_a_csv_header_only_file_is_an_empty_manifest(tmp_path: Path) -> None:
    """A header with no rows has no images."""
    source = write_csv(tmp_path, "id,filename,path\n\n")
    assert_names(error_for(source), source, "no images")


def test_a_csv_row_without_id_names_its_physical_line(shoot: Path) -> None:
    """Blank lines and a multi-line quoted cell still count as lines."""
    source = write_csv(
        shoot,
        'id,filename,path,note\nimg1,a.jpg,photos/a.jpg,"two\nlines"\n\n,b.png,photos/b.png,\n',
    )
    assert_names(error_for(source), source, "line 5, column 'id': missing")


def test_a_csv_row_without_filename_is_rejected(shoot: Path) -> None:
    """An empty filename cell is a missing filename."""
    source = write_csv(shoot, "id,filename,path\nimg1,,photos/a.jpg\n")
    assert_names(error_for(source), source, "line 2, column 'filename': missing")


def test_a_csv_row_without_url_or_path_is_rejected(shoot: Path) -> None:
    """Both cells empty means nothing to rate."""
    source = write_csv(shoot, "id,filename,url,path\nimg1,a.jpg,,\n")
    assert_names(error_for(source), source, "line 2: needs", "'url'", "'path'")


def test_a_csv_row_with_both_url_and_path_is_rejected(shoot: Path) -> None:
    """A row may fill one of the two columns, not both."""
    source = write_csv(shoot, "id,filename,url,path\nimg1,a.jpg,https://x.org/a.jpg,photos/a.jpg\n")
    assert_names(error_for(source), source, "line 2: has both", "'url'", "'path'")


def test_a_csv_duplicate_id_names_both_lines(shoot: Path) -> None:
    """The duplicate points back at the line of the first use."""
    source = write_csv(
        shoot, "id,filename,path\nimg1,a.jpg,photos/a.jpg\n\nimg1,b.png,photos/b.png\n"
    )
    assert error_for(source) == f"{source}: line 4, column 'id': 'img1' duplicates line 2"


def test_a_csv_row_with_a_bad_url_names_line_and_column(tmp_path: Path) -> None:
    """URL checks use the CSV location style."""
    source = write_csv(tmp_path, "id,filename,url\nimg1,a.jpg,file:///a.jpg\n")
    assert_names(error_for(source), source, "line 2, column 'url': must be an http(s) URL")


def test_a_csv_row_with_a_missing_file_names_line_and_column(shoot: Path) -> None:
    """Local file checks use the CSV location style."""
    source = write_csv(shoot, "id,filename,path\nimg1,a.jpg,photos/zzz.jpg\n")
    assert_names(error_for(source), source, "line 2, column 'path': file not found", "zzz.jpg")


def test_a_csv_row_with_more_cells_than_the_header_is_rejected(shoot: Path) -> None:
    """An unquoted comma in a value shifts every later column."""
    source = write_csv(shoot, "id,filename,path\nimg1,a.jpg,photos/a.jpg,extra\n")
    assert_names(error_for(source), source, "line 2: has 4 cells", "header has 3")


def test_a_csv_value_under_an_unnamed_column_is_rejected(shoot: Path) -> None:
    """Metadata needs a name; empty unnamed columns (Excel's trailing commas) are fine."""
    source = write_csv(
        shoot, "id,filename,path,\nimg1,a.jpg,photos/a.jpg,\nimg2,b.png,photos/b.png,x\n"
    )
    assert_names(error_for(source), source, "line 3, column 4: has a value but no header name")


def test_malformed_csv_quoting_is_reported_with_its_line(shoot: Path) -> None:
    """The csv module's own errors (here: a cell over its size limit) keep the file and line."""
    source = write_csv(shoot, 'id,filename,path\nimg1,a.jpg,"a' + "x" * 200_000 + '"\n')
    assert_names(error_for(source), source, "line 2: malformed CSV")


# Folder errors --------------------------------------------------------------------------------


def test_a_folder_without_images_is_rejected(tmp_path: Path) -> None:
    """A folder of sidecars only lists the extensions it looked for."""
    (tmp_path / "a.xmp").write_text("<x/>")
    assert_names(error_for(tmp_path), tmp_path, "no images in this folder", ".jpg", ".heic")


def test_a_corrupt_image_in_a_folder_names_the_file(tmp_path: Path) -> None:
    """A `.jpg` that Pillow cannot read is reported by file name, not skipped."""
    make_image(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not really a jpeg")
    assert_names(error_for(tmp_path), tmp_path, "b.jpg: not an image")


# Edge cases at the boundaries ----------------------------------------------------------------


def test_an_empty_filename_is_rejected(shoot: Path) -> None:
    """A blank filename is as good as none."""
    source = write_json(shoot, {"images": [image(filename=" ")]})
    assert_names(error_for(source), source, "images[0].filename: is empty")


def test_an_unparseable_url_is_rejected_like_any_bad_url(shoot: Path) -> None:
    """urlsplit's own ValueError (a broken IPv6 host) becomes the usual message."""
    source = write_json(shoot, {"images": [image(path=..., url="http://[::1/a.jpg")]})
    assert_names(error_for(source), source, "images[0].url: must be an http(s) URL")


def test_a_path_with_a_nul_byte_is_rejected(shoot: Path) -> None:
    """A path the OS cannot even look up is reported at its field."""
    source = write_json(shoot, {"images": [image(path="photos/a\u0000.jpg")]})
    assert_names(error_for(source), source, "images[0].path: cannot resolve")


def test_a_source_that_cannot_be_inspected_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stat refused by the OS is not mistaken for a missing file."""
    source = tmp_path / "shoot.json"
    real_stat = Path.stat

    def refuse(self: Path, **kwargs: Any) -> Any:
        if self == source:
            raise PermissionError(13, "Permission denied")
        return real_stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", refuse)
    assert error_for(source) == f"{source}: cannot read: Permission denied"


def test_a_local_image_that_cannot_be_opened_gives_the_reason(
    shoot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photo the OS refuses to open is reported with the OS reason."""
    source = write_json(shoot, {"images": [image()]})
    real_open = os.open

    def refuse(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path).name == "a.jpg":
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert_names(error_for(source), source, "images[0].path: cannot read (Permission denied)")


def test_a_huge_photo_is_an_image_not_a_decompression_bomb(
    shoot: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    """Pillow's bomb limit is for decoding; a 150 MP frame still belongs in the shoot."""
    source = write_json(shoot, [image(), image(id="img2", path="photos/b.png")])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8)  # 12 px: a warning, not yet an error
    assert len(load_manifest(source).images) == 2
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1)  # 12 px: DecompressionBombError
    assert len(load_manifest(source).images) == 2
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_folder_that_cannot_be_listed_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder the OS refuses to list names the folder and the reason."""

    def refuse(path: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("kullbatch.manifest._folder.os.scandir", refuse)
    assert error_for(tmp_path) == f"{tmp_path}: cannot read folder: Permission denied"


def test_unique_ids_fall_back_to_numbered_names_when_everything_is_taken() -> None:
    """The last resort keeps ids unique and deterministic even in contrived folders."""
    taken = {"a", "a.jpg"}
    assert unique_id("a", "a.jpg", taken) == "a.jpg~2"
    assert unique_id("a", "a.jpg", taken) == "a.jpg~3"


# Documents from memory (the REST API's parsed body) -------------------------------------------

BAD_DOCUMENTS: dict[str, Any] = {
    "scalar": "images",
    "no images": {"shootId": "s"},
    "images not a list": {"images": {"id": "a"}},
    "prompt not a string": {"images": [image()], "prompt": ["x"]},
    "unknown mode": {"images": [image()], "mode": "turbo"},
    "blank shoot id": {"images": [image()], "shootId": " "},
    "empty images": {"images": []},
    "empty bare list": [],
    "entry not an object": {"images": [image(), "a.jpg"]},
    "bare entry not an object": [image(), 3],
    "missing id": {"images": [image(), image(id=...)]},
    "duplicate id": {"images": [image(), image(path="photos/b.png")]},
    "url and path": {"images": [image(url="https://example.com/a.jpg")]},
    "ftp url": {"images": [image(path=..., url="ftp://example.com/a.jpg")]},
    "missing file": {"images": [image(path="photos/nope.jpg")]},
    "metadata not an object": {"images": [image(metadata=["iso"])]},
    "tag not a string": {"images": [image(tags=["ok", 5])]},
}


@pytest.mark.parametrize("document", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_a_document_from_memory_fails_exactly_as_the_same_json_file(
    shoot: Path, document: Any
) -> None:
    """Given the file's name and folder, memory and file give the very same one-line error."""
    source = write_json(shoot, document)
    from_file = error_for(source)
    with pytest.raises(ManifestError) as named:
        manifest_from_document(document, base=shoot, name=str(source))
    assert str(named.value) == from_file
    with pytest.raises(ManifestError) as unnamed:
        manifest_from_document(document, base=shoot)
    assert str(unnamed.value) == "request body" + from_file.removeprefix(str(source))


@pytest.mark.parametrize(
    ("document", "location"),
    [
        ({"images": [image(), image(id=...)]}, "images[1].id"),
        ([image(), image(tags=["ok", 5], id="img2")], "[1].tags[1]"),
        ({"images": [image()], "mode": "turbo"}, "mode"),
    ],
)
def test_a_document_from_memory_names_the_request_body_and_the_json_path(
    shoot: Path, document: Any, location: str
) -> None:
    """Without a name, errors start with `request body` and then the jq-style location."""
    with pytest.raises(ManifestError) as caught:
        manifest_from_document(document, base=shoot)
    assert str(caught.value).startswith(f"request body: {location}: "), str(caught.value)
    assert (caught.value.file, caught.value.location) == ("request body", location)


def test_relative_paths_from_memory_resolve_against_base_not_the_working_directory(
    shoot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`photos/a.jpg` in a posted body means base/photos/a.jpg, wherever the server runs."""
    elsewhere = shoot / "elsewhere"
    make_image(elsewhere / "photos" / "a.jpg")  # a decoy the working directory would find
    monkeypatch.chdir(elsewhere)
    manifest = manifest_from_document([image()], base=shoot)
    assert manifest.images[0].path == (shoot / "photos" / "a.jpg").resolve()
    monkeypatch.chdir(shoot)
    relative_base = manifest_from_document([image()], base=Path())
    assert relative_base.source == shoot.resolve()
    assert relative_base.images[0].path == (shoot / "photos" / "a.jpg").resolve()


def test_a_missing_file_from_memory_names_the_path_resolved_against_base(shoot: Path) -> None:
    """The error shows where the server looked, so the caller can see a wrong base."""
    with pytest.raises(ManifestError) as caught:
        manifest_from_document([image(path="photos/nope.jpg")], base=shoot)
    assert str(caught.value) == (
        f"request body: [0].path: file not found: {(shoot / 'photos' / 'nope.jpg').resolve()}"
    )


def test_a_good_document_from_memory_loads_like_the_same_json_file(shoot: Path) -> None:
    """A full request body gives the file's Manifest, except source (base) and default shoot id."""
    document = {
        "shootId": "wedding",
        "providerId": "anthropic",
        "prompt": "Rate these",
        "systemPrompt": "You are a photographer",
        "mode": "fast",
        "images": [
            image(tags=["ceremony"], camera="X-T5"),
            {"id": 2, "filename": "c.jpg", "url": "https://example.com/c.jpg"},
        ],
    }
    from_memory = manifest_from_document(document, base=shoot)
    from_file = load_manifest(write_json(shoot, document))
    assert from_memory.source == shoot.resolve()
    assert from_memory.images == from_file.images
    assert (from_memory.shoot_id, from_memory.provider_id, from_memory.mode) == (
        "wedding",
        "anthropic",
        "fast",
    )
    assert (from_memory.prompt, from_memory.system_prompt) == (
        "Rate these",
        "You are a photographer",
    )
    assert from_memory.images[0].metadata == {"camera": "X-T5"}
    assert from_memory.images[1].id == "2"


def test_a_document_from_memory_without_shoot_id_takes_the_given_default(shoot: Path) -> None:
    """A bare list or a body without shootId gets `shoot_id` (default `shoot`), not a file stem."""
    assert manifest_from_document([image()], base=shoot).shoot_id == "shoot"
    body = {"images": [image()]}
    assert manifest_from_document(body, base=shoot, shoot_id="job-7").shoot_id == "job-7"


def test_a_huge_photo_from_memory_raises_no_decompression_bomb_warning(
    shoot: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    """Memory documents get the same bomb tolerance as files."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8)  # 12 px: a warning, not yet an error
    assert len(manifest_from_document([image()], base=shoot).images) == 1
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_the_manifest_package_exports_its_public_names() -> None:
    """`kullbatch.manifest` exposes the loaders and types, nothing private."""
    assert set(manifest_package.__all__) == {
        "IMAGE_SUFFIXES",
        "MAX_DEPTH",
        "MAX_DIGITS",
        "parse_json",
        "ImageList",
        "Manifest",
        "ManifestError",
        "load_manifest",
        "manifest_from_document",
    }
    assert all(hasattr(manifest_package, name) for name in manifest_package.__all__)


def test_a_raw_and_jpeg_pair_listed_in_a_manifest_is_one_photo(tmp_path):
    """IMG_0001.CR3 beside IMG_0001.JPG is one shutter press: rated once, the RAW its companion."""
    for name in ("IMG_0001.CR3", "IMG_0002.NEF"):
        (tmp_path / name).write_bytes(b"raw")  # RAW files are not probed with Pillow
    Image.new("RGB", (8, 8)).save(tmp_path / "IMG_0001.JPG", format="JPEG")
    document = {
        "images": [
            {"id": "raw1", "filename": "IMG_0001.CR3", "path": "IMG_0001.CR3"},
            {"id": "jpg1", "filename": "IMG_0001.JPG", "path": "IMG_0001.JPG"},
            {"id": "raw2", "filename": "IMG_0002.NEF", "path": "IMG_0002.NEF"},
            {"id": "web", "filename": "x.jpg", "url": "https://example.com/IMG_0001.jpg"},
        ]
    }
    manifest = manifest_from_document(document, base=tmp_path)
    assert [image.id for image in manifest.images] == ["jpg1", "raw2", "web"]
    assert manifest.images[0].companions == [tmp_path / "IMG_0001.CR3"]
    assert manifest.images[1].companions == []
