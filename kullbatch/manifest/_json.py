"""The JSON reader: the REST request body, or for quick scripts a bare list of images.

A document reaches `read_document` the same way from a file (read and parsed here) and from
memory (the REST API's parsed body), so both get the same checks and the same errors.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kullbatch.manifest._base import (
    Fields,
    Loader,
    Manifest,
    Spot,
    json_type,
    photos_not_bombs,
    show,
)
from kullbatch.manifest._images import ImageList
from kullbatch.manifest._parse import parse_json
from kullbatch.models import Mode, parse_duration

_IMAGE_KEYS = frozenset({"id", "filename", "url", "path", "metadata", "tags"})


def manifest_from_document(
    document: object, *, base: Path, name: str = "request body", shoot_id: str = "shoot"
) -> Manifest:
    """Check a parsed JSON manifest (a request body or a bare list) as a .json file is checked.

    Errors name `name` where a file's would name its path; relative `path`s start at `base`;
    `shoot_id` stands in for an absent ``shootId`` (a file uses its stem).
    """
    base = Path(base).resolve()
    with photos_not_bombs():
        return read_document(document, Loader(name, base), source=base, shoot_id=shoot_id)


def load_json(source: Path, loader: Loader) -> Manifest:
    """Read and parse the file, then check the document like one from memory."""
    data = parse_json(loader.read_text(source), str(loader.name))
    return read_document(data, loader, source=source.resolve(), shoot_id=source.stem)


def read_document(data: object, loader: Loader, *, source: Path, shoot_id: str) -> Manifest:
    """Accept the REST request body or, for quick scripts, a bare list of images."""
    if isinstance(data, list):
        images = loader.finish(_json_images(data, "", loader), None)
        return Manifest(source=source, shoot_id=shoot_id, images=images)
    if not isinstance(data, dict):
        kind = json_type(data)
        loader.fail("top level", f"must be an object or a list of images, got {kind}")
    if "images" not in data:
        loader.fail("images", "missing; the manifest object needs an 'images' list")
    if not isinstance(data["images"], list):
        loader.fail("images", f"must be a list, got {json_type(data['images'])}")
    mode = _mode(_json_option(data, "mode", loader), loader)
    return Manifest(
        source=source,
        shoot_id=_shoot_id(data.get("shootId"), shoot_id, loader),
        images=loader.finish(_json_images(data["images"], "images", loader), "images"),
        provider_id=_json_option(data, "providerId", loader),
        prompt=_json_option(data, "prompt", loader),
        system_prompt=_json_option(data, "systemPrompt", loader),
        mode=mode,
        budget_usd=_budget(data.get("budgetUsd"), loader),
        flex_wait=_flex_wait(data.get("flexWait"), loader),
        cache=_json_flag(data, "cache", loader),
        compare_bursts=_json_flag(data, "compareBursts", loader),
    )


def _budget(value: object, loader: Loader) -> float | None:
    """`budgetUsd`: a positive number of US dollars (as `--budget USD`); absent or null: none."""
    if value is None:
        return None
    return _positive("budgetUsd", value, loader, "a number of USD", "a positive number of USD")


def _flex_wait(value: object, loader: Loader) -> float | None:
    """`flexWait`: a duration as `--flex-wait` takes it ("90s", "10m") or a number of seconds;
    absent or null: the default."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            loader.fail("flexWait", f'must be a duration like "90s" or "10m", got {show(value)}')
    return _positive(
        "flexWait", value, loader, 'a duration like "10m" or seconds', "a positive duration"
    )


def _positive(field: str, value: object, loader: Loader, kind: str, positive: str) -> float:
    """A JSON number above zero (and below infinity) for `field`, else a ManifestError saying
    what it must be: `kind` for a value of another type, `positive` for one out of range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        loader.fail(field, f"must be {kind}, got {json_type(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        loader.fail(field, f"must be {positive}, got {show(value)}")
    return number


def _json_flag(data: dict[str, Any], key: str, loader: Loader) -> bool | None:
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        loader.fail(key, f"must be true or false, got {json_type(value)}")
    return value


def _shoot_id(value: object, default: str, loader: Loader) -> str:
    """Absent means the default (a file's stem, so `wedding.json` is the shoot `wedding`)."""
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        loader.fail("shootId", f"must be a non-empty string, got {show(value)}")
    return value


def _mode(value: str | None, loader: Loader) -> Mode | None:
    if value is None:
        return None
    try:
        return Mode(value)
    except ValueError:
        names = " or ".join(repr(mode.value) for mode in Mode)
        loader.fail("mode", f"must be {names}, got {show(value)}")


def _json_option(data: dict[str, Any], key: str, loader: Loader) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        loader.fail(key, f"must be a string, got {json_type(value)}")
    return value


def _json_images(items: list[Any], prefix: str, loader: Loader) -> ImageList:
    images = ImageList()
    for index, item in enumerate(items):
        spot = Spot(f"{prefix}[{index}]")
        if not isinstance(item, dict):
            loader.fail(spot.place, f"must be an object, got {json_type(item)}")
        loader.image(spot, _json_fields(item, spot, loader), images)
    return images


def _json_fields(item: dict[str, Any], spot: Spot, loader: Loader) -> Fields:
    """Unknown keys become metadata (a key in `metadata` wins), so no exported field is lost."""
    metadata = item.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        loader.fail(spot.at("metadata"), f"must be an object, got {json_type(metadata)}")
    extras = (
        {key: value for key, value in item.items() if key not in _IMAGE_KEYS}
        if item.keys() - _IMAGE_KEYS
        else {}
    )
    return Fields(
        id=item.get("id"),
        filename=item.get("filename"),
        url=item.get("url"),
        path=item.get("path"),
        metadata={**extras, **metadata} if extras else metadata,
        tags=_json_tags(item.get("tags"), spot, loader),
    )


def _json_tags(value: object, spot: Spot, loader: Loader) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        loader.fail(spot.at("tags"), f"must be a list of strings, got {json_type(value)}")
    for index, tag in enumerate(value):
        if not isinstance(tag, str):
            loader.fail(spot.at(f"tags[{index}]"), f"must be a string, got {json_type(tag)}")
    return list(value)
