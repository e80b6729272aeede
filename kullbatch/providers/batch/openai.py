"""The OpenAI Batch API: the batch client (JSONL file, upload, create, poll, cancel,
results) and its wire.

A shoot goes as one JSONL file per batch (economy mode keeps each under 50,000 lines and
200 MB: `limits`), uploaded to `/files` with purpose `batch`, then run by `/batches` on
`/v1/chat/completions` in the 24h window. Results come back in two files in any order: the
output file (answers, status 200 or not) and the error file (`error:{code,message}` lines,
`batch_expired` for requests the window did not reach); both are read and keyed by custom_id.

Errors of the batch calls themselves use the chat rules (`_chat.error_for`), except that a
batch call is never about one photo: what those rules call a bad image is fatal here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from kullbatch.errors import FatalJobError, PermanentImageError, ProviderError, Transient
from kullbatch.providers import openai
from kullbatch.providers._chat import ChatEndpoint, error_for, error_info
from kullbatch.providers.batch.common import (
    BatchCounts,
    BatchInfo,
    BatchLine,
    BatchState,
    FailureKind,
    Framing,
    Limits,
    LineFailure,
    LineResult,
    LineSuccess,
    compact_json,
    ended_or,
    jsonl_lines,
)
from kullbatch.providers.http import HTTPAnswer, post_json, request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime
    from pathlib import Path

    from kullbatch.providers.base import Credentials, WireRequest

__all__ = ["ENDPOINT", "MAX_BYTES", "MAX_REQUESTS", "OpenAIBatchClient", "create_client"]

log = logging.getLogger(__name__)

NAME = "openai"
ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
# A 200 MB upload or download outlives the per-request total of fast mode; only a silent
# socket is a failure here.
TRANSFER_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
LIST_PAGE_SIZE = 100  # the most the list endpoint gives per page
LIST_PAGES = 10  # so the newest 1,000 batches are searched for one made from a given file
_CANCELLED_CODES = frozenset({"batch_cancelled", "batch_canceled"})
M = TypeVar("M", bound=BaseModel)


# --- the wire format of answers ---------------------------------------------------------------


class _File(BaseModel):
    id: str


class _Counts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class _BatchError(BaseModel):
    code: str | None = None
    message: str = ""
    line: int | None = None


class _BatchErrors(BaseModel):
    data: list[_BatchError] = []


class _Batch(BaseModel):
    id: str
    status: BatchState
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: _Counts | None = None
    errors: _BatchErrors | None = None


class _BatchList(BaseModel):
    data: list[_Batch] = []
    has_more: bool = False


class _Response(BaseModel):
    status_code: int
    body: Any = None


class _LineError(BaseModel):
    code: str | None = None
    message: str | None = None


class _OutputLine(BaseModel):
    custom_id: str
    response: _Response | None = None
    error: _LineError | None = None


# --- the client -------------------------------------------------------------------------------


class OpenAIBatchClient:
    """The Batch API: a JSONL file uploaded to /files, then a batch on /v1/chat/completions.

    Every call sends the job's credentials (`Credentials.headers`: the bearer key and the
    optional organisation and project) to their base URL, as fast mode does.
    """

    name = NAME
    limits = Limits(MAX_REQUESTS, MAX_BYTES)
    framing = Framing()  # JSONL: each encoded line ends with its newline

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: Credentials,
        adapter: openai.OpenAIProvider,
    ) -> None:
        self.adapter = adapter
        self._session = session
        self._base_url = credentials.base_url.rstrip("/")
        self._headers = credentials.headers
        # the key, to scrub it from messages, in the chat rules' terms
        self._endpoint = ChatEndpoint(NAME, "", {}, credentials.key)

    # -- the input file ---------------------------------------------------------------------------

    def line(self, custom_id: str, request: WireRequest) -> BatchLine:
        assert openai.batch_url(request) == ENDPOINT
        return BatchLine(custom_id, request.body)

    def encode(self, line: BatchLine) -> bytes:
        """One JSONL line, newline included: what the file holds and what its size counts."""
        record = {"custom_id": line.custom_id, "method": "POST", "url": ENDPOINT, "body": line.body}
        return compact_json(record) + b"\n"

    # -- calls ------------------------------------------------------------------------------------

    async def submit_file(self, path: Path, on_file: Callable[[str], Awaitable[None]]) -> BatchInfo:
        """Upload the JSONL file, report its id (to be committed), then create the batch."""
        file_id = await self.upload(path)
        await on_file(file_id)
        return await self.create(file_id)

    async def upload(self, path: Path) -> str:
        """POST {base}/files (purpose batch) from the file on disk, streamed: a 200 MB file is
        never held in memory. Returns the file id."""
        with path.open("rb") as handle:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", handle, filename="batch.jsonl", content_type="application/jsonl")
            answer = await request(
                self._session,
                "POST",
                f"{self._base_url}/files",
                headers=self._headers,
                data=form,
                timeout=TRANSFER_TIMEOUT,
            )
        return _parse(self._checked(answer), _File, "file").id

    async def create(self, file_id: str) -> BatchInfo:
        """POST {base}/batches: run the uploaded file on chat completions in the 24h window."""
        payload: dict[str, Any] = {
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": COMPLETION_WINDOW,
            "metadata": {"created_by": "kullbatch"},
        }
        url = f"{self._base_url}/batches"
        answer = await post_json(self._session, url, headers=self._headers, payload=payload)
        return _info(self._checked(answer))

    async def batch_for_file(self, file_id: str) -> BatchInfo:
        found = await self.find_for_file(file_id)
        return found if found is not None else await self.create(file_id)

    async def find_for_file(self, file_id: str) -> BatchInfo | None:
        """The batch already made from `file_id`, or None: GET {base}/batches, newest first.

        The provider may have created a batch whose id kullbatch never committed (the process
        died in between, or the answer to the create was lost on the way): looking before
        creating again keeps a shoot from being run, and paid for, twice. A file is uploaded
        just before its batch is made, so the newest `LIST_PAGES` pages hold that batch if it
        exists.
        """
        after: str | None = None
        for _ in range(LIST_PAGES):
            query = f"?limit={LIST_PAGE_SIZE}" + (f"&after={after}" if after else "")
            url = f"{self._base_url}/batches{query}"
            answer = await request(self._session, "GET", url, headers=self._headers)
            page = _parse(self._checked(answer), _BatchList, "batch list")
            for batch in page.data:
                if batch.input_file_id == file_id:
                    return _batch_info(batch)
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id
        return None

    async def find_made(self, requests: int, since: datetime) -> list[BatchInfo]:
        """None: a batch is made only from a file whose id was committed first, and
        `find_for_file` finds it; a file whose upload answer was lost is simply not used."""
        del requests, since
        return []

    async def get(self, batch_id: str) -> BatchInfo:
        url = f"{self._base_url}/batches/{batch_id}"
        answer = await request(self._session, "GET", url, headers=self._headers)
        return _info(self._checked(answer))

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Ask to stop; the batch goes `cancelling`, then `cancelled` with the finished answers."""
        url = f"{self._base_url}/batches/{batch_id}/cancel"
        answer = await request(self._session, "POST", url, headers=self._headers)
        return await ended_or(
            answer, lambda: self.get(batch_id), lambda refused: _info(self._checked(refused))
        )

    async def results(self, info: BatchInfo) -> dict[str, LineResult]:
        """Both result files, keyed by custom_id; an answer in the output file wins over an
        error. Empty while the batch has no files yet (in progress, or failed at validation).
        """
        found: dict[str, LineResult] = {}
        for file_id in (info.error_file_id, info.output_file_id):
            if file_id is not None:
                url = f"{self._base_url}/files/{file_id}/content"
                answer = await request(
                    self._session, "GET", url, headers=self._headers, timeout=TRANSFER_TIMEOUT
                )
                found.update(_lines(self._checked(answer).body, file_id))
        return found

    def classify(self, failure: LineFailure) -> ProviderError:
        """An errored line -> the taxonomy with fast mode's rules (a bad image is permanent)."""
        answer = failure.answer()
        if answer is None:
            return Transient(f"{NAME} batch: {failure.message}")
        return error_for(self._endpoint, answer)

    def _checked(self, answer: HTTPAnswer) -> HTTPAnswer:
        """Fast mode's rules, then what differs for a call about a whole batch."""
        if answer.ok:
            return answer
        error = error_for(self._endpoint, answer)
        if isinstance(error, PermanentImageError):  # a batch call is never about one photo
            raise FatalJobError(f"{error.message} [the batch request itself was refused]")
        raise error


def create_client(
    *, model: str, session: aiohttp.ClientSession, credentials: Credentials
) -> OpenAIBatchClient:
    """The registry's entry point (`ProviderSpec.batch`): the batch client and the adapter
    whose requests it batches, both with the job's credentials."""
    adapter = openai.create(model=model, session=session, credentials=credentials)
    return OpenAIBatchClient(session, credentials, adapter)


# --- parsing ----------------------------------------------------------------------------------


def _parse(answer: HTTPAnswer, model: type[M], what: str) -> M:
    try:
        return model.model_validate_json(answer.body)
    except ValidationError as exc:
        # a proxy's page or a half-written answer: asking again is the only remedy
        raise Transient(f"{NAME} {what} answer is not what the API sends: {answer.text()}") from exc


def _info(answer: HTTPAnswer) -> BatchInfo:
    return _batch_info(_parse(answer, _Batch, "batch"))


def _batch_info(batch: _Batch) -> BatchInfo:
    counts = batch.request_counts or _Counts()
    settled = counts.completed + counts.failed
    processing = 0 if batch.status in {"completed", "failed", "expired", "cancelled"} else 1
    return BatchInfo(
        id=batch.id,
        state=batch.status,
        counts=BatchCounts(
            total=counts.total,
            succeeded=counts.completed,
            failed=counts.failed,
            processing=max(0, counts.total - settled) * processing,
        ),
        error=_validation_error(batch) if batch.status == "failed" else None,
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
    )


def _validation_error(batch: _Batch) -> str:
    problems = batch.errors.data if batch.errors else []
    texts = [
        (f"line {e.line}: " if e.line is not None else "")
        + e.message
        + (f" ({e.code})" if e.code else "")
        for e in problems[:5]
    ]
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""  # noqa: PLR2004
    return "; ".join(texts) + more if texts else f"{NAME} batch {batch.id} failed"


def _lines(data: bytes, file_id: str) -> dict[str, LineResult]:
    found: dict[str, LineResult] = {}
    for number, raw in jsonl_lines(data):
        try:
            line = _OutputLine.model_validate_json(raw)
        except ValidationError:
            # without a custom_id the line belongs to no photo: that photo simply has no result
            log.warning("%s batch file %s line %d is not a result line", NAME, file_id, number)
            continue
        found[line.custom_id] = _result(line)
    return found


def _result(line: _OutputLine) -> LineResult:
    if line.response is not None:
        body = compact_json(line.response.body)
        if HTTPAnswer(line.response.status_code, {}, b"").ok and line.error is None:
            return LineSuccess(line.custom_id, line.response.status_code, body)
        info = error_info(HTTPAnswer(line.response.status_code, {}, body))
        message = f"HTTP {line.response.status_code}: {info.message or 'no message'}"
        return LineFailure(
            line.custom_id, "errored", message, line.response.status_code, body, info.label
        )
    error = line.error or _LineError(message="the line has neither a response nor an error")
    kind: FailureKind = "errored"
    if error.code == "batch_expired":
        kind = "expired"
    elif error.code in _CANCELLED_CODES:
        kind = "cancelled"
    code = f"{error.code}: " if error.code else ""
    message = f"{code}{error.message or 'no message'}"
    return LineFailure(line.custom_id, kind, message, error_type=error.code)
