"""Decoding edge cases: variable-frame-rate videos, containers without a frame count or without
timestamps, and the display rotation that phones record portrait video with.

Every video is written here with PyAV (tiny, in ``tmp_path``); the frames encode their index
(:func:`data_utils.numbered_frames`) or their orientation (corner markers), so the tests check
which frame came back and which way up, not only how many.
"""

from __future__ import annotations

import gc
import os
import signal
import struct
import time
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import av
import pytest
import torch
from av.sidedata.sidedata import Type

from afnet.data.decode import VideoReader
from afnet.data.demo_files import write_video
from afnet.data.sampling import tsn_test_indices
from data_utils import frame_number, numbered_frames

pytestmark = pytest.mark.usefixtures("one_thread")

MS = Fraction(1, 1000)


def write_timed_video(
    path: Path,
    frames: torch.Tensor,
    times_ms: Sequence[int],
    *,
    rate: int = 25,
    gop: int = 8,
    matrix: Optional[Sequence[int]] = None,
) -> Path:
    """H.264 of uint8 ``[F, H, W, 3]`` ``frames`` shown at ``times_ms`` in ``path`` (the container
    follows the suffix), declaring ``rate`` fps whatever the timestamps say; ``matrix``: the
    display matrix (FFmpeg's 9-int layout) to store."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"g": str(gop), "bf": "0", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.time_base = stream.codec_context.time_base = MS
        if matrix is not None:
            stream.set_display_matrix(list(matrix))
        for image, ms in zip(frames.numpy(), times_ms):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = ms, MS
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# 64 frames like the phone clip: 40 at 25 fps, then 24 at 12.5 fps. The container says
# 25 fps, so duration x rate estimates 88 frames.
VFR_TIMES = [40 * i for i in range(40)] + [1560 + 80 * i for i in range(1, 25)]


def stated_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return container.streams.video[0].frames


# -- variable frame rate -------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["mkv", "ts", "mp4"])
def test_vfr_video_is_counted_exactly_and_tsn_covers_its_frames(tmp_path, suffix):
    path = write_timed_video(tmp_path / f"vfr.{suffix}", numbered_frames(64), VFR_TIMES)
    # mkv and ts do not state a frame count (the reader used to estimate 88 from the duration);
    # mp4 does (its sample table).
    assert stated_frames(path) == (64 if suffix == "mp4" else 0)
    with VideoReader(str(path)) as reader:
        assert reader.num_frames == 64
        wanted = tsn_test_indices(reader.num_frames, 8)
        assert wanted == [4, 12, 20, 28, 36, 44, 52, 60]
        assert [frame_number(f) for f in reader.read(wanted)] == wanted


@pytest.mark.parametrize("suffix", ["mkv", "ts", "mp4"])
def test_vfr_video_index_i_is_the_ith_frame(tmp_path, suffix):
    path = write_timed_video(tmp_path / f"vfr.{suffix}", numbered_frames(64), VFR_TIMES)
    with VideoReader(str(path)) as reader:
        got = [frame_number(reader.read([i])[0]) for i in range(64)]
        assert got == list(range(64))
        # Each read seeks to the keyframe before its frame and decodes at most that GOP of 8
        # (decoding from the start every time would take 64·65/2 = 2080). MPEG-TS seeks land
        # near the timestamp, not on a keyframe, so the reader decodes those from the start.
        if suffix != "ts":
            assert reader.decoded <= 64 * 8, reader.decoded
        wanted = [50, 3, 33, 33, 63, 41, 40, 70]  # any order, repeats; 70 is past the end: the last
        assert [frame_number(f) for f in reader.read(wanted)] == [50, 3, 33, 33, 63, 41, 40, 63]


def test_stream_without_timestamps_is_counted_by_decoding(tmp_path):
    # A raw H.264 stream has neither a frame count nor packet timestamps, and cannot seek.
    path = write_timed_video(tmp_path / "raw.h264", numbered_frames(30), [40 * i for i in range(30)])
    with VideoReader(str(path)) as reader:
        assert reader.num_frames == 30
        wanted = tsn_test_indices(30, 8)
        assert [frame_number(f) for f in reader.read(wanted)] == wanted
        assert [frame_number(f) for f in reader.read([29, 2, 31])] == [29, 2, 29]


@pytest.mark.parametrize("ticks", ["frame", "ms"])
def test_avi_frames_are_counted_and_not_shifted(tmp_path, ticks):
    # H.264 in AVI: the frames' timestamps start one tick after the stream's start time, which
    # made frame i - 1 come back for index i. With 1 ms ticks the AVI states 1600 frames (one per
    # tick) for 40 frames.
    path, frames = tmp_path / "clip.avi", numbered_frames(40)
    if ticks == "frame":
        write_video(path, frames, fps=25)
    else:
        write_timed_video(path, frames, [40 * i for i in range(40)])
    assert stated_frames(path) == (40 if ticks == "frame" else 1600)
    with VideoReader(str(path)) as reader:
        assert reader.num_frames == 40
        assert [frame_number(reader.read([i])[0]) for i in range(40)] == list(range(40))


# -- display rotation ----------------------------------------------------------------------------
ONE = 1 << 16  # 1.0 in the display matrix's 16.16 fixed point
W_ONE = 1 << 30  # its third column is 2.30


def display_matrix(a: int, b: int, c: int, d: int) -> List[int]:
    """FFmpeg's layout ``[a, b, u, c, d, v, x, y, w]``: a source pixel (p, q) (column, row) shows
    at (a·p + c·q + x, b·p + d·q + y)."""
    return [a * ONE, b * ONE, 0, c * ONE, d * ONE, 0, 0, 0, W_ONE]


def marker_frames(count: int = 3) -> torch.Tensor:
    """uint8 ``[count, 16, 32, 3]`` landscape frames: a white block in the top-left corner, a
    grey one in the top-right, black elsewhere (grey levels survive the chroma subsampling)."""
    frames = torch.zeros(count, 16, 32, 3, dtype=torch.uint8)
    frames[:, :6, :6] = 255
    frames[:, :6, -6:] = 128
    return frames


def corners(frame: torch.Tensor) -> Dict[str, float]:
    """Mean level of the 4x4 corners of a ``[3, H, W]`` frame."""
    f = frame.float().mean(0)
    return {"top-left": f[:4, :4].mean().item(), "top-right": f[:4, -4:].mean().item(),
            "bottom-left": f[-4:, :4].mean().item(), "bottom-right": f[-4:, -4:].mean().item()}


@pytest.mark.parametrize(
    "matrix, shape, white, grey",
    [
        # What a phone held upright stores (the MP4 tkhd matrix of `rotate=90`; FFmpeg reports
        # "rotation of -90 degrees" and its CLI turns it clockwise, transpose=clock): the
        # landscape picture shows turned a quarter clockwise, as portrait.
        (display_matrix(0, 1, -1, 0), (3, 32, 16), "top-right", "bottom-right"),
        (display_matrix(0, -1, 1, 0), (3, 32, 16), "bottom-left", "top-left"),  # counterclockwise
        (display_matrix(-1, 0, 0, -1), (3, 16, 32), "bottom-right", "bottom-left"),  # half turn
        (display_matrix(-1, 0, 0, 1), (3, 16, 32), "top-right", "top-left"),  # mirrored left-right
        (None, (3, 16, 32), "top-left", "top-right"),
    ],
    ids=["clockwise", "counterclockwise", "half-turn", "mirror", "none"],
)
def test_frames_come_out_as_displayed(tmp_path, matrix, shape, white, grey):
    path = write_timed_video(tmp_path / "phone.mp4", marker_frames(), [0, 40, 80], matrix=matrix)
    with av.open(str(path)) as container:  # the file carries the matrix as written
        side = next(container.decode(video=0)).side_data.get(Type.DISPLAYMATRIX)
        assert (side and list(struct.unpack("=9i", bytes(side)))) == (matrix or None)
    with VideoReader(str(path)) as reader:
        # Index 9 is past the end: the reader falls back to decoding from the start, so both of
        # its paths are checked.
        for frame in reader.read([2, 0, 9]):
            assert frame.shape == shape
            levels = corners(frame)
            assert levels[white] > 200 and abs(levels[grey] - 128) < 30, levels
            assert sum(v < 30 for v in levels.values()) == 2, levels


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_rotated_frames_leave_no_garbage_that_hangs_a_forked_worker(tmp_path):
    # Reading a frame's display matrix ties the frame in a reference cycle. Had it converted to
    # RGB with a converter of its own, the garbage collector of a forked DataLoader worker would
    # free that converter's threads (made in the parent) and hang.
    path = write_timed_video(tmp_path / "phone.mp4", marker_frames(), [0, 40, 80], matrix=display_matrix(0, 1, -1, 0))
    gc.collect()  # only this reader's garbage is left for the child (not other tests')
    gc.disable()  # and it stays until the child collects it
    try:
        with VideoReader(str(path)) as reader:
            reader.read([0, 1, 2])
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            try:
                gc.collect()
            finally:
                os._exit(0)
    finally:
        gc.enable()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung collecting the reader's garbage")
