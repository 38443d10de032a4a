"""List files and directory trees: what a dataset holds, checked before any training starts.

Accepted inputs (paths relative to a data root unless absolute):

- videos, mmaction2 style: ``path label``, or ``path label1,label2,...`` for multi-label sets;
- frame folders, TSN/TSM style: ``path num_frames label`` (images named by a 1-based template);
- a directory tree ``class_name/video.ext`` (classes are the sorted folder names).

The format of a list file is detected once per file from its first entry; every entry must then
follow it. Blank lines and lines starting with ``#`` are ignored. Paths may contain spaces: the
numbers are taken from the end of the line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
SHOW_MISSING = 5


class DataError(ValueError):
    """A list, a tree or a class-name file is malformed, or names files that do not exist."""


@dataclass(frozen=True)
class VideoRecord:
    """One entry of a dataset.

    Attributes:
        path: the video file or frame folder (joined with the data root).
        labels: class indices (one for single-label sets).
        num_frames: frames of a frame folder, from its list line; None for video files (read
            from the container when the clip is loaded).
    """

    path: str
    labels: Tuple[int, ...]
    num_frames: Optional[int] = None

    @property
    def is_frame_folder(self) -> bool:
        return self.num_frames is not None

    @property
    def label(self) -> int:
        """The first label (the label of single-label sets)."""
        return self.labels[0]


def _parse_labels(text: str, where: str) -> Tuple[int, ...]:
    try:
        labels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise DataError(f"{where}: label must be an int or a comma-separated list of ints, got {text!r}") from None
    if any(label < 0 for label in labels):
        raise DataError(f"{where}: labels must be >= 0, got {text!r}")
    return labels


def _is_int(text: str) -> bool:
    return text.lstrip("+").isdigit()


def _join(root: Optional[Path], path: str) -> str:
    return str(Path(path) if root is None or os.path.isabs(path) else root / path)


def read_list(list_file: PathLike, data_root: Optional[PathLike] = None) -> List[VideoRecord]:
    """Entries of a video or frame-folder list file (see the module docstring).

    Raises:
        DataError: the file is empty or a line does not follow the file's format; the message
            names the file and the line.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"list file {str(list_file)!r} does not exist or is not a file")
    root = Path(data_root) if data_root is not None else None
    records: List[VideoRecord] = []
    frames_format: Optional[bool] = None
    for lineno, raw in enumerate(list_file.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_file}:{lineno}"
        parts = line.rsplit(None, 2)
        if frames_format is None:
            frames_format = len(parts) == 3 and _is_int(parts[1]) and _is_int(parts[2])
        if frames_format:
            if len(parts) != 3 or not _is_int(parts[1]):
                raise DataError(
                    f"{where}: expected 'path num_frames label' (the file's first entry is a frame folder), got {line!r}"
                )
            labels = _parse_labels(parts[2], where)
            records.append(VideoRecord(_join(root, parts[0]), labels, int(parts[1])))
        else:
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise DataError(f"{where}: expected 'path label' (video) or 'path num_frames label' (frames), got {line!r}")
            records.append(VideoRecord(_join(root, parts[0]), _parse_labels(parts[1], where)))
    if not records:
        raise DataError(f"list file {str(list_file)!r} holds no entries")
    return records


def scan_tree(root: PathLike, class_names: Optional[Sequence[str]] = None) -> Tuple[List[VideoRecord], List[str]]:
    """Entries of a ``class_name/video.ext`` tree and the class names.

    Args:
        root: the tree's top folder.
        class_names: the classes to map folder names to (e.g. the training tree's, when reading a
            validation tree); None takes the sorted folder names.

    Raises:
        DataError: no class folder or no video, or a folder that is not in ``class_names``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"directory tree {str(root)!r} does not exist or is not a folder")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"directory tree {str(root)!r} has no class folders (expected class_name/video.ext)")
    names = list(class_names) if class_names is not None else folders
    index = {name: i for i, name in enumerate(names)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DataError(f"directory tree {str(root)!r} has folders that are not known classes: {unknown[:SHOW_MISSING]}")
    records = [
        VideoRecord(str(path), (index[folder],))
        for folder in folders
        for path in sorted((root / folder).iterdir())
        if path.suffix.lower() in VIDEO_EXTENSIONS
    ]
    if not records:
        raise DataError(f"directory tree {str(root)!r} holds no videos with extensions {VIDEO_EXTENSIONS}")
    return records, names


def read_class_names(path: PathLike) -> List[str]:
    """Class names, one per line, in label order (surrounding blanks stripped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class-name file {str(path)!r} does not exist or is not a file")
    names = [line.strip() for line in path.read_text().splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or any(not n for n in names):
        raise DataError(f"class-name file {str(path)!r} must hold one non-empty name per line")
    return names


def _shown(paths: Sequence[str]) -> str:
    more = len(paths) - SHOW_MISSING
    return ", ".join(paths[:SHOW_MISSING]) + (f", ... ({more} more)" if more > 0 else "")


def check_exist(records: Iterable[VideoRecord], source: str) -> None:
    """Raise :class:`DataError` listing the first few entries whose file or folder is missing, or
    is there but of the other kind (a folder listed as a video file, a file as a frame folder).

    Frame folders are checked as folders (not image by image); unreadable contents are bad data
    handled when the clip is loaded.
    """
    missing, wrong_kind = [], []
    for r in records:
        if os.path.isdir(r.path) if r.is_frame_folder else os.path.isfile(r.path):
            continue
        (wrong_kind if os.path.exists(r.path) else missing).append(r)
    problems = []
    if missing:
        problems.append(f"{len(missing)} file(s) listed in {source} do not exist: {_shown([r.path for r in missing])}")
    folders = [r.path for r in wrong_kind if not r.is_frame_folder]
    if folders:
        problems.append(f"{len(folders)} path(s) listed in {source} as video files are directories: {_shown(folders)} "
                        "(a frame folder is listed as 'path num_frames label')")
    files = [r.path for r in wrong_kind if r.is_frame_folder]
    if files:
        problems.append(f"{len(files)} path(s) listed in {source} as frame folders are not directories: {_shown(files)}")
    if problems:
        raise DataError("; ".join(problems))


def num_classes_of(records: Iterable[VideoRecord]) -> int:
    """Classes implied by the largest label (``max + 1``)."""
    return 1 + max(label for r in records for label in r.labels)


def is_multi_label(records: Iterable[VideoRecord]) -> bool:
    """Whether any entry has more than one label."""
    return any(len(r.labels) > 1 for r in records)


def load_entries(
    list_or_tree: PathLike, data_root: Optional[PathLike] = None, class_names: Optional[Sequence[str]] = None
) -> Tuple[List[VideoRecord], Optional[List[str]]]:
    """A list file (:func:`read_list`) or a ``class_name/video.ext`` tree (:func:`scan_tree`, with
    ``class_names`` mapping its folders); returns the entries and the tree's class names (None
    for a list file)."""
    if os.path.isdir(list_or_tree):
        return scan_tree(list_or_tree, class_names)
    return read_list(list_or_tree, data_root), None
