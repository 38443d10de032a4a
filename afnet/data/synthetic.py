"""The built-in task: procedurally generated clips where the choice and the order of frames matter.

A coloured square crosses a background of grey noise from left to right or from right to left, and it is
visible in only a few consecutive frames of each clip; every other frame is noise alone. The four
classes combine the colour (red or blue, visible in any one frame that shows the square) and the
direction (visible only by comparing frames in order, so it needs temporal modelling such as TSM).
A model that looks at the frames showing the square wins, which is what the navigation learns.

Every clip is a pure function of ``(seed, index)``: nothing is downloaded or stored, and the
same clips can be written as real ``.mp4`` files (:func:`afnet.data.demo_files.write_demo_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

CLASSES: Tuple[str, ...] = ("red_left_to_right", "red_right_to_left", "blue_left_to_right", "blue_right_to_left")
_COLOURS = {"red": (230, 40, 40), "blue": (40, 70, 235)}
VAL_FRACTION = 0.2


def demo_split(videos: int, val_fraction: float = VAL_FRACTION) -> Tuple[int, int]:
    """(training, validation) clip counts of a ``videos``-clip built-in dataset: clips
    ``0 .. train−1`` train and the rest (at least one) validate."""
    if videos < 2:
        raise ValueError(f"videos must be >= 2 (one for training, one for validation), got {videos}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    val = min(videos - 1, max(1, round(videos * val_fraction)))
    return videos - val, val


@dataclass(frozen=True)
class MotionTask:
    """Generator of the built-in task's clips.

    Attributes:
        seed: clips are a function of ``(seed, index)``.
        num_frames: frames per clip (the video length before TSN sampling).
        size: frame height and width in pixels.
        visible: consecutive frames per clip that show the square (at a random start).
        square: side of the square in pixels.
        noise: standard deviation of the background noise (grey level 0-255).
        grain: side of the noise's square cells in pixels. Grey cells of a few pixels survive
            H.264 (which subsamples colour and quantises fine detail), so the ``.mp4`` files of
            :func:`afnet.data.demo_files.write_demo_data` look like the in-memory clips.
    """

    seed: int = 0
    num_frames: int = 16
    size: int = 64
    visible: int = 6
    square: int = 12
    noise: float = 40.0
    grain: int = 4

    def __post_init__(self) -> None:
        if not 2 <= self.visible <= self.num_frames:
            raise ValueError(f"visible must be in [2, num_frames={self.num_frames}], got {self.visible}")
        if not 4 <= self.square <= self.size // 2:
            raise ValueError(f"square must be in [4, size/2={self.size // 2}], got {self.square}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if self.grain < 1 or self.size % self.grain:
            raise ValueError(f"grain must be >= 1 and divide size={self.size}, got {self.grain}")

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    def label(self, index: int) -> int:
        """Class of clip ``index``; classes are balanced over consecutive indices."""
        return index % len(CLASSES)

    def _layout(self, index: int) -> Tuple[int, int, np.ndarray]:
        """(first visible frame, row, x position per visible frame) of clip ``index``."""
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        rng = np.random.default_rng((self.seed, index, 0))
        f, s, q = self.num_frames, self.size, self.square
        start = int(rng.integers(0, f - self.visible + 1))
        row = int(rng.integers(0, s - q + 1))
        # The square enters near one edge and leaves near the other within its visible frames.
        xs = np.linspace(0, s - q, self.visible) + rng.uniform(-2, 2, size=self.visible)
        xs = np.clip(np.rint(xs), 0, s - q).astype(int)
        if not CLASSES[self.label(index)].endswith("left_to_right"):
            xs = xs[::-1]
        return start, row, xs

    def visible_frames(self, index: int) -> range:
        """Frame indices of clip ``index`` that show the square."""
        start = self._layout(index)[0]
        return range(start, start + self.visible)

    def shows_square(self, index: int, frames: Sequence[int]) -> List[bool]:
        """For each of ``frames`` (frame indices of clip ``index``, e.g. those a sampler chose),
        whether it shows the square: the frames a navigation module should keep."""
        visible = self.visible_frames(index)
        return [f in visible for f in frames]

    def clip(self, index: int) -> torch.Tensor:
        """Clip ``index`` as uint8 ``[num_frames, size, size, 3]`` (frames, height, width, RGB)."""
        start, row, xs = self._layout(index)
        colour = np.array(_COLOURS[CLASSES[self.label(index)].split("_", 1)[0]], dtype=np.float32)
        f, s, q = self.num_frames, self.size, self.square
        noise = np.random.default_rng((self.seed, index, 1))
        cells = noise.normal(120.0, self.noise, size=(f, s // self.grain, s // self.grain, 1)).astype(np.float32)
        frames = np.repeat(np.repeat(cells, self.grain, axis=1), self.grain, axis=2).repeat(3, axis=3)
        for k, x in enumerate(xs):
            frames[start + k, row : row + q, x : x + q] = colour
        return torch.from_numpy(np.clip(frames, 0, 255).astype(np.uint8))
