"""Build the benchmark's models, check every way each one is called, and hand out the calls.

For each group of entries sharing a model (``Entry.model_key``) :func:`build_and_check`:

1. builds the model in full precision (float64 for a float64 run, else float32) with
   calibrated random weights: BN affine parameters drawn, BN statistics from one
   training-mode pass, so that activations have a realistic scale and every branch counts;
   learned navigation (the budget and exact rules) gets a ranking of the frames that rounding
   cannot flip and a threshold keeping ``rt`` of them (:func:`calibrate_navigation_`);
2. computes the reference: the unfolded torchvision network (baselines) or the dense,
   released computation of the live model (AF models);
3. checks every entry's call against it: sparse, folded == dense on the same masks; planned
   and BN-folded baselines == torchvision; compiled, graphed and onnxruntime calls == the
   eager call they wrap;
4. converts the model to the run's dtype when that is lower, and checks every call again, now
   against the full-precision reference, allowing twice the error the reference computation
   itself makes in that dtype. Compiled calls are built and checked in the run's dtype only:
   a compilation costs 30-90 s per model and dtype, and the full-precision one is never timed.

Every engine call of an AF model (sparse, folded, budgeted eager, compiled or graphed, the
threshold rule under ``reduce-overhead``, the ONNX export) runs a frozen form of it
(``afnet.freeze``), the explicit inference form; only the dense reference runs the live model.

A failed check raises :class:`BenchCheckError`: the timings would be meaningless.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from afnet.bench import baselines
from afnet.layers import count_for_ratio
from afnet.bench.config import SPATIAL_POLICY, BenchConfig, Entry
from afnet.tools.cuda_graph import StaticGraph
from afnet.tools.export import export_model, export_onnx

# ‖a − b‖ / ‖b‖ allowed between two full-precision computations of the same function (BN
# folding and summation order differ; a wrong frame or fill is off by far more). Lower
# precisions are held to twice the error of the reference computation in that precision.
REL_TOL = {torch.float64: 1e-10, torch.float32: 5e-4}
# Calls of a reduce-overhead compiled model before its output is read: the first ones run
# eagerly and record, later ones replay the CUDA graphs.
RECORD_CALLS = 3
# Runners that compile: each costs 30-90 s per model and dtype; a time budget counts them at
# this many seconds (``--time-budget``). The rest of a build is seconds.
COMPILED_RUNNERS = ("compiled", "reduce-overhead")
COMPILE_SECONDS = {"cuda": 60.0, "cpu": 90.0}
# What a time budget keeps back for timing and writing the results: this share, at least 10 s.
TIMING_SHARE = 0.1

Call = Callable[[], torch.Tensor]


class BenchCheckError(RuntimeError):
    """A correctness check before timing failed: the timings would be meaningless."""


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` in float64 (inf if ``b`` is zero but ``a`` is not; NaN stays NaN)."""
    a, b = a.double(), b.double()
    den = b.norm().item()
    num = (a - b).norm().item()
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def _check(name: str, err: float, tol: float, what: str) -> None:
    if not err <= tol:  # also catches NaN
        raise BenchCheckError(f"{name}: {what}: relative error {err:.3g} > {tol:.3g}; refusing to time it")


def _check_low_precision(name: str, low: torch.Tensor, ref_low: torch.Tensor, ref: torch.Tensor, what: str) -> float:
    """``low`` may be off ``ref`` (full precision) by at most twice what ``ref_low`` is, plus fp32
    noise. Returns ``low``'s error."""
    tol = 2 * rel_err(ref_low, ref) + REL_TOL[torch.float32]
    err = rel_err(low, ref)
    _check(name, err, tol, f"{what} (in {low.dtype}, against float32)")
    return err


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def calibrate_(model: nn.Module, video: torch.Tensor, generator: torch.Generator) -> None:
    """Random BN affine parameters, then BN statistics of one training-mode pass on ``video``; leaves eval.

    The released initialisation zeroes ``bn3`` in many blocks, which would make
    those branches vanish and the sparse/dense check blind to them.
    """
    norms = [m for m in model.modules() if _is_norm(m)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
        m.momentum = 1.0
    model.train()
    model(video)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


class _GateInput(Exception):
    """Carries a gate's input out of the forward pass, which need not run any further."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x


def _gate_input(model: nn.Module, gate: nn.Module, video: torch.Tensor) -> torch.Tensor:
    """The frames ``[N*T, C, H, W]`` that ``gate`` decides on when ``model`` runs ``video``."""

    def stop(module: nn.Module, args: tuple) -> None:
        raise _GateInput(args[0])

    handle = gate.register_forward_pre_hook(stop)
    try:
        model(video)
    except _GateInput as found:
        return found.x
    finally:
        handle.remove()
    raise RuntimeError(f"{type(gate).__name__} did not run in the forward pass")


@torch.no_grad()
def calibrate_navigation_(model: nn.Module, video: torch.Tensor, rt: float, generator: torch.Generator) -> None:
    """Give each navigation module a fixed ranking of the frames that no rounding can flip, and
    place the released rule's threshold so that it keeps ``k = floor(rt·T + 1/2)`` frames of every
    video of ``video`` ``[N, T, 3, H, W]`` (the frame budget ``rt`` keeps the same frames).

    With random weights on random input, the keep margins ``l1 − l0`` of the frames of a video lie
    so close together that bfloat16 rounding reorders a third of them, and the dense and sparse
    executions (or eager and compiled) then choose different frames: no check could pass. So
    frame ``t``'s keep bias gets ``Δ·level(t)``, with a random permutation ``level`` per module
    and ``Δ`` four times the spread of the margins (plus one): the data still moves the margins,
    never across ranks. The frame budget then keeps the top ``k`` levels, and the threshold rule,
    its threshold midway between levels ``T−k−1`` and ``T−k``, keeps the same frames while
    reading ``K`` back from the device like any threshold-rule model. Module by module in forward
    order, since a module's input depends on the masks before it.
    """
    from afnet.layers import Navigation

    if model.frame_budget is not None:
        raise ValueError("calibrate_navigation_ needs the threshold rule while it runs; set frame_budget after")
    gates = model.navigation_modules
    if not gates or not all(isinstance(g, Navigation) for g in gates):
        raise ValueError("calibrate_navigation_ needs a model with learned navigation (policy='navigation')")
    model.eval()
    for gate in gates:
        logits = gate.logits(_gate_input(model, gate, video))
        margins = logits[..., 1] - logits[..., 0]
        low, spread = margins.min(), margins.max() - margins.min()
        step = 4 * spread + 1
        t = gate.num_segments
        level = torch.randperm(t, generator=generator).to(device=margins.device, dtype=margins.dtype)
        keep_bias = gate.conv_gs.bias[1::2]  # channel 2t + 1: the keep logit of frame t
        # Keep iff margin + step·level > low + step·(T − k) − (step − spread) / 2: the top k levels.
        k = max(1, count_for_ratio(rt, t))  # what the frame budget rt keeps
        keep_bias += step * level - (low + step * (t - k) - (step - spread) / 2)


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """cuDNN runs float32 convolutions in TF32 by default (~1e-3 error): not a float32 reference."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _memory_format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def _compile(model: nn.Module, runner: str) -> Callable[..., Any]:
    """``torch.compile`` of ``model`` for ``runner``: inductor, whole graph (a graph break is an
    error); or ``reduce-overhead`` (CUDA graphs between the threshold rule's host reads). Static
    shapes: each batch size gets its own specialisation."""
    if runner == "reduce-overhead":
        return torch.compile(model, mode="reduce-overhead", dynamic=False)
    return torch.compile(model, fullgraph=True, dynamic=False)


def onnxruntime_call(path: Path, x: torch.Tensor, threads: int) -> Call:
    """A call running the ONNX file ``path`` on ``x`` in onnxruntime's CPU execution provider.

    Session options, the same for every onnxruntime row: ``threads`` intra-op threads (the run's),
    one inter-op thread, every graph optimization, and no spinning: the runners are timed
    interleaved on the same cores, and threads spinning after a call would steal the next
    runner's cores. The session holds the model in memory: ``path`` may go after this returns.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.detach().cpu().contiguous().numpy()}
    return lambda: torch.from_numpy(session.run(None, feed)[0])


def _exported_call(export: Callable[[Path], Path], x: torch.Tensor, threads: int) -> Call:
    """Export with ``export(path)`` into a temporary folder and open the file in onnxruntime."""
    with tempfile.TemporaryDirectory(prefix="afnet-bench-onnx-") as folder:
        return onnxruntime_call(export(Path(folder) / "model.onnx"), x, threads)


@dataclass
class Group:
    """The models of one ``model_key``.

    Attributes:
        entries: the entries sharing them.
        make_call: a zero-argument call of an entry on a given input (built for that input:
            a graph is captured, a compiled model specialised to its shape).
        reference: computes the output every eager call is checked against.
        reference_output: ``reference`` of the full-precision input, computed while building.
        eager_output: the output of an eager call of the entry, after checking (AF models) that it
            ran the execution it names on the masks the dense reference chose.
        to_dtype: converts the models.
        facts: per entry key: ``gflops``, ``gflops_executed``, ``rt_realized``, ``rs_realized``.
    """

    entries: List[Entry]
    make_call: Callable[[Entry, torch.Tensor], Call]
    reference: Callable[[torch.Tensor], torch.Tensor]
    reference_output: torch.Tensor
    eager_output: Callable[[Entry, torch.Tensor], torch.Tensor]
    to_dtype: Callable[[torch.dtype], None]
    facts: Dict[str, Dict[str, Any]]


def _baseline_group(entries: List[Entry], cfg: BenchConfig, video: torch.Tensor, generator: torch.Generator) -> Group:
    """torchvision's network (compiled: the unfolded one, which inductor folds itself), its
    BN-folded copy (the eager, graphed and onnxruntime rows) and the engine plan over the unfolded
    one in each layout (shared weights)."""
    e0 = entries[0]
    tv = baselines.create_baseline(e0.arch, num_classes=cfg.num_classes, num_segments=e0.frames)
    tv = tv.to(device=cfg.device, dtype=video.dtype, memory_format=_memory_format(cfg.layout))
    calibrate_(tv, video, generator)
    folded = baselines.fold_batchnorm_(copy.deepcopy(tv)) if cfg.fold_baselines else tv
    planned = {layout: baselines.PlannedBaseline(tv, backend=cfg.backend, memory_format=_memory_format(layout)).eval()
               for layout in {e.layout for e in entries if e.execution == "planned"}}
    gflops = baselines.count_gflops(tv, video)
    with torch.inference_mode():
        reference_output = tv(video)

    def make_call(e: Entry, x: torch.Tensor) -> Call:
        module = planned[e.layout] if e.execution == "planned" else folded
        if e.runner == "compiled":
            compiled = _compile(tv, e.runner)
            return lambda: compiled(x)
        if e.runner == "graphed":
            graph = StaticGraph(module, x)
            return lambda: graph(x)
        if e.runner == "onnxruntime":
            return _exported_call(lambda path: export_onnx(folded, x, path), x, cfg.threads)
        return lambda: module(x)

    def to_dtype(dtype: torch.dtype) -> None:
        tv.to(dtype)
        folded.to(dtype)

    facts = {e.key: {"gflops": gflops, "gflops_executed": gflops, "rt_realized": None, "rs_realized": None}
             for e in entries}
    return Group(entries, make_call, tv, reference_output, eager_output=lambda e, x: make_call(e, x)(),
                 to_dtype=to_dtype, facts=facts)


def create_af_model(e: Entry, cfg: BenchConfig) -> nn.Module:
    """The AF model of ``e``: uniform policy (rule ``fixed``) or learned navigation, spatial with
    the fixed ``SPATIAL_POLICY`` when ``e.rs`` is set; random weights, not yet calibrated."""
    import afnet

    spatial = dict(spatial=True, spatial_policy=SPATIAL_POLICY, rs=e.rs) if e.rs is not None else {}
    policy = "uniform" if e.rule == "fixed" else "navigation"
    return afnet.create_model(e.arch, num_classes=cfg.num_classes, num_segments=e.frames, shift=e.shift,
                              policy=policy, rt=e.rt, **spatial)


Masks = Tuple[List[torch.Tensor], List[torch.Tensor]]


def _with_masks(model: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, Masks]:
    """The logits and the temporal and spatial masks (none for a temporal-only model) of ``model`` on ``x``."""
    logits, masks, *cells = model(x, return_masks=True)
    return logits, (list(masks), list(cells[0]) if cells else [])


def _same_masks(a: Masks, b: Masks) -> bool:
    flat_a, flat_b = [m for ms in a for m in ms], [m for ms in b for m in ms]
    return len(flat_a) == len(flat_b) and all(torch.equal(x, y) for x, y in zip(flat_a, flat_b))


def _af_group(entries: List[Entry], cfg: BenchConfig, video: torch.Tensor, generator: torch.Generator) -> Group:
    """One AF model; learned navigation (rules ``budget`` and ``exact``) calibrated by
    :func:`calibrate_navigation_`, the ``budget`` rule then set as ``model.frame_budget``."""
    import afnet

    e0 = entries[0]
    model = create_af_model(e0, cfg).to(device=cfg.device, dtype=video.dtype)
    model.memory_format = _memory_format(cfg.layout)
    model.backend = cfg.backend
    calibrate_(model, video, generator)
    if e0.rule != "fixed":
        calibrate_navigation_(model, video, e0.rt, generator)
    if e0.rule == "budget":
        model.frame_budget = e0.rt
    model.execution = "dense"
    with torch.inference_mode():
        reference_output, dense_masks = _with_masks(model, video)
    counted = afnet.count_flops(model, video)
    masks, cells = dense_masks
    rt = torch.stack([m.float().mean() for m in masks]).mean().item() if masks else 1.0
    rs = torch.stack([c.float().mean() for c in cells]).mean().item() if cells else None

    # The engine's calls run frozen forms of the model (afnet.freeze): snapshots, made again
    # after the model changes dtype.
    frozen: Dict[Tuple[str, Optional[str], Optional[str]], nn.Module] = {}

    def frozen_model(execution: str, pad_counts: Optional[str] = None, backend: Optional[str] = None) -> nn.Module:
        key = (execution, pad_counts, backend)
        if key not in frozen:
            frozen[key] = afnet.freeze(model, execution=execution, pad_counts=pad_counts,
                                       backend=backend or model.backend)
        return frozen[key]

    def make_call(e: Entry, x: torch.Tensor) -> Call:
        if e.execution == "dense":
            return lambda: model(x)
        if e.runner == "eager":
            run = frozen_model(e.execution)
            return lambda: run(x)
        if e.runner == "graphed":
            graph = afnet.cuda_graph(frozen_model(e.execution), x)
            return lambda: graph(x)
        if e.runner == "onnxruntime":  # ONNX holds standard ops only: the pure-PyTorch frame ops
            onnx_model = frozen_model(e.execution, backend="torch")
            return _exported_call(lambda path: export_model(onnx_model, x, path, "onnx"), x, cfg.threads)
        # The threshold rule's counts padded to powers of two: a bounded set of shapes to graph.
        pad_counts = "pow2" if e.runner == "reduce-overhead" else None
        compiled = _compile(frozen_model(e.execution, pad_counts), e.runner)
        return lambda: compiled(x)

    def reference(x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def eager_output(e: Entry, x: torch.Tensor) -> torch.Tensor:
        logits, masks = _with_masks(model if e.execution == "dense" else frozen_model(e.execution), x)
        if not _same_masks(masks, dense_masks):
            raise BenchCheckError(f"{e.key}: the {e.execution} execution chose other masks than the dense one")
        return logits

    def to_dtype(dtype: torch.dtype) -> None:
        model.to(dtype)
        frozen.clear()

    facts = {}
    for e in entries:
        executed = counted.executed if e.execution == "sparse" else None
        facts[e.key] = {"gflops": counted.paper, "gflops_executed": executed, "rt_realized": rt, "rs_realized": rs}
    return Group(entries, make_call, reference, reference_output, eager_output, to_dtype=to_dtype, facts=facts)


def _output(call: Call, e: Entry) -> torch.Tensor:
    """The output of one check call (a reduce-overhead model first records its graphs; its output
    buffer is reused by the next replay, so it is copied)."""
    for _ in range(RECORD_CALLS - 1 if e.runner == "reduce-overhead" else 0):
        call()
    return call().clone()


def _what(e: Entry, cfg: BenchConfig) -> Optional[str]:
    """What the check of ``e`` compares, or None when its call is the reference itself."""
    if e.runner != "eager":
        wrapped = "torchvision" if e.is_baseline else f"eager {e.execution}"
        return f"{e.runner} output differs from the {wrapped} output"
    if e.is_baseline:
        if e.execution == "planned":
            return "planned (engine) output differs from torchvision's"
        return "BN-folded output differs from the unfolded one" if cfg.fold_baselines else None
    if e.execution == "dense":
        return None
    return f"{e.execution} output differs from dense on the same masks"


def _check_group(group: Group, cfg: BenchConfig, video: torch.Tensor) -> Dict[str, Call]:
    """Check every entry's call in full precision, then in ``cfg.dtype``; the calls in ``cfg.dtype``.

    A compiled call of a lower-precision run is built and checked in ``cfg.dtype`` only (see the
    module docstring); its ``check_rel_err`` stays None.
    """
    calls: Dict[str, Call] = {}
    ref = group.reference_output
    lower = cfg.dtype != video.dtype
    with torch.inference_mode(), no_tf32():
        eager: Dict[str, torch.Tensor] = {}
        for e in group.entries:  # compiled and graphed AF calls are checked against the eager ones
            twin = e.twin(runner="eager")
            if not e.is_baseline and twin.key not in eager:
                # The dense call is the reference, already computed (with its masks) while building.
                eager[twin.key] = ref if _what(twin, cfg) is None else group.eager_output(twin, video)
        for e in group.entries:
            group.facts[e.key]["check_rel_err"] = None
            if lower and e.runner in COMPILED_RUNNERS:
                continue
            what = _what(e, cfg)
            calls[e.key] = group.make_call(e, video)
            if what is None:
                continue
            out = eager[e.key] if e.key in eager else _output(calls[e.key], e)
            expected = ref if e.runner == "eager" or e.is_baseline else eager[e.twin(runner="eager").key]
            err = rel_err(out, expected)
            _check(e.key, err, REL_TOL[video.dtype], what)
            group.facts[e.key]["check_rel_err"] = err
    if not lower:
        return calls
    group.to_dtype(cfg.dtype)  # outside inference_mode: the weights stay normal tensors
    low = video.to(cfg.dtype)
    with torch.inference_mode(), no_tf32():
        ref_low = group.reference(low).clone()
        for e in group.entries:
            calls[e.key] = group.make_call(e, low)
            what = _what(e, cfg)
            if what is not None:
                out = group.eager_output(e, low) if e.runner == "eager" else _output(calls[e.key], e)
                group.facts[e.key]["check_rel_err_lowp"] = _check_low_precision(e.key, out, ref_low, ref, what)
    return calls


def unavailable(e: Entry, cfg: BenchConfig) -> Optional[str]:
    """Why ``e`` cannot run in this run (None: it can).

    The spatial models need the tile ops (their FLOPs are counted on the sparse path too); the
    onnxruntime rows need onnxruntime and onnxscript (the dynamo exporter) and run in float32.
    """
    if e.runner == "onnxruntime":
        missing = [name for name in ("onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
        if missing:
            return f"onnxruntime rows: {' and '.join(missing)} not installed (pip install onnxruntime onnxscript)"
        if cfg.dtype != torch.float32:
            return f"onnxruntime rows run in float32 only, this run is {str(cfg.dtype).replace('torch.', '')}"
    if e.rs is None:
        return None
    import afnet_kernels
    import afnet_kernels.reference as reference

    ops = afnet_kernels if cfg.backend == "kernels" else reference
    needed = [(ops, "gather_tiles"), (ops, "scatter_tiles"), (reference, "tile_valid_mask")]
    missing = [f"{module.__name__}.{name}" for module, name in needed if not hasattr(module, name)]
    if not missing:
        return None
    return f"the spatial sparse path needs the tile ops, missing from this build: {', '.join(missing)}"


def _within_budget(
    members: List[Entry], cfg: BenchConfig, deadline: Optional[float], skipped: Dict[str, str],
) -> List[Entry]:
    """``members`` less the compiled entries whose compilation no longer fits before ``deadline``
    (their reasons go into ``skipped``). Each compilation counts ``COMPILE_SECONDS``, and a share
    of the budget is kept back for timing. Time only runs out: once one compiled entry does not
    fit, no later one does, so an AF model is never compiled after its family's TSN was not."""
    if deadline is None:
        return members
    left = deadline - time.monotonic() - max(10.0, TIMING_SHARE * (cfg.time_budget or 0.0))
    cost = COMPILE_SECONDS[torch.device(cfg.device).type]
    kept = []
    for e in members:
        if e.runner in COMPILED_RUNNERS:
            if left < cost:
                skipped[e.key] = (f"time budget: {max(left, 0.0):.0f} s left of --time-budget {cfg.time_budget:g}, "
                                  f"a compilation takes about {cost:.0f} s")
                continue
            left -= cost
        kept.append(e)
    return kept


def build_and_check(
    cfg: BenchConfig,
    entries: Sequence[Entry],
    videos: Dict[int, torch.Tensor],
    log: Callable[[str], None],
    deadline: Optional[float] = None,
) -> Tuple[Dict[str, Call], Dict[str, Dict[str, Any]], Dict[str, str]]:
    """``(calls, facts, skipped)`` of ``entries``: a checked zero-argument call per entry key,
    bound to the input ``videos[T]`` in ``cfg.dtype``, the facts per entry key (GFLOPs, ratios
    realized, check error), and the entries not built for lack of time, with the reason.

    ``videos`` are in full precision (float64 when ``cfg.dtype`` is, else float32). ``deadline``
    (``time.monotonic()`` seconds, or None) drops compiled entries that would not fit before it.
    Raises :class:`BenchCheckError` when a check fails.
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    groups: Dict[str, List[Entry]] = {}
    for e in entries:
        groups.setdefault(e.model_key, []).append(e)
    calls: Dict[str, Call] = {}
    facts: Dict[str, Dict[str, Any]] = {}
    skipped: Dict[str, str] = {}
    for key, members in groups.items():
        members = _within_budget(members, cfg, deadline, skipped)  # never empty: only compiled entries go
        torch.manual_seed(cfg.seed)
        start = time.perf_counter()
        log(f"building and checking {key} ({', '.join(e.variant for e in members)})")
        e0 = members[0]
        video = videos[e0.frames]
        with no_tf32():
            build = _baseline_group if e0.is_baseline else _af_group
            group = build(members, cfg, video, generator)
        calls.update(_check_group(group, cfg, video))
        facts.update(group.facts)
        log(f"checked {key} in {time.perf_counter() - start:.1f} s")
    return calls, facts, skipped
