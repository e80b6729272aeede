"""Opening a photo safely: only a regular file, and, for `serve --root`, only one beneath it.

Every read of a local photo (a run, a resume, a thumbnail, a burst's focus) goes through
`open_photo`. It opens without blocking (a FIFO would otherwise wait forever for a writer),
then asks the opened descriptor what it is: a FIFO, a device, a socket or a folder is refused
before a byte is read. Where a root is set for the current task (`confined`, a context
variable, so every job and thumbnail of one server carries its `--root` into worker threads),
the file actually opened must be the file the path resolves to beneath the root, compared by
device and inode: a photo swapped for a link to a file outside the root after the manifest
was checked does not lead out, whenever the swap happened.
"""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from kullbatch.errors import PermanentImageError, file_kind

if TYPE_CHECKING:
    from collections.abc import Iterator

_ROOT: ContextVar[Path | None] = ContextVar("kullbatch_photo_root", default=None)
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


@contextlib.contextmanager
def confined(root: Path | None) -> Iterator[None]:
    """Within the block (and the tasks and threads it starts), photos open only beneath
    `root`; None lifts nothing already set."""
    if root is None:
        yield
        return
    token = _ROOT.set(root.resolve())
    try:
        yield
    finally:
        _ROOT.reset(token)


def current_root() -> Path | None:
    return _ROOT.get()


def open_photo(path: Path) -> BinaryIO:
    """The photo opened for reading, or PermanentImageError saying why it may not be read."""
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError as exc:
        raise PermanentImageError(f"{path}: file not found (moved or deleted?)") from exc
    except IsADirectoryError as exc:
        raise PermanentImageError(f"{path}: is a folder, not an image file") from exc
    except OSError as exc:
        raise PermanentImageError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        _check_opened(path, os.fstat(fd))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_opened(path: Path, opened: os.stat_result) -> None:
    kind = file_kind(opened.st_mode)
    if kind is not None:
        raise PermanentImageError(f"{path}: is {kind}, not an image file")
    root = _ROOT.get()
    if root is not None:
        _check_beneath(path, opened, root)


def _check_beneath(path: Path, opened: os.stat_result, root: Path) -> None:
    """The opened file is the one `path` resolves to now, and that lies beneath `root`."""
    real = Path(os.path.realpath(path))
    outside = PermanentImageError(f"{path.name}: lies outside --root; not read")
    if not real.is_relative_to(root):
        raise outside
    try:
        there = real.stat()
    except OSError:
        raise outside from None
    if (there.st_dev, there.st_ino) != (opened.st_dev, opened.st_ino):
        raise outside
