"""Writing clips as real video files, and the built-in task as a video dataset on disk.

``afnet make-demo-data OUT_DIR`` calls :func:`write_demo_data`: the task's clips as H.264 ``.mp4``
files (PyAV), ``train.txt`` / ``val.txt`` in the ``path label`` format and ``classes.txt``. The
same clips are what ``afnet train`` generates in memory, so both paths see the same task.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import av
import torch

from afnet.data.synthetic import CLASSES, VAL_FRACTION, MotionTask, demo_split

PathLike = Union[str, os.PathLike]


def write_video(path: PathLike, frames: torch.Tensor, *, fps: int = 8, gop: int = 8, crf: int = 18) -> None:
    """Encode uint8 ``[F, H, W, 3]`` frames (RGB, even H and W) as H.264 in ``path``.

    ``gop`` is the keyframe interval (a reader can seek to every ``gop``-th frame); ``crf`` the
    x264 quality (lower is better).
    """
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    f, h, w, _ = frames.shape
    if f < 1 or h % 2 or w % 2:
        raise ValueError(f"need at least one frame of even height and width, got {tuple(frames.shape)}")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "g": str(gop), "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for image in frames.numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


@dataclass(frozen=True)
class DemoFiles:
    """Where :func:`write_demo_data` put things (``root`` is the data root of the lists)."""

    root: Path
    train_list: Path
    val_list: Path
    classes: Path


def write_demo_data(out_dir: PathLike, *, videos: int = 200, seed: int = 0, val_fraction: float = VAL_FRACTION) -> DemoFiles:
    """Write ``videos`` clips of the built-in task under ``out_dir``.

    Clip ``i`` is ``MotionTask(seed=seed).clip(i)``; the last ``round(videos·val_fraction)``
    (at least one, :func:`afnet.data.synthetic.demo_split`) are the validation set, as in
    ``afnet train``'s in-memory default. Files: ``videos/clip_XXXXXX.mp4``, ``train.txt``,
    ``val.txt`` (``videos/clip_XXXXXX.mp4 label``) and ``classes.txt``.
    """
    num_train, _ = demo_split(videos, val_fraction)
    task = MotionTask(seed=seed)
    root = Path(out_dir)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(videos):
        name = f"videos/clip_{i:06d}.mp4"
        write_video(root / name, task.clip(i))
        lines.append(f"{name} {task.label(i)}\n")
    files = DemoFiles(root, root / "train.txt", root / "val.txt", root / "classes.txt")
    files.train_list.write_text("".join(lines[:num_train]))
    files.val_list.write_text("".join(lines[num_train:]))
    files.classes.write_text("".join(f"{name}\n" for name in CLASSES))
    return files
