"""Files of a run folder written so that a crash never leaves a damaged one behind.

- :func:`atomic_write_bytes` / :func:`atomic_copy`: through :func:`afnet.tools.atomic_files.replace_file`
  (a temporary file in the same folder, flushed to disk, then renamed over the target);
- ``log.jsonl``: one JSON object per epoch, appended and flushed; :func:`truncate_log` drops the
  lines of epochs a resumed run will redo, so the log reads as one uninterrupted run;
- ``run.lock`` (:class:`RunLock`): a run folder belongs to one run at a time;
- :func:`move_aside`: earlier files that a new run would replace are moved into ``replaced-N/``;
- :func:`claim_run_dir`: all of that when a run starts, before any work.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import math
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

from afnet.tools.atomic_files import pid_alive, remove_stale_temp_files, replace_file
from afnet.tools.outputs import output_problem

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


LOCK_NAME = "run.lock"


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock; the message names it (pid, host, start time)."""


def _describe_holder(holder: Dict[str, Any]) -> str:
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"


class RunLock:
    """``FOLDER/run.lock``, held by this process while it writes the folder.

    The file holds the holder's pid, host and start time (JSON). Exclusion comes from an
    ``flock`` on it, which the kernel drops when the holder exits in any way, ``kill -9``
    included; the file itself stays behind then. :meth:`acquire` takes such a file over when
    its pid no longer runs on this host (``previous`` keeps what it said), and refuses while the
    named process still runs or when it ran on another host, which this one cannot check.
    """

    def __init__(self, path: Path, fd: int, previous: Optional[Dict[str, Any]]) -> None:
        self.path, self._fd, self.previous = path, fd, previous
        self.made_folder = False  # set by whoever created the folder for this lock

    @classmethod
    def acquire(cls, folder: Union[str, os.PathLike]) -> "RunLock":
        """Lock ``folder`` (which must exist) or raise :class:`FolderInUse`."""
        path = Path(folder) / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):  # a file system without flock: pids decide
                    return cls._take(path, fd)
                holder = _read_holder(fd)
                os.close(fd)
                raise FolderInUse(f"{folder} is in use by another run ({_describe_holder(holder)}; {path})") from None
            try:  # the holder may have removed the file between our open and flock: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                return cls._take(path, fd)
            os.close(fd)

    @classmethod
    def _take(cls, path: Path, fd: int) -> "RunLock":
        previous = _read_holder(fd) or None
        if previous is not None:
            here = previous.get("host") == socket.gethostname()
            pid = previous.get("pid")
            if not here or not isinstance(pid, int) or (pid != os.getpid() and pid_alive(pid)):
                os.close(fd)
                where = "still runs" if here else "ran on another host, which cannot be checked from here"
                raise FolderInUse(f"{path.parent} is locked by {path} ({_describe_holder(previous)}), whose process "
                                  f"{where}; if that run has ended, remove {path}")
        mine = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
        os.fsync(fd)
        return cls(path, fd, previous)

    def release(self) -> None:
        """Remove the lock file and unlock (in this order: a process that opened the file meanwhile
        finds it gone and retries on a new one). A folder made for the lock goes too if it is
        empty: a run stopped before writing anything leaves nothing behind."""
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1
        if self.made_folder:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                os.rmdir(self.path.parent)


def _read_holder(fd: int) -> Dict[str, Any]:
    """The JSON a lock file holds ({} when empty or unreadable: a holder killed while writing it)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def move_aside(folder: Union[str, os.PathLike], names: Iterable[str]) -> Path:
    """Move the entries ``names`` (relative to ``folder``; missing ones are skipped) into
    ``folder/replaced-N/`` (the first free N), keeping their relative paths; returns that folder."""
    folder = Path(folder)
    n = 1
    while (folder / f"replaced-{n}").exists():
        n += 1
    target = folder / f"replaced-{n}"
    target.mkdir()
    for name in names:
        if (folder / name).exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder / name, target / name)
    return target


# A folder holding one of these holds a run's results; RUN_FILES is everything a run writes.
RUN_RESULTS = ("log.jsonl", "last.pth", "best.pth")
RUN_FILES = ("config.yaml", *RUN_RESULTS, "training_curves.png")


class RunFolderError(ValueError):
    """The run folder cannot be used: not writable, in use by another run, or holding another run."""


def claim_run_dir(run_dir: Union[str, os.PathLike], *, resume: Optional[str] = None,
                  overwrite: bool = False) -> RunLock:
    """Make ``run_dir`` this run's, before any work: returns its lock (release it at the end).

    The folder must be writable and not locked by a live run (a lock of a dead one is taken
    over, with a message). Temporary files of writes that a dead run left behind are removed.
    A folder that holds a run's results is reused only by ``resume`` from a checkpoint in it,
    or with ``overwrite``, which moves the earlier run's files into ``run_dir/replaced-N/``.
    Raises :class:`RunFolderError` otherwise, naming what to do.
    """
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    problem = output_problem(run_dir)
    if problem is not None:
        raise RunFolderError(f"argument --out: {problem}")
    try:
        lock = RunLock.acquire(run_dir)
    except FolderInUse as exc:
        raise RunFolderError(f"argument --out: {exc}; wait for it to end or choose another --out") from None
    lock.made_folder = not existed
    try:
        if lock.previous is not None:
            print(f"afnet train: took over {lock.path}, left by a run that no longer runs "
                  f"({_describe_holder(lock.previous)})", file=sys.stderr)
        removed = remove_stale_temp_files(run_dir)
        if removed:
            print(f"afnet train: removed {len(removed)} temporary file(s) of writes a dead run left unfinished: "
                  + ", ".join(p.name for p in removed), file=sys.stderr)
        held = [name for name in RUN_RESULTS if (run_dir / name).exists()]
        resumes_here = resume is not None and Path(resume).resolve().parent == run_dir.resolve()
        if held and not resumes_here:
            if not overwrite:
                what = (f"another run than the one --resume {resume} continues" if resume is not None
                        else f"a run ({', '.join(held)})")
                hint = "" if resume is not None else f"continue it with --resume {run_dir / 'last.pth'}, "
                raise RunFolderError(f"argument --out: {run_dir} already holds {what}; {hint}choose another --out, "
                                     f"or pass --overwrite to move its files into {run_dir / 'replaced-N'}/ first")
            moved = move_aside(run_dir, RUN_FILES)
            print(f"afnet train: --overwrite: moved the earlier run's files into {moved}/", file=sys.stderr)
    except BaseException:
        lock.release()
        raise
    return lock
