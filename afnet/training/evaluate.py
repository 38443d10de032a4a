"""Evaluation: accuracy, the frames each navigation module selected, GFLOPs and speed.

:func:`evaluate` runs a model over a loader (sharded over ranks under ``torchrun``, each sample
exactly once), gathers every sample's scores and masks on rank 0 and reports:

- ``top1``/``top5`` (for multi-label sets: a hit when any label is among the top k) and ``map``;
- ``selected_ratio``: the mean selected-frame ratio of each navigation module, in forward order;
- ``gflops`` (the paper's convention) and ``gflops_executed`` (MACs the sparse path runs) per
  video at those ratios (:mod:`afnet.training.cost`);
- ``clips_per_s`` of the model's forward passes, and end to end with loading;
- ``failed``: the files that could not be read (reported, not counted);
- where the data knows which frames matter (the built-in task: the frames that show the square),
  ``nav_precision`` and ``nav_recall`` of each navigation module's selected frames,
  ``nav_base_rate``, the share of frames that matter, and ``nav_blind_precision``, the precision of
  a content-blind selection with the module's rate per frame position
  (:class:`afnet.training.metrics.SelectionScores`); None otherwise.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, ContextManager, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from afnet.data.datasets import Batch
from afnet.data.transforms import normalize
from afnet.tools.progress import progress_bar, track
from afnet.training.cost import FlopTable, flop_table
from afnet.training.distributed import DistInfo, gather_to_main
from afnet.training.metrics import mean_average_precision, selection_precision_recall, topk_hits


class NothingEvaluated(RuntimeError):
    """Every clip failed to load: there is nothing to report."""


@dataclass
class EvalResult:
    """What :func:`evaluate` measured (see the module docstring); ``as_dict`` is ``eval.json``."""

    top1: float
    top5: float
    map: float
    loss: float
    selected_ratio: List[float]
    gate_names: List[str]
    gflops: Optional[float]
    gflops_executed: Optional[float]
    clips_per_s: float
    clips_per_s_end_to_end: float
    num_clips: int
    failed: List[Dict[str, str]] = field(default_factory=list)
    nav_precision: Optional[List[float]] = None
    nav_recall: Optional[List[float]] = None
    nav_base_rate: Optional[float] = None
    nav_blind_precision: Optional[List[float]] = None

    @property
    def selected_ratio_mean(self) -> float:
        return sum(self.selected_ratio) / len(self.selected_ratio) if self.selected_ratio else float("nan")

    def as_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["selected_ratio_mean"] = self.selected_ratio_mean
        out["num_failed"] = len(self.failed)
        return out


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    return torch.autocast(device.type, dtype) if dtype is not None else contextlib.nullcontext()


def model_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for int labels ``[N]``; binary cross-entropy for multi-hot ``[N, C]``."""
    if target.dim() == 1:
        return F.cross_entropy(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    info: DistInfo,
    *,
    amp_dtype: Optional[torch.dtype] = None,
    table: Optional[FlopTable] = None,
    progress: Optional[bool] = False,
) -> Tuple[Optional[EvalResult], Optional[FlopTable]]:
    """Evaluate ``model`` (unwrapped, not DDP) on this rank's shard of ``loader``; ``progress`` is the
    bar on rank 0, as :func:`afnet.tools.progress.progress_bar` takes it (None: on a terminal).

    Returns ``(result, table)`` on rank 0 and ``(None, None)`` elsewhere; ``table`` is the
    FLOP table used (measured on the first clip when not given, so callers can reuse it).
    """
    was_training = model.training
    model.eval()
    device = info.device
    shard: Dict[str, List[Any]] = {"index": [], "scores": [], "target": [], "ratios": [], "failed": [],
                                   "selected": [], "salient": []}
    forward_s, clips, clip_shape = 0.0, 0, None
    start = time.perf_counter()
    bar = progress_bar(len(loader.sampler), "eval", progress if info.is_main else False)
    for batch in track(bar, loader, Batch.num_items):
        shard["failed"] += [{"path": f.path, "reason": f.reason} for f in batch.failures]
        if batch.video is None:
            continue
        video = normalize(batch.video.to(device, non_blocking=True))
        clip_shape = clip_shape or (1,) + tuple(video.shape[1:])
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast(device, amp_dtype):
            logits, masks = model(video, return_masks=True)[:2]  # a spatial model adds its cell masks
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        forward_s += time.perf_counter() - t0
        clips += len(batch)
        shard["index"].append(batch.index)
        shard["scores"].append(logits.float().cpu())
        shard["target"].append(batch.target)
        shard["ratios"].append(torch.stack([m.float().mean(dim=1) for m in masks], dim=1).cpu())
        if batch.salient is not None:
            shard["selected"].append(torch.stack([m.bool() for m in masks], dim=1).cpu())  # [N, M, T]
            shard["salient"].append(batch.salient)
    shard["time"] = (forward_s, clips, time.perf_counter() - start)
    shards = gather_to_main(info, shard)
    model.train(was_training)
    if not info.is_main:
        return None, None
    if table is None and clip_shape is not None:
        table = flop_table(model, torch.zeros(clip_shape, device=device))
    return _summarise(shards, table, getattr(table, "names", None)), table


def _summarise(shards: List[Dict[str, Any]], table: Optional[FlopTable], names) -> EvalResult:
    failed = [f for s in shards for f in s["failed"]]
    parts = [s for s in shards if s["index"]]
    if not parts:
        raise NothingEvaluated(f"no clip could be evaluated: all {len(failed)} failed (first: {failed[:3]})")
    index = torch.cat([i for s in parts for i in s["index"]])
    if index.unique().numel() != index.numel():
        raise RuntimeError("a sample was evaluated twice: the shards overlap")
    scores = torch.cat([x for s in parts for x in s["scores"]])
    target = torch.cat([x for s in parts for x in s["target"]])
    ratios = torch.cat([x for s in parts for x in s["ratios"]])
    hits = topk_hits(scores, target, (1, 5))
    selected = ratios.double().mean(dim=0).tolist()
    gflops = table.at(selected) if table is not None else (None, None)
    nav = None
    if all(len(s["salient"]) == len(s["index"]) for s in parts):  # every batch knew its frames
        nav = selection_precision_recall(
            torch.cat([x for s in parts for x in s["selected"]]), torch.cat([x for s in parts for x in s["salient"]])
        )
    slowest = max(s["time"][0] for s in shards)
    wall = max(s["time"][2] for s in shards)
    return EvalResult(
        top1=float(hits[1].double().mean()),
        top5=float(hits[5].double().mean()),
        map=mean_average_precision(scores, target),
        loss=float(model_loss(scores, target)),
        selected_ratio=selected,
        gate_names=list(names) if names is not None else [f"gate{i}" for i in range(len(selected))],
        gflops=gflops[0],
        gflops_executed=gflops[1],
        clips_per_s=index.numel() / slowest if slowest > 0 else float("nan"),
        clips_per_s_end_to_end=index.numel() / wall if wall > 0 else float("nan"),
        num_clips=int(index.numel()),
        failed=failed,
        nav_precision=None if nav is None else nav.precision,
        nav_recall=None if nav is None else nav.recall,
        nav_base_rate=None if nav is None else nav.base_rate,
        nav_blind_precision=None if nav is None else nav.blind_precision,
    )
