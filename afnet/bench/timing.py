"""Interleaved wall-clock timing: warm up, then round-robin repeats, then the median.

Round-robin (one sample of every runner per round, the starting runner rotating)
spreads slow drifts of the machine (other load, clocks, thermals) evenly over
all runners instead of penalising whichever ran last.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch


@dataclass(frozen=True)
class Stats:
    """Summary of one runner's samples, in seconds per call."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    mean: float
    n: int

    def as_ms(self) -> Dict[str, float]:
        return {k: (v * 1e3 if k != "n" else v) for k, v in asdict(self).items()}


def summarize(samples: Sequence[float]) -> Stats:
    """Median, quartiles (inclusive method), extremes and mean of ``samples`` (at least one)."""
    if not samples:
        raise ValueError("summarize needs at least one sample, got none")
    xs = sorted(samples)
    if len(xs) == 1:
        q1 = q3 = xs[0]
    else:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return Stats(statistics.median(xs), q1, q3, xs[0], xs[-1], statistics.fmean(xs), len(xs))


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for all queued work on ``device`` (no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


Progress = Callable[[int, int, str, float], None]


def time_round_robin(
    runners: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    number: int = 1,
    sync: Callable[[], None] = lambda: None,
    progress: Optional[Progress] = None,
) -> Dict[str, Stats]:
    """Time every runner ``repeats`` times, interleaved, after ``warmup`` untimed calls each.

    A sample is the mean over ``number`` back-to-back calls, bracketed by
    ``sync()`` so that asynchronous device work is inside the sample.
    ``progress(round, repeats, name, seconds)`` is called after each sample.
    Returns the :class:`Stats` per runner name.
    """
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, number >= 1, warmup >= 0; got {repeats}, {number}, {warmup}")
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    sync()
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = runners[name]
            sync()
            start = time.perf_counter()
            for _ in range(number):
                fn()
            sync()
            seconds = (time.perf_counter() - start) / number
            samples[name].append(seconds)
            if progress is not None:
                progress(r + 1, repeats, name, seconds)
    return {name: summarize(samples[name]) for name in names}
