"""The one rule that turns a ratio into a count of frames or cells.

Frame budgets, fixed frame policies and spatial cell counts all round ``ratio·total`` half up,
``floor(ratio·total + 1/2)``, so the same ratio keeps the same number of items everywhere (Python's
``round`` rounds half to even: 2.5 would keep 2 frames in one place and 3 in another).
"""

from __future__ import annotations

import math
from numbers import Real

__all__ = ["count_for_ratio", "is_ratio"]


def is_ratio(value: object) -> bool:
    """Whether ``value`` is a real number (not a bool) in (0, 1]."""
    return isinstance(value, Real) and not isinstance(value, bool) and 0 < float(value) <= 1


def count_for_ratio(ratio: float, total: int) -> int:
    """``floor(ratio·total + 1/2)``: the items kept out of ``total`` at ``ratio``."""
    return int(math.floor(ratio * total + 0.5))
