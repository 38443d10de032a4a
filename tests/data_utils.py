"""Helpers of the data and training tests: real files written by the tests themselves."""

from __future__ import annotations

from pathlib import Path
from typing import List

import torch
from PIL import Image

from afnet.data.demo_files import write_video


def numbered_frames(count: int, size: int = 32) -> torch.Tensor:
    """uint8 ``[count, size, size, 3]`` frames that encode their index (< 256) in grey levels:
    the left half ``16·(i // 16) + 8``, the right half ``16·(i % 16) + 8``, so a decoded frame
    tells which one it is despite lossy compression."""
    if count > 256:
        raise ValueError("at most 256 numbered frames")
    i = torch.arange(count)
    frames = torch.empty(count, size, size, 3, dtype=torch.uint8)
    frames[:, :, : size // 2] = (16 * (i // 16) + 8).to(torch.uint8).view(count, 1, 1, 1)
    frames[:, :, size // 2 :] = (16 * (i % 16) + 8).to(torch.uint8).view(count, 1, 1, 1)
    return frames


def frame_number(frame: torch.Tensor) -> int:
    """The index :func:`numbered_frames` encoded in a decoded ``[3, H, W]`` frame."""
    w = frame.shape[-1]
    inner = frame.float()[:, 4:-4]
    high = inner[:, :, 2 : w // 2 - 2].mean().item()
    low = inner[:, :, w // 2 + 2 : -2].mean().item()
    return 16 * round((high - 8) / 16) + round((low - 8) / 16)


def write_numbered_video(path: Path, count: int, *, gop: int = 8) -> Path:
    write_video(path, numbered_frames(count), gop=gop)
    return path


def write_frame_folder(folder: Path, count: int, template: str = "img_{:05d}.jpg") -> Path:
    """A folder of ``count`` JPEG frames named ``template.format(1..count)``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(numbered_frames(count)):
        Image.fromarray(frame.numpy()).save(folder / template.format(i + 1), quality=95)
    return folder


def write_lines(path: Path, lines: List[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path
