"""Files of a run folder written so that a crash never leaves a damaged one behind.

- :func:`atomic_write_bytes` / :func:`atomic_copy`: a temporary file in the same folder, flushed
  to disk, then renamed over the target (a rename within a file system is atomic);
- ``log.jsonl``: one JSON object per epoch, appended and flushed; :func:`truncate_log` drops the
  lines of epochs a resumed run will redo, so the log reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Union

PathLike = Union[str, os.PathLike]


def _fsync_file(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_with(path: PathLike, write) -> None:
    """``write(tmp)`` into a temporary file next to ``path``, flush it to disk, rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    _replace_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    _replace_with(dst, lambda tmp: shutil.copyfile(src, tmp))


def _jsonable(value: Any) -> Any:
    """JSON cannot hold NaN or infinity portably: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def to_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` with NaN/infinity as null."""
    return json.dumps(_jsonable(value), allow_nan=False, **kwargs)


def append_log(path: PathLike, line: Dict[str, Any]) -> None:
    """Append one JSON line to ``path`` and flush it to disk."""
    with open(path, "a") as f:
        f.write(to_json(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_log(path: PathLike) -> List[Dict[str, Any]]:
    """The JSON lines of ``path`` ([] when it does not exist); a damaged line is an error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if text.strip():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from None
    return lines


def truncate_log(path: PathLike, epochs_done: int) -> None:
    """Keep only the lines of epochs ``1..epochs_done`` (a fresh run: none)."""
    path = Path(path)
    if not path.exists():
        return
    if epochs_done == 0:
        path.unlink()
        return
    kept = [line for line in read_log(path) if line.get("epoch", 0) <= epochs_done]
    atomic_write_bytes(path, "".join(to_json(line) + "\n" for line in kept).encode())
