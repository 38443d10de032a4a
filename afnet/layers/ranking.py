"""Keeping the ``k`` best-scored items of each row, the same way on every input.

A budget must hold whatever the values: exactly ``k`` items per row, chosen deterministically. The
order is: larger score first, equal scores by position (earlier first), and NaN scores last (by
position among themselves). With NaN ranked as 0 or compared as false, a video with one NaN pixel
would keep every frame and break the static count the whole batch relies on.
"""

from __future__ import annotations

import torch

__all__ = ["keep_largest"]


def keep_largest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask ``[B, M]`` (``scores``' dtype, 0/1) with exactly ``min(k, M)`` ones per row: the ``k``
    largest of ``scores`` ``[B, M]``, ties to the earlier position, NaN last.

    ``M x M`` comparisons per row (M is a few frames or cells): exact tie handling with plain
    element-wise ops, which export to ONNX and compile without a host read.
    """
    m = scores.shape[-1]
    nan = scores.isnan()
    value = scores.masked_fill(nan, float("-inf"))
    # ahead[b, i, j]: item j comes before item i.
    later = torch.ones(m, m, dtype=torch.bool, device=scores.device).tril(-1)  # [i, j]: j < i
    a_i, a_j = value.unsqueeze(2), value.unsqueeze(1)
    n_i, n_j = nan.unsqueeze(2), nan.unsqueeze(1)
    same_class = n_i == n_j
    ahead = (n_i & ~n_j) | (same_class & ((a_j > a_i) | ((a_j == a_i) & later)))
    rank = ahead.sum(dim=2)
    return (rank < k).to(scores.dtype)
