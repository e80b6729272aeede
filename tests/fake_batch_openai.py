"""A local OpenAI Batch API: file upload, batches that move on with each poll, result files.

Real HTTP on 127.0.0.1 with the real shapes (providers.md section 1): the bearer key is
checked on every call (401 `invalid_api_key` otherwise); `POST /v1/files` takes a multipart
upload (purpose `batch`, a `.jsonl` name, at most `max_file_bytes`) and `POST /v1/batches`
JSON; the batch validates every line's envelope (custom_id, method, url, body; unique ids; one
model; at most `max_requests` lines) and ends `failed` with `errors.data` when one is wrong.
Each line's `body` is then checked as the fast fake checks a chat request (OpenAI's schema, the
image part and `response_format`, base64 of the image type it names, a model OpenAI lists): a
line that fails gets the API's per-line answer, `response.status_code` 400 (404
`model_not_found`) with an error body, in the error file. Answers are read from the photo
itself (`fake_batch_shared.photo_key`), never from the custom_id. Results come as an output
file (answers) and an error file (error answers, `batch_expired` lines), in a random order.

Knobs: `answer` (per request: the model's text or a `LineError`), `polls_per_state`,
`expire_after` (the window ends with that many requests finished), `fail_validation` (a
message), `seed` (None keeps the input order), `max_requests`, `max_file_bytes`,
`upload_delays` (the n-th upload is answered that many seconds late, on the fake's own loop
clock: a slow link), `failing_polls` (the first polls of a batch answer 500 `server_error`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from fake_batch_shared import (
    AnswerFn,
    FakeBatch,
    LineError,
    Seen,
    default_answer,
    new_id,
    recording_middleware,
    shuffled,
)

from tests.fake_compare import decode_data_uri, verdict_text
from tests.fake_openai_server import image_urls, is_comparison, model_problem, request_problem

KEY = "sk-proj-BATCHtestKEY0123456789abcdef"
ENDPOINT = "/v1/chat/completions"
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def openai_error(status: int, message: str, code: str | None = None) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return web.json_response(body, status=status)


def completion(text: str, model: str) -> dict[str, Any]:
    """A chat.completion as the Batch API returns it in `response.body`."""
    message = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876},
        "service_tier": "default",
    }


@dataclass
class Upload:
    file_id: str
    size: int
    lines: int


class FakeOpenAIBatches:
    """One fake OpenAI account: its files, its batches, and every request it received."""

    def __init__(
        self,
        *,
        api_key: str = KEY,
        answer: AnswerFn = default_answer,
        polls_per_state: int = 1,
        expire_after: int | None = None,
        fail_validation: str | None = None,
        seed: int | None = 0,
        max_requests: int = 50_000,
        max_file_bytes: int = 200 * 1024 * 1024,
        earlier_batches: int = 0,
        upload_delays: Sequence[float] = (),
        failing_polls: int = 0,
    ) -> None:
        self.api_key = api_key
        self.answer = answer
        self.polls_per_state = polls_per_state
        self.expire_after = expire_after
        self.fail_validation = fail_validation
        self.seed = seed
        self.max_requests = max_requests
        self.max_file_bytes = max_file_bytes
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.batch_files: dict[str, tuple[str | None, str | None]] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        self.inputs: dict[str, str] = {}  # batch id -> its input file id
        # the account's batches from before this test (other shoots, other tools), oldest first
        self.earlier = [_earlier_batch(n) for n in range(earlier_batches)]
        self.uploads: list[Upload] = []
        self.upload_delays = list(upload_delays)
        self.uploads_started = 0  # uploads received, answered or not yet
        self.failing_polls = failing_polls
        self.polls_failed = 0
        self.seen: list[Seen] = []
        self.comparisons: list[list[bytes]] = []  # the frames of each comparison answered
        self.base_url = ""

    def app(self) -> web.Application:
        """The fake as an application, for a server the caller starts (e.g. in a thread)."""
        app = web.Application(
            client_max_size=self.max_file_bytes + 1024 * 1024,
            middlewares=[recording_middleware(self.seen)],
        )
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._get)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)
        app.router.add_post(ENDPOINT, self._fast)  # fast mode, for photos a batch left over
        return app

    async def start(self, aiohttp_server: Any) -> FakeOpenAIBatches:
        app = self.app()
        server = await aiohttp_server(app, host="127.0.0.1")
        self.base_url = str(server.make_url("/v1"))
        return self

    @property
    def bytes_uploaded(self) -> int:
        return sum(upload.size for upload in self.uploads)

    @property
    def batch_creates(self) -> int:
        return sum(1 for s in self.seen if s.method == "POST" and s.path == "/v1/batches")

    def per_photo_requests(self) -> int:
        return sum(1 for s in self.seen if s.path.endswith("/chat/completions"))

    # --- handlers ---------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _unauthorized(self) -> web.Response:
        return openai_error(401, "Incorrect API key provided: sk-wr***ng.", "invalid_api_key")

    async def _upload(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.uploads_started += 1
        if self.uploads_started <= len(self.upload_delays):
            await asyncio.sleep(self.upload_delays[self.uploads_started - 1])
        if request.content_type != "multipart/form-data":
            return openai_error(
                400, f"Invalid Content-Type {request.content_type}: expected multipart/form-data"
            )
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch":
            return openai_error(400, "purpose: expected 'batch' for a batch input file")
        if not isinstance(upload, web.FileField) or not upload.filename.endswith(".jsonl"):
            return openai_error(400, "Invalid file format for Batch API. Must be .jsonl")
        data = upload.file.read()
        if len(data) > self.max_file_bytes:
            return openai_error(
                400,
                f"File is too large: {len(data)} bytes, over the {self.max_file_bytes}-byte limit.",
            )
        file_id = new_id("file-")
        self.files[file_id] = data
        self.uploads.append(Upload(file_id, len(data), data.count(b"\n")))
        return web.json_response(
            {
                "object": "file",
                "id": file_id,
                "purpose": "batch",
                "filename": upload.filename,
                "bytes": len(data),
                "created_at": int(time.time()),
                "status": "processed",
            }
        )

    async def _fast(self, request: web.Request) -> web.Response:
        """One chat completion, as fast mode sends it: rated from the image's own data."""
        if not self._authorized(request):
            return self._unauthorized()
        if request.content_type != "application/json":
            return openai_error(400, f"Invalid Content-Type {request.content_type}")
        try:
            body = await request.json()
        except ValueError:
            body = None
        refusal = _refusal(body)
        if refusal is not None:
            body_json = {"error": _error_json(refusal)}
            return web.json_response(body_json, status=refusal.status)
        if is_comparison(body):  # --compare-bursts: answered from the frames' pixels
            frames = [decode_data_uri(url) for url in image_urls(body)]
            self.comparisons.append(frames)
            return web.json_response(completion(verdict_text(frames), body["model"]))
        outcome = default_answer("", body)
        assert isinstance(outcome, str)
        return web.json_response(completion(outcome, body["model"]))

    async def _content(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        data = self.files.get(request.match_info["id"])
        if data is None:
            return openai_error(404, f"No such File object: {request.match_info['id']}")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        if request.content_type != "application/json":
            return openai_error(400, f"Invalid Content-Type {request.content_type}")
        payload = await request.json()
        data = self.files.get(payload.get("input_file_id", ""))
        if data is None:
            return openai_error(404, f"No such File object: {payload.get('input_file_id')}")
        if payload.get("endpoint") != ENDPOINT or payload.get("completion_window") != "24h":
            return openai_error(400, "endpoint must be /v1/chat/completions, window 24h")
        requests, problems = self._validate(data)
        if self.fail_validation is not None:
            problems.append({"code": "invalid_request", "message": self.fail_validation})
        batch = FakeBatch(
            new_id("batch_"),
            requests,
            self.answer,
            self.polls_per_state,
            self.expire_after,
            failure=json.dumps(problems) if problems else None,
        )
        batch.rejected = {
            custom_id: refusal
            for custom_id, body in requests
            if (refusal := _refusal(body)) is not None
        }
        self.batches[batch.id] = batch
        self.batch_files[batch.id] = (None, None)
        self.metadata[batch.id] = payload.get("metadata") or {}
        self.inputs[batch.id] = payload["input_file_id"]
        return web.json_response(self._batch_json(batch))

    async def _list(self, request: web.Request) -> web.Response:
        """GET /v1/batches: newest first, `limit` (1 to 100, default 20) a page, `after` an id."""
        if not self._authorized(request):
            return self._unauthorized()
        newest_first = [self._batch_json(b) for b in reversed(self.batches.values())]
        newest_first += list(reversed(self.earlier))
        ids = [batch["id"] for batch in newest_first]
        after = request.query.get("after")
        start = ids.index(after) + 1 if after in ids else 0
        limit = min(100, max(1, int(request.query.get("limit", "20"))))
        page = newest_first[start : start + limit]
        body = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(newest_first),
        }
        return web.json_response(body)

    async def _get(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return openai_error(404, f"No batch found with id '{request.match_info['id']}'.")
        if self.polls_failed < self.failing_polls:
            self.polls_failed += 1
            body = {
                "error": {
                    "message": "The server had an error while processing your request. Sorry!",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
            return web.json_response(body, status=500)
        batch.tick()
        self._settle(batch)
        return web.json_response(self._batch_json(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return openai_error(404, f"No batch found with id '{request.match_info['id']}'.")
        if batch.done:
            return openai_error(400, f"Cannot cancel a batch with status '{batch.phase}'.")
        batch.cancel()
        return web.json_response(self._batch_json(batch))

    # --- the batch ----------------------------------------------------------------------------

    def _validate(self, data: bytes) -> tuple[list[tuple[str, dict[str, Any]]], list[Any]]:
        """The lines as (custom_id, body), and what the real validation step would report."""
        requests: list[tuple[str, dict[str, Any]]] = []
        problems: list[dict[str, Any]] = []
        models: set[str] = set()
        for number, raw in enumerate(data.splitlines(), start=1):
            problem = self._line_problem(raw, {cid for cid, _ in requests})
            if problem:
                problems.append({"code": "invalid_request", "message": problem, "line": number})
                continue
            line = json.loads(raw)
            models.add(line["body"].get("model", ""))
            requests.append((line["custom_id"], line["body"]))
        if len(models) > 1:
            problems.append(
                {
                    "code": "mismatched_model",
                    "line": None,
                    "message": f"All requests must use the same model, got {sorted(models)}",
                }
            )
        if len(requests) > self.max_requests:
            problems.append(
                {
                    "code": "too_many_requests",
                    "line": None,
                    "message": f"The batch input file has {len(requests)} requests, "
                    f"over the {self.max_requests} maximum.",
                }
            )
        return requests, problems

    @staticmethod
    def _line_problem(raw: bytes, earlier: set[str]) -> str | None:
        try:
            line = json.loads(raw)
        except ValueError:
            return "This line is not parseable as valid JSON."
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            return "Missing required parameter: 'custom_id'."
        if line.get("method") != "POST" or line.get("url") != ENDPOINT:
            return (
                f"The URL provided for this request does not match the batch endpoint {ENDPOINT}."
            )
        if not isinstance(line.get("body"), dict) or "model" not in line["body"]:
            return "Missing required parameter: 'body.model'."
        if line["custom_id"] in earlier:
            return "The custom_id for this request is a duplicate of another request."
        return None

    def _settle(self, batch: FakeBatch) -> None:
        """Write the output and error files once the batch has ended with requests run."""
        if not batch.done or batch.phase == "failed" or self.batch_files[batch.id] != (None, None):
            return
        models = {cid: body.get("model", "gpt-test") for cid, body in batch.requests}
        good: list[bytes] = []
        bad: list[bytes] = []
        for custom_id, outcome in batch.outcomes.items():
            line = _result_line(custom_id, outcome, models[custom_id])
            (bad if isinstance(outcome, LineError) else good).append(line)
        if batch.phase == "expired":
            for custom_id in batch.unfinished:
                error = {"code": "batch_expired", "message": EXPIRED_MESSAGE}
                bad.append(_line(custom_id, None, error))
        output = self._store(shuffled(good, self.seed)) if good else None
        errors = self._store(shuffled(bad, self.seed)) if bad else None
        self.batch_files[batch.id] = (output, errors)

    def _store(self, data: bytes) -> str:
        file_id = new_id("file-")
        self.files[file_id] = data
        return file_id

    def _batch_json(self, batch: FakeBatch) -> dict[str, Any]:
        output, errors = self.batch_files[batch.id]
        succeeded, errored = batch.counts()
        expired = len(batch.unfinished) if batch.phase == "expired" else 0
        validated = batch.phase != "validating"
        failure = json.loads(batch.failure) if batch.phase == "failed" and batch.failure else None
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "errors": {"object": "list", "data": failure} if failure else None,
            "input_file_id": self.inputs[batch.id],
            "completion_window": "24h",
            "status": batch.phase,
            "output_file_id": output,
            "error_file_id": errors,
            "created_at": int(time.time()),
            "metadata": self.metadata.get(batch.id, {}),
            "request_counts": {
                "total": len(batch.requests) if validated else 0,
                "completed": succeeded,
                "failed": errored + expired,
            },
        }


def _earlier_batch(n: int) -> dict[str, Any]:
    """A finished batch of somebody else's file, as the list shows it."""
    return {
        "id": f"batch_earlier{n:04d}",
        "object": "batch",
        "endpoint": ENDPOINT,
        "errors": None,
        "input_file_id": f"file-earlier{n:04d}",
        "completion_window": "24h",
        "status": "completed",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": 1_700_000_000 + n,
        "metadata": {},
        "request_counts": {"total": 1, "completed": 1, "failed": 0},
    }


def _line(custom_id: str, response: dict[str, Any] | None, error: Any) -> bytes:
    record = {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }
    return json.dumps(record).encode()


def _result_line(custom_id: str, outcome: str | LineError, model: str) -> bytes:
    if isinstance(outcome, LineError):
        body = {"error": _error_json(outcome)}
        response = {"status_code": outcome.status, "request_id": new_id("req_"), "body": body}
    else:
        response = {
            "status_code": 200,
            "request_id": new_id("req_"),
            "body": completion(outcome, model),
        }
    return _line(custom_id, response, None)


def _error_json(error: LineError) -> dict[str, Any]:
    return {"message": error.message, "type": error.type, "param": None, "code": error.code}


def _refusal(body: Any) -> LineError | None:
    """The error a chat request gets from the API, in a batch line or fast mode; None if valid."""
    problem = request_problem(body)
    if problem is not None:
        return LineError(400, "invalid_request_error", None, f"fake server: {problem}")
    problem = model_problem(body["model"])
    if problem is not None:
        return LineError(404, "invalid_request_error", "model_not_found", problem)
    return None
