"""The provider-neutral batch vocabulary: custom ids, splitting, batch info, line results."""

from __future__ import annotations

import re

import pytest

from kullbatch.providers.batch.common import (
    BatchCounts,
    BatchInfo,
    Limits,
    LineFailure,
    LineSuccess,
    custom_id_for,
    custom_id_map,
    jsonl_lines,
    split_sized,
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
    mapping = custom_id_map(AWKWARD)
    assert len(mapping) == len(AWKWARD)
    assert all(BOTH_PROVIDERS.match(custom_id) for custom_id in mapping)
    assert sorted(mapping.values()) == sorted(AWKWARD)


def test_custom_ids_are_stable_and_keep_a_readable_part():
    """The same image id always maps to the same custom_id, which still hints at the photo."""
    first = custom_id_for("Hochzeit/Kuss am Altar.CR3")
    assert first == custom_id_for("Hochzeit/Kuss am Altar.CR3")
    assert first.startswith("Hochzeit_Kuss_am_Altar_CR3-")


def test_a_duplicate_image_id_is_refused_with_both_ids_named():
    """Two photos under one id could not be told apart in the results, so the map refuses."""
    with pytest.raises(ValueError, match=r"'a b' and 'a b' map to the same batch custom_id"):
        custom_id_map(["a b", "c", "a b"])


def test_splitting_respects_the_request_count():
    """Items go in order into batches of at most max_requests."""
    split = split_sized(((n, 1) for n in range(7)), Limits(max_requests=3, max_bytes=1000))
    assert split.batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert split.too_large == []


def test_splitting_respects_the_bytes_with_overhead_and_separators():
    """A batch's size is overhead + items + separators, and never passes max_bytes."""
    limits = Limits(max_requests=100, max_bytes=25, overhead=5, separator=1)
    split = split_sized([("a", 10), ("b", 9), ("c", 10), ("d", 20)], limits)
    # a+b = 5 + 10 + 1 + 9 = 25 fits exactly; c would make 36; d alone is 25
    assert split.batches == [["a", "b"], ["c"], ["d"]]


def test_an_item_too_large_for_any_batch_is_reported_not_fatal():
    """One photo over the byte limit fails alone; the items around it are still batched."""
    split = split_sized([("a", 10), ("huge", 101), ("b", 10)], Limits(10, 100))
    assert split.batches == [["a", "b"]]
    [too_large] = split.too_large
    assert (too_large.item, too_large.size, too_large.limit) == ("huge", 101, 100)
    assert too_large.message == (
        "the batch request for this photo is 101 bytes, over the provider's 100-byte batch limit"
    )


def test_an_empty_shoot_makes_no_batches():
    """Nothing to send means no provider batch at all, not an empty one."""
    assert split_sized([], Limits(10, 100)).batches == []


def test_a_limit_of_zero_requests_is_a_programming_error():
    """A batch that can hold nothing would loop forever; it is refused at once."""
    with pytest.raises(ValueError, match="at least 1"):
        split_sized([("a", 1)], Limits(0, 100))


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
