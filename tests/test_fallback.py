"""Fallback in the engine: photos move to the next provider, and a provider that is down stays down."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from pathlib import Path

import pytest

from kullbatch.errors import (
    ContentBlocked,
    FatalJobError,
    PermanentImageError,
    RateLimited,
    Refused,
    Transient,
)
from kullbatch.models import (
    EventKind,
    ImageInput,
    ItemState,
    JobOptions,
    JobState,
    Mode,
    ProgressEvent,
    Prompt,
)
from kullbatch.run.engine import BatchProcessor, EngineOptions
from kullbatch.run.ratelimit import Gate
from kullbatch.run.retry import quiet_stamina
from kullbatch.store.database import Store
from kullbatch.store.rows import NewJob
from tests.fakes import ScriptedProvider, rating_for
from tests.vtime import run_virtual

quiet_stamina()
OPTIONS = EngineOptions(heartbeat_interval=3600, cancel_poll_interval=600, fallback_after=600)


def images(n: int) -> list[ImageInput]:
    return [
        ImageInput(id=f"img{i}", filename=f"p{i}.jpg", url=f"https://example.test/p{i}.jpg")
        for i in range(n)
    ]


async def run(db: Path, chain: list[ScriptedProvider], inputs, options=OPTIONS, shared=None):
    """One job through `chain` (the first is the job's own provider); what the store holds."""
    store = await Store.open(db)
    job = NewJob(
        "batch_1_aaaaaa",
        "me",
        "shoot",
        "fake",
        "fake-1",
        Mode.FAST,
        "rate",
        None,
        "x",
        JobOptions(),
    )
    await store.create_job(job, inputs)
    assert await store.claim(await store.get_job(job.id))
    store.start_writer()
    events: list[ProgressEvent] = []
    gates = shared or [None] * len(chain)
    processor = BatchProcessor(
        job_id=job.id,
        provider=chain[0],
        prompt=Prompt("rate"),
        store=store,
        sink=store,
        options=options,
        subscribers=[events.append],
        rng=random.Random(3),
        gate=gates[0],
        fallbacks=list(zip(chain[1:], gates[1:], strict=True)),
    )
    outcome = await processor.run(inputs, total=len(inputs))
    await store.finish_job(job.id, outcome.state, outcome.error)
    items = await store.items(job.id)
    await store.close()
    return outcome, items, events


def test_a_photo_still_failing_after_the_fallback_window_goes_to_the_next_provider(tmp_path):
    """503s for ten minutes on the first provider, then the second rates it; the rest stay."""
    first = ScriptedProvider(name="openai", model="gpt-a", script={"img1": [Transient("503")] * 99})
    second = ScriptedProvider(name="anthropic", model="claude-b")

    outcome, items, _ = run_virtual(run(tmp_path / "k.db", [first, second], images(3)))

    assert outcome.state is JobState.COMPLETED and outcome.rated == 3
    by_id = {item.image.id: item for item in items}
    assert (by_id["img1"].provider, by_id["img1"].model) == ("anthropic", "claude-b")
    assert by_id["img1"].rating == rating_for("img1") and by_id["img1"].attempts > 2
    assert {by_id["img0"].provider, by_id["img2"].provider} == {"openai"}
    first_tries = [t for i, t in first.calls if i == "img1"]
    assert 590 <= first_tries[-1] - first_tries[0] <= 600  # its window: --fallback-after
    assert second.attempts == {"img1": 1}


def test_a_refusal_moves_the_photo_at_once(tmp_path):
    """A refusal is this model's verdict: no retrying it, the next provider gets the photo."""
    first = ScriptedProvider(name="openai", script={"img0": [Refused("refused")]})
    second = ScriptedProvider(name="grok")

    outcome, items, _ = run_virtual(run(tmp_path / "k.db", [first, second], images(2)))

    assert outcome.rated == 2 and first.attempts["img0"] == 1 and second.attempts == {"img0": 1}
    assert items[0].provider == "grok" and items[1].provider == "openai"


def test_a_content_block_moves_the_photo_but_a_bad_image_fails_it(tmp_path):
    """A policy block may not be shared; an image no one can read fails without moving."""
    first = ScriptedProvider(
        script={"img0": [ContentBlocked("blocked")], "img1": [PermanentImageError("corrupt")]}
    )
    second = ScriptedProvider(name="second")

    outcome, items, _ = run_virtual(run(tmp_path / "k.db", [first, second], images(2)))

    assert outcome.rated == 1 and outcome.failed == 1
    assert items[0].provider == "second" and items[1].state is ItemState.FAILED
    assert "img1" not in second.attempts


def test_a_fatal_error_hands_the_rest_of_the_job_to_the_next_provider_and_says_so(tmp_path):
    """A 401 on the first provider: every photo, the probe included, is rated by the second."""
    inputs = images(5)
    bad_key = FatalJobError("openai HTTP 401: Incorrect API key [check OPENAI_API_KEY]")
    first = ScriptedProvider(name="openai", script={i.id: [bad_key] for i in inputs})
    second = ScriptedProvider(name="anthropic", model="claude-b")

    outcome, items, events = run_virtual(run(tmp_path / "k.db", [first, second], inputs))

    assert outcome.state is JobState.COMPLETED and outcome.rated == 5
    assert {item.provider for item in items} == {"anthropic"}
    assert sum(first.attempts.values()) == 1  # the probe only: the rest never went to it
    notes = [e.note for e in events if e.kind is EventKind.NOTE]
    assert len(notes) == 1 and "OPENAI_API_KEY" in notes[0] and "anthropic" in notes[0]


def test_the_last_provider_fatal_stops_the_job_as_without_fallback(tmp_path):
    """When no provider is left, a fatal error fails the job with the last one's message."""
    inputs = images(3)
    first = ScriptedProvider(script={i.id: [FatalJobError("first down")] for i in inputs})
    second = ScriptedProvider(script={i.id: [FatalJobError("second down")] for i in inputs})

    outcome, _, _ = run_virtual(run(tmp_path / "k.db", [first, second], inputs))

    assert outcome.state is JobState.FAILED and outcome.error == "second down"


def test_a_429_from_one_provider_never_holds_the_other(tmp_path):
    """Each provider has its own gate: a hint from the first holds only the first's sends."""
    first = ScriptedProvider(
        name="openai",
        script={"img1": [RateLimited("429", retry_after=30)], "img2": [Refused("no")]},
    )
    second = ScriptedProvider(name="anthropic")

    async def main():
        clock = asyncio.get_running_loop().time
        start = clock()
        gates = [Gate(clock), Gate(clock)]
        result = await run(tmp_path / "k.db", [first, second], images(3), shared=gates)
        return result, start

    (outcome, items, _), start = run_virtual(main())
    assert outcome.rated == 3 and items[2].provider == "anthropic"
    held_retry = [t for i, t in first.calls if i == "img1"][1]
    moved = next(t for i, t in second.calls if i == "img2")
    assert held_retry - start >= 30 and moved - start < 1


def test_a_long_hint_never_keeps_a_photo_from_the_fallback_past_fallback_after(tmp_path):
    """retry-after 60 with --fallback-after 5s: the photo moves to the next provider at 5 s."""
    first = ScriptedProvider(
        name="openai", script={"img0": [RateLimited("429", retry_after=60)] * 10}
    )
    second = ScriptedProvider(name="anthropic")
    options = EngineOptions(heartbeat_interval=3600, cancel_poll_interval=600, fallback_after=5)

    async def main():
        start = asyncio.get_running_loop().time()
        return start, await run(tmp_path / "k.db", [first, second], images(1), options)

    start, (outcome, items, _) = run_virtual(main())
    assert outcome.rated == 1 and items[0].provider == "anthropic"
    assert [t - start for _, t in first.calls] == [0, pytest.approx(5, abs=0.01)]
    assert second.calls[0][1] - start == pytest.approx(5, abs=0.01)


def test_a_photo_moving_to_the_fallback_is_not_logged_as_failed(tmp_path, caplog):
    """The admin log says the photos move on (retried out, or blocked), not that they failed."""
    script = {"img0": [ContentBlocked("blocked")], "img1": [Transient("HTTP 503")] * 99}
    first = ScriptedProvider(name="openai", script=script)
    second = ScriptedProvider(name="anthropic")
    options = EngineOptions(heartbeat_interval=3600, cancel_poll_interval=600, fallback_after=60)

    with caplog.at_level(logging.INFO, logger="kullbatch.admin"):
        outcome, _, _ = run_virtual(run(tmp_path / "k.db", [first, second], images(2), options))

    assert outcome.rated == 2 and outcome.failed == 0
    lines = [record.getMessage() for record in caplog.records]
    assert [line for line in lines if re.search(r"Image img\d failed", line)] == []
    assert "[BatchProcessor] Image img0 moves from openai to anthropic: blocked" in lines
    assert "[BatchProcessor] Image img1 moves from openai to anthropic: HTTP 503" in lines


def test_a_photo_the_last_provider_gives_up_on_is_logged_as_failed(tmp_path, caplog):
    """With no provider left to try, the last one's verdict is logged as the photo's failure."""
    first = ScriptedProvider(name="openai", script={"img0": [Transient("HTTP 503")] * 99})
    second = ScriptedProvider(name="anthropic", script={"img0": [Transient("HTTP 502")] * 99})
    options = EngineOptions(
        heartbeat_interval=3600, cancel_poll_interval=600, fallback_after=10, max_retry_time=20
    )

    with caplog.at_level(logging.INFO, logger="kullbatch.admin"):
        outcome, _, _ = run_virtual(run(tmp_path / "k.db", [first, second], images(1), options))

    assert outcome.failed == 1
    failures = [r.getMessage() for r in caplog.records if "failed permanently" in r.getMessage()]
    assert len(failures) == 1 and failures[0].endswith(": HTTP 502")
