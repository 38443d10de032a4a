"""Progress bars of the long loops (training epochs, evaluation, prediction), in clips per second."""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

__all__ = ["progress_bar", "track"]

Item = TypeVar("Item")


def progress_bar(total: int, desc: str, show: Optional[bool] = None) -> Any:
    """A ``tqdm`` bar on stderr counting ``total`` clips (advance it with ``bar.update(clips)``).

    Args:
        show: True draws it anywhere (a log file too), False never; None draws it only when
            stderr is a terminal, so redirected output stays free of bar lines.
    The bar disappears when closed: the callers print their own summary line.
    """
    from tqdm import tqdm  # the [train] extra; imported here so that `import afnet` does not need it

    return tqdm(total=total, desc=desc, unit="clip", leave=False, dynamic_ncols=True, file=sys.stderr,
                disable=None if show is None else not show)


def track(bar: Any, items: Iterable[Item], count: Callable[[Item], int]) -> Iterator[Item]:
    """Yield ``items``, advancing ``bar`` by ``count(item)`` once the caller is done with each (so
    the rate counts finished work), and close the bar at the end or when the caller's loop stops
    on an exception: after Ctrl-C no half-drawn bar is left on the line."""
    try:
        for item in items:
            yield item
            bar.update(count(item))
    finally:
        bar.close()
