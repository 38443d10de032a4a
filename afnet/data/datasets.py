"""Datasets of clips: a source of frames, TSN sampling, a transform, and bad data reported, not raised.

:class:`ClipDataset` turns a *source* (a list of videos / frame folders, or the built-in task)
into uint8 clips ``[T, 3, S, S]`` with their targets. An item whose file cannot be read comes
back as a :class:`Failure` naming the file instead of an exception, so one corrupt video never
kills a run: :func:`collate` moves failures out of the batch, where the trainer warns and counts
and the evaluator reports them.

Items are addressed by ``index`` or ``(index, seed)``; the seed drives the clip's random sampling
and augmentation (see :class:`afnet.data.loader.SeededSampler`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from afnet.data.decode import DEFAULT_TEMPLATE, DecodeError, VideoReader, read_frame_folder
from afnet.data.lists import VideoRecord, is_multi_label
from afnet.data.sampling import sample_indices
from afnet.data.synthetic import MotionTask

ChooseFrames = Callable[[int], List[int]]


class RecordSource:
    """Frames of listed videos and frame folders.

    Args:
        records: the entries (see :mod:`afnet.data.lists`).
        num_classes: C; multi-label targets are multi-hot ``[C]``.
        multi_label: float multi-hot targets instead of int labels.
        template: image names of frame folders, formatted with the 1-based frame number.
    """

    def __init__(
        self, records: Sequence[VideoRecord], num_classes: int, *, multi_label: bool = False,
        template: str = DEFAULT_TEMPLATE,
    ) -> None:
        bad = [r.path for r in records if max(r.labels) >= num_classes]
        if bad:
            raise ValueError(f"labels must be < num_classes={num_classes}; entries with larger labels: {bad[:5]}")
        if not multi_label and is_multi_label(records):
            raise ValueError("multi_label=False, but some entries have several labels")
        self.records = list(records)
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.template = template

    def __len__(self) -> int:
        return len(self.records)

    def name(self, index: int) -> str:
        return self.records[index].path

    def target(self, index: int) -> torch.Tensor:
        labels = self.records[index].labels
        if self.multi_label:
            hot = torch.zeros(self.num_classes)
            hot[list(labels)] = 1.0
            return hot
        return torch.tensor(labels[0])

    def read(self, index: int, choose: ChooseFrames) -> Tuple[torch.Tensor, List[int]]:
        """(uint8 ``[T, 3, H, W]``, the frame indices) of entry ``index``; raises DecodeError."""
        record = self.records[index]
        if record.is_frame_folder:
            if record.num_frames < 1:
                raise DecodeError(record.path, "the list gives it 0 frames")
            indices = choose(record.num_frames)
            return read_frame_folder(record.path, indices, self.template), indices
        with VideoReader(record.path) as reader:
            indices = choose(reader.num_frames)
            return reader.read(indices), indices

    def salient(self, index: int, frames: Sequence[int]) -> None:
        """Which frames matter is not known for listed files (see :meth:`MotionSource.salient`)."""
        return None


class MotionSource:
    """Frames of the built-in task (:class:`afnet.data.synthetic.MotionTask`), clips
    ``first, ..., first + count − 1``, generated on demand."""

    def __init__(self, task: MotionTask, first: int, count: int) -> None:
        if first < 0 or count < 1:
            raise ValueError(f"need first >= 0 and count >= 1, got first={first}, count={count}")
        self.task = task
        self.first = first
        self.count = count
        self.num_classes = task.num_classes
        self.multi_label = False

    def __len__(self) -> int:
        return self.count

    def name(self, index: int) -> str:
        return f"motion/{self.first + index:06d}"

    def target(self, index: int) -> torch.Tensor:
        return torch.tensor(self.task.label(self.first + index))

    def read(self, index: int, choose: ChooseFrames) -> Tuple[torch.Tensor, List[int]]:
        indices = choose(self.task.num_frames)
        clip = self.task.clip(self.first + index)
        return clip[indices].permute(0, 3, 1, 2).contiguous(), indices

    def salient(self, index: int, frames: Sequence[int]) -> torch.Tensor:
        """bool ``[T]``: which of ``frames`` (clip ``index``'s sampled frame indices) show the square."""
        return torch.tensor(self.task.shows_square(self.first + index, frames), dtype=torch.bool)


Source = Union[RecordSource, MotionSource]


@dataclass
class Sample:
    """A loaded clip: uint8 ``[T, 3, S, S]``, its target, its dataset index and frame indices, and
    where the source knows it (the built-in task), which of its frames matter: bool ``salient [T]``."""

    video: torch.Tensor
    target: torch.Tensor
    index: int
    frames: List[int]
    salient: Optional[torch.Tensor] = None


@dataclass
class Failure:
    """An item that could not be loaded: its dataset index, its file and why."""

    index: int
    path: str
    reason: str


class ClipDataset(torch.utils.data.Dataset):
    """``dataset[index]`` or ``dataset[(index, seed)]`` → :class:`Sample` or :class:`Failure`.

    Args:
        source: :class:`RecordSource` or :class:`MotionSource`.
        num_segments: T, frames per clip.
        transform: ``(uint8 [T, 3, H, W], generator) -> uint8 [T, 3, S, S]``.
        train: random segment offsets (seeded per item) instead of the test positions.
        sampling: ``"tsn"`` or ``"dense"`` (:mod:`afnet.data.sampling`).
    """

    def __init__(self, source: Source, *, num_segments: int, transform: Callable, train: bool, sampling: str = "tsn") -> None:
        self.source = source
        self.num_segments = num_segments
        self.transform = transform
        self.train = train
        self.sampling = sampling

    def __len__(self) -> int:
        return len(self.source)

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def multi_label(self) -> bool:
        return self.source.multi_label

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Union[Sample, Failure]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None

        def choose(num_frames: int) -> List[int]:
            return sample_indices(num_frames, self.num_segments, train=self.train, sampling=self.sampling, generator=generator)

        try:
            frames, indices = self.source.read(index, choose)
            video = self.transform(frames, generator)
        except DecodeError as exc:
            return Failure(index, exc.path, exc.reason)
        return Sample(video, self.source.target(index), index, indices, self.source.salient(index, indices))


@dataclass
class Batch:
    """Collated items: uint8 ``video [N, T, 3, S, S]``, ``target`` (int ``[N]`` or multi-hot
    ``[N, C]``), dataset ``index [N]``, the videos' sampled ``frames [N, T]``, the items that
    failed to load, and bool ``salient [N, T]`` when the source knows which frames matter."""

    video: Optional[torch.Tensor]
    target: Optional[torch.Tensor]
    index: torch.Tensor
    frames: Optional[torch.Tensor]
    failures: List[Failure] = field(default_factory=list)
    salient: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.index.numel())

    def num_items(self) -> int:
        """The clips the batch was made of, the unreadable ones included."""
        return len(self) + len(self.failures)

    def pin_memory(self) -> "Batch":
        if self.video is not None:
            self.video = self.video.pin_memory()
            self.target = self.target.pin_memory()
        return self


def collate(items: Sequence[Union[Sample, Failure]]) -> Batch:
    """Stack the samples; failures go to ``Batch.failures`` (``video`` is None when all failed)."""
    samples = [s for s in items if isinstance(s, Sample)]
    failures = [f for f in items if isinstance(f, Failure)]
    index = torch.tensor([s.index for s in samples], dtype=torch.int64)
    if not samples:
        return Batch(None, None, index, None, failures)
    return Batch(
        torch.stack([s.video for s in samples]),
        torch.stack([s.target for s in samples]),
        index,
        torch.tensor([s.frames for s in samples], dtype=torch.int64),
        failures,
        torch.stack([s.salient for s in samples]) if all(s.salient is not None for s in samples) else None,
    )

