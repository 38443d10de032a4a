"""Files replaced atomically: a crash leaves either the old file or the new one, never a part."""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
from typing import BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]

__all__ = ["replace_file"]


def replace_file(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """``write(fh)`` into a new temporary file next to ``path``, flush it to disk, then rename it
    over ``path`` (atomic within a file system) and make the rename durable where the OS allows."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot replace {path}: it is a directory")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
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
