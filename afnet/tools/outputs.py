"""Output paths checked before any work: a run should not end in ``PermissionError`` after an hour.

:func:`output_problem` creates the folder a command will write to (if missing) and writes and
removes a probe file in it, so that whatever would stop the real write (a file in the way, a
parent that is a file, permissions, a read-only file system) shows at once, as one sentence a
command line can print after its flag.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union

__all__ = ["output_problem"]

PathLike = Union[str, os.PathLike]


def _file_in_the_way(folder: Path) -> Optional[Path]:
    """The nearest existing one of ``folder`` and its ancestors when it is a file: then nothing can
    be created there."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def output_problem(path: PathLike, *, is_file: bool = False) -> Optional[str]:
    """Why ``path`` cannot be written, or None when it can.

    ``path`` is a folder to write files into, created (with its parents) when missing as the
    command would do anyway; or with ``is_file=True`` a file to write, whose folder must exist (a
    missing one is more likely a typo than a wish).
    """
    path = Path(path)
    if is_file and path.is_dir():
        return f"{path} is a directory, not a file"
    folder = path.parent if is_file else path
    blocker = _file_in_the_way(folder)
    if blocker == path:
        return f"{path} is a file, not a directory"
    if blocker is not None:
        return f"cannot write to {path}: {blocker} is a file, not a directory"
    if is_file and not folder.is_dir():
        return f"folder {folder} does not exist"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".afnet-probe-"):
            pass
    except OSError as exc:
        return f"cannot write to {path}: {exc.strerror or exc}"
    return None
