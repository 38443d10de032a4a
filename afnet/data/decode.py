"""Reading the sampled frames of a clip: video files through PyAV (seeking), frame folders as images.

Both readers return uint8 ``[T, 3, H, W]`` (RGB) for a list of 0-based frame indices, and raise
:class:`DecodeError` naming the file for anything unreadable: a corrupt or empty video, a missing
image, an unknown codec.

Frame ``i`` of a video is the ``i``-th frame it shows, whatever its timestamps say (variable frame
rates: phones, screen recordings), and it comes out the way players show it: turned as the stream's
display matrix says (phones store portrait video as landscape frames plus a quarter turn).
"""

from __future__ import annotations

import math
import os
import struct
from fractions import Fraction
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import av
import numpy as np
import torch
from av.sidedata.sidedata import Type
from av.video.reformatter import VideoReformatter
from PIL import Image

# Seek rather than decode on when the next wanted frame is further ahead than this: decoding a
# few small frames costs less than a seek, which restarts at a keyframe anyway.
SEEK_GAP = 16
DEFAULT_TEMPLATE = "img_{:05d}.jpg"
_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError)


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

    How an index finds its frame is settled once per reader, on first use:

    - the stream states a frame count and a constant frame rate (its average rate is its base
      rate): frame ``i`` is at the first frame's timestamp plus ``i / rate``; nothing is read
      beforehand;
    - otherwise (variable frame rate, no stated count: mkv, webm, ts): the timestamps of the
      stream's packets are listed once (demuxed, not decoded; a packet is a frame) and frame ``i``
      is at the ``i``-th smallest;
    - packets without timestamps (raw ``.h264``): the frames are counted by decoding and read by
      decoding from the start.

    ``decoded`` counts the frames decoded so far (seeking keeps it far below the video length).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.decoded = 0
        self._open()
        self._mapped = False
        self._num_frames = 0
        # Set by _map: the first frame's timestamp for a constant rate, or the timestamps of all
        # frames in display order (with the way back from timestamp to index).
        self._origin: Optional[int] = None
        self._frame_pts: Optional[List[int]] = None
        self._index_of_pts: Dict[int, int] = {}
        self._orientation: Optional[Tuple[bool, bool, bool]] = None  # set by _image
        # One converter to RGB for all frames. A frame's own converter costs about 2 ms to set
        # up, and reading the frame's display matrix ties it in a reference cycle: freed by the
        # garbage collector, possibly in a forked DataLoader worker, where freeing the
        # converter's threads (made in the parent) hangs.
        self._reformatter = VideoReformatter()

    def _open(self) -> None:
        try:
            self._container = av.open(self.path)
        except _AV_ERRORS as exc:
            raise DecodeError(self.path, f"cannot open video ({exc})") from None
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError(self.path, "no video stream")
        self._stream = self._container.streams.video[0]

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def num_frames(self) -> int:
        """Frames in the video, exact: the stream's own count when its rate is constant, else its
        packets counted, else its frames decoded (see the class docstring)."""
        self._map()
        if self._num_frames < 1:
            raise DecodeError(self.path, "the video holds no frames")
        return self._num_frames

    def _map(self) -> None:
        """Settle once how indices map to timestamps, and count the frames."""
        if self._mapped:
            return
        origin = self._first_pts() if self._states_constant_rate() else None
        if origin is not None:
            self._origin, self._num_frames = origin, int(self._stream.frames)
        else:
            listed = self._packet_pts()
            if listed is None:
                self._num_frames = sum(1 for _ in self._decode_from(None))
            else:
                self._frame_pts, self._num_frames = listed, len(listed)
                self._index_of_pts = {pts: i for i, pts in enumerate(listed)}
        self._mapped = True

    def _states_constant_rate(self) -> bool:
        """Whether the stated frame count can be trusted and frame times follow the rate.

        mp4 computes the average rate from the count and the duration, and the base rate from
        its sample durations when they are all alike, so the two differ when the rate varies; an
        AVI with 1 ms ticks states one frame per tick and a 1000 fps average (base rate: the
        real one). Without a stated count (mkv, webm, ts) the frames are listed anyway.
        """
        s = self._stream
        return bool(s.frames and s.time_base and s.average_rate and s.average_rate == s.base_rate)

    def _first_pts(self) -> Optional[int]:
        """The first frame's timestamp, from its packet (None without one). The stream's start
        time can differ: H.264 in AVI starts one tick after it."""
        self._rewind()
        try:
            for packet in self._container.demux(self._stream):
                if packet.size and not packet.is_discard:
                    return packet.pts
        except _AV_ERRORS as exc:
            raise DecodeError(self.path, f"reading packets failed ({exc})") from None
        return None

    def _packet_pts(self) -> Optional[List[int]]:
        """The frames' timestamps in display order, from the stream's packets (one frame each),
        or None when a packet has none or two share one (then only decoding can tell)."""
        self._rewind()
        listed: List[int] = []
        try:
            for packet in self._container.demux(self._stream):
                # An empty packet holds no frame (one ends the stream); the decoder drops the
                # frames of discard-flagged ones (mp4 edit lists).
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    return None
                listed.append(packet.pts)
        except _AV_ERRORS as exc:
            raise DecodeError(self.path, f"reading packets failed ({exc})") from None
        listed.sort()
        return listed if len(set(listed)) == len(listed) else None

    def _rewind(self) -> None:
        """Back to the start; a stream that cannot seek (raw H.264) is opened again."""
        try:
            self._container.seek(0)
        except av.error.FFmpegError:
            self._container.close()
            self._open()

    def _pts_of(self, index: int) -> int:
        if self._frame_pts is not None:
            return self._frame_pts[index]
        return self._origin + int(index / Fraction(self._stream.average_rate) / self._stream.time_base)

    def _index_of(self, frame: av.VideoFrame) -> Optional[int]:
        """The frame's index from its timestamp (None without one, or one the list lacks)."""
        if frame.pts is None:
            return None
        if self._frame_pts is not None:
            return self._index_of_pts.get(frame.pts)
        if frame.time_base is None:
            return None
        return int(round(float((frame.pts - self._origin) * frame.time_base * Fraction(self._stream.average_rate))))

    def _decode_from(self, pts: Optional[int]) -> Iterator[av.VideoFrame]:
        """Frames from the keyframe at or before ``pts`` (None: from the start)."""
        try:
            if pts is None:
                self._rewind()
            else:
                self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
            for frame in self._container.decode(self._stream):
                self.decoded += 1
                yield frame
        except _AV_ERRORS as exc:
            raise DecodeError(self.path, f"decoding failed ({exc})") from None

    def _image(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as uint8 RGB ``[H, W, 3]`` the way players show it: turned and mirrored as
        the stream's display matrix says (rows and columns swap for a quarter turn)."""
        if self._orientation is None:
            self._orientation = self._orientation_of(frame)
        swap, flip_rows, flip_columns = self._orientation
        image = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
        if swap:
            image = image.transpose(1, 0, 2)
        if flip_rows:
            image = image[::-1]
        if flip_columns:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)

    def _orientation_of(self, frame: av.VideoFrame) -> Tuple[bool, bool, bool]:
        """(swap rows and columns, then flip the rows, flip the columns) that show ``frame`` as its
        display matrix says; FFmpeg gives every frame the stream's matrix."""
        side = frame.side_data.get(Type.DISPLAYMATRIX)
        if side is None:
            return False, False, False
        # FFmpeg's layout [a, b, u, c, d, v, x, y, w] (libavutil/display.h): the source pixel at
        # column p, row q shows at column a·p + c·q + x, row b·p + d·q + y.
        a, b, _, c, d = struct.unpack("=9i", bytes(side))[:5]
        # The angle as av_display_rotation_get computes it (counterclockwise, degrees), its
        # divisions by the column scales multiplied out (an all-zero matrix: 0, shown as stored).
        angle = -math.degrees(math.atan2(b * math.hypot(a, c), a * math.hypot(b, d)))
        if abs(angle - 90 * round(angle / 90)) > 1:
            raise DecodeError(self.path, f"the display matrix turns the picture by {angle:.1f} degrees; "
                                         "only quarter turns are supported")
        if round(angle / 90) % 2:
            return True, b < 0, c < 0
        return False, d < 0, a < 0

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at the 0-based ``indices`` (any order, repeats allowed) as uint8 ``[T, 3, H, W]``,
        upright as displayed (``H`` and ``W`` are the displayed height and width).

        Indices past the end of the video are its last frame.
        """
        if len(indices) == 0:
            raise ValueError("indices must not be empty")
        wanted = sorted(set(int(i) for i in indices))
        if wanted[0] < 0:
            raise ValueError(f"indices must be >= 0, got {wanted[0]}")
        self._map()
        if self._frame_pts:
            # The list is exact: an index past its end is the last frame, no need to look for it.
            indices = [min(int(i), len(self._frame_pts) - 1) for i in indices]
            wanted = sorted(set(indices))
        can_seek = self._origin is not None or bool(self._frame_pts)
        found = self._read_seeking(wanted) if can_seek else {}
        if len(found) < len(wanted):
            found = self._read_sequentially(wanted)
        return torch.from_numpy(np.stack([found[int(i)] for i in indices])).permute(0, 3, 1, 2).contiguous()

    def _read_seeking(self, wanted: List[int]) -> Dict[int, np.ndarray]:
        """Seek to each wanted frame unless it is a few frames ahead of the decoder; stops early
        (returning what it found) at the end of the stream or at a frame whose index its timestamp
        does not tell."""
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
                    found[index] = self._image(frame)
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
                found[counter] = self._image(frame)
            if counter >= wanted[-1]:
                break
        if last is None:
            raise DecodeError(self.path, "no frame could be decoded")
        tail = found[wanted[-1]] if wanted[-1] in found else self._image(last)
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
