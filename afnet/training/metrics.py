"""Accuracy metrics: top-k hits (single- and multi-label), mean average precision, and how well the
navigation selects the frames that matter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch


def topk_hits(scores: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, torch.Tensor]:
    """Per-sample hits ``{k: bool [N]}``: the label (any label, for multi-hot targets) is among
    the ``k`` highest scores. ``k`` is capped at the number of classes.

    Args:
        scores: ``[N, C]``.
        target: int ``[N]`` labels or multi-hot ``[N, C]``.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [N, C], got {tuple(scores.shape)}")
    n, c = scores.shape
    top = scores.topk(min(max(ks), c), dim=1).indices
    if target.dim() == 1:
        if target.shape[0] != n:
            raise ValueError(f"target must be [N={n}], got {tuple(target.shape)}")
        match = top == target[:, None]
    else:
        if tuple(target.shape) != (n, c):
            raise ValueError(f"multi-hot target must be [N, C]=({n}, {c}), got {tuple(target.shape)}")
        match = target.gather(1, top) > 0
    return {k: match[:, : min(k, c)].any(dim=1) for k in ks}


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the precision-recall steps of one class (scikit-learn's definition: samples
    with equal scores enter together). ``scores`` float ``[N]``, ``positive`` bool ``[N]``;
    NaN when there is no positive."""
    positive = positive.bool()
    total = int(positive.sum())
    if total == 0:
        return float("nan")
    order = torch.argsort(scores.double(), descending=True, stable=True)
    s, y = scores.double()[order], positive[order].double()
    tp, fp = y.cumsum(0), (1 - y).cumsum(0)
    # The last position of every run of equal scores is a threshold.
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / total
    steps = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((steps * precision).sum())


def mean_average_precision(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Mean of :func:`average_precision` over the classes that have a positive sample.

    ``scores [N, C]``; ``target`` int labels ``[N]`` or multi-hot ``[N, C]``.
    """
    c = scores.shape[1]
    hot = torch.nn.functional.one_hot(target, c).bool() if target.dim() == 1 else target > 0
    aps = [average_precision(scores[:, j], hot[:, j]) for j in range(c) if hot[:, j].any()]
    return float(sum(aps) / len(aps)) if aps else float("nan")


@dataclass(frozen=True)
class SelectionScores:
    """How well each navigation module's selected frames match the frames that matter (pooled over
    all clips; :func:`selection_precision_recall`).

    Attributes:
        precision: ``[M]``, the share of a module's selected frames that matter (NaN: it selected none).
        recall: ``[M]``, the share of the frames that matter that it selected (NaN: none matters).
        base_rate: the share of all frames that matter: the precision of a selection that ignores
            both the content and the frame position.
        blind_precision: ``[M]``, the precision of a selection that keeps each frame position as
            often as the module did but ignores the content. Where the frames that matter cluster at
            some positions (the built-in task's middle frames), a gate can beat the base rate by
            position alone; only a precision above this one shows that it looks at the frames.
    """

    precision: List[float]
    recall: List[float]
    base_rate: float
    blind_precision: List[float]


def selection_precision_recall(selected: torch.Tensor, salient: torch.Tensor) -> SelectionScores:
    """Scores of the selections ``selected`` bool ``[N, M, T]`` (module ``m`` selected frame ``t``
    of clip ``n``) against ``salient`` bool ``[N, T]`` (frame ``t`` of clip ``n`` matters)."""
    if selected.dim() != 3 or salient.shape != (selected.shape[0], selected.shape[2]):
        raise ValueError(f"need selected [N, M, T] and salient [N, T], got {tuple(selected.shape)} and {tuple(salient.shape)}")
    selected, salient = selected.bool(), salient.bool()
    hits = (selected & salient[:, None, :]).sum(dim=(0, 2)).double()  # [M]
    kept = selected.sum(dim=(0, 2)).double()
    relevant = salient.sum().double()
    # Content-blind: position t kept at the module's rate there, hitting at the truth's rate there.
    kept_at = selected.double().mean(dim=0)  # [M, T]
    blind = (kept_at * salient.double().mean(dim=0)).sum(dim=1) / kept_at.sum(dim=1)
    return SelectionScores(  # 0/0 is NaN: a module that selected nothing
        precision=(hits / kept).tolist(),
        recall=(hits / relevant).tolist(),
        base_rate=float(relevant / salient.numel()),
        blind_precision=blind.tolist(),
    )
