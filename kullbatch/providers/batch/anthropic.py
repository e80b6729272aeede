"""Anthropic Message Batches, wire level: create, poll, cancel, results.

One POST carries the whole batch as JSON, `{"requests": [{"custom_id", "params"}]}`, where
`params` is the very Messages body fast mode sends (`split_requests` keeps each under 100,000
requests and 256 MB of that JSON). A poll reports `in_progress`, `canceling` or `ended`;
`ended` becomes `cancelled` when the batch was cancelled and requests were dropped, else
`completed` (expired requests are counted, not a state). Results are JSONL at `results_url`, in
any order, keyed by custom_id: `succeeded` (a Message, given as a 200 answer), `errored` (the
error envelope, kept with a status so `classify_line` tells a bad image from a bad request),
`canceled`, `expired`. `find_made` reads the workspace's newest batches (newest first) for
one a create may have made although its answer never came back.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, Field, ValidationError

from kullbatch.errors import FatalJobError, PermanentImageError, ProviderError, Transient
from kullbatch.providers.anthropic import API_VERSION, classify_error
from kullbatch.providers.batch.common import (
    BatchCounts,
    BatchInfo,
    BatchLine,
    BatchState,
    Limits,
    LineFailure,
    LineResult,
    LineSuccess,
    Split,
    compact_json,
    ended_or,
    jsonl_lines,
    split_sized,
)
from kullbatch.providers.http import HTTPAnswer, post_json, request

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path


__all__ = [
    "MAX_BYTES",
    "MAX_REQUESTS",
    "BatchLine",
    "batch_headers",
    "cancel",
    "classify_line",
    "create",
    "encode_request",
    "find_made",
    "get",
    "results",
    "split_requests",
]

log = logging.getLogger(__name__)

NAME = "anthropic"
PATH = "/v1/messages/batches"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
# a 256 MB create request takes a while to send: no total limit, only stalls time out
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
LIST_PAGE_SIZE = 100  # the list endpoint gives up to 1,000 a page; 100 keeps answers small
LIST_PAGES = 10  # the newest 1,000 batches are searched for one a lost create made
_ENVELOPE = compact_json({"requests": []})
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


def batch_headers(api_key: str) -> dict[str, str]:
    """The headers every batch call needs (the caller may add `anthropic-beta` and others)."""
    return {"x-api-key": api_key, "anthropic-version": API_VERSION, "accept": "application/json"}


# --- the request ------------------------------------------------------------------------------


def encode_request(line: BatchLine) -> bytes:
    """One entry of `requests`, as the create call's JSON holds it."""
    return compact_json({"custom_id": line.custom_id, "params": line.body})


def split_requests(
    lines: Iterable[BatchLine], *, max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES
) -> Split[BatchLine]:
    """Batches whose create request is under both limits, measured on its exact JSON."""
    sized = ((line, len(encode_request(line))) for line in lines)
    limits = Limits(max_requests, max_bytes, overhead=len(_ENVELOPE), separator=1)
    return split_sized(sized, limits)


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


# --- calls ------------------------------------------------------------------------------------


async def create(
    session: aiohttp.ClientSession,
    base_url: str,
    headers: Mapping[str, str],
    lines: Iterable[BatchLine],
) -> BatchInfo:
    """POST /v1/messages/batches with every request of one batch."""
    payload = {"requests": [{"custom_id": line.custom_id, "params": line.body} for line in lines]}
    answer = await post_json(session, _url(base_url), headers=headers, payload=payload)
    return _info(_checked(answer, headers))


async def create_from_file(
    session: aiohttp.ClientSession, base_url: str, headers: Mapping[str, str], path: Path
) -> BatchInfo:
    """`create` with the request JSON already written to a file, streamed from disk."""
    send = {**headers, "content-type": "application/json"}
    with path.open("rb") as handle:
        answer = await request(
            session, "POST", _url(base_url), headers=send, data=handle, timeout=TRANSFER_TIMEOUT
        )
    return _info(_checked(answer, headers))


async def get(
    session: aiohttp.ClientSession, base_url: str, headers: Mapping[str, str], batch_id: str
) -> BatchInfo:
    answer = await request(session, "GET", f"{_url(base_url)}/{batch_id}", headers=headers)
    return _info(_checked(answer, headers))


async def find_made(
    session: aiohttp.ClientSession,
    base_url: str,
    headers: Mapping[str, str],
    requests: int,
    since: datetime,
) -> list[BatchInfo]:
    """Batches of exactly `requests` requests made at or after `since`, newest first, except
    those whose cancel was asked: GET /v1/messages/batches, newest first, `after_id` paging.

    A create whose answer was lost, or whose process died before committing the id, may have
    made its batch. A Message Batch carries no metadata and no input file, so its request
    count and its creation time are all that can tell it; the caller decides what one, none
    or several candidates mean. The search stops at the first batch older than `since`, or
    after the newest `LIST_PAGES` pages.
    """
    found: list[BatchInfo] = []
    after: str | None = None
    for _ in range(LIST_PAGES):
        query = f"?limit={LIST_PAGE_SIZE}" + (f"&after_id={after}" if after else "")
        answer = await request(session, "GET", _url(base_url) + query, headers=headers)
        page = _parse(_checked(answer, headers), _BatchList)
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


async def cancel(
    session: aiohttp.ClientSession, base_url: str, headers: Mapping[str, str], batch_id: str
) -> BatchInfo:
    """Ask to stop: `canceling`, then `ended` with the finished results still there."""
    url = f"{_url(base_url)}/{batch_id}/cancel"
    answer = await request(session, "POST", url, headers=headers)
    return await ended_or(
        answer,
        partial(get, session, base_url, headers, batch_id),
        lambda refused: _info(_checked(refused, headers)),
    )


async def results(
    session: aiohttp.ClientSession, base_url: str, headers: Mapping[str, str], info: BatchInfo
) -> dict[str, LineResult]:
    """The results JSONL keyed by custom_id; empty until the batch has ended.

    `results_url` is followed only on the API's own host: the key goes with the request.
    """
    if info.results_url is None:
        return {}
    url = info.results_url
    if _origin(url) != _origin(base_url):
        url = f"{_url(base_url)}/{info.id}/results"
    answer = await request(session, "GET", url, headers=headers)
    return _lines(_checked(answer, headers).body, info.id)


def classify_line(failure: LineFailure, api_key: str | None = None) -> ProviderError:
    """An errored line -> the taxonomy with fast mode's rules (a bad image is permanent)."""
    answer = failure.answer()
    if answer is None:
        return Transient(f"{NAME} batch: {failure.message}")
    return classify_error(answer, api_key)


# --- parsing ----------------------------------------------------------------------------------


def _url(base_url: str) -> str:
    return base_url.rstrip("/") + PATH


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _checked(answer: HTTPAnswer, headers: Mapping[str, str]) -> HTTPAnswer:
    if 200 <= answer.status < 300:  # noqa: PLR2004
        return answer
    error = classify_error(answer, headers.get("x-api-key"))
    if isinstance(error, PermanentImageError):  # a batch call is never about one photo
        raise FatalJobError(f"{error.message} [the batch request itself was refused]")
    raise error


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
