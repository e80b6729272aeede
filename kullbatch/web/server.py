"""The web side: WebSocket progress for `process --serve-ws`, and `kullbatch serve`.

`serve_progress` serves only the WebSocket hub while one CLI job runs. `run_server` serves the
REST API (kullbatch.web.api), the same WebSocket and the dashboard page, running every job it is
asked for in one `Service` (one runtime: one HTTP session, one writer, one gate per account) for
its whole life. Both bind 127.0.0.1 unless told otherwise; off loopback a token is mandatory.
Tokens are compared in constant time and never written to the access log (there is none: a
request line would carry `?token=`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import signal
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from kullbatch.service import jobs
from kullbatch.service.users import Users
from kullbatch.web.api import Api, api_middlewares
from kullbatch.web.hub import Hub

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
# the page's own script and style only; pictures also from the photos' own URLs
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' blob: https: http:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
MAX_BODY = 32 * 1024 * 1024  # a 100,000-photo request body with metadata fits
API = web.AppKey("api", Api)


def parse_address(text: str, default_host: str = DEFAULT_HOST) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPv6]:PORT`; a port of 0 asks the system for a free one."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = default_host
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"expected [HOST:]PORT, got {text!r}") from None
    if not 0 <= port <= 65535:  # noqa: PLR2004 - the port range
        raise ValueError(f"port must be 0-65535, got {port}")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def choose_token(given: str | None, env: Mapping[str, str], host: str) -> str:
    """`--token`, else $KULLBATCH_TOKEN, else a random one on loopback; off loopback, refuse."""
    token = given or env.get("KULLBATCH_TOKEN")
    if token:
        return token
    if not is_loopback(host):
        raise ValueError(
            f"serving on {host} (not loopback) needs a token: pass --token or set KULLBATCH_TOKEN"
        )
    return new_token()


def new_token() -> str:
    return secrets.token_urlsafe(18)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def listening(app: web.Application, host: str, port: int) -> AsyncIterator[tuple[str, int]]:
    """Serve `app` on host:port until the block ends; yields the bound (host, port)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield host, int(bound_port)
    finally:
        await runner.cleanup()


@dataclass(frozen=True, slots=True)
class ServedProgress:
    """A running progress server: subscribe `hub.handle`, show `url` to the user."""

    hub: Hub
    url: str


@contextlib.asynccontextmanager
async def serve_progress(host: str, port: int, token: str) -> AsyncIterator[ServedProgress]:
    """`process --serve-ws`: the WebSocket alone, for as long as the block runs.

    On the way out every client first receives what is queued for it (the end status).
    """
    hub = Hub(token)
    app = web.Application()
    app.router.add_get("/ws", hub.websocket)
    app.on_shutdown.append(lambda _app: hub.close())
    async with listening(app, host, port) as (bound_host, bound_port):
        yield ServedProgress(hub, f"ws://{url_host(bound_host)}:{bound_port}/ws?token={token}")


def dashboard_page() -> str:
    return resources.files("kullbatch.web").joinpath("dashboard.html").read_text(encoding="utf-8")


def build_app(
    service: jobs.Service, hub: Hub, *, root: Path | None = None, max_body: int = MAX_BODY
) -> web.Application:
    """The REST API under /api/batch/, the WebSocket at /ws and the dashboard at /."""
    api = Api(service, hub, root=root.resolve() if root is not None else None)
    app = web.Application(client_max_size=max_body, middlewares=api_middlewares(hub.users))
    app[API] = api
    page = dashboard_page()

    async def dashboard(_request: web.Request) -> web.Response:
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": CSP,
                "X-Frame-Options": "DENY",  # no other site frames the page (clickjacking)
                "X-Content-Type-Options": "nosniff",
            },
        )

    app.router.add_get("/", dashboard)
    app.router.add_get("/ws", hub.websocket)
    api.add_routes(app.router)

    async def shutdown(_app: web.Application) -> None:
        await api.stop()  # running jobs end interrupted: `resume` finishes them
        await hub.close()

    app.on_shutdown.append(shutdown)
    return app


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str = ""
    root: Path | None = None
    users: Users | None = None  # `--users FILE`; None: `token` is one admin user
    resume: bool = True  # `--no-resume`: jobs a stopped server was running stay interrupted


async def run_server(
    db: Path,
    settings: ServeSettings,
    *,
    announce: Callable[[str], None],
    stop: asyncio.Event | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """`kullbatch serve`: until SIGINT/SIGTERM (or `stop`), then running jobs are interrupted."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with jobs.Service.open(db, env) as service:
            hub = Hub(settings.users or Users.single(settings.token))
            app = build_app(service, hub, root=settings.root)
            async with listening(app, settings.host, settings.port) as (host, port):
                shown = "<your token>" if settings.users is not None else settings.token
                announce(f"http://{url_host(host)}:{port}/?token={shown}")
                if settings.resume:
                    await app[API].restart()
                await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
