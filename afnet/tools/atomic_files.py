"""Files replaced atomically: a crash leaves either the old file or the new one, never a part.

A process killed during a write (``kill -9``, a power cut) cannot remove its temporary file:
:func:`remove_stale_temp_files` finds those by their name (``.<name>.<pid>.<hex>.tmp``, written
only here) and removes the ones whose writer is no longer running.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import secrets
from typing import BinaryIO, Callable, List, Optional, Union

PathLike = Union[str, os.PathLike]

__all__ = ["pid_alive", "remove_stale_temp_files", "replace_file", "temp_writer_pid"]

# The temporary files of replace_file: ".<target name>.<writer pid>.<8 hex digits>.tmp".
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _temp_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def temp_writer_pid(name: str) -> Optional[int]:
    """The pid of the process that wrote temporary file ``name`` of :func:`replace_file`, or None
    when ``name`` is not such a file."""
    match = _TEMP_NAME.match(name)
    return int(match["pid"]) if match else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_temp_files(folder: PathLike) -> List[pathlib.Path]:
    """Remove the temporary files of :func:`replace_file` in ``folder`` whose writer no longer runs
    on this host (a write killed before it could clean up); returns the removed paths.

    Only names of that exact form are touched, and never one of a live process, which may be
    writing it now.
    """
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            pid = temp_writer_pid(entry.name)
            if pid is None or pid_alive(pid) or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(pathlib.Path(entry.path))
    return removed


def replace_file(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """``write(fh)`` into a new temporary file next to ``path``, flush it to disk, then rename it
    over ``path`` (atomic within a file system) and make the rename durable where the OS allows."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot replace {path}: it is a directory")
    tmp = _temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
