"""The Anthropic Message Batches client against a local fake of the API, over real HTTP.

The client is built the way economy mode builds it (`create_client` with the job's
credentials), and the create call's JSON is written the way economy mode writes it
(`BatchFile`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from fake_batch_anthropic import KEY, FakeAnthropicBatches
from fake_batch_shared import LineError, errors_for, expected_rating, photo_jpeg

from kullbatch.errors import FatalJobError, PermanentImageError, Transient
from kullbatch.models import PreparedImage, Prompt
from kullbatch.providers import PROVIDERS, anthropic
from kullbatch.providers.anthropic import API_VERSION, parse_answer
from kullbatch.providers.batch import anthropic as batch
from kullbatch.providers.batch.common import (
    BatchFile,
    BatchInfo,
    BatchLine,
    Limits,
    LineFailure,
    LineResult,
    LineSuccess,
)
from kullbatch.providers.http import HTTPAnswer

HEADERS = {"x-api-key": KEY, "anthropic-version": API_VERSION}
MODEL = "claude-haiku-4-5"


PROMPT = Prompt(text="Rate this photo.", system="You are a photo editor.")


def params(n: int = 0, model: str = MODEL) -> dict[str, Any]:
    """Photo n's request exactly as economy mode makes it: the production adapter's
    `build_request` on a real JPEG (the adapter only builds here: no session, no I/O)."""
    credentials = PROVIDERS["anthropic"].credentials({"ANTHROPIC_API_KEY": KEY})
    adapter = anthropic.create(model=model, session=None, credentials=credentials)  # type: ignore[arg-type]
    image = PreparedImage(image_id=f"img-{n:03d}", filename=f"{n}.jpg", data=photo_jpeg(n))
    return adapter.build_request(image, PROMPT).body


def lines(count: int) -> list[BatchLine]:
    return [BatchLine(f"img-{n:03d}", params(n)) for n in range(count)]


def expected(n: int) -> dict[str, Any]:
    """The rating the fake answers for photo n: read from the photo, not from its custom_id."""
    return expected_rating(photo_jpeg(n))


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def serve(aiohttp_server: Any) -> Any:
    async def start(**knobs: Any) -> FakeAnthropicBatches:
        return await FakeAnthropicBatches(**knobs).start(aiohttp_server)

    return start


def api_at(session: Any, base_url: str, key: str = KEY) -> batch.AnthropicBatchClient:
    """The client as economy mode builds it, from the environment's credentials."""
    env = {"ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": base_url}
    credentials = PROVIDERS["anthropic"].credentials(env)
    return batch.create_client(model=MODEL, session=session, credentials=credentials)


def api(session: Any, fake: FakeAnthropicBatches, key: str = KEY) -> batch.AnthropicBatchClient:
    return api_at(session, fake.base_url, key)


def written(client: batch.AnthropicBatchClient, shoot: list[BatchLine], folder: Path) -> Path:
    """The create call's JSON as economy mode writes it for `shoot`."""
    pending = BatchFile(folder / "batch.json", client.limits, client.framing)
    for line in shoot:
        pending.add(line.custom_id, line.custom_id, client.encode(line))
    path, _, _ = pending.finish()
    return path


async def create(session, fake, shoot, folder: Path, key: str = KEY) -> BatchInfo:
    client = api(session, fake, key)
    return await client.create(written(client, shoot, folder))


async def poll(session, fake, info: BatchInfo) -> list[BatchInfo]:
    seen = [info]
    for _ in range(50):
        if seen[-1].done:
            return seen
        seen.append(await api(session, fake).get(info.id))
    raise AssertionError("the batch never ended")


async def run(session, fake, shoot, folder: Path) -> tuple[BatchInfo, dict[str, LineResult]]:
    created = await create(session, fake, shoot, folder)
    final = (await poll(session, fake, created))[-1]
    return final, await api(session, fake).results(final)


async def test_a_shoot_runs_through_create_polls_and_results_matched_by_custom_id(
    session, serve, tmp_path
):
    """Each Message comes back under its own custom_id although the results are shuffled."""
    fake = await serve(polls_per_state=3)
    shoot = lines(12)
    created = await create(session, fake, shoot, tmp_path)
    polls = await poll(session, fake, created)
    assert [info.state for info in polls] == ["in_progress"] * 3 + ["completed"]
    assert polls[1].counts.processing == 12 and polls[1].counts.succeeded == 0
    final = polls[-1]
    assert (final.counts.total, final.counts.succeeded, final.counts.processing) == (12, 12, 0)
    found = await api(session, fake).results(final)
    assert set(found) == {line.custom_id for line in shoot}
    for custom_id, result in found.items():
        assert isinstance(result, LineSuccess) and result.status == 200
        assert parse_answer(result.answer()).rating.model_dump() == expected(
            int(custom_id.removeprefix("img-"))
        )
    assert fake.batch_creates == 1 and fake.per_photo_requests() == 0
    assert [s.path for s in fake.seen if s.method == "POST"] == ["/v1/messages/batches"]


async def test_results_are_empty_until_the_batch_has_ended(session, serve, tmp_path):
    """No results_url yet means nothing to fetch, not an error."""
    fake = await serve(polls_per_state=2)
    created = await create(session, fake, lines(2), tmp_path)
    assert created.results_url is None
    assert await api(session, fake).results(created) == {}


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (
            LineError(400, "invalid_request_error", None, "Could not process image"),
            PermanentImageError,
            400,
        ),
        (
            LineError(
                400, "invalid_request_error", None, "output_config: Extra inputs are not permitted"
            ),
            FatalJobError,
            400,
        ),
        (LineError(500, "api_error", None, "Internal server error"), Transient, 500),
        (LineError(529, "overloaded_error", None, "Overloaded"), Exception, 529),
    ],
)
async def test_errored_lines_keep_the_error_type_and_classify_like_fast_mode(
    session, serve, error, kind, status, tmp_path
):
    """An image error fails that photo; a request error stops the job; server errors retry."""
    fake = await serve(answer=errors_for({"img-001"}, error))
    info, found = await run(session, fake, lines(3), tmp_path)
    assert info.state == "completed"
    assert (info.counts.succeeded, info.counts.failed) == (2, 1)
    failure = found["img-001"]
    assert isinstance(failure, LineFailure)
    assert (failure.kind, failure.error_type, failure.status) == ("errored", error.type, status)
    assert failure.message == f"{error.type}: {error.message}"
    assert isinstance(api(session, fake).classify(failure), kind)


async def test_an_expired_batch_keeps_the_finished_answers_and_marks_the_rest_expired(
    session, serve, tmp_path
):
    """Anthropic ends the batch with `expired` results; the state is completed, counts say so."""
    fake = await serve(polls_per_state=2, expire_after=2)
    info, found = await run(session, fake, lines(5), tmp_path)
    assert info.state == "completed"
    assert (info.counts.succeeded, info.counts.expired) == (2, 3)
    expired = [r for r in found.values() if isinstance(r, LineFailure)]
    assert len(expired) == 3 and {r.kind for r in expired} == {"expired"}
    assert all(r.answer() is None for r in expired)
    assert isinstance(api(session, fake).classify(expired[0]), Transient)


async def test_cancel_goes_through_canceling_to_cancelled_and_keeps_finished_answers(
    session, serve, tmp_path
):
    """Requests finished before the cancel are returned; the others come back `canceled`."""
    fake = await serve(polls_per_state=2)
    created = await create(session, fake, lines(4), tmp_path)
    half = await api(session, fake).get(created.id)
    assert half.state == "in_progress"
    cancelling = await api(session, fake).cancel(created.id)
    assert cancelling.state == "cancelling"
    final = (await poll(session, fake, cancelling))[-1]
    assert final.state == "cancelled"
    assert (final.counts.succeeded, final.counts.cancelled) == (2, 2)
    found = await api(session, fake).results(final)
    assert sorted(k for k, r in found.items() if isinstance(r, LineSuccess)) == [
        "img-000",
        "img-001",
    ]
    assert {r.kind for r in found.values() if isinstance(r, LineFailure)} == {"cancelled"}


async def test_cancelling_a_batch_that_already_ended_returns_it_as_it_is(session, serve, tmp_path):
    """Nothing is left to stop; the batch's final state comes back."""
    fake = await serve()
    info, _ = await run(session, fake, lines(2), tmp_path)
    assert (await api(session, fake).cancel(info.id)).state == "completed"


async def test_a_wrong_key_is_fatal_and_names_the_variable_without_the_key(
    session, serve, tmp_path
):
    """A 401 stops the job and tells the user which environment variable to fix."""
    fake = await serve()
    with pytest.raises(FatalJobError) as caught:
        await create(session, fake, lines(1), tmp_path, key="sk-ant-wrong-key-0000")
    assert caught.value.message.startswith(
        "anthropic HTTP 401 authentication_error: invalid x-api-key (request req_011C"
    )
    assert caught.value.message.endswith(") [check ANTHROPIC_API_KEY]")
    assert "sk-ant-wrong-key-0000" not in caught.value.message


async def test_a_refused_create_is_fatal_even_when_it_mentions_an_image(session, serve, tmp_path):
    """A 400 on the create call is about the batch, never about one photo."""
    fake = await serve()
    with pytest.raises(FatalJobError) as caught:
        await create(session, fake, [BatchLine("has space", params())], tmp_path)
    assert "requests.0.custom_id: String should match pattern" in caught.value.message
    envelope = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "requests.0.params.messages.0.content.0.image.source: Field required",
        },
    }
    with aioresponses() as mocked:
        mocked.post(
            "https://api.anthropic.example/v1/messages/batches",
            status=400,
            body=json.dumps(envelope),
        )
        client = api_at(session, "https://api.anthropic.example")
        path = written(client, lines(1), tmp_path)
        with pytest.raises(
            FatalJobError, match=r"image.source: Field required.*itself was refused"
        ):
            await client.create(path)


async def test_an_unknown_batch_is_fatal(session, serve):
    """Polling a batch the workspace does not have cannot succeed later."""
    fake = await serve()
    with pytest.raises(FatalJobError, match="not_found_error"):
        await api(session, fake).get("msgbatch_nope")


async def test_a_results_url_on_another_host_is_not_followed_with_the_key(session, serve, tmp_path):
    """The key only goes to the configured API host; the results are fetched from there."""
    fake = await serve()
    info, _ = await run(session, fake, lines(2), tmp_path)
    elsewhere = BatchInfo(
        info.id, info.state, info.counts, results_url="http://198.51.100.7/steal/results"
    )
    found = await api(session, fake).results(elsewhere)
    assert sorted(found) == ["img-000", "img-001"]


async def test_batches_made_since_a_moment_are_found_by_request_count_newest_first(
    session, serve, monkeypatch, tmp_path
):
    """Batches of the size made since the moment, newest first, paged; cancelled ones left out."""
    fake = await serve()
    older = await create(session, fake, lines(4), tmp_path)
    since = datetime.now(UTC)
    made = [await create(session, fake, lines(count), tmp_path) for count in (4, 3, 4, 4)]
    await api(session, fake).cancel(made[3].id)
    monkeypatch.setattr(batch, "LIST_PAGE_SIZE", 2)  # several pages
    found = await api(session, fake).find_made(4, since)
    later = await api(session, fake).find_made(4, datetime.now(UTC))
    assert [info.id for info in found] == [made[2].id, made[0].id]
    assert older.id not in {info.id for info in found} and later == []
    assert found[0].counts.total == 4 and found[0].state == "in_progress"
    pages = [s for s in fake.seen if s.method == "GET" and s.path == batch.PATH]
    assert len(pages) == 3 + 1  # the third page reaches the older batch: the search stops


async def test_the_search_for_a_lost_batch_stops_after_the_newest_pages(
    session, serve, monkeypatch, tmp_path
):
    """Only the newest `LIST_PAGES` pages are read, however many batches the workspace has."""
    fake = await serve()
    since = datetime.now(UTC)
    await create(session, fake, lines(2), tmp_path)
    for _ in range(3):
        await create(session, fake, lines(1), tmp_path)
    monkeypatch.setattr(batch, "LIST_PAGE_SIZE", 1)
    monkeypatch.setattr(batch, "LIST_PAGES", 3)
    assert await api(session, fake).find_made(2, since) == []
    assert await api(session, fake).find_made(1, since) != []


async def test_the_list_of_batches_refuses_a_page_size_the_api_refuses(session, serve):
    """The fake is as strict as the API: `limit` runs from 1 to 1000."""
    fake = await serve()
    for limit in ("0", "1001"):
        async with session.get(
            f"{fake.base_url}{batch.PATH}?limit={limit}", headers=HEADERS
        ) as answer:
            assert answer.status == 400
            assert (await answer.json())["error"]["type"] == "invalid_request_error"


def test_the_batch_file_measures_the_exact_json_of_the_create_call(tmp_path):
    """The byte limit counts the envelope and the commas, as the API does."""
    client = api_at(None, "https://api.anthropic.example")
    shoot = lines(5)
    one = len(client.encode(shoot[0]))
    envelope = len(b'{"requests":[]}')
    alone, two = envelope + one, envelope + 2 * one + 1  # a comma between two requests
    too_small = BatchFile(tmp_path / "small.json", Limits(4, alone - 1), client.framing)
    assert not too_small.holds(one)  # that photo fails alone; the others are batched
    pending = BatchFile(tmp_path / "batch.json", Limits(4, two), client.framing)
    assert pending.holds(one)
    pending.add("a", "a", client.encode(shoot[0]))
    assert pending.fits(one)  # two requests: exactly the limit
    pending.add("b", "b", client.encode(shoot[1]))
    assert not pending.fits(one)
    path, ids, size = pending.finish()
    assert size == two == path.stat().st_size and ids == {"a": "a", "b": "b"}
    assert json.loads(path.read_bytes()) == {
        "requests": [{"custom_id": x.custom_id, "params": x.body} for x in shoot[:2]]
    }
    by_count = BatchFile(tmp_path / "count.json", Limits(4, 10 * two), client.framing)
    for line in shoot[:4]:
        assert by_count.fits(one)
        by_count.add(line.custom_id, line.custom_id, client.encode(line))
    assert not by_count.fits(one)
    by_count.close()


async def test_the_measured_size_is_the_size_the_server_receives(session, serve, tmp_path):
    """What the batch file counts is byte for byte what the create request carries."""
    fake = await serve()
    client = api(session, fake)
    pending = BatchFile(tmp_path / "batch.json", client.limits, client.framing)
    for line in lines(3):
        pending.add(line.custom_id, line.custom_id, client.encode(line))
    path, _, size = pending.finish()
    await client.create(path)
    assert fake.created_bytes == [size]


def batch_answer(**fields: Any) -> HTTPAnswer:
    body = {"id": "msgbatch_1", "type": "message_batch", "results_url": None} | fields
    return HTTPAnswer(200, {}, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("status", "counts", "cancel_initiated_at", "state"),
    [
        ("in_progress", {"processing": 3}, None, "in_progress"),
        ("canceling", {"processing": 3}, "2026-08-01T00:00:00Z", "cancelling"),
        ("ended", {"succeeded": 2, "errored": 1}, None, "completed"),
        ("ended", {"succeeded": 1, "expired": 2}, None, "completed"),
        ("ended", {"canceled": 3}, None, "cancelled"),
        ("ended", {"succeeded": 1, "canceled": 2}, "2026-08-01T00:00:00Z", "cancelled"),
        ("ended", {"succeeded": 3}, "2026-08-01T00:00:00Z", "completed"),
    ],
)
def test_processing_status_maps_onto_the_neutral_states(status, counts, cancel_initiated_at, state):
    """`ended` is cancelled when a cancel dropped requests, else completed; expiry is a count."""
    answer = batch_answer(
        processing_status=status, request_counts=counts, cancel_initiated_at=cancel_initiated_at
    )
    assert batch._info(answer).state == state


def test_an_answer_that_is_not_a_batch_is_transient():
    """A proxy's page instead of a batch is worth another poll."""
    with pytest.raises(Transient, match="not what the API sends"):
        batch._info(HTTPAnswer(200, {}, b"<html>502</html>"))


def test_result_lines_that_are_damaged_are_skipped_and_a_bare_error_is_understood():
    """A line without a custom_id belongs to no photo; an error without envelope still parses."""
    data = b"\n".join(
        [
            b"not json",
            json.dumps(
                {
                    "custom_id": "a",
                    "result": {
                        "type": "errored",
                        "error": {"type": "invalid_request_error", "message": "bad image"},
                    },
                }
            ).encode(),
        ]
    )
    found = batch._lines(data, "msgbatch_1")
    failure = found["a"]
    assert isinstance(failure, LineFailure)
    assert (failure.status, failure.error_type) == (400, "invalid_request_error")


async def test_a_cancel_refused_because_the_batch_ended_returns_the_ended_batch(session):
    """A batch that ended between the last poll and the cancel is simply returned."""
    base = "https://api.anthropic.example"
    ended = {
        "id": "msgbatch_1",
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {"succeeded": 2},
        "results_url": f"{base}/v1/messages/batches/msgbatch_1/results",
    }
    refusal = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Batch has ended"},
    }
    with aioresponses() as mocked:
        mocked.post(
            f"{base}/v1/messages/batches/msgbatch_1/cancel", status=400, body=json.dumps(refusal)
        )
        mocked.get(f"{base}/v1/messages/batches/msgbatch_1", status=200, body=json.dumps(ended))
        info = await api_at(session, base).cancel("msgbatch_1")
    assert (info.state, info.counts.succeeded) == ("completed", 2)
