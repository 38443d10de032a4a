"""Files of a run folder written so that a crash never leaves a damaged one behind.

- :func:`atomic_write_bytes` / :func:`atomic_copy`: through :func:`afnet.tools.atomic_files.replace_file`
  (a temporary file in the same folder, flushed to disk, then renamed over the target);
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

from afnet.tools.atomic_files import replace_file

PathLike = Union[str, os.PathLike]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    replace_file(path, lambda fh: fh.write(data))


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    def copy(fh) -> None:
        with open(src, "rb") as source:
            shutil.copyfileobj(source, fh)

    replace_file(dst, copy)


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
