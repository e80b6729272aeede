"""A local Anthropic Message Batches API: create, batches moved on by polls, JSONL results.

Real HTTP on 127.0.0.1 with the real shapes (providers.md section 2): `x-api-key` (401
`authentication_error` otherwise) and `anthropic-version: 2023-06-01` on every call; a create
is refused with the error envelope when a custom_id is invalid or repeated, `params` lacks
model / max_tokens / messages, there are more than `max_requests` requests (400) or the JSON is
over `max_bytes` (413), or the body is not JSON. Each request's `params` is then checked as the
fast fake checks a Messages call (`fake_anthropic_server.body_problem`: model, the one user
message of image and text, the rating's output_config, base64 that is the image its media_type
names): one that fails ends `errored` with the API's error envelope (`invalid_request_error`,
`not_found_error` for an unknown model). Answers are read from the photo itself
(`fake_batch_shared.photo_key`), never from the custom_id; the fast-mode route `/v1/messages`
(for photos a batch left over) is checked and answered the same way. Counts other than
`processing` stay 0 until the batch has ended; then
`results_url` serves one line per request, in a random order: `succeeded`, `errored`,
`canceled` or `expired`. `GET /v1/messages/batches` lists the workspace's batches newest first,
`limit` (1 to 1000, default 20) a page, paged by `after_id` / `before_id`, with `first_id`,
`last_id` and `has_more`; a batch's `created_at` is the time it was made.

Knobs: `answer` (per request: the model's text or a `LineError`), `polls_per_state`,
`expire_after` (the 24 h end comes with that many requests finished), `seed` (None keeps the
input order), `max_requests`, `max_bytes`, `lost_creates` (the first creates make their batch,
then answer 500 `api_error`, as when the answer is lost on the way).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
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

from tests.fake_anthropic_server import MAX_IMAGE_BYTES, body_problem

KEY = "sk-ant-api03-BATCHfakeKEY0123456789-abcdefAA"
VERSION = "2023-06-01"
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
PATH = "/v1/messages/batches"


def anthropic_error(status: int, error_type: str, message: str) -> web.Response:
    body = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": new_id("req_011C"),
    }
    return web.json_response(body, status=status)


def message(text: str, model: str) -> dict[str, Any]:
    """A Message as a `succeeded` result carries it (billed at the batch tier)."""
    return {
        "id": new_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1612, "output_tokens": 87, "service_tier": "batch"},
    }


def now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def rfc3339(moment: datetime) -> str:
    """As the API writes a batch's times: UTC, microseconds, `Z`."""
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class FakeAnthropicBatches:
    """One fake Anthropic workspace: its batches and every request it received."""

    def __init__(
        self,
        *,
        api_key: str = KEY,
        answer: AnswerFn = default_answer,
        polls_per_state: int = 1,
        expire_after: int | None = None,
        seed: int | None = 0,
        max_requests: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        lost_creates: int = 0,
    ) -> None:
        self.api_key = api_key
        self.answer = answer
        self.polls_per_state = polls_per_state
        self.expire_after = expire_after
        self.seed = seed
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.batches: dict[str, FakeBatch] = {}
        self.created_bytes: list[int] = []
        self.cancel_times: dict[str, str] = {}
        self.created_times: dict[str, datetime] = {}
        self.lost_creates = lost_creates
        self.seen: list[Seen] = []
        self.base_url = ""

    def app(self) -> web.Application:
        """The fake as an application, for a server the caller starts (e.g. in a thread)."""
        app = web.Application(
            client_max_size=self.max_bytes + 1024 * 1024,
            middlewares=[recording_middleware(self.seen)],
        )
        app.router.add_post(PATH, self._create)
        app.router.add_get(PATH, self._list)
        app.router.add_get(PATH + "/{id}", self._get)
        app.router.add_post(PATH + "/{id}/cancel", self._cancel)
        app.router.add_get(PATH + "/{id}/results", self._results)
        app.router.add_post("/v1/messages", self._fast)  # fast mode, for leftover photos
        return app

    async def start(self, aiohttp_server: Any) -> FakeAnthropicBatches:
        app = self.app()
        server = await aiohttp_server(app, host="127.0.0.1")
        self.base_url = str(server.make_url("")).rstrip("/")
        return self

    @property
    def batch_creates(self) -> int:
        return len(self.created_bytes)

    @property
    def bytes_uploaded(self) -> int:
        return sum(self.created_bytes)

    def per_photo_requests(self) -> int:
        return sum(1 for s in self.seen if s.path == "/v1/messages")

    # --- handlers ---------------------------------------------------------------------------

    async def _fast(self, request: web.Request) -> web.Response:
        """One Messages call, as fast mode sends it."""
        if (refused := self._refusal(request)) is not None:
            return refused
        if not request.content_type.startswith("application/json"):
            return anthropic_error(400, "invalid_request_error", "content-type must be JSON")
        try:
            body = await request.json()
        except ValueError:
            body = None
        refusal = _refusal(body)
        if refusal is not None:
            return anthropic_error(refusal.status, refusal.type, refusal.message)
        outcome = default_answer("", body)
        assert isinstance(outcome, str)
        return web.json_response(message(outcome, body["model"]))

    def _refusal(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-key") != self.api_key:
            return anthropic_error(401, "authentication_error", "invalid x-api-key")
        if request.headers.get("anthropic-version") != VERSION:
            return anthropic_error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        return None

    async def _create(self, request: web.Request) -> web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        raw = await request.read()
        if len(raw) > self.max_bytes:
            return anthropic_error(
                413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
            )
        document = _json_object(request, raw)
        if isinstance(document, str):
            return anthropic_error(400, "invalid_request_error", document)
        requests = document.get("requests")
        problem = self._problem(requests)
        if problem is not None:
            return anthropic_error(400, "invalid_request_error", problem)
        pairs = [(entry["custom_id"], entry["params"]) for entry in requests]
        batch = FakeBatch(
            new_id("msgbatch_01"),
            pairs,
            self.answer,
            self.polls_per_state,
            self.expire_after,
            phase="in_progress",
            finalizing=False,
        )
        batch.rejected = {
            custom_id: refusal
            for custom_id, params in pairs
            if (refusal := _refusal(params)) is not None
        }
        self.batches[batch.id] = batch
        self.created_times[batch.id] = datetime.now(UTC)
        self.created_bytes.append(len(raw))
        if self.lost_creates > 0:
            self.lost_creates -= 1  # made, but the answer never reaches the caller
            return anthropic_error(500, "api_error", "Internal server error")
        return web.json_response(self._batch_json(batch))

    async def _list(self, request: web.Request) -> web.Response:
        """Newest first; `after_id` pages towards older batches, `before_id` towards newer."""
        if (refusal := self._refusal(request)) is not None:
            return refusal
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return anthropic_error(
                400, "invalid_request_error", "limit: Input should be between 1 and 1000"
            )
        ids = list(reversed(self.batches))
        after, before = request.query.get("after_id"), request.query.get("before_id")
        for cursor in (after, before):
            if cursor is not None and cursor not in self.batches:
                return anthropic_error(404, "not_found_error", f"batch {cursor} not found")
        if after is not None:
            start = ids.index(after) + 1
            page, more = ids[start : start + limit], start + limit < len(ids)
        elif before is not None:
            end = ids.index(before)
            page, more = ids[max(0, end - limit) : end], end - limit > 0
        else:
            page, more = ids[:limit], limit < len(ids)
        body = {
            "data": [self._batch_json(self.batches[batch_id]) for batch_id in page],
            "has_more": more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
        return web.json_response(body)

    def _problem(self, requests: Any) -> str | None:
        if not isinstance(requests, list) or not requests:
            return "requests: Field required (a non-empty list)"
        if len(requests) > self.max_requests:
            return f"requests: at most {self.max_requests} requests per batch"
        seen: set[str] = set()
        for index, entry in enumerate(requests):
            custom_id = entry.get("custom_id") if isinstance(entry, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
                return f"requests.{index}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            if custom_id in seen:
                return f"requests.{index}.custom_id: duplicate custom_id {custom_id!r}"
            seen.add(custom_id)
            if (problem := _params_problem(index, entry.get("params"))) is not None:
                return problem
        return None

    def _batch(self, request: web.Request) -> FakeBatch | web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return anthropic_error(
                404, "not_found_error", f"batch {request.match_info['id']} not found"
            )
        return batch

    async def _get(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if isinstance(batch, web.Response):
            return batch
        batch.tick()
        return web.json_response(self._batch_json(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if isinstance(batch, web.Response):
            return batch
        if not batch.done:
            batch.cancel()
            self.cancel_times[batch.id] = now()
        return web.json_response(self._batch_json(batch))

    async def _results(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if isinstance(batch, web.Response):
            return batch
        if not batch.done:
            return anthropic_error(
                400, "invalid_request_error", f"Batch {batch.id} has not ended yet"
            )
        models = dict((cid, body.get("model", "claude-test")) for cid, body in batch.requests)
        lines = [
            json.dumps({"custom_id": cid, "result": _result(outcome, models[cid])}).encode()
            for cid, outcome in batch.outcomes.items()
        ]
        left = "expired" if batch.phase == "expired" else "canceled"
        lines += [
            json.dumps({"custom_id": cid, "result": {"type": left}}).encode()
            for cid in batch.unfinished
        ]
        return web.Response(body=shuffled(lines, self.seed), content_type="application/x-jsonl")

    # --- the batch ----------------------------------------------------------------------------

    def _batch_json(self, batch: FakeBatch) -> dict[str, Any]:
        ended = batch.done
        made = self.created_times[batch.id]
        succeeded, errored = batch.counts()
        left = len(batch.unfinished)
        counts = {
            "processing": 0 if ended else len(batch.requests),
            "succeeded": succeeded if ended else 0,
            "errored": errored if ended else 0,
            "canceled": left if ended and batch.phase == "cancelled" else 0,
            "expired": left if ended and batch.phase == "expired" else 0,
        }
        status = (
            "ended" if ended else ("canceling" if batch.phase == "cancelling" else "in_progress")
        )
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": rfc3339(made),
            "expires_at": rfc3339(made + timedelta(hours=24)),
            "ended_at": now() if ended else None,
            "cancel_initiated_at": self.cancel_times.get(batch.id),
            "archived_at": None,
            "results_url": f"{self.base_url}{PATH}/{batch.id}/results" if ended else None,
        }


def _result(outcome: str | LineError, model: str) -> dict[str, Any]:
    if isinstance(outcome, LineError):
        envelope = {
            "type": "error",
            "error": {"type": outcome.type, "message": outcome.message},
            "request_id": new_id("req_011C"),
        }
        return {"type": "errored", "error": envelope}
    return {"type": "succeeded", "message": message(outcome, model)}


def _params_problem(index: int, params: Any) -> str | None:
    if not isinstance(params, dict):
        return f"requests.{index}.params: Field required"
    for name in ("model", "max_tokens", "messages"):
        if name not in params:
            return f"requests.{index}.params.{name}: Field required"
    if not isinstance(params["max_tokens"], int) or params["max_tokens"] < 1:
        return f"requests.{index}.params.max_tokens: Input should be greater than or equal to 1"
    return None


def _refusal(params: Any) -> LineError | None:
    """What the Messages API answers this body with, in a batch or fast mode; None if valid."""
    problem = body_problem(params, MAX_IMAGE_BYTES, {})
    if problem is None:
        return None
    if problem.startswith("model: "):
        return LineError(404, "not_found_error", None, problem)
    return LineError(400, "invalid_request_error", None, problem)


def _json_object(request: web.Request, raw: bytes) -> dict[str, Any] | str:
    """The create call's JSON object, or why the API cannot read it (not sent as JSON, or not
    a JSON object)."""
    if not request.content_type.startswith("application/json"):
        return "content-type must be JSON"
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return "There was an error parsing the body of your request"
    return document
