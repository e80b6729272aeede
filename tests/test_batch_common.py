"""The provider-neutral batch vocabulary: custom ids, batch files, batch info, line results."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kullbatch.providers.batch.common import (
    BatchCounts,
    BatchFile,
    BatchInfo,
    Framing,
    Limits,
    LineFailure,
    LineSuccess,
    custom_id_for,
    jsonl_lines,
)

BOTH_PROVIDERS = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
AWKWARD = [
    "IMG 0001.jpg",
    "IMG_0001.jpg",
    "IMG_0001_jpg",
    "Hochzeit/Müller/Kuss am Altar.CR3",
    "婚礼-001",
    "📷",
    "",
    " ",
    "x" * 64,
    "x" * 65,
    "x" * 100,
    "y" * 100,
    "x" * 99 + "y",
    "a\nb",
    "a_b",
    "a b",
    "a?b",
]


def test_valid_image_ids_are_their_own_custom_ids():
    """An id both APIs accept is sent unchanged, so the provider's console shows it."""
    assert custom_id_for("img-123_A") == "img-123_A"
    assert custom_id_for("x" * 64) == "x" * 64


def test_awkward_image_ids_get_valid_unique_custom_ids():
    """Spaces, unicode, slashes, empty and 100-character ids all map to distinct valid ids."""
    custom_ids = {custom_id_for(image_id) for image_id in AWKWARD}
    assert len(custom_ids) == len(AWKWARD)
    assert all(BOTH_PROVIDERS.match(custom_id) for custom_id in custom_ids)


def test_custom_ids_are_stable_and_keep_a_readable_part():
    """The same image id always maps to the same custom_id, which still hints at the photo."""
    first = custom_id_for("Hochzeit/Kuss am Altar.CR3")
    assert first == custom_id_for("Hochzeit/Kuss am Altar.CR3")
    assert first.startswith("Hochzeit_Kuss_am_Altar_CR3-")


JSONL = Framing()
ARRAY = Framing(b"[", b",", b"]")


def filled(path: Path, limits: Limits, framing: Framing, sizes: list[int]) -> list[list[int]]:
    """Requests of `sizes` bytes packed in order, a new batch whenever the next does not fit
    (as economy mode packs them): the sizes of each batch's requests."""
    pending = BatchFile(path, limits, framing)
    batches: list[list[int]] = []
    for size in sizes:
        if not pending.fits(size):
            batches.append(list(pending.finish()[1].values()))
        pending.add(f"r{len(batches)}-{len(pending.ids)}", str(size), b"x" * size)
    batches.append(list(pending.finish()[1].values()))
    return [[int(size) for size in batch] for batch in batches]


def test_a_batch_file_respects_the_request_count(tmp_path: Path):
    """Requests go in order into batches of at most max_requests."""
    batches = filled(tmp_path / "b", Limits(max_requests=3, max_bytes=1000), JSONL, [1] * 7)
    assert batches == [[1, 1, 1], [1, 1, 1], [1]]


def test_a_batch_file_counts_its_framing_and_separators(tmp_path: Path):
    """A batch's size is prefix + requests + a separator between two + suffix, never more
    than max_bytes; what `finish` reports is what the file holds."""
    limits = Limits(max_requests=100, max_bytes=24)
    # 10 + 1 + 9 + the two brackets = 22 fits; 10 more would make 33
    assert filled(tmp_path / "b", limits, ARRAY, [10, 9, 10, 20]) == [[10, 9], [10], [20]]
    pending = BatchFile(tmp_path / "c", limits, ARRAY)
    pending.add("a", "a", b"1" * 10)
    pending.add("b", "b", b"2" * 9)
    path, ids, size = pending.finish()
    assert path.read_bytes() == b"[" + b"1" * 10 + b"," + b"2" * 9 + b"]"
    assert size == path.stat().st_size == 22 and ids == {"a": "a", "b": "b"}


def test_a_request_too_large_for_any_batch_is_told_apart(tmp_path: Path):
    """One photo over the byte limit alone fails alone; a first request is always taken."""
    pending = BatchFile(tmp_path / "b", Limits(10, 100), ARRAY)
    assert pending.holds(98) and not pending.holds(99)
    assert pending.fits(1000)  # an empty batch takes anything that `holds`


def test_an_empty_batch_file_writes_nothing(tmp_path: Path):
    """Nothing added means no file and no provider batch, not an empty one."""
    pending = BatchFile(tmp_path / "b", Limits(10, 100), JSONL)
    pending.close()
    assert pending.ids == {} and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("state", "done"),
    [
        ("validating", False),
        ("in_progress", False),
        ("finalizing", False),
        ("cancelling", False),
        ("completed", True),
        ("failed", True),
        ("expired", True),
        ("cancelled", True),
    ],
)
def test_a_batch_is_done_only_in_a_terminal_state(state, done):
    """`done` says the provider will not change the batch any more."""
    assert BatchInfo("b1", state, BatchCounts(total=3)).done is done


def test_line_results_become_http_answers_for_the_adapters_parsers():
    """A success and an errored line replay as HTTP answers; an expired line has none."""
    success = LineSuccess("a", 200, b'{"ok": true}')
    assert (success.answer().status, success.answer().json()) == (200, {"ok": True})
    errored = LineFailure("b", "errored", "bad image", 400, b'{"error": {}}', "invalid_image")
    answer = errored.answer()
    assert answer is not None
    assert (answer.status, answer.headers) == (400, {})
    assert LineFailure("c", "expired", "window ended").answer() is None


def test_jsonl_lines_skip_blank_lines_and_number_from_one():
    """Line numbers match what an editor shows, for messages about a bad line."""
    assert list(jsonl_lines(b'{"a":1}\n\n  \n{"b":2}\n')) == [(1, b'{"a":1}'), (4, b'{"b":2}')]
