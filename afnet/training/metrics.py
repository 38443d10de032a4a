"""Accuracy metrics: top-k hits (single- and multi-label) and mean average precision."""

from __future__ import annotations

from typing import Dict, Sequence

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
