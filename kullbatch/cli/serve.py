"""`kullbatch serve`: the REST API, the WebSocket and the dashboard, for one or many users."""

from __future__ import annotations

from pathlib import Path  # noqa: TC003  (typer reads the annotations at run time)
from typing import Annotated

import typer

from kullbatch.cli.exits import fail, failed, run
from kullbatch.cli.options import DbOption  # noqa: TC001  (typer reads it at run time)
from kullbatch.errors import KullbatchError
from kullbatch.service import jobs, paths
from kullbatch.service.users import Users, load_users, token_problem
from kullbatch.web import server


def serve(
    host: Annotated[str, typer.Option(help="Address; off loopback a token is required.")] = (
        server.DEFAULT_HOST
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port, 0 for any.")] = 8787,
    token: Annotated[
        str | None,
        typer.Option(
            help="API and WebSocket token of the one admin user, 16 characters at least "
            "[default: $KULLBATCH_TOKEN, else random]",
            show_default=False,
        ),
    ] = None,
    users: Annotated[
        Path | None,
        typer.Option(
            help='A JSON file {"users": [{"name", "token", "admin"}]}: each token is one user, '
            "who sees only their own jobs (an admin sees all). Read once, at start.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="Folder requests may name photos in by path.", file_okay=False),
    ] = None,
    db: DbOption = None,
    no_resume: Annotated[
        bool,
        typer.Option(
            "--no-resume",
            help="Leave the jobs a stopped server was running interrupted, instead of going "
            "on with them at start.",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Failed attempts on stderr.")] = (
        False
    ),
) -> None:
    """Serve the REST API under /api/batch/, live progress on /ws and a dashboard at /,
    running every job in this one process until Ctrl-C or SIGTERM (running jobs stop
    interrupted; the next start goes on with them)."""
    known: Users | None = None
    if users is not None:
        if token is not None:
            fail("--users and --token: give one of them (a users file names every token)")
        try:
            known = load_users(users)
        except KullbatchError as exc:
            failed(exc)
        chosen = known.users[0].token
    else:
        try:
            chosen = server.choose_token(token, jobs.environment(), host)
        except ValueError as exc:
            fail(str(exc))
        problem = token_problem(chosen)
        if problem is not None:
            fail(f"--token (or $KULLBATCH_TOKEN) {problem}")
    settings = server.ServeSettings(
        host=host, port=port, token=chosen, root=root, users=known, resume=not no_resume
    )
    database = db if db is not None else paths.default_db_path(jobs.environment())
    paths.configure_admin_log(database, verbose=verbose)
    say = lambda url: typer.echo(f"kullbatch serving {database}: open {url}", err=True)  # noqa: E731
    try:
        run(lambda: server.run_server(database, settings, announce=say))
    finally:
        paths.close_admin_log()
