"""The batch fakes refuse what the real APIs refuse, line by line, and rate the photo itself.

Raw HTTP against the fakes (no kullbatch client): each batch line is checked as a fast-mode
request to that provider is checked, and a line that fails comes back with the provider's
per-line error (OpenAI: the error file, `response.status_code` 400 / 404 with an error body;
Anthropic: `{"type": "errored", "error": {...}}`), while the valid lines beside it succeed.
The answer is read from the photo, so a photo under another photo's custom_id shows.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fake_batch_anthropic import KEY as ANTHROPIC_KEY
from fake_batch_anthropic import FakeAnthropicBatches
from fake_batch_openai import KEY as OPENAI_KEY
from fake_batch_openai import FakeOpenAIBatches
from fake_batch_shared import expected_rating, photo_jpeg
from PIL import Image
from test_batch_anthropic import params
from test_batch_openai import body
from test_economy import anthropic_env, economy_job, expected_ratings, openai_env, ratings

from kullbatch.models import JobState, Rating
from kullbatch.providers.batch.anthropic import AnthropicBatchClient
from kullbatch.providers.batch.openai import OpenAIBatchClient
from kullbatch.service import jobs

OPENAI_AUTH = {"Authorization": f"Bearer {OPENAI_KEY}"}
ANTHROPIC_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
NOT_BASE64 = "this is not base64!"


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


# --- what makes a line invalid, per provider --------------------------------------------------


def openai_broken(kind: str) -> dict[str, Any]:
    broken = body(1)
    if kind == "messages is a string":
        broken["messages"] = "Rate this photo."
    elif kind == "image is not base64":
        part = broken["messages"][-1]["content"][1]["image_url"]
        part["url"] = "data:image/jpeg;base64," + NOT_BASE64
    elif kind == "png sent as jpeg":
        png = base64.b64encode(_png()).decode()
        broken["messages"][-1]["content"][1]["image_url"]["url"] = "data:image/jpeg;base64," + png
    elif kind == "no response_format":
        del broken["response_format"]
    elif kind == "unknown model":
        broken["model"] = "gpt-does-not-exist"
    return broken


def anthropic_broken(kind: str) -> dict[str, Any]:
    broken = params(1)
    source = broken["messages"][0]["content"][0]["source"]
    if kind == "messages is a string":
        broken["messages"] = "Rate this photo."
    elif kind == "image is not base64":
        source["data"] = NOT_BASE64
    elif kind == "png sent as jpeg":
        source["data"] = base64.b64encode(_png()).decode()
    elif kind == "no response_format":
        del broken["output_config"]
    elif kind == "unknown model":
        broken["model"] = "gpt-5.4-mini"
    return broken


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


KINDS = [
    "messages is a string",
    "image is not base64",
    "png sent as jpeg",
    "no response_format",
    "unknown model",
]


# --- OpenAI ------------------------------------------------------------------------------------


async def openai_batch(session, fake: FakeOpenAIBatches, records: list[dict[str, Any]]):
    """Upload the lines, create the batch, poll it to its end: (batch, output, errors) lines."""
    data = b"".join(json.dumps(record).encode() + b"\n" for record in records)
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", data, filename="batch.jsonl", content_type="application/jsonl")
    async with session.post(f"{fake.base_url}/files", data=form, headers=OPENAI_AUTH) as answer:
        assert answer.status == 200, await answer.text()
        file_id = (await answer.json())["id"]
    create = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    create["completion_window"] = "24h"
    async with session.post(f"{fake.base_url}/batches", json=create, headers=OPENAI_AUTH) as answer:
        assert answer.status == 200, await answer.text()
        batch = await answer.json()
    for _ in range(20):
        async with session.get(f"{fake.base_url}/batches/{batch['id']}", headers=OPENAI_AUTH) as a:
            batch = await a.json()
        if batch["status"] in {"completed", "failed", "expired", "cancelled"}:
            break
    found: dict[str, list[dict[str, Any]]] = {}
    for name in ("output_file_id", "error_file_id"):
        found[name] = []
        if batch[name]:
            url = f"{fake.base_url}/files/{batch[name]}/content"
            async with session.get(url, headers=OPENAI_AUTH) as answer:
                found[name] = [json.loads(line) for line in (await answer.read()).splitlines()]
    return batch, found["output_file_id"], found["error_file_id"]


def openai_line(custom_id: str, request_body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": request_body}  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
async def test_an_openai_batch_line_fast_mode_would_refuse_comes_back_errored(
    aiohttp_server, session, kind
):
    """The bad line is in the error file with status 400 (404 for a model) and OpenAI's error
    body; the good line beside it succeeds with the rating of its own photo."""
    fake = await FakeOpenAIBatches().start(aiohttp_server)
    bad = openai_broken(kind)
    if kind == "unknown model":  # one model per file: the whole file names the unknown one
        good = body(0, model="gpt-does-not-exist")
        records = [openai_line("good", good), openai_line("bad", bad)]
    else:
        records = [openai_line("good", body(0)), openai_line("bad", bad)]
    batch, output, errors = await openai_batch(session, fake, records)
    assert batch["status"] == "completed"
    by_id = {line["custom_id"]: line for line in output + errors}
    wrong = by_id["bad"]["response"]
    assert wrong["status_code"] == (404 if kind == "unknown model" else 400)
    assert wrong["body"]["error"]["type"] == "invalid_request_error"
    assert wrong["body"]["error"]["message"]
    assert by_id["bad"] in errors
    if kind == "unknown model":
        assert wrong["body"]["error"]["code"] == "model_not_found"
        assert by_id["good"]["response"]["status_code"] == 404
        return
    right = by_id["good"]["response"]
    assert right["status_code"] == 200 and by_id["good"] in output
    content = right["body"]["choices"][0]["message"]["content"]
    assert json.loads(content) == expected_rating(photo_jpeg(0))
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}


async def test_the_openai_upload_must_be_multipart_and_the_create_json(aiohttp_server, session):
    """A file sent as a raw body, or a create sent as a form, is refused with 400."""
    fake = await FakeOpenAIBatches().start(aiohttp_server)
    raw = json.dumps(openai_line("a", body(0))).encode() + b"\n"
    async with session.post(f"{fake.base_url}/files", data=raw, headers=OPENAI_AUTH) as answer:
        assert answer.status == 400
        assert "multipart/form-data" in (await answer.json())["error"]["message"]
    form = {"input_file_id": "file-x", "endpoint": "/v1/chat/completions"}
    async with session.post(f"{fake.base_url}/batches", data=form, headers=OPENAI_AUTH) as answer:
        assert answer.status == 400
    assert fake.uploads == [] and fake.batches == {}


async def test_the_openai_fast_route_checks_the_request_and_rates_each_photo(
    aiohttp_server, session
):
    """Leftovers' /chat/completions: a request fast mode would be refused is refused; two
    photos get their own ratings."""
    fake = await FakeOpenAIBatches().start(aiohttp_server)
    url = f"{fake.base_url}/chat/completions"
    found = []
    for n in (0, 1):
        async with session.post(url, json=body(n), headers=OPENAI_AUTH) as answer:
            assert answer.status == 200
            found.append(json.loads((await answer.json())["choices"][0]["message"]["content"]))
    assert found == [expected_rating(photo_jpeg(0)), expected_rating(photo_jpeg(1))]
    assert found[0] != found[1]
    for kind in KINDS:
        async with session.post(url, json=openai_broken(kind), headers=OPENAI_AUTH) as answer:
            assert answer.status in {400, 404}, kind
    async with session.post(url, json=body(0)) as answer:  # no key
        assert answer.status == 401


# --- Anthropic ---------------------------------------------------------------------------------


async def anthropic_results(session, fake: FakeAnthropicBatches, requests: list[dict[str, Any]]):
    url = f"{fake.base_url}/v1/messages/batches"
    document = {"requests": requests}
    async with session.post(url, json=document, headers=ANTHROPIC_HEADERS) as answer:
        assert answer.status == 200, await answer.text()
        batch = await answer.json()
    for _ in range(20):
        async with session.get(f"{url}/{batch['id']}", headers=ANTHROPIC_HEADERS) as answer:
            batch = await answer.json()
        if batch["processing_status"] == "ended":
            break
    async with session.get(batch["results_url"], headers=ANTHROPIC_HEADERS) as answer:
        lines = [json.loads(line) for line in (await answer.read()).splitlines()]
    return batch, {line["custom_id"]: line["result"] for line in lines}


@pytest.mark.parametrize("kind", KINDS)
async def test_an_anthropic_batch_request_fast_mode_would_refuse_comes_back_errored(
    aiohttp_server, session, kind
):
    """The bad request's result is `errored` with the API's error envelope; the good one
    beside it succeeds with the rating of its own photo."""
    fake = await FakeAnthropicBatches().start(aiohttp_server)
    requests = [
        {"custom_id": "good", "params": params(0)},
        {"custom_id": "bad", "params": anthropic_broken(kind)},
    ]
    batch, results = await anthropic_results(session, fake, requests)
    assert results["bad"]["type"] == "errored"
    envelope = results["bad"]["error"]
    assert envelope["type"] == "error" and envelope["error"]["message"]
    wanted = "not_found_error" if kind == "unknown model" else "invalid_request_error"
    assert envelope["error"]["type"] == wanted
    assert results["good"]["type"] == "succeeded"
    text = results["good"]["message"]["content"][0]["text"]
    assert json.loads(text) == expected_rating(photo_jpeg(0))
    assert batch["request_counts"]["succeeded"] == 1 and batch["request_counts"]["errored"] == 1


async def test_the_anthropic_create_must_be_json(aiohttp_server, session):
    fake = await FakeAnthropicBatches().start(aiohttp_server)
    document = json.dumps({"requests": [{"custom_id": "a", "params": params(0)}]})
    headers = {**ANTHROPIC_HEADERS, "content-type": "text/plain"}
    url = f"{fake.base_url}/v1/messages/batches"
    async with session.post(url, data=document, headers=headers) as answer:
        assert answer.status == 400
        assert (await answer.json())["error"]["type"] == "invalid_request_error"
    assert fake.batches == {}


async def test_the_anthropic_fast_route_checks_the_request_and_rates_each_photo(
    aiohttp_server, session
):
    """Leftovers' /v1/messages: checked like fast mode's fake, answered per photo."""
    fake = await FakeAnthropicBatches().start(aiohttp_server)
    url = f"{fake.base_url}/v1/messages"
    found = []
    for n in (0, 1):
        async with session.post(url, json=params(n), headers=ANTHROPIC_HEADERS) as answer:
            assert answer.status == 200
            found.append(json.loads((await answer.json())["content"][0]["text"]))
    assert found == [expected_rating(photo_jpeg(0)), expected_rating(photo_jpeg(1))]
    assert found[0] != found[1]
    for kind in KINDS:
        async with session.post(url, json=anthropic_broken(kind), headers=ANTHROPIC_HEADERS) as a:
            assert a.status in {400, 404}, kind
            assert (await a.json())["type"] == "error"
    async with session.post(url, json=params(0), headers={"anthropic-version": "2023-06-01"}) as a:
        assert a.status == 401


# --- a mix-up of custom_ids shows --------------------------------------------------------------


def swapping(encode: Any, first: str, second: str) -> Any:
    """The client's `encode`, but with two photos' custom_ids swapped: the bug to catch."""
    swap = {first: second, second: first}

    def encode_swapped(self: Any, line: Any) -> bytes:
        raw = encode(self, line)
        framed = raw.endswith(b"\n")
        record = json.loads(raw)
        record["custom_id"] = swap.get(record["custom_id"], record["custom_id"])
        return json.dumps(record).encode() + (b"\n" if framed else b"")

    return encode_swapped


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_two_photos_under_each_others_custom_ids_are_caught(
    aiohttp_server, tmp_path, monkeypatch, provider
):
    """The fakes rate the photo, not the id: a batch file with img000 and img001 swapped stores
    each the other's rating, and the economy tests' expectation fails for exactly those two."""
    if provider == "openai":
        fake: Any = await FakeOpenAIBatches().start(aiohttp_server)
        env, client = openai_env(fake), OpenAIBatchClient
    else:
        fake = await FakeAnthropicBatches().start(aiohttp_server)
        env, client = anthropic_env(fake), AnthropicBatchClient
    monkeypatch.setattr(client, "encode", swapping(client.encode, "img000", "img001"))
    async with jobs.Service.open(tmp_path / "k.db", env) as service:
        job = await economy_job(service, tmp_path, 4, provider=provider)
        outcome = await service.run(job)
        _, items = await service.results(job.id)
    assert outcome.state is JobState.COMPLETED and outcome.rated == 4
    stored, wanted = ratings(items), expected_ratings(tmp_path, 4)
    assert stored != wanted  # what the economy tests assert would fail
    assert {name for name in wanted if stored[name] != wanted[name]} == {"img000", "img001"}
    assert stored["img000"] == wanted["img001"] and stored["img001"] == wanted["img000"]
    assert stored["img000"] == Rating(**expected_rating(Path(tmp_path / "IMG_0001.jpg")))
