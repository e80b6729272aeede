"""The OpenAI Batch API client against a local fake of the API, over real HTTP.

The client is built the way economy mode builds it (`create_client` with the job's
credentials), and files are written the way economy mode writes them (`BatchFile`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from fake_batch_openai import KEY, FakeOpenAIBatches
from fake_batch_shared import LineError, errors_for, expected_rating, photo_jpeg

from kullbatch.errors import FatalJobError, PermanentImageError, RateLimited, Transient
from kullbatch.models import PreparedImage, Prompt
from kullbatch.providers import PROVIDERS, openai
from kullbatch.providers._chat import parse_completion
from kullbatch.providers.batch import openai as batch
from kullbatch.providers.batch.common import (
    BatchFile,
    BatchInfo,
    BatchLine,
    Limits,
    LineFailure,
    LineResult,
    LineSuccess,
)

MODEL = "gpt-5.4-mini"


PROMPT = Prompt(text="Rate this photo.", system="You are a photo editor.")


def body(n: int = 0, model: str = MODEL) -> dict[str, Any]:
    """Photo n's request exactly as economy mode makes it: the production adapter's
    `build_request` on a real JPEG (the adapter only builds here: no session, no I/O)."""
    credentials = PROVIDERS["openai"].credentials({"OPENAI_API_KEY": KEY})
    adapter = openai.create(model=model, session=None, credentials=credentials)  # type: ignore[arg-type]
    image = PreparedImage(image_id=f"img-{n:03d}", filename=f"{n}.jpg", data=photo_jpeg(n))
    return adapter.build_request(image, PROMPT).body


def lines(count: int) -> list[BatchLine]:
    return [BatchLine(f"img-{n:03d}", body(n)) for n in range(count)]


def expected(n: int) -> dict[str, Any]:
    """The rating the fake answers for photo n: read from the photo, not from its custom_id."""
    return expected_rating(photo_jpeg(n))


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def serve(aiohttp_server: Any) -> Any:
    async def start(**knobs: Any) -> FakeOpenAIBatches:
        return await FakeOpenAIBatches(**knobs).start(aiohttp_server)

    return start


def api_at(session: Any, base_url: str, key: str = KEY) -> batch.OpenAIBatchClient:
    """The client as economy mode builds it, from the environment's credentials."""
    env = {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": base_url}
    credentials = PROVIDERS["openai"].credentials(env)
    return batch.create_client(model=MODEL, session=session, credentials=credentials)


def api(session: Any, fake: FakeOpenAIBatches, key: str = KEY) -> batch.OpenAIBatchClient:
    return api_at(session, fake.base_url, key)


def written(client: batch.OpenAIBatchClient, shoot: list[BatchLine], folder: Path) -> Path:
    """The batch file economy mode would write for `shoot`."""
    pending = BatchFile(folder / "batch.jsonl", client.limits, client.framing)
    for line in shoot:
        pending.add(line.custom_id, line.custom_id, client.encode(line))
    path, _, _ = pending.finish()
    return path


async def submit(session, fake, shoot, folder: Path) -> BatchInfo:
    client = api(session, fake)
    uploaded: list[str] = []

    async def on_file(file_id: str) -> None:
        uploaded.append(file_id)

    info = await client.submit_file(written(client, shoot, folder), on_file)
    assert uploaded == [info.input_file_id]  # the file's id is told before the batch exists
    return info


async def poll(session, fake, info: BatchInfo) -> list[BatchInfo]:
    """Every poll until the batch is done (the fake moves on one step per poll)."""
    seen = [info]
    for _ in range(50):
        if seen[-1].done:
            return seen
        seen.append(await api(session, fake).get(info.id))
    raise AssertionError("the batch never ended")


async def run(session, fake, shoot, folder: Path) -> tuple[BatchInfo, dict[str, LineResult]]:
    polls = await poll(session, fake, await submit(session, fake, shoot, folder))
    return polls[-1], await api(session, fake).results(polls[-1])


async def test_a_shoot_runs_through_upload_create_polls_and_results_matched_by_custom_id(
    session, serve, tmp_path
):
    """Each answer comes back under its own custom_id although the file is in random order."""
    fake = await serve(polls_per_state=2)
    shoot = lines(20)
    polls = await poll(session, fake, await submit(session, fake, shoot, tmp_path))
    states = [info.state for info in polls]
    assert states == ["validating", "validating", "in_progress", "in_progress", "finalizing",
                      "finalizing", "completed"]  # fmt: skip
    final = polls[-1]
    assert (final.counts.total, final.counts.succeeded, final.counts.failed) == (20, 20, 0)
    assert final.counts.processing == 0 and final.error is None
    assert polls[3].counts.processing == 10  # half done after the first in-progress poll
    found = await api(session, fake).results(final)
    assert set(found) == {line.custom_id for line in shoot}
    for custom_id, result in found.items():
        assert isinstance(result, LineSuccess)
        rating = parse_completion("openai", result.answer()).rating
        assert rating.model_dump() == expected(int(custom_id.removeprefix("img-")))
    order = [json.loads(raw)["custom_id"] for raw in fake.files[final.output_file_id].splitlines()]
    assert order != sorted(order)  # the fake really shuffled: matching cannot rely on order
    assert fake.metadata[final.id] == {"created_by": "kullbatch"}


async def test_a_shoot_costs_one_upload_and_one_create_and_no_per_photo_requests(
    session, serve, tmp_path
):
    """The whole shoot travels in one file; the fake counts uploads, bytes and creates."""
    fake = await serve()
    shoot = lines(30)
    await run(session, fake, shoot, tmp_path)
    assert len(fake.uploads) == 1 and fake.batch_creates == 1
    assert fake.bytes_uploaded == sum(len(api(session, fake).encode(line)) for line in shoot)
    assert fake.uploads[0].lines == 30
    assert fake.per_photo_requests() == 0


async def test_each_uploaded_line_is_a_post_to_chat_completions_with_the_fast_mode_body(
    session, serve, tmp_path
):
    """The file holds custom_id, method, url and the very body fast mode sends."""
    fake = await serve()
    shoot = lines(2)
    await submit(session, fake, shoot, tmp_path)
    [stored] = [fake.files[upload.file_id] for upload in fake.uploads]
    records = [json.loads(raw) for raw in stored.splitlines()]
    assert records == [
        {"custom_id": line.custom_id, "method": "POST", "url": "/v1/chat/completions",
         "body": line.body}
        for line in shoot
    ]  # fmt: skip


async def test_errored_lines_keep_status_and_body_and_classify_like_fast_mode(
    session, serve, tmp_path
):
    """A line the API refused for its image is a permanent image error for that photo only."""
    fake = await serve(answer=errors_for({"img-001"}))
    info, found = await run(session, fake, lines(3), tmp_path)
    assert info.state == "completed"
    assert (info.counts.succeeded, info.counts.failed) == (2, 1)
    failure = found["img-001"]
    assert isinstance(failure, LineFailure)
    assert (failure.kind, failure.status, failure.error_type) == ("errored", 400, "invalid_image")
    assert "does not represent a valid image" in failure.message
    error = api(session, fake).classify(failure)
    assert isinstance(error, PermanentImageError)
    assert isinstance(found["img-000"], LineSuccess) and isinstance(found["img-002"], LineSuccess)


async def test_an_expired_batch_returns_the_finished_answers_and_lists_the_rest_as_expired(
    session, serve, tmp_path
):
    """Requests the 24h window did not reach come back as `batch_expired`, the others answered."""
    fake = await serve(polls_per_state=2, expire_after=3)
    info, found = await run(session, fake, lines(6), tmp_path)
    assert info.state == "expired" and info.done
    assert info.output_file_id is not None and info.error_file_id is not None
    kinds = sorted(
        "ok" if isinstance(result, LineSuccess) else result.kind for result in found.values()
    )
    assert kinds == ["expired", "expired", "expired", "ok", "ok", "ok"]
    expired = next(r for r in found.values() if isinstance(r, LineFailure))
    assert expired.message.startswith("batch_expired: This request could not be executed")
    assert expired.answer() is None
    assert isinstance(api(session, fake).classify(expired), Transient)


async def test_a_completed_batch_with_every_line_errored_has_no_output_file(
    session, serve, tmp_path
):
    """All answers in the error file and no output file is a result, not a crash."""
    fake = await serve(answer=lambda custom_id, body: LineError())
    info, found = await run(session, fake, lines(4), tmp_path)
    assert info.state == "completed"
    assert info.output_file_id is None and info.error_file_id is not None
    assert len(found) == 4
    assert all(isinstance(r, LineFailure) and r.kind == "errored" for r in found.values())


@pytest.mark.parametrize(
    ("shoot", "expected"),
    [
        (
            [BatchLine("a", body()), BatchLine("a", body())],
            (
                "line 2: The custom_id for this request is a duplicate of another request. "
                "(invalid_request)"
            ),
        ),
        (
            [BatchLine("a", body()), BatchLine("b", body(model="gpt-4.1-mini"))],
            (
                "All requests must use the same model, got ['gpt-4.1-mini', 'gpt-5.4-mini'] "
                "(mismatched_model)"
            ),
        ),
    ],
)
async def test_a_batch_failed_at_validation_carries_the_providers_message(
    session, serve, shoot, expected, tmp_path
):
    """A batch refused as a whole ends `failed` with OpenAI's `errors.data` as its error."""
    fake = await serve()
    info, found = await run(session, fake, shoot, tmp_path)
    assert info.state == "failed"
    assert info.error == expected
    assert found == {}


async def test_too_many_lines_in_one_file_fail_validation(session, serve, tmp_path):
    """The per-file request limit is enforced by the fake as by the API."""
    fake = await serve(max_requests=2)
    info, _ = await run(session, fake, lines(3), tmp_path)
    assert (
        info.error == "The batch input file has 3 requests, over the 2 maximum. (too_many_requests)"
    )


async def test_a_scripted_validation_failure_is_reported(session, serve, tmp_path):
    """The fake's `fail_validation` knob fails any batch with the given message."""
    fake = await serve(fail_validation="Quota exceeded for model gpt-5.4-mini.")
    info, _ = await run(session, fake, lines(1), tmp_path)
    assert (info.state, info.error) == (
        "failed",
        "Quota exceeded for model gpt-5.4-mini. (invalid_request)",
    )


async def test_cancel_goes_through_cancelling_to_cancelled_and_keeps_finished_answers(
    session, serve, tmp_path
):
    """A cancelled batch still returns the requests that finished before the cancel."""
    fake = await serve(polls_per_state=2)
    polls = await poll(session, fake, await submit(session, fake, lines(4), tmp_path))
    assert polls[-1].state == "completed"  # the reference run: 2 polls per state
    fake = await serve(polls_per_state=2)
    info = await submit(session, fake, lines(4), tmp_path)
    for _ in range(3):  # validating, validating, in_progress (half done)
        info = await api(session, fake).get(info.id)
    assert info.state == "in_progress"
    cancelling = await api(session, fake).cancel(info.id)
    assert cancelling.state == "cancelling" and not cancelling.done
    final = (await poll(session, fake, cancelling))[-1]
    assert final.state == "cancelled"
    found = await api(session, fake).results(final)
    assert sorted(found) == ["img-000", "img-001"]
    assert all(isinstance(result, LineSuccess) for result in found.values())


async def test_cancelling_a_batch_that_already_ended_returns_it_as_it_is(session, serve, tmp_path):
    """The API refuses to cancel a finished batch; the client answers with its final state."""
    fake = await serve()
    info, _ = await run(session, fake, lines(2), tmp_path)
    again = await api(session, fake).cancel(info.id)
    assert again.state == "completed"


async def test_a_wrong_key_is_fatal_and_names_the_variable_without_the_key(
    session, serve, tmp_path
):
    """A 401 stops the job and tells the user which environment variable to fix."""
    fake = await serve(api_key="sk-the-right-one")
    wrong = api(session, fake, key="sk-wrong-key-123")
    path = written(wrong, lines(1), tmp_path)
    with pytest.raises(FatalJobError) as caught:
        await wrong.upload(path)
    assert caught.value.message == (
        "openai HTTP 401 invalid_api_key: Incorrect API key provided: sk-wr***ng. "
        "[check OPENAI_API_KEY]"
    )
    assert "sk-wrong-key-123" not in caught.value.message


async def test_an_unknown_batch_is_fatal(session, serve):
    """Polling a batch the account does not have cannot succeed later."""
    fake = await serve()
    with pytest.raises(FatalJobError, match="No batch found with id 'batch_nope'"):
        await api(session, fake).get("batch_nope")


async def test_an_upload_over_the_servers_byte_limit_is_fatal(session, serve, tmp_path):
    """A refused upload would be refused again: the job stops with the server's reason."""
    fake = await serve(max_file_bytes=100)
    client = api(session, fake)
    path = written(client, lines(3), tmp_path)
    size = path.stat().st_size
    with pytest.raises(FatalJobError, match=rf"File is too large: {size} bytes, over the 100-byte"):
        await client.upload(path)


BASE = "https://api.openai.example/v1"


async def test_a_batch_call_refused_with_words_about_images_is_fatal_not_an_image_error(session):
    """A 400 on a batch call is about the whole batch, never one photo."""
    error = {"error": {"message": "image inputs are not supported for batches", "code": None}}
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/batches", status=400, body=json.dumps(error))
        with pytest.raises(FatalJobError) as caught:
            await api_at(session, BASE).create("file-1")
    assert caught.value.message == (
        "openai HTTP 400: image inputs are not supported for batches "
        "[the batch request itself was refused]"
    )


@pytest.mark.parametrize(
    ("status", "payload", "headers", "kind", "retry_after"),
    [
        (429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
         {"retry-after": "7"}, RateLimited, 7.0),
        (429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}},
         {}, FatalJobError, None),
        (503, {"error": {"message": "The server is overloaded"}}, {}, Transient, None),
        (200, "<html>proxy</html>", {}, Transient, None),
    ],
)  # fmt: skip
async def test_batch_calls_classify_errors_like_fast_mode(
    session, status, payload, headers, kind, retry_after
):
    """429 waits (with its hint), out-of-quota stops, 5xx and garbage are worth another try."""
    with aioresponses() as mocked:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        mocked.get(f"{BASE}/batches/b1", status=status, body=body, headers=headers)
        with pytest.raises(kind) as caught:
            await api_at(session, BASE).get("b1")
    assert getattr(caught.value, "retry_after", None) == retry_after


async def test_result_lines_without_a_custom_id_are_skipped(session, serve, tmp_path):
    """A damaged line belongs to no photo: that photo has no result and is sent again later."""
    fake = await serve(seed=None)
    info, _ = await run(session, fake, lines(2), tmp_path)
    assert info.output_file_id is not None
    fake.files[info.output_file_id] += b'{"id": "batch_req_x", "response": null}\nnot json\n'
    found = await api(session, fake).results(info)
    assert sorted(found) == ["img-000", "img-001"]


async def test_a_file_filled_to_the_servers_byte_limit_is_accepted(session, serve, tmp_path):
    """What `BatchFile` counts is byte for byte what the server receives: a file filled to
    the limit it is given is never refused for its size."""
    shoot = lines(7)
    fake = await serve()
    client = api(session, fake)
    size = len(client.encode(shoot[0]))
    limit = fake.max_file_bytes = 3 * size
    pending = BatchFile(tmp_path / "batch.jsonl", Limits(50_000, limit), client.framing)
    sent = []
    for line in shoot:
        if not pending.fits(size):
            sent.append(await client.upload(pending.finish()[0]))
        pending.add(line.custom_id, line.custom_id, client.encode(line))
    sent.append(await client.upload(pending.finish()[0]))
    assert [upload.size for upload in fake.uploads] == [limit, limit, size]
    assert len(sent) == 3


async def test_a_refused_cancel_of_a_running_batch_is_raised(session):
    """Only a batch that has ended meanwhile turns a refused cancel into its final state."""
    running = {"id": "b1", "status": "in_progress", "request_counts": {"total": 2}}
    refusal = {"error": {"message": "Cannot cancel this batch right now.", "code": None}}
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/batches/b1/cancel", status=400, body=json.dumps(refusal))
        mocked.get(f"{BASE}/batches/b1", status=200, body=json.dumps(running))
        with pytest.raises(FatalJobError, match="Cannot cancel this batch right now"):
            await api_at(session, BASE).cancel("b1")


def test_a_result_line_with_neither_response_nor_error_is_an_errored_line():
    """The photo gets a clear message instead of disappearing."""
    found = batch._lines(b'{"custom_id": "a", "response": null, "error": null}\n', "file-1")
    assert found["a"] == LineFailure("a", "errored", "the line has neither a response nor an error")


def test_a_batch_cancelled_error_line_is_a_cancelled_result():
    """Should OpenAI list requests a cancel dropped, they read as cancelled, not errored."""
    raw = b'{"custom_id": "a", "response": null, "error": {"code": "batch_cancelled", "message": "Cancelled."}}\n'
    [(custom_id, result)] = batch._lines(raw, "file-1").items()
    assert (custom_id, result) == (
        "a",
        LineFailure("a", "cancelled", "batch_cancelled: Cancelled.", error_type="batch_cancelled"),
    )


async def test_the_batch_made_from_a_file_is_found_among_the_accounts_newest(
    session, serve, tmp_path
):
    """Newest first, 100 a page: ours on the first page, somebody's older one on the third;
    a file nobody made a batch of is None after the last page, without a create."""
    fake = await serve(earlier_batches=250)
    ours = await submit(session, fake, lines(3), tmp_path)
    assert ours.input_file_id is not None
    found = await api(session, fake).find_for_file(ours.input_file_id)
    assert found is not None and found.id == ours.id and found.input_file_id == ours.input_file_id
    older = await api(session, fake).find_for_file("file-earlier0003")
    assert older is not None and older.id == "batch_earlier0003"
    lists = [s for s in fake.seen if s.method == "GET" and s.path == "/v1/batches"]
    assert len(lists) == 1 + 3  # 251 batches: the third page holds the oldest
    assert await api(session, fake).find_for_file("file-none") is None
    assert fake.batch_creates == 1


async def test_the_search_for_a_files_batch_stops_after_the_newest_thousand(session, serve):
    """An account with thousands of batches: ten pages are read, then the file has none."""
    fake = await serve(earlier_batches=1_050)
    assert await api(session, fake).find_for_file("file-earlier0000") is None
    lists = [s for s in fake.seen if s.method == "GET" and s.path == "/v1/batches"]
    assert len(lists) == batch.LIST_PAGES
