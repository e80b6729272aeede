"""Anthropic Message Batches: the batch client (create, poll, cancel, results) and its wire.

One POST carries the whole batch as JSON, `{"requests": [{"custom_id", "params"}]}`, where
`params` is the very Messages body fast mode sends (economy mode keeps each under 100,000
requests and 256 MB of that JSON: `limits`, `framing`). A poll reports `in_progress`,
`canceling` or `ended`; `ended` becomes `cancelled` when the batch was cancelled and requests
were dropped, else `completed` (expired requests are counted, not a state). Results are JSONL
at `results_url`, in any order, keyed by custom_id: `succeeded` (a Message, given as a 200
answer), `errored` (the error envelope, kept with a status so `classify` tells a bad image
from a bad request), `canceled`, `expired`. `find_made` reads the workspace's newest batches
(newest first) for one a create may have made although its answer never came back.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, Field, ValidationError

from kullbatch.errors import FatalJobError, PermanentImageError, ProviderError, Transient
from kullbatch.providers import anthropic
from kullbatch.providers.batch.common import (
    BatchCounts,
    BatchInfo,
    BatchLine,
    BatchState,
    Framing,
    Limits,
    LineFailure,
    LineResult,
    LineSuccess,
    compact_json,
    ended_or,
    jsonl_lines,
)
from kullbatch.providers.http import HTTPAnswer, request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from kullbatch.providers.base import Credentials, WireRequest


__all__ = ["MAX_BYTES", "MAX_REQUESTS", "PATH", "AnthropicBatchClient", "create_client"]

log = logging.getLogger(__name__)

NAME = "anthropic"
PATH = "/v1/messages/batches"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
# a 256 MB create request takes a while to send: no total limit, only stalls time out
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
LIST_PAGE_SIZE = 100  # the list endpoint gives up to 1,000 a page; 100 keeps answers small
LIST_PAGES = 10  # the newest 1,000 batches are searched for one a lost create made
M = TypeVar("M", bound=BaseModel)

# The status each error type comes with on the Messages API, so that an errored line can be
# classified by the same rules as a fast-mode answer.
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# --- the wire format of answers ---------------------------------------------------------------


class _Counts(BaseModel):
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0


class _Batch(BaseModel):
    id: str
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: _Counts = _Counts()
    results_url: str | None = None
    cancel_initiated_at: str | None = None
    created_at: datetime | None = None


class _BatchList(BaseModel):
    data: list[_Batch] = []
    has_more: bool = False
    last_id: str | None = None


class _ErrorDetail(BaseModel):
    type: str = "api_error"
    message: str = ""


class _Envelope(BaseModel):
    error: _ErrorDetail


class _Succeeded(BaseModel):
    type: Literal["succeeded"]
    message: Any


class _Errored(BaseModel):
    type: Literal["errored"]
    error: _Envelope | _ErrorDetail


class _Canceled(BaseModel):
    type: Literal["canceled"]


class _Expired(BaseModel):
    type: Literal["expired"]


class _ResultLine(BaseModel):
    custom_id: str
    result: Annotated[_Succeeded | _Errored | _Canceled | _Expired, Field(discriminator="type")]


# --- the client -------------------------------------------------------------------------------


class AnthropicBatchClient:
    """Message Batches: the requests go inline in one create call, streamed from the file.

    Every call sends the job's credentials (`Credentials.headers`: x-api-key) to their base
    URL, as fast mode does, with the API version.
    """

    name = NAME
    framing = Framing(b'{"requests":[', b",", b"]}")  # the create call's JSON, streamed
    limits = Limits(MAX_REQUESTS, MAX_BYTES)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: Credentials,
        adapter: anthropic.AnthropicProvider,
    ) -> None:
        self.adapter = adapter
        self._session = session
        self._url = credentials.base_url.rstrip("/") + PATH
        self._origin = _origin(credentials.base_url)
        self._key = credentials.key
        self._headers = {
            **credentials.headers,
            "anthropic-version": anthropic.API_VERSION,
            "accept": "application/json",
        }

    # -- the request ------------------------------------------------------------------------------

    def line(self, custom_id: str, request: WireRequest) -> BatchLine:
        return BatchLine(custom_id, request.body)

    def encode(self, line: BatchLine) -> bytes:
        """One entry of `requests`, as the create call's JSON holds it."""
        return compact_json({"custom_id": line.custom_id, "params": line.body})

    # -- calls ------------------------------------------------------------------------------------

    async def submit_file(self, path: Path, on_file: Callable[[str], Awaitable[None]]) -> BatchInfo:
        del on_file  # nothing is uploaded before the batch exists
        return await self.create(path)

    async def create(self, path: Path) -> BatchInfo:
        """POST /v1/messages/batches with the request JSON already written to `path`,
        streamed from disk."""
        send = {**self._headers, "content-type": "application/json"}
        with path.open("rb") as handle:
            answer = await request(
                self._session,
                "POST",
                self._url,
                headers=send,
                data=handle,
                timeout=TRANSFER_TIMEOUT,
            )
        return _info(self._checked(answer))

    async def batch_for_file(self, file_id: str) -> BatchInfo:
        raise FatalJobError(f"anthropic batches have no input file ({file_id})")

    async def find_for_file(self, file_id: str) -> BatchInfo | None:
        raise FatalJobError(f"anthropic batches have no input file ({file_id})")

    async def get(self, batch_id: str) -> BatchInfo:
        answer = await request(
            self._session, "GET", f"{self._url}/{batch_id}", headers=self._headers
        )
        return _info(self._checked(answer))

    async def find_made(self, requests: int, since: datetime) -> list[BatchInfo]:
        """Batches of exactly `requests` requests made at or after `since`, newest first,
        except those whose cancel was asked: GET /v1/messages/batches, newest first,
        `after_id` paging.

        A create whose answer was lost, or whose process died before committing the id, may
        have made its batch. A Message Batch carries no metadata and no input file, so its
        request count and its creation time are all that can tell it; the caller decides what
        one, none or several candidates mean. The search stops at the first batch older than
        `since`, or after the newest `LIST_PAGES` pages.
        """
        found: list[BatchInfo] = []
        after: str | None = None
        for _ in range(LIST_PAGES):
            query = f"?limit={LIST_PAGE_SIZE}" + (f"&after_id={after}" if after else "")
            answer = await request(self._session, "GET", self._url + query, headers=self._headers)
            page = _parse(self._checked(answer), _BatchList)
            for batch in page.data:
                if batch.created_at is not None and batch.created_at < since:
                    return found
                info = _batch_info(batch)
                if info.counts.total == requests and batch.cancel_initiated_at is None:
                    found.append(info)
            if not page.has_more or page.last_id is None:
                return found
            after = page.last_id
        return found

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Ask to stop: `canceling`, then `ended` with the finished results still there."""
        url = f"{self._url}/{batch_id}/cancel"
        answer = await request(self._session, "POST", url, headers=self._headers)
        return await ended_or(
            answer, lambda: self.get(batch_id), lambda refused: _info(self._checked(refused))
        )

    async def results(self, info: BatchInfo) -> dict[str, LineResult]:
        """The results JSONL keyed by custom_id; empty until the batch has ended.

        `results_url` is followed only on the API's own host: the key goes with the request.
        """
        if info.results_url is None:
            return {}
        url = info.results_url
        if _origin(url) != self._origin:
            url = f"{self._url}/{info.id}/results"
        answer = await request(self._session, "GET", url, headers=self._headers)
        return _lines(self._checked(answer).body, info.id)

    def classify(self, failure: LineFailure) -> ProviderError:
        """An errored line -> the taxonomy with fast mode's rules (a bad image is permanent)."""
        answer = failure.answer()
        if answer is None:
            return Transient(f"{NAME} batch: {failure.message}")
        return anthropic.classify_error(answer, self._key)

    def _checked(self, answer: HTTPAnswer) -> HTTPAnswer:
        if 200 <= answer.status < 300:  # noqa: PLR2004
            return answer
        error = anthropic.classify_error(answer, self._key)
        if isinstance(error, PermanentImageError):  # a batch call is never about one photo
            raise FatalJobError(f"{error.message} [the batch request itself was refused]")
        raise error


def create_client(
    *, model: str, session: aiohttp.ClientSession, credentials: Credentials
) -> AnthropicBatchClient:
    """The registry's entry point (`ProviderSpec.batch`): the batch client and the adapter
    whose requests it batches, both with the job's credentials."""
    adapter = anthropic.create(model=model, session=session, credentials=credentials)
    return AnthropicBatchClient(session, credentials, adapter)


# --- parsing ----------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _parse(answer: HTTPAnswer, model: type[M]) -> M:
    try:
        return model.model_validate_json(answer.body)
    except ValidationError as exc:
        raise Transient(f"{NAME} batch answer is not what the API sends: {answer.text()}") from exc


def _info(answer: HTTPAnswer) -> BatchInfo:
    return _batch_info(_parse(answer, _Batch))


def _batch_info(batch: _Batch) -> BatchInfo:
    counts = batch.request_counts
    return BatchInfo(
        id=batch.id,
        state=_state(batch),
        counts=BatchCounts(
            total=counts.processing
            + counts.succeeded
            + counts.errored
            + counts.canceled
            + counts.expired,
            succeeded=counts.succeeded,
            failed=counts.errored,
            expired=counts.expired,
            cancelled=counts.canceled,
            processing=counts.processing,
        ),
        results_url=batch.results_url,
    )


def _state(batch: _Batch) -> BatchState:
    if batch.processing_status == "in_progress":
        return "in_progress"
    if batch.processing_status == "canceling":
        return "cancelling"
    counts = batch.request_counts
    answered = counts.succeeded + counts.errored + counts.expired
    if counts.canceled and (batch.cancel_initiated_at is not None or not answered):
        return "cancelled"
    return "completed"


def _lines(data: bytes, batch_id: str) -> dict[str, LineResult]:
    found: dict[str, LineResult] = {}
    for number, raw in jsonl_lines(data):
        try:
            line = _ResultLine.model_validate_json(raw)
        except ValidationError:
            log.warning("%s batch %s results line %d is not a result", NAME, batch_id, number)
            continue
        found[line.custom_id] = _result(line.custom_id, line.result)
    return found


def _result(custom_id: str, result: _Succeeded | _Errored | _Canceled | _Expired) -> LineResult:
    if isinstance(result, _Succeeded):
        return LineSuccess(custom_id, 200, compact_json(result.message))
    if isinstance(result, _Canceled):
        return LineFailure(custom_id, "cancelled", "the batch was cancelled before this request")
    if isinstance(result, _Expired):
        return LineFailure(custom_id, "expired", "the batch expired before this request ran")
    detail = result.error.error if isinstance(result.error, _Envelope) else result.error
    status = _STATUS_OF_TYPE.get(detail.type, 500)
    envelope = {"type": "error", "error": {"type": detail.type, "message": detail.message}}
    body = json.dumps(envelope).encode()
    message = f"{detail.type}: {detail.message or 'no message'}"
    return LineFailure(custom_id, "errored", message, status, body, detail.type)
