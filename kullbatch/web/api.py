"""The spec's REST API under /api/batch/, on one `Service` for the server's life.

    POST process              the spec's request body -> 202 {jobId, message, mode, totalImages}
    GET  status/:jobId        the status object
    GET  results/:jobId       the results object (?thumbnails=1 adds each photo's thumbnail URL)
    POST cancel/:jobId        {jobId, message}
    POST resume/:jobId        202, like process
    GET  jobs                 a list of status objects, newest first
    GET  thumbnail/:jobId/:imageId   a small JPEG of a local photo beneath --root
                              (?size=large: the contact sheet's large view; ETag, 304)
    PUT  results/:jobId/:imageId/rating   {"rating": -1..5} -> {imageId, photographerRating}

Every route wants `Authorization: Bearer <token>`: the token says who the user is (`serve
--users`; with `--token` alone, one admin). A user sees and acts on only their own jobs: another
user's job answers 404 exactly as an unknown one; an admin sees every job. Errors are JSON,
`{"error", "field"}`: 400 a bad body (the field named as in a manifest error), 401, 404 an
unknown job, 409 a job that cannot do what is asked, 413 a body over the size limit. The status
of kullbatch's own errors is decided by their class, in one place (`http_status`). Messages
echo at most about 200 characters of what was sent. Local paths in a request must lie beneath
`--root`; anything else is refused before a byte of it is read, and every later open (the run,
a resume, a thumbnail) checks the file actually opened again (`media.confine`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from kullbatch.errors import (
    ConflictError,
    FieldError,
    KullbatchError,
    NotFoundError,
    PermanentImageError,
    UsageError,
)
from kullbatch.manifest import ManifestError, manifest_from_document, parse_json
from kullbatch.media import images
from kullbatch.media.confine import confined
from kullbatch.models import (
    ACTIVE_STATES,
    CANCELLABLE_STATES,
    EventKind,
    JobStatus,
    ProgressEvent,
)
from kullbatch.service import export, jobs, restart
from kullbatch.service.ratings import set_photographer_rating
from kullbatch.service.settings import ProcessSettings
from kullbatch.service.users import User, Users, owned_job, statuses_of
from kullbatch.web import sheet

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from kullbatch.manifest import Manifest
    from kullbatch.run.economy import Stoppable
    from kullbatch.store.rows import JobRow
    from kullbatch.web.hub import Hub

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

admin_log = logging.getLogger("kullbatch.admin")

PREFIX = "/api/batch"
THUMBNAIL_EDGE = sheet.THUMBNAIL_EDGE
MESSAGE_MAX = 400  # our words and at most ~200 characters of what was sent
# seconds a resume waits for a job that has ended but whose task is still finishing (grouping
# its bursts, the summary): moments for a shoot, so the resume is not refused for them
FINISHING_WAIT = 30.0
USER = web.RequestKey("user", User)  # who sent the request, set by the token check


# The HTTP status of each kind of error a request can meet: decided here, by class, only.
_STATUSES: tuple[tuple[type[KullbatchError], int], ...] = (
    (UsageError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
)


def error(status: int, message: str, field: str | None = None) -> web.Response:
    """The JSON error; a message that repeats too much of the request is cut short."""
    if len(message) > MESSAGE_MAX:
        message = message[: MESSAGE_MAX - 1] + "…"
    if field is not None and len(field) > MESSAGE_MAX:
        field = field[: MESSAGE_MAX - 1] + "…"
    return web.json_response({"error": message, "field": field}, status=status)


def http_status(exc: KullbatchError) -> int | None:
    """400 a usage error, 404 not found, 409 a conflict; None for an error no request causes."""
    return next((status for kind, status in _STATUSES if isinstance(exc, kind)), None)


def error_field(exc: KullbatchError) -> str | None:
    """The request field an error is about, as the API names it."""
    if isinstance(exc, ManifestError):
        return exc.location
    return exc.field if isinstance(exc, FieldError) else None


def api_middlewares(users: Users | str) -> list[Any]:
    """Bearer-token check on every API route (the token names the user, kept as
    `request[USER]`), and JSON bodies for aiohttp's own errors and kullbatch's (their status
    by `http_status`)."""
    known = Users.single(users) if isinstance(users, str) else users

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PREFIX + "/"):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        user = known.find(given.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            response = error(401, "missing or wrong token: send Authorization: Bearer <token>")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        request[USER] = user
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return error(exc.status, exc.reason)
        except KullbatchError as exc:
            status = http_status(exc)
            if status is None:
                raise
            return error(status, str(exc), error_field(exc))

    return [guard]


class Api:
    """The handlers, and the jobs this server runs (each a task on the shared runtime)."""

    def __init__(self, service: jobs.Service, hub: Hub, *, root: Path | None) -> None:
        self.service = service
        self.hub = hub
        self.root = root
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._processors: dict[str, Stoppable] = {}
        self._paths: dict[str, dict[str, Path]] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(f"{PREFIX}/process", self.process)
        router.add_get(f"{PREFIX}/status/{{job_id}}", self.status)
        router.add_get(f"{PREFIX}/results/{{job_id}}", self.results)
        router.add_post(f"{PREFIX}/cancel/{{job_id}}", self.cancel)
        router.add_post(f"{PREFIX}/resume/{{job_id}}", self.resume)
        router.add_get(f"{PREFIX}/jobs", self.jobs)
        router.add_get(f"{PREFIX}/thumbnail/{{job_id}}/{{image_id}}", self.thumbnail)
        router.add_put(f"{PREFIX}/results/{{job_id}}/{{image_id}}/rating", self.rating)

    # -- running jobs -------------------------------------------------------------------------

    def _start(self, job_id: str, job: JobRow) -> None:
        task = asyncio.create_task(self._run(job), name=f"kullbatch-job-{job_id}")
        self._tasks[job_id] = task

    async def _run(self, job: JobRow) -> None:
        """Run the job, its photos opened only beneath --root; its last message goes out once
        the database says how it ended."""

        def keep(processor: Stoppable) -> None:
            self._processors[job.id] = processor

        def relay(event: ProgressEvent) -> None:
            if event.kind is not EventKind.ENDED:
                self.hub.handle(event)

        try:
            with confined(self.root):
                await self.service.run(job, subscribers=[relay], on_processor=keep)
        except ConflictError as exc:  # another server claimed it first: theirs to run
            admin_log.info("[server] job %s not run here: %s", job.id, exc)
            self._processors.pop(job.id, None)
            self._tasks.pop(job.id, None)
            return
        except Exception:  # the job's own record says what happened; the server lives on
            admin_log.exception("[server] job %s stopped with an error", job.id)
        finally:
            self._processors.pop(job.id, None)
            self._tasks.pop(job.id, None)
        self.hub.handle(_ended(await self.service.status(job.id)))

    async def stop(self) -> None:
        """The server is going away: running jobs stop as interrupted, so `resume` ends them."""
        for processor in list(self._processors.values()):
            processor.interrupt()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # -- routes -------------------------------------------------------------------------------

    async def restart(self) -> list[str]:
        """Go on with the jobs a server was running on this database when it stopped."""
        started: list[str] = []
        for job in await restart.jobs_to_restart(self.service):
            if job.id in self._tasks:
                continue
            ready = await restart.prepare_restart(self.service, job)
            self.hub.own(job.id, job.user_id)
            self._start(job.id, ready)
            started.append(job.id)
        return started

    async def _serve(self, job: JobRow, message: str) -> web.Response:
        """Run the job here, for its owner's eyes."""
        await restart.mark_served(self.service, job.id)
        self.hub.own(job.id, job.user_id)
        self._start(job.id, job)
        return _accepted(job, message)

    async def _owned(self, request: web.Request) -> JobRow:
        """The job the route names, if the user may see it: else 404, as for no job at all."""
        return await owned_job(self.service, request.match_info["job_id"], request[USER])

    async def process(self, request: web.Request) -> web.Response:
        data = await request.read()
        manifest = await asyncio.to_thread(self._manifest, data)
        job = await self.service.create(manifest, ProcessSettings(), request[USER].name)
        return await self._serve(job, "Batch processing started")

    def _manifest(self, data: bytes) -> Manifest:
        """Parse with limits, then refuse local paths outside --root before the manifest
        reader opens any file."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"request body: not UTF-8 text: {exc.reason}") from None
        document = parse_json(text, "request body")
        images = document.get("images") if isinstance(document, dict) else document
        prefix = "images" if isinstance(document, dict) else ""
        for index, item in enumerate(images if isinstance(images, list) else []):
            path = item.get("path") if isinstance(item, dict) else None
            if isinstance(path, str) and path:
                self._check_path(path, f"{prefix}[{index}].path")
        return manifest_from_document(document, base=self.root or Path.cwd())

    def _check_path(self, text: str, field: str) -> None:
        if self.root is None:
            raise ManifestError(
                "request body", field, "local paths need the server started with --root DIR"
            )
        try:
            # exactly as the manifest reader will resolve it (`~` included)
            resolved = (self.root / Path(text).expanduser()).resolve()
        except (OSError, RuntimeError, ValueError):
            resolved = None
        if resolved is None or not resolved.is_relative_to(self.root):
            raise ManifestError("request body", field, f"must lie beneath {self.root}")

    async def status(self, request: web.Request) -> web.Response:
        job = await self._owned(request)
        status = await self.service.status(job.id)
        return web.json_response(status.model_dump(mode="json"))

    async def results(self, request: web.Request) -> web.Response:
        job_id = (await self._owned(request)).id
        status, items = await self.service.results(job_id)
        document = export.results_document(status, items)
        if request.query.get("thumbnails"):
            for entry, item in zip(document["results"], items, strict=True):
                entry["thumbnail"] = item.image.url or (
                    thumbnail_url(job_id, item.image.id)
                    if self._local(item.image.path) is not None
                    else None
                )
                # the contact sheet orders by capture time (EXIF; null: manifest order)
                entry["captured"] = item.fingerprint.captured if item.fingerprint else None
        return web.json_response(document)

    async def cancel(self, request: web.Request) -> web.Response:
        job_id = (await self._owned(request)).id
        status = await self.service.status(job_id)
        processor = self._processors.get(job_id)
        if processor is not None:  # ours: stops now, not at the next poll
            processor.cancel()
            return web.json_response({"jobId": job_id, "message": "Job cancelled successfully"})
        if status.status not in CANCELLABLE_STATES:
            raise ConflictError(f"job {job_id} is already {status.status.value}; nothing to cancel")
        return web.json_response({"jobId": job_id, "message": await self.service.cancel(job_id)})

    async def resume(self, request: web.Request) -> web.Response:
        job_id = (await self._owned(request)).id
        task = self._tasks.get(job_id)
        if task is not None:
            if (await self.service.status(job_id)).status in ACTIVE_STATES:
                raise ConflictError(f"job {job_id} is already running here")
            # it has ended and its task is finishing (bursts grouped, the summary): moments
            await asyncio.wait({task}, timeout=FINISHING_WAIT)
            if job_id in self._tasks:
                raise ConflictError(f"job {job_id} is still finishing here; resume it in a moment")
        job = await self.service.prepare_resume(job_id)
        return await self._serve(job, "Batch processing resumed")

    async def jobs(self, request: web.Request) -> web.Response:
        user = request[USER]
        statuses = (
            await self.service.statuses() if user.admin else await statuses_of(self.service, user)
        )
        return web.json_response([status.model_dump(mode="json") for status in statuses])

    async def thumbnail(self, request: web.Request) -> web.Response:
        job_id, image_id = (await self._owned(request)).id, request.match_info["image_id"]
        paths = self._paths.get(job_id)
        if paths is None:
            _, items = await self.service.results(job_id)
            paths = {
                item.image.id: local
                for item in items
                if (local := self._local(item.image.path)) is not None
            }
            self._paths[job_id] = paths
        path = paths.get(image_id)
        if path is None:
            raise NotFoundError(f"no local photo {image_id!r} beneath --root in job {job_id}")
        edge = sheet.picture_edge(request.query.get("size"))
        if edge is None:
            return error(400, "size: expected small or large", "size")
        tag = await asyncio.to_thread(sheet.etag, path, edge)
        if sheet.not_modified(request, tag):  # the browser holds this very picture
            return sheet.unchanged(tag)
        try:
            with confined(self.root):  # the file actually opened must lie beneath --root
                data = await asyncio.to_thread(_thumbnail, path, edge)
        except PermanentImageError as exc:  # the message starts with the path: name only
            detail = exc.message.removeprefix(f"{path}: ")
            raise NotFoundError(f"cannot read {path.name}: {detail}") from None
        return web.Response(body=data, content_type="image/jpeg", headers=sheet.cache_headers(tag))

    async def rating(self, request: web.Request) -> web.Response:
        """The photographer's stars for one photo, from the contact sheet (0 clears)."""
        job_id, image_id = (await self._owned(request)).id, request.match_info["image_id"]
        try:
            value = sheet.rating_value(await request.read())
        except sheet.RatingBodyError as exc:
            return error(400, str(exc), "rating")
        stored = await set_photographer_rating(self.service, job_id, image_id, value)
        return web.json_response({"imageId": image_id, "photographerRating": stored})

    def _local(self, path: Path | None) -> Path | None:
        """A stored path the dashboard may show: only beneath --root."""
        if path is None or self.root is None:
            return None
        resolved = path.resolve()
        return resolved if resolved.is_relative_to(self.root) else None


def thumbnail_url(job_id: str, image_id: str) -> str:
    """The thumbnail's address, each id percent-encoded (an id may hold `/`, `?` or `#`)."""
    return f"{PREFIX}/thumbnail/{quote(job_id, safe='')}/{quote(image_id, safe='')}"


def _accepted(job: JobRow, message: str) -> web.Response:
    body = {"jobId": job.id, "message": message, "mode": job.mode, "totalImages": job.total_images}
    return web.json_response(body, status=202)


def _ended(status: JobStatus) -> ProgressEvent:
    """The end of a job as its record tells it (also when the engine never started)."""
    return ProgressEvent(
        kind=EventKind.ENDED,
        job_id=status.jobId,
        total=status.totalImages,
        rated=status.processedImages,
        failed=status.failedImages,
        retrying=0,
        status=status.status,
        shoot_id=status.shootId,
        provider=status.providerId,
    )


def _thumbnail(path: Path, edge: int = THUMBNAIL_EDGE) -> bytes:
    """A small upright JPEG of the photo, decoded at reduced size; a RAW file's from its
    preview, as the photo was sent."""
    upright, _ = images.upright_file(path, edge, "RGB", timed=False)
    return images.jpeg(images.within(upright, edge), quality=80)
