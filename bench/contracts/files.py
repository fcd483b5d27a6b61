"""Writing files so that a full disk is one clear line and never a truncated file.

Reports, cell files and the build cache are written where a disk can fill up (a board's SD card, a CI
runner's small volume). :func:`atomic_write_text` / :func:`atomic_open` write to a temporary file in the
same folder and ``os.replace`` it over the target, so a reader sees the old file or the whole new one;
:func:`writing` turns "no space left" (and quota, read-only file system) into :class:`CannotWrite`,
which names the path. Standard library only: the worker imports it on the device.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from edgebench.bench.contracts.errors import EdgebenchError

# errno values that mean "this location cannot take the write", not "edgebench has a bug"
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
# mkstemp makes 0600 files; a replaced report keeps the permissions a plain open() would have given it
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class CannotWrite(EdgebenchError):
    """A file or the store could not be written because its disk is full, over quota or read-only."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot write {self.path}: {reason}; free some space there (or make it writable)")


def is_disk_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError saying the disk is full, over quota or read-only."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def cannot_write(exc: OSError, path: str | os.PathLike[str] | None = None) -> CannotWrite:
    """The :class:`CannotWrite` for a disk OSError, naming ``exc.filename`` or else ``path``."""
    return CannotWrite(exc.filename or path or "?", exc.strerror or str(exc))


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Inside this block a disk-full/quota/read-only OSError becomes :class:`CannotWrite` naming ``path``
    (a failing ``write()`` on an open file carries no file name of its own)."""
    try:
        yield
    except OSError as exc:
        if is_disk_error(exc):
            raise cannot_write(exc, path) from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` in one step.

    On any error the temporary file is removed and ``path`` is left as it was."""
    target = Path(path)
    with writing(target):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            if hasattr(os, "fchmod"):  # POSIX
                os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, mode, **kwargs) as f:
                yield f
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
