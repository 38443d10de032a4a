"""What the benchmark measures: its settings and the suite of timed entries.

An *entry* is one timed configuration: a model (architecture, frames, decision rule and
ratios), how it executes (baselines: torchvision or afnet's engine plan; AF models: sparse,
dense or folded), how it is called (eager, ``torch.compile``, a CUDA graph) and, for the
baselines, the layout. Entries with equal :attr:`Entry.model_key` share one model instance,
so sparse, dense and compiled runs of a model use the same weights on the same masks.

Decision rules of the AF entries:

- ``fixed``: the ``uniform`` policy at ratio ``rt`` (exactly ``round(rt·T)`` frames);
- ``budget``: learned navigation with ``model.frame_budget = rt`` (static counts, no host sync);
- ``exact``: learned navigation with the released threshold rule, its keep bias calibrated so
  that it keeps about ``rt`` of the frames (data-dependent counts, one host read per stage).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch

TSN = "tsn_resnet50"
TSM = "tsm_resnet50"
BASELINE_ARCHS = (TSN, TSM)
MAIN_RATIOS = (0.25, 0.5, 0.75, 1.0)
BUDGET_RATIOS = (0.25, 0.5)
EXACT_RATIOS = (0.25,)
MORE_IS_LESS_RATIOS = (0.4, 0.8)
MOBILENET_RATIO = 0.4
SPATIAL_RATIOS = (1.0, 0.5)
SPATIAL_CELL_RATIOS = (1.0, 0.5, 0.25)
# Fixed spatial policy of the spatial rows: the paper's "center" ablation (Table 5), deterministic.
SPATIAL_POLICY = "center"
DEFAULT_BATCH_SWEEP = (1, 8, 32)
LAYOUTS = ("contiguous", "channels_last")
RULES = ("fixed", "budget", "exact")
RUNNERS = ("eager", "compiled", "graphed", "reduce-overhead")
LABELS = {
    "tsn_resnet50": "TSN-ResNet50",
    "tsm_resnet50": "TSM-ResNet50",
    "af_resnet50": "AF-ResNet50",
    "af_mobilenetv3": "AF-MobileNetV3",
}


@dataclass(frozen=True)
class BenchConfig:
    """Resolved settings of one benchmark run (the CLI fills in the defaults).

    ``compile``: include the ``torch.compile`` rows (slow to build on a small CPU).
    ``batch_sweep``: batch sizes to time the sweep subset at, instead of the suite (empty: off).
    """

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
    compile: bool = True
    batch_sweep: Tuple[int, ...] = ()
    only: Tuple[str, ...] = ()
    profile: Tuple[str, ...] = ()
    out: Path = Path("bench_out")
    plot: bool = True
    verbose: bool = True

    @property
    def more_frames(self) -> int:
        """Frames of the "more is less" entries: 1.5x the main frames (12 for 8)."""
        return max(1, round(self.frames * 1.5))

    @property
    def on_cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    @property
    def layout(self) -> str:
        """The run's layout: of the AF models and of the torchvision baselines."""
        return "channels_last" if self.channels_last else "contiguous"


@dataclass(frozen=True)
class Entry:
    """One timed configuration.

    Attributes:
        arch: a baseline (``tsn_resnet50``/``tsm_resnet50``) or an AF arch of ``afnet.create_model``.
        frames: T.
        rt: AF: the frame ratio of ``rule``; None for baselines.
        shift: AF-ResNet with TSM.
        execution: baselines ``"torchvision"`` (eager torchvision, BN folded) or ``"planned"``
            (afnet's engine plan); AF ``"sparse"``, ``"dense"`` or ``"folded"``.
        rule: AF decision rule, one of :data:`RULES` (see the module docstring).
        rs: spatial cell ratio (fixed ``SPATIAL_POLICY``), None for temporal-only models.
        runner: ``"eager"``, ``"compiled"`` (inductor, ``fullgraph=True``), ``"graphed"``
            (``afnet.tools.cuda_graph``) or ``"reduce-overhead"`` (``torch.compile`` with CUDA graphs
            between the stages' frame-count reads).
        layout: ``"contiguous"`` or ``"channels_last"``.
    """

    arch: str
    frames: int
    rt: Optional[float] = None
    shift: bool = False
    execution: str = "torchvision"
    rule: str = "fixed"
    rs: Optional[float] = None
    runner: str = "eager"
    layout: str = "channels_last"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.runner not in RUNNERS:
            raise ValueError(f"runner must be one of {RUNNERS}, got {self.runner!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")

    @property
    def is_baseline(self) -> bool:
        return self.arch in BASELINE_ARCHS

    @property
    def model_key(self) -> str:
        """Entries with equal ``model_key`` share one model instance."""
        if self.is_baseline:
            return f"{self.arch}-t{self.frames}"
        shift = "-tsm" if self.shift else ""
        rule = {"fixed": "rt", "budget": "budget", "exact": "exact"}[self.rule]
        spatial = f"-rs{self.rs:g}" if self.rs is not None else ""
        return f"{self.arch}{shift}-t{self.frames}-{rule}{self.rt:g}{spatial}"

    @property
    def key(self) -> str:
        runner = "" if self.runner == "eager" else f"-{self.runner}"
        layout = f"-{self.layout}" if self.is_baseline else ""
        return f"{self.model_key}-{self.execution}{runner}{layout}"

    @property
    def label(self) -> str:
        name = LABELS.get(self.arch, self.arch)
        return f"{name}-TSM" if self.shift and self.arch == "af_resnet50" else name

    @property
    def variant(self) -> str:
        """How it runs, in words: e.g. ``planned NHWC``, ``budget sparse compiled``."""
        words = [] if self.rule == "fixed" or self.is_baseline else [self.rule]
        words.append(self.execution)
        if self.runner != "eager":
            words.append(self.runner)
        if self.is_baseline:
            words.append("NHWC" if self.layout == "channels_last" else "NCHW")
        return " ".join(words)

    def twin(self, execution: Optional[str] = None, runner: Optional[str] = None) -> "Entry":
        """This entry with another execution and/or runner."""
        return dataclasses.replace(
            self, execution=execution or self.execution, runner=runner or self.runner
        )


def _baselines(cfg: BenchConfig, arch: str, compiled: bool) -> List[Entry]:
    """torchvision eager in the run's layout, the planned network in both layouts, and
    (``compiled``) torchvision under ``torch.compile`` in the run's layout."""
    t = cfg.frames
    entries = [Entry(arch, t, layout=cfg.layout)]
    entries += [Entry(arch, t, execution="planned", layout=layout) for layout in LAYOUTS]
    if compiled and cfg.compile:
        entries.append(Entry(arch, t, runner="compiled", layout=cfg.layout))
    return entries


def _af(cfg: BenchConfig, arch: str, frames: int, rt: float, executions: Tuple[str, ...], **fields) -> List[Entry]:
    return [Entry(arch, frames, rt, execution=x, layout=cfg.layout, **fields) for x in executions]


def _static_runners(
    cfg: BenchConfig, arch: str, frames: int, rt: float, *, shift: bool = False, compiled: bool = True
) -> List[Entry]:
    """A budgeted model: eager sparse, compiled (``compiled`` and ``cfg.compile``), graphed on CUDA."""
    entries = _af(cfg, arch, frames, rt, ("sparse",), rule="budget", shift=shift)
    if compiled and cfg.compile:
        entries.append(entries[0].twin(runner="compiled"))
    if cfg.on_cuda:
        entries.append(entries[0].twin(runner="graphed"))
    return entries


def _main_suite(cfg: BenchConfig) -> List[Entry]:
    t, t_more = cfg.frames, cfg.more_frames
    resnet, mobilenet = "af_resnet50", "af_mobilenetv3"
    entries = _baselines(cfg, TSN, compiled=True) + _baselines(cfg, TSM, compiled=False)
    if cfg.quick:
        entries += _af(cfg, resnet, t, MAIN_RATIOS[0], ("sparse", "dense", "folded"))
        entries += _af(cfg, resnet, t, BUDGET_RATIOS[0], ("sparse",), rule="budget")
        return entries
    for rt in MAIN_RATIOS:
        entries += _af(cfg, resnet, t, rt, ("sparse", "dense", "folded"))
    for rt in BUDGET_RATIOS:
        entries += _static_runners(cfg, resnet, t, rt)
    if cfg.on_cuda:  # the threshold rule's GPU graphs; on the CPU the fixed rows stand for it
        for rt in EXACT_RATIOS:
            sparse = _af(cfg, resnet, t, rt, ("sparse",), rule="exact")
            entries += sparse + ([sparse[0].twin(runner="reduce-overhead")] if cfg.compile else [])
    for rt in MORE_IS_LESS_RATIOS:
        entries += _af(cfg, resnet, t_more, rt, ("sparse", "dense"), shift=True)
    entries += _af(cfg, mobilenet, t_more, MOBILENET_RATIO, ("sparse", "dense"), shift=True)
    # MobileNet's compile takes minutes on a 2-core CPU; on CUDA it is cheap next to the rest.
    entries += _static_runners(cfg, mobilenet, t_more, MOBILENET_RATIO, shift=True, compiled=cfg.on_cuda)
    for rt in SPATIAL_RATIOS:
        for rs in SPATIAL_CELL_RATIOS:
            entries += _af(cfg, resnet, t, rt, ("sparse", "dense"), rs=rs)
    return entries


def _sweep_suite(cfg: BenchConfig) -> List[Entry]:
    """TSN (every variant, so that the reference is the fastest at each batch), AF-ResNet50 at
    RT 0.25 (uniform sparse; budget sparse eager and graphed) and AF-MobileNetV3 the same way."""
    t, t_more = cfg.frames, cfg.more_frames
    entries = _baselines(cfg, TSN, compiled=True)
    for arch, frames, rt, shift in (("af_resnet50", t, MAIN_RATIOS[0], False),
                                    ("af_mobilenetv3", t_more, MOBILENET_RATIO, True)):
        entries += _af(cfg, arch, frames, rt, ("sparse",), shift=shift)
        entries += _static_runners(cfg, arch, frames, rt, shift=shift, compiled=False)
    return entries


def default_suite(cfg: BenchConfig) -> List[Entry]:
    """The entries of ``cfg``'s run (the suite, its ``--quick`` subset, or the batch-sweep
    subset), filtered by ``cfg.only``.

    Every baseline entry is always kept (every ratio refers to the fastest TSN and TSM), and so
    is every entry sharing a model with a kept one (a sparse row keeps its dense twin).
    """
    entries = _sweep_suite(cfg) if cfg.batch_sweep else _main_suite(cfg)
    if not cfg.only:
        return entries
    wanted = {e.model_key for e in entries if any(s in e.key for s in cfg.only)}
    return [e for e in entries if e.is_baseline or e.model_key in wanted]
