"""DataLoaders: seeded, sharded samplers and the loader settings (workers, pinned memory).

- :class:`SeededSampler` wraps a ``DistributedSampler`` (shuffling from ``(seed, epoch)``, one
  shard per rank) and pairs every index with a seed drawn from ``(seed, epoch, index)``. The
  seed drives the clip's sampling and augmentation, so a run is reproducible whatever the number
  of workers, and a resumed run sees exactly the clips the uninterrupted one would.
- :class:`ShardSampler` gives rank ``r`` the indices ``r, r + world, ...``: no padding, so an
  evaluation sharded over ranks counts every sample exactly once.
- :func:`make_loader`'s loaders hold Ctrl-C back while they fork their workers (:class:`Loader`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, List, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from afnet.data.datasets import ClipDataset, collate


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for item ``index`` in ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class SeededSampler(Sampler[Tuple[int, int]]):
    """``(index, seed)`` pairs of this rank's shard of a shuffled epoch; call :meth:`set_epoch`.

    Args:
        size: dataset length.
        seed: run seed (shuffling and per-item seeds).
        rank, world_size: this process's shard (``DistributedSampler`` semantics: the last
            shard is padded with repeats unless ``drop_last``).
        shuffle: shuffle each epoch.
    """

    def __init__(
        self, size: int, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = False
    ) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self._inner = DistributedSampler(
            range(size), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self._inner)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for index in self._inner:
            yield index, sample_seed(self.seed, self.epoch, index)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``range(size)``: disjoint, no padding."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.indices = range(rank, size, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Inside the block SIGINT is only noted; it is raised again when the block ends."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # handlers can be set in the main thread only; None: one set outside Python, left alone
        return
    noted: List[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if noted:
            signal.raise_signal(signal.SIGINT)


class Loader(DataLoader):
    """A DataLoader that holds Ctrl-C back while ``iter()`` forks its workers.

    A ``KeyboardInterrupt`` raised in Python's at-fork hooks is reported as unraisable and
    dropped, so Ctrl-C at that moment would be lost and the run go on; held back, it is raised
    right after. The workers inherit the handler that only notes the signal: the terminal's
    Ctrl-C (sent to the whole process group) leaves them running, and the main process, which
    gets the ``KeyboardInterrupt``, shuts them down.
    """

    def __iter__(self):
        with _sigint_held():
            return super().__iter__()


def make_loader(
    dataset: ClipDataset,
    sampler: Sampler,
    *,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of :class:`afnet.data.datasets.Batch` with the given sampler.

    The loader gets its own generator so that it never draws from the global RNG (whose state is
    part of a run's checkpoint); the clips' randomness comes from the sampler's seeds.
    """
    return Loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers > 0,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(0),
    )
