"""Atomic file writes: a file is either its old self or complete, never half written.

Every writer of the package goes through :func:`atomic_path`: the data goes to a temporary file in
the target's folder, which then replaces the target in one ``os.replace``. A failure at any point
(a full disk, a kill, an exception) leaves the old file and no temporary one. New files get the
permissions the user's umask gives (``0o666 & ~umask``), like files written with ``open``.
An ``OSError`` (read-only folder, no space left) becomes a one-line :class:`RobustkitError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from robustkit.errors import RobustkitError


def file_mode() -> int:
    """The mode ``open`` gives a new file under the current umask (``0o666 & ~umask``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def os_error(exc: OSError, path: str | os.PathLike, what: str = "write") -> RobustkitError:
    """A one-line error for an ``OSError`` met while trying to ``what`` ``path``, with the fix."""
    reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    if exc.errno == errno.ENOSPC:
        fix = "free some space or choose another folder"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to"
    else:
        fix = "check the path and the disk"
    return RobustkitError(f"cannot {what} {path} ({reason}); {fix}")


def make_folder(path: str | os.PathLike, what: str = "create the folder") -> Path:
    """``mkdir -p path``; an ``OSError`` (a file where a folder should be, no permission, a full disk)
    becomes a one-line :class:`RobustkitError`: ``cannot {what} {path} (reason); fix``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, path, what) from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path``; on a clean exit it replaces ``path`` atomically.

    Usage: ``with atomic_path(p) as tmp: write(tmp)``. On any exception the temporary file is
    removed, ``path`` is untouched and an ``OSError`` is raised as a :class:`RobustkitError`.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise os_error(exc, path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def check_replaceable(path: str | os.PathLike, mark: str, fix: str) -> None:
    """Refuse (one-line :class:`RobustkitError`) to replace an existing file at ``path`` that robustkit
    did not write: one whose start does not hold ``mark``. ``fix`` says what to do instead."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        raise RobustkitError(f"{path} is a folder; {fix}")
    try:
        with path.open("rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except OSError as exc:
        raise RobustkitError(f"cannot read {path} ({exc.strerror}); {fix}") from None
    if mark not in head:
        raise RobustkitError(f"{path} exists and was not written by robustkit; it is left as it is: {fix}")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike, what: str, fix: str) -> Any:
    """The JSON in ``path``; a missing, unreadable or invalid file is a one-line error naming
    ``what`` it is and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RobustkitError(f"{what} {path} does not exist; {fix}") from None
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        raise RobustkitError(f"{what} {path} is not valid JSON ({reason}); {fix}") from None
