"""Where kullbatch keeps its files: the database, and the admin log beside it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    from collections.abc import Mapping

admin_log = logging.getLogger("kullbatch.admin")


def default_db_path(env: Mapping[str, str]) -> Path:
    if value := env.get("KULLBATCH_DB"):
        return Path(value).expanduser()
    return Path(platformdirs.user_data_dir("kullbatch", appauthor=False)) / "kullbatch.db"


def admin_log_path(db: Path) -> Path:
    return db.with_name(db.stem + "-admin.log")


def close_admin_log() -> None:
    for handler in list(admin_log.handlers):
        admin_log.removeHandler(handler)
        handler.close()


def configure_admin_log(db: Path, *, verbose: bool) -> None:
    """Every failed attempt goes to a file beside the database, and to stderr with -v."""
    admin_log.setLevel(logging.INFO)
    admin_log.propagate = False
    close_admin_log()
    db.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(admin_log_path(db), encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    admin_log.addHandler(to_file)
    if verbose:
        to_stderr = logging.StreamHandler()
        to_stderr.setFormatter(logging.Formatter("%(message)s"))
        admin_log.addHandler(to_stderr)
