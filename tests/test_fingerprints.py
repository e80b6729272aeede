"""Fingerprints for burst grouping are taken while each photo is prepared for sending, stored
with its rating, and spare grouping a second decode; photos rated without one are hashed from
their files."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kullbatch.cli.app import app
from kullbatch.media import bursts
from kullbatch.media.images import encode_file, fingerprint_file
from kullbatch.models import DEFAULT_DISTANCE, DEFAULT_MAX_EDGE, GroupingOptions, ItemRecord
from kullbatch.service.culling import find_bursts
from kullbatch.store.database import Store
from tests.burst_shoot import SHOOT, make_shoot

runner = CliRunner()


def process(tmp_path: Path, *extra: str) -> list[ItemRecord]:
    manifest = make_shoot(tmp_path / "shoot", SHOOT)
    db = tmp_path / "k.db"
    result = runner.invoke(
        app, ["process", str(manifest), "--db", str(db), "--quiet", *extra], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr

    async def items() -> list[ItemRecord]:
        store = await Store.open(db)
        try:
            return await store.items(result.stdout.strip())
        finally:
            await store.close()

    return asyncio.run(items())


def groups(found: list[bursts.Burst]) -> list[tuple[str, tuple[str, ...], str]]:
    return [(burst.group, burst.keys, burst.best) for burst in found]


def test_each_rated_photo_keeps_the_fingerprint_of_the_image_that_was_sent(tmp_path: Path) -> None:
    """The stored hash is the prepared image's; the capture time is the EXIF one to the
    hundredth, and None for the photos without EXIF."""
    items = process(tmp_path)
    for item in items:
        assert item.image.path is not None
        _, expected = encode_file(item.image.path, DEFAULT_MAX_EDGE, fingerprint=True)
        assert item.fingerprint == expected
    captured = {item.image.id: item.fingerprint.captured for item in items if item.fingerprint}
    assert captured["h2"] - captured["h1"] == pytest.approx(0.3)
    assert captured["p1"] is None and captured["p2"] is None


def test_grouping_reads_no_photo_when_every_fingerprint_is_stored(tmp_path: Path) -> None:
    """With the photos gone from disk, the stored fingerprints still give the run's groups."""
    items = process(tmp_path)
    before = [(i.image.id, i.group, i.best_in_group) for i in items if i.group]
    for item in items:
        assert item.image.path is not None
        item.image.path.unlink()
    found = find_bursts(items, GroupingOptions())
    after = sorted((key, b.group, key == b.best) for b in found for key in b.keys)
    assert after == sorted(before)
    assert {b.group for b in found} == {"h1", "p1"}


def test_photos_rated_without_a_fingerprint_are_hashed_from_their_files(tmp_path: Path) -> None:
    """An economy job resumed after a crash, or a job from an older kullbatch, stores none:
    grouping decodes those photos at reduced size and finds the same bursts, each hash well
    within the threshold of the stored one."""
    items = process(tmp_path)
    bare = [replace(item, fingerprint=None) for item in items]
    assert groups(find_bursts(bare, GroupingOptions())) == groups(
        find_bursts(items, GroupingOptions())
    )
    for item in items:
        assert item.image.path is not None and item.fingerprint is not None
        again = fingerprint_file(item.image.path)
        assert again.captured == item.fingerprint.captured
        assert bursts.distance(again.phash, item.fingerprint.phash) < DEFAULT_DISTANCE


def test_a_photo_gone_before_grouping_without_a_fingerprint_is_left_out(tmp_path: Path) -> None:
    """No stored fingerprint and no file: the photo is not grouped, the others still are."""
    items = process(tmp_path)
    h2 = next(item for item in items if item.image.id == "h2")
    assert h2.image.path is not None
    h2.image.path.unlink()
    mixed = [replace(item, fingerprint=None) if item is h2 else item for item in items]
    keys = {key for burst in find_bursts(mixed, GroupingOptions()) for key in burst.keys}
    assert "h2" not in keys and {"h1", "h3", "p1", "p2"} <= keys


def test_no_groups_takes_no_fingerprint(tmp_path: Path) -> None:
    """--no-groups: nothing is hashed, nothing stored."""
    assert {item.fingerprint for item in process(tmp_path, "--no-groups")} == {None}
