"""What the benchmark measures: its settings and the suite of model entries.

An *entry* is one timed configuration (a model, its frames, its ratio and its
execution). Entries that differ only in execution share one model instance,
so sparse and dense run the same weights on the same masks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch

TSN = "tsn_resnet50"
TSM = "tsm_resnet50"
MAIN_RATIOS = (0.25, 0.5, 0.75, 1.0)
MORE_IS_LESS_RATIOS = (0.4, 0.8)
MOBILENET_RATIO = 0.4
LABELS = {
    "tsn_resnet50": "TSN-ResNet50",
    "tsm_resnet50": "TSM-ResNet50",
    "af_resnet50": "AF-ResNet50",
    "af_mobilenetv3": "AF-MobileNetV3",
}


@dataclass(frozen=True)
class BenchConfig:
    """Resolved settings of one benchmark run (the CLI fills in the defaults)."""

    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    batch: int = 1
    frames: int = 8
    threads: int = 2
    channels_last: bool = False
    size: int = 224
    repeats: int = 10
    warmup: int = 2
    number: int = 1
    quick: bool = False
    num_classes: int = 174
    seed: int = 0
    backend: str = "kernels"
    fold_baselines: bool = True
    only: Tuple[str, ...] = ()
    profile: Tuple[str, ...] = ()
    out: Path = Path("bench_out")
    plot: bool = True
    verbose: bool = True

    @property
    def more_frames(self) -> int:
        """Frames of the "more is less" entries: 1.5x the main frames (12 for 8)."""
        return max(1, round(self.frames * 1.5))


@dataclass(frozen=True)
class Entry:
    """One timed configuration.

    ``arch`` is a baseline name (``tsn_resnet50``/``tsm_resnet50``) or an AF arch
    for ``afnet.create_model``; ``execution`` is ``None`` for baselines.
    """

    arch: str
    frames: int
    rt: Optional[float] = None
    shift: bool = False
    execution: Optional[str] = None

    @property
    def is_baseline(self) -> bool:
        return self.execution is None

    @property
    def model_key(self) -> str:
        """Entries with equal ``model_key`` share one model instance."""
        if self.is_baseline:
            return f"{self.arch}-t{self.frames}"
        shift = "-tsm" if self.shift else ""
        return f"{self.arch}{shift}-t{self.frames}-rt{self.rt:g}"

    @property
    def key(self) -> str:
        return self.model_key if self.is_baseline else f"{self.model_key}-{self.execution}"

    @property
    def label(self) -> str:
        name = LABELS.get(self.arch, self.arch)
        return f"{name}-TSM" if self.shift and self.arch == "af_resnet50" else name

    def twin(self, execution: str) -> "Entry":
        return dataclasses.replace(self, execution=execution)


def _af_pair(arch: str, frames: int, rt: float, shift: bool = False) -> List[Entry]:
    sparse = Entry(arch, frames, rt, shift, "sparse")
    return [sparse, sparse.twin("dense")]


def default_suite(cfg: BenchConfig) -> List[Entry]:
    """The suite of issue 4 (or its ``--quick`` subset), filtered by ``cfg.only``.

    Both baselines are always kept (every ratio refers to them), and so is the
    dense twin of every kept sparse entry.
    """
    t, t_more = cfg.frames, cfg.more_frames
    entries = [Entry(TSN, t), Entry(TSM, t)]
    if cfg.quick:
        entries += _af_pair("af_resnet50", t, MAIN_RATIOS[0])
    else:
        for rt in MAIN_RATIOS:
            entries += _af_pair("af_resnet50", t, rt)
        for rt in MORE_IS_LESS_RATIOS:
            entries += _af_pair("af_resnet50", t_more, rt, shift=True)
        entries += _af_pair("af_mobilenetv3", t_more, MOBILENET_RATIO, shift=True)
    if not cfg.only:
        return entries
    wanted = {e.model_key for e in entries if any(s in e.key for s in cfg.only)}
    return [e for e in entries if e.is_baseline or e.model_key in wanted]
