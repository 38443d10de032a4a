"""Which frames of a video a clip is made of: TSN segment sampling and dense sampling.

All indices are 0-based (frame folders add 1 for their 1-based image names). The formulas are the
TSM repository's (``../shared/docs/engineering.md``, "Video data and training"):

- train: ``avg = n // T``; frame ``t·avg + randint(avg)`` of each segment;
- test: segment centres ``int(tick/2 + tick·t)`` with ``tick = n / T``;
- dense (optional): ``T`` frames ``window // T`` apart inside a ``window``-frame span that starts at
  a random frame (train) or is centred (test), wrapping around short videos.

Videos with fewer than ``T`` frames repeat frames in temporal order (``int(tick/2 + tick·t)``, the
TSM test formula, which stays valid for ``n < T``). The TSM training code repeats frame 0 ``T`` times
instead, which throws away the order that temporal models depend on.
"""

from __future__ import annotations

from typing import List, Optional

import torch

SAMPLINGS = ("tsn", "dense")
DENSE_WINDOW = 64


def _check(num_frames: int, num_segments: int) -> None:
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if not isinstance(num_segments, int) or num_segments < 1:
        raise ValueError(f"num_segments must be an int >= 1, got {num_segments!r}")


def _randint(high: int, size: int, generator: Optional[torch.Generator]) -> List[int]:
    return torch.randint(high, (size,), generator=generator).tolist()


def tsn_test_indices(num_frames: int, num_segments: int) -> List[int]:
    """Segment centres ``int(tick/2 + tick·t)``, ``tick = num_frames / num_segments`` (``T`` ints)."""
    _check(num_frames, num_segments)
    tick = num_frames / num_segments
    return [int(tick / 2.0 + tick * t) for t in range(num_segments)]


def tsn_train_indices(num_frames: int, num_segments: int, generator: Optional[torch.Generator] = None) -> List[int]:
    """One random frame per segment: ``t·avg + randint(avg)``, ``avg = num_frames // num_segments``.

    Shorter videos (``avg == 0``) repeat frames in order, as :func:`tsn_test_indices` does.
    """
    _check(num_frames, num_segments)
    avg = num_frames // num_segments
    if avg == 0:
        return tsn_test_indices(num_frames, num_segments)
    return [t * avg + r for t, r in enumerate(_randint(avg, num_segments, generator))]


def dense_indices(
    num_frames: int,
    num_segments: int,
    generator: Optional[torch.Generator] = None,
    *,
    train: bool,
    window: int = DENSE_WINDOW,
) -> List[int]:
    """``T`` frames ``window // T`` apart from a start frame, modulo ``num_frames``.

    The start is ``randint(n − window)`` in training (0 for videos shorter than the window) and
    the centred ``(n − window) // 2`` in test.
    """
    _check(num_frames, num_segments)
    if window < num_segments:
        raise ValueError(f"window must be >= num_segments={num_segments}, got {window}")
    stride = window // num_segments
    slack = max(0, num_frames - window)
    if train:
        start = _randint(slack + 1, 1, generator)[0]
    else:
        start = slack // 2
    return [(start + t * stride) % num_frames for t in range(num_segments)]


def sample_indices(
    num_frames: int,
    num_segments: int,
    *,
    train: bool,
    sampling: str = "tsn",
    generator: Optional[torch.Generator] = None,
) -> List[int]:
    """The ``T`` 0-based frame indices of one clip of a ``num_frames``-frame video.

    Args:
        train: random offsets (training) or the deterministic test positions.
        sampling: ``"tsn"`` (segment sampling) or ``"dense"``.
        generator: source of the training randomness (seed it for reproducible runs).
    """
    if sampling == "tsn":
        if train:
            return tsn_train_indices(num_frames, num_segments, generator)
        return tsn_test_indices(num_frames, num_segments)
    if sampling == "dense":
        return dense_indices(num_frames, num_segments, generator, train=train)
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
