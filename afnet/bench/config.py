"""What the benchmark measures: its settings and the suite of timed entries.

An *entry* is one timed configuration: a model (architecture, frames, decision rule and
ratios), how it executes (baselines: torchvision or afnet's engine plan; AF models: sparse,
dense or folded), how it is called (eager, ``torch.compile``, a CUDA graph, onnxruntime) and,
for the baselines, the layout. Entries with equal :attr:`Entry.model_key` share one model
instance, so sparse, dense and compiled runs of a model use the same weights on the same masks.
Each entry belongs to a backbone family (:data:`FAMILIES`): its ratios are against that
family's TSN and TSM (AF-MobileNetV3 against TSN/TSM-MobileNetV3, the AF-ResNets against
TSN/TSM-ResNet50).

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
TSN_MOBILENET = "tsn_mobilenetv3"
TSM_MOBILENET = "tsm_mobilenetv3"
BASELINE_ARCHS = (TSN, TSM, TSN_MOBILENET, TSM_MOBILENET)
# Each AF model is compared with the baselines of its own backbone: (TSN, TSM) per family.
FAMILIES = {"resnet50": (TSN, TSM), "mobilenetv3": (TSN_MOBILENET, TSM_MOBILENET)}
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
RUNNERS = ("eager", "compiled", "graphed", "reduce-overhead", "onnxruntime")
LABELS = {
    "tsn_resnet50": "TSN-ResNet50",
    "tsm_resnet50": "TSM-ResNet50",
    "tsn_mobilenetv3": "TSN-MobileNetV3",
    "tsm_mobilenetv3": "TSM-MobileNetV3",
    "af_resnet50": "AF-ResNet50",
    "af_mobilenetv3": "AF-MobileNetV3",
}


def family(arch: str) -> str:
    """The backbone family of ``arch`` (a key of :data:`FAMILIES`): MobileNetV3 models are
    compared with the MobileNetV3 baselines, every other model with the ResNet-50 ones."""
    return "mobilenetv3" if arch.endswith("mobilenetv3") else "resnet50"


@dataclass(frozen=True)
class BenchConfig:
    """Resolved settings of one benchmark run (the CLI fills in the defaults).

    ``compile``: include the ``torch.compile`` rows (slow to build on a small CPU).
    ``onnxruntime``: include the onnxruntime rows (CPU, float32 only; exporting takes a while).
    ``batch_sweep``: batch sizes to time the sweep subset at, instead of the suite (empty: off).
    ``time_budget``: seconds the run may take; a compiled entry whose compilation would not fit
    in what is left is not built, and the reason is recorded (None: no limit).
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
    onnxruntime: bool = True
    batch_sweep: Tuple[int, ...] = ()
    time_budget: Optional[float] = None
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
        arch: a baseline (:data:`BASELINE_ARCHS`) or an AF arch of ``afnet.create_model``.
        frames: T.
        rt: AF: the frame ratio of ``rule``; None for baselines.
        shift: AF-ResNet with TSM.
        execution: baselines ``"torchvision"`` (eager torchvision, BN folded) or ``"planned"``
            (afnet's engine plan); AF ``"sparse"``, ``"dense"`` or ``"folded"``.
        rule: AF decision rule, one of :data:`RULES` (see the module docstring).
        rs: spatial cell ratio (fixed ``SPATIAL_POLICY``), None for temporal-only models.
        runner: ``"eager"``, ``"compiled"`` (inductor, ``fullgraph=True``), ``"graphed"``
            (one CUDA graph per call), ``"reduce-overhead"`` (``torch.compile`` with CUDA graphs
            between the stages' frame-count reads) or ``"onnxruntime"`` (the ONNX export run by
            onnxruntime's CPU execution provider).
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
    def family(self) -> str:
        """The backbone family whose TSN and TSM this entry is compared with (:data:`FAMILIES`)."""
        return family(self.arch)

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
        if self.is_baseline and self.runner != "onnxruntime":  # onnxruntime chooses its own layout
            words.append("NHWC" if self.layout == "channels_last" else "NCHW")
        return " ".join(words)

    def twin(self, execution: Optional[str] = None, runner: Optional[str] = None) -> "Entry":
        """This entry with another execution and/or runner."""
        return dataclasses.replace(
            self, execution=execution or self.execution, runner=runner or self.runner
        )


def _baselines(cfg: BenchConfig, arch: str, frames: int, strongest: bool) -> List[Entry]:
    """torchvision eager in the run's layout and the planned network in both layouts (``--quick``:
    in the run's layout only); with ``strongest`` (the TSN that the ×TSN columns divide by) also
    torchvision under ``torch.compile`` (``cfg.compile``) and, on CUDA, torchvision and the planned
    network each replayed as one CUDA graph, in the run's layout."""
    entries = [Entry(arch, frames, layout=cfg.layout)]
    layouts = (cfg.layout,) if cfg.quick else LAYOUTS
    entries += [Entry(arch, frames, execution="planned", layout=layout) for layout in layouts]
    if strongest and cfg.compile:
        entries.append(Entry(arch, frames, runner="compiled", layout=cfg.layout))
    if strongest and cfg.on_cuda:
        entries += [Entry(arch, frames, execution=x, runner="graphed", layout=cfg.layout)
                    for x in ("torchvision", "planned")]
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


def _onnxruntime(cfg: BenchConfig) -> List[Entry]:
    """TSN-ResNet50 and AF-ResNet50 under a frame budget of RT 0.25, both exported to ONNX and run
    by onnxruntime: on the CPU only (its CPU execution provider), with ``cfg.onnxruntime``."""
    if cfg.on_cuda or not cfg.onnxruntime:
        return []
    # The baseline's layout is the torchvision model's it was exported from (its eager twin);
    # onnxruntime picks its own layout.
    return [Entry(TSN, cfg.frames, runner="onnxruntime", layout=cfg.layout),
            Entry("af_resnet50", cfg.frames, BUDGET_RATIOS[0], execution="sparse", rule="budget",
                  runner="onnxruntime", layout=cfg.layout)]


def _mobilenet_suite(cfg: BenchConfig) -> List[Entry]:
    """AF-MobileNetV3 at RT 0.4 on 1.5x the frames (sparse, dense; budgeted), against TSN- and
    TSM-MobileNetV3 on the same frames."""
    t, arch = cfg.more_frames, "af_mobilenetv3"
    entries = _baselines(cfg, TSN_MOBILENET, t, strongest=not cfg.quick) + _baselines(cfg, TSM_MOBILENET, t, False)
    entries += _af(cfg, arch, t, MOBILENET_RATIO, ("sparse", "dense"), shift=True)
    if cfg.quick:
        return entries
    # AF-MobileNetV3's compile takes minutes on a 2-core CPU; on CUDA it is cheap next to the rest.
    return entries + _static_runners(cfg, arch, t, MOBILENET_RATIO, shift=True, compiled=cfg.on_cuda)


def _main_suite(cfg: BenchConfig) -> List[Entry]:
    """The ResNet-50 family (TSN and TSM, AF-ResNet50 and its variants), then the MobileNetV3 one."""
    t, t_more = cfg.frames, cfg.more_frames
    resnet = "af_resnet50"
    entries = _baselines(cfg, TSN, t, strongest=True) + _baselines(cfg, TSM, t, strongest=False)
    if cfg.quick:
        entries += _af(cfg, resnet, t, MAIN_RATIOS[0], ("sparse", "dense", "folded"))
        entries += _af(cfg, resnet, t, BUDGET_RATIOS[0], ("sparse",), rule="budget")
        return entries + _mobilenet_suite(cfg)
    for rt in MAIN_RATIOS:
        entries += _af(cfg, resnet, t, rt, ("sparse", "dense", "folded"))
    for rt in BUDGET_RATIOS:
        entries += _static_runners(cfg, resnet, t, rt)
    entries += _onnxruntime(cfg)
    if cfg.on_cuda:  # the threshold rule's GPU graphs; on the CPU the fixed rows stand for it
        for rt in EXACT_RATIOS:
            sparse = _af(cfg, resnet, t, rt, ("sparse",), rule="exact")
            entries += sparse + ([sparse[0].twin(runner="reduce-overhead")] if cfg.compile else [])
    for rt in MORE_IS_LESS_RATIOS:
        entries += _af(cfg, resnet, t_more, rt, ("sparse", "dense"), shift=True)
    for rt in SPATIAL_RATIOS:
        for rs in SPATIAL_CELL_RATIOS:
            entries += _af(cfg, resnet, t, rt, ("sparse", "dense"), rs=rs)
    return entries + _mobilenet_suite(cfg)


def _sweep_suite(cfg: BenchConfig) -> List[Entry]:
    """Per family, TSN (every variant, so that the reference is the fastest at each batch), then
    AF-ResNet50 at RT 0.25, resp. AF-MobileNetV3 at RT 0.4 (uniform sparse; budget sparse eager
    and graphed)."""
    entries: List[Entry] = []
    for tsn, arch, frames, rt, shift in ((TSN, "af_resnet50", cfg.frames, MAIN_RATIOS[0], False),
                                         (TSN_MOBILENET, "af_mobilenetv3", cfg.more_frames, MOBILENET_RATIO, True)):
        entries += _baselines(cfg, tsn, frames, strongest=True)
        entries += _af(cfg, arch, frames, rt, ("sparse",), shift=shift)
        entries += _static_runners(cfg, arch, frames, rt, shift=shift, compiled=False)
    return entries


def default_suite(cfg: BenchConfig) -> List[Entry]:
    """The entries of ``cfg``'s run (the suite, its ``--quick`` subset, or the batch-sweep
    subset), filtered by ``cfg.only``.

    A kept entry keeps every entry sharing its model (a sparse row keeps its dense twin) and
    every baseline of its family (each ratio refers to the fastest TSN and TSM of the family).
    """
    entries = _sweep_suite(cfg) if cfg.batch_sweep else _main_suite(cfg)
    if not cfg.only:
        return entries
    kept = [e for e in entries if any(s in e.key for s in cfg.only)]
    models, families = {e.model_key for e in kept}, {e.family for e in kept}
    return [e for e in entries if e.model_key in models or (e.is_baseline and e.family in families)]
