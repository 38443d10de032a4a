"""Reading the sampled frames of a clip: video files through PyAV (seeking), frame folders as images.

Both readers return uint8 ``[T, 3, H, W]`` (RGB) for a list of 0-based frame indices, and raise
:class:`DecodeError` naming the file for anything unreadable: a corrupt or empty video, a missing
image, an unknown codec.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Dict, Iterator, List, Optional, Sequence

import av
import numpy as np
import torch
from PIL import Image

# Seek rather than decode on when the next wanted frame is further ahead than this: decoding a
# few small frames costs less than a seek, which restarts at a keyframe anyway.
SEEK_GAP = 16
DEFAULT_TEMPLATE = "img_{:05d}.jpg"


class DecodeError(RuntimeError):
    """A video or a frame folder cannot be read; the message names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class VideoReader:
    """A video file opened with PyAV: its frame count, and frames by index with seeking.

    Use as a context manager::

        with VideoReader(path) as reader:
            frames = reader.read(sample_indices(reader.num_frames, 8, train=False))

    ``decoded`` counts the frames decoded so far (seeking keeps it far below the video length).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.decoded = 0
        try:
            self._container = av.open(path)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise DecodeError(path, f"cannot open video ({exc})") from None
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError(path, "no video stream")
        self._stream = self._container.streams.video[0]
        self._rate = self._stream.average_rate or self._stream.guessed_rate
        self._num_frames: Optional[int] = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def num_frames(self) -> int:
        """Frames in the video: the container's count, else its duration times the frame rate,
        else counted by decoding. A wrong estimate is harmless: :meth:`read` clamps to the last
        frame it finds."""
        if self._num_frames is None:
            self._num_frames = self._estimate_frames() or self._count_frames()
            if self._num_frames < 1:
                raise DecodeError(self.path, "the video holds no frames")
        return self._num_frames

    def _estimate_frames(self) -> int:
        s = self._stream
        if s.frames:
            return int(s.frames)
        if self._rate and s.duration and s.time_base:
            return int(round(s.duration * s.time_base * self._rate))
        if self._rate and self._container.duration:
            return int(round(self._container.duration / av.time_base * self._rate))
        return 0

    def _count_frames(self) -> int:
        return sum(1 for _ in self._decode_from(None))

    def _pts_of(self, index: int) -> int:
        start = self._stream.start_time or 0
        return start + int(index / Fraction(self._rate) / self._stream.time_base)

    def _index_of(self, frame: av.VideoFrame) -> Optional[int]:
        """The frame's index from its timestamp (None without one)."""
        if frame.pts is None or frame.time_base is None:
            return None
        start = self._stream.start_time or 0
        return int(round(float((frame.pts - start) * frame.time_base * Fraction(self._rate))))

    def _decode_from(self, pts: Optional[int]) -> Iterator[av.VideoFrame]:
        """Frames from the keyframe at or before ``pts`` (None: from the start)."""
        try:
            if pts is None:
                self._container.seek(0)
            else:
                self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
            for frame in self._container.decode(self._stream):
                self.decoded += 1
                yield frame
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise DecodeError(self.path, f"decoding failed ({exc})") from None

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at the 0-based ``indices`` (any order, repeats allowed) as uint8 ``[T, 3, H, W]``.

        Frames past the real end of the video (when the frame count was an estimate) are the
        last frame.
        """
        if len(indices) == 0:
            raise ValueError("indices must not be empty")
        wanted = sorted(set(int(i) for i in indices))
        if wanted[0] < 0:
            raise ValueError(f"indices must be >= 0, got {wanted[0]}")
        can_seek = bool(self._rate) and self._stream.time_base is not None
        found = self._read_seeking(wanted) if can_seek else {}
        if len(found) < len(wanted):
            found = self._read_sequentially(wanted)
        return torch.from_numpy(np.stack([found[int(i)] for i in indices])).permute(0, 3, 1, 2).contiguous()

    def _read_seeking(self, wanted: List[int]) -> Dict[int, np.ndarray]:
        """Seek to each wanted frame unless it is a few frames ahead of the decoder; stops early
        (returning what it found) at the end of the stream or at a frame without a timestamp."""
        wanted_set = set(wanted)
        found: Dict[int, np.ndarray] = {}
        frames: Optional[Iterator[av.VideoFrame]] = None
        last: Optional[int] = None
        for target in wanted:
            if target in found:
                continue
            if frames is None or last is None or not last < target <= last + SEEK_GAP:
                frames = self._decode_from(self._pts_of(target))
            for frame in frames:
                index = self._index_of(frame)
                if index is None:
                    return found
                last = index
                if index in wanted_set and index not in found:
                    found[index] = frame.to_ndarray(format="rgb24")
                if index >= target:
                    break
        return found

    def _read_sequentially(self, wanted: List[int]) -> Dict[int, np.ndarray]:
        """Decode from the start, counting frames (no timestamps, imprecise seeking, or frames
        past the end)."""
        wanted_set = set(wanted)
        found: Dict[int, np.ndarray] = {}
        last: Optional[av.VideoFrame] = None
        for counter, frame in enumerate(self._decode_from(None)):
            last = frame
            if counter in wanted_set:
                found[counter] = frame.to_ndarray(format="rgb24")
            if counter >= wanted[-1]:
                break
        if last is None:
            raise DecodeError(self.path, "no frame could be decoded")
        tail = found[wanted[-1]] if wanted[-1] in found else last.to_ndarray(format="rgb24")
        return {i: found.get(i, tail) for i in wanted}


def read_frame_folder(path: str, indices: Sequence[int], template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """Images ``template.format(i + 1)`` of folder ``path`` for 0-based ``indices``, uint8 ``[T, 3, H, W]``."""
    images: Dict[int, torch.Tensor] = {}
    for i in sorted(set(indices)):
        file = os.path.join(path, template.format(i + 1))
        try:
            with Image.open(file) as image:
                images[i] = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        except (OSError, ValueError) as exc:
            raise DecodeError(path, f"cannot read frame {os.path.basename(file)} ({exc})") from None
    shapes = {tuple(img.shape) for img in images.values()}
    if len(shapes) > 1:
        raise DecodeError(path, f"frames differ in size: {sorted(shapes)}")
    return torch.stack([images[i] for i in indices])
