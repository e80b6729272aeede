"""One face for the providers' batch APIs, so economy mode speaks to OpenAI and Anthropic alike.

A `BatchClient` turns fast mode's `WireRequest`s into batch lines, packs them under the
provider's limits, submits (reporting an uploaded file's id the moment it exists, so the caller
can commit it before anything else happens), polls, fetches results keyed by `custom_id`, and
cancels. The wire details live in `batch_openai.py` and `batch_anthropic.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from kullbatch.errors import FatalJobError
from kullbatch.providers.batch import anthropic as batch_anthropic
from kullbatch.providers.batch import openai as batch_openai
from kullbatch.providers.batch.common import BatchLine, Limits
from kullbatch.providers.openai import batch_url

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import datetime
    from pathlib import Path

    import aiohttp

    from kullbatch.errors import ProviderError
    from kullbatch.providers.base import WireRequest
    from kullbatch.providers.batch.common import BatchInfo, LineFailure, LineResult
    from kullbatch.providers.registry import ProviderSpec

__all__ = ["BatchClient", "BatchFile", "Framing", "create_batch_client"]


@dataclass(frozen=True, slots=True)
class Framing:
    """How encoded requests are joined into what is sent: a JSONL file, or a JSON array."""

    prefix: bytes = b""
    separator: bytes = b""
    suffix: bytes = b""


class BatchClient(Protocol):
    """What economy mode needs of a provider's batch API.

    Requests are encoded one at a time and written to a file with the client's `framing`, so
    a batch of hundreds of megabytes is streamed from disk, never held in memory.
    """

    name: str
    limits: Limits
    framing: Framing

    def line(self, custom_id: str, request: WireRequest) -> BatchLine: ...

    def encode(self, line: BatchLine) -> bytes: ...

    async def submit_file(
        self, path: Path, on_file: Callable[[str], Awaitable[None]]
    ) -> BatchInfo: ...

    async def batch_for_file(self, file_id: str) -> BatchInfo:
        """The batch of an uploaded file: the one the provider already made from it, else a
        new one (a create's answer can be lost, or the process die before it is committed)."""
        ...

    async def find_for_file(self, file_id: str) -> BatchInfo | None:
        """The batch the provider already made from an uploaded file, or None; makes none."""
        ...

    async def find_made(self, requests: int, since: datetime) -> list[BatchInfo]:
        """Batches a create sent at `since` may have made though its answer never came back
        (`requests` requests, made since then, not being cancelled), newest first."""
        ...

    async def get(self, batch_id: str) -> BatchInfo: ...

    async def cancel(self, batch_id: str) -> BatchInfo: ...

    async def results(self, info: BatchInfo) -> dict[str, LineResult]: ...

    def classify(self, failure: LineFailure) -> ProviderError: ...


class BatchFile:
    """The batch being filled: its requests on disk (framed for the provider), their ids.

    Economy mode appends each photo's encoded request as it is built, so memory holds one
    request, not a 200 MB batch; the finished file is streamed to the provider.
    """

    def __init__(self, path: Path, client: BatchClient) -> None:
        self._path = path
        self._client = client
        self._framing = client.framing
        self._handle: BinaryIO | None = None
        self.ids: dict[str, str] = {}
        self._size = 0

    def fits(self, size: int) -> bool:
        limits = self._client.limits
        if not self.ids:
            return True
        extra = size + len(self._framing.separator)
        return len(self.ids) < limits.max_requests and self._size + extra <= limits.max_bytes

    def add(self, custom_id: str, image_id: str, encoded: bytes) -> None:
        if self._handle is None:
            self._handle = self._path.open("wb")
            self._handle.write(self._framing.prefix)
            self._size = len(self._framing.prefix) + len(self._framing.suffix)
        else:
            self._handle.write(self._framing.separator)
            self._size += len(self._framing.separator)
        self._handle.write(encoded)
        self._size += len(encoded)
        self.ids[custom_id] = image_id

    def finish(self) -> tuple[Path, dict[str, str], int]:
        """Close the file; the next `add` starts a new batch."""
        assert self._handle is not None
        self._handle.write(self._framing.suffix)
        self.close()
        ids, self.ids = self.ids, {}
        return self._path, ids, self._size

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class OpenAIBatches:
    """The Batch API: a JSONL file uploaded to /files, then a batch on /v1/chat/completions."""

    name = "openai"
    limits = Limits(batch_openai.MAX_REQUESTS, batch_openai.MAX_BYTES)
    framing = Framing()  # JSONL: each encoded line ends with its newline

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        headers: Mapping[str, str],
        api_key: str,
    ) -> None:
        self._session = session
        self._base_url = base_url
        self._headers = headers
        self._api_key = api_key

    def line(self, custom_id: str, request: WireRequest) -> BatchLine:
        assert batch_url(request) == batch_openai.ENDPOINT
        return BatchLine(custom_id, request.body)

    def encode(self, line: BatchLine) -> bytes:
        return batch_openai.encode_line(line)

    async def submit_file(self, path: Path, on_file: Callable[[str], Awaitable[None]]) -> BatchInfo:
        """Upload the JSONL file, report its id (to be committed), then create the batch."""
        file_id = await batch_openai.upload_file(self._session, self._base_url, self._headers, path)
        await on_file(file_id)
        return await self._create(file_id)

    async def batch_for_file(self, file_id: str) -> BatchInfo:
        found = await self.find_for_file(file_id)
        return found if found is not None else await self._create(file_id)

    async def find_for_file(self, file_id: str) -> BatchInfo | None:
        return await batch_openai.find_from_file(
            self._session, self._base_url, self._headers, file_id
        )

    async def find_made(self, requests: int, since: datetime) -> list[BatchInfo]:
        """None: a batch is made only from a file whose id was committed first, and
        `find_for_file` finds it; a file whose upload answer was lost is simply not used."""
        del requests, since
        return []

    async def _create(self, file_id: str) -> BatchInfo:
        return await batch_openai.create(
            self._session, self._base_url, self._headers, file_id, {"created_by": "kullbatch"}
        )

    async def get(self, batch_id: str) -> BatchInfo:
        return await batch_openai.get(self._session, self._base_url, self._headers, batch_id)

    async def cancel(self, batch_id: str) -> BatchInfo:
        return await batch_openai.cancel(self._session, self._base_url, self._headers, batch_id)

    async def results(self, info: BatchInfo) -> dict[str, LineResult]:
        return await batch_openai.results(self._session, self._base_url, self._headers, info)

    def classify(self, failure: LineFailure) -> ProviderError:
        return batch_openai.classify_line(failure, self._api_key)


class AnthropicBatches:
    """Message Batches: the requests go inline in one create call."""

    name = "anthropic"
    framing = Framing(b'{"requests":[', b",", b"]}")  # the create call's JSON, streamed
    limits = Limits(
        batch_anthropic.MAX_REQUESTS,
        batch_anthropic.MAX_BYTES,
        overhead=len(framing.prefix) + len(framing.suffix),
        separator=len(framing.separator),
    )

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self._session = session
        self._base_url = base_url
        self._headers = batch_anthropic.batch_headers(api_key)
        self._api_key = api_key

    def line(self, custom_id: str, request: WireRequest) -> BatchLine:
        return BatchLine(custom_id, request.body)

    def encode(self, line: BatchLine) -> bytes:
        return batch_anthropic.encode_request(line)

    async def submit_file(self, path: Path, on_file: Callable[[str], Awaitable[None]]) -> BatchInfo:
        del on_file  # nothing is uploaded before the batch exists
        return await batch_anthropic.create_from_file(
            self._session, self._base_url, self._headers, path
        )

    async def batch_for_file(self, file_id: str) -> BatchInfo:
        raise FatalJobError(f"anthropic batches have no input file ({file_id})")

    async def find_for_file(self, file_id: str) -> BatchInfo | None:
        raise FatalJobError(f"anthropic batches have no input file ({file_id})")

    async def find_made(self, requests: int, since: datetime) -> list[BatchInfo]:
        return await batch_anthropic.find_made(
            self._session, self._base_url, self._headers, requests, since
        )

    async def get(self, batch_id: str) -> BatchInfo:
        return await batch_anthropic.get(self._session, self._base_url, self._headers, batch_id)

    async def cancel(self, batch_id: str) -> BatchInfo:
        return await batch_anthropic.cancel(self._session, self._base_url, self._headers, batch_id)

    async def results(self, info: BatchInfo) -> dict[str, LineResult]:
        return await batch_anthropic.results(self._session, self._base_url, self._headers, info)

    def classify(self, failure: LineFailure) -> ProviderError:
        return batch_anthropic.classify_line(failure, self._api_key)


def create_batch_client(
    spec: ProviderSpec, session: aiohttp.ClientSession, env: Mapping[str, str]
) -> BatchClient:
    """The batch client of an economy-capable provider, keyed from the environment."""
    key = next((env[var].strip() for var in spec.key_vars if env.get(var, "").strip()), "")
    if not key:
        raise FatalJobError(f"{spec.name}: set {' or '.join(spec.key_vars)} in the environment")
    if spec.name == "openai":
        headers = {"Authorization": f"Bearer {key}"}
        if organization := env.get("OPENAI_ORG_ID"):
            headers["OpenAI-Organization"] = organization
        if project := env.get("OPENAI_PROJECT_ID"):
            headers["OpenAI-Project"] = project
        base_url = env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return OpenAIBatches(session, base_url.rstrip("/"), headers, key)
    if spec.name == "anthropic":
        base_url = env.get("ANTHROPIC_BASE_URL", "").strip() or "https://api.anthropic.com"
        return AnthropicBatches(session, base_url.rstrip("/"), key)
    raise FatalJobError(f"{spec.name} has no batch API: economy mode needs openai or anthropic")
