"""Ctrl-C, remembered: after it, any failure is the interrupt, not a bug to show a traceback for.

Ctrl-C in a terminal signals the whole process group, DataLoader workers included. Usually the
main process raises ``KeyboardInterrupt`` at once; but when the signal lands in a fork hook (a
loader starting its workers), Python reports that exception as unraisable and goes on, and the
first sign of the interrupt is then the loader's ``RuntimeError`` about its dead workers. The
command line installs :func:`sigint_handler` for the length of a command, so that
:func:`sigint_received` tells the two cases apart.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

__all__ = ["sigint_handler", "sigint_received"]

_received = False


def _on_sigint(signum: int, frame: Any) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt


def sigint_received() -> bool:
    """Whether SIGINT arrived while :func:`sigint_handler` was installed (False outside it)."""
    return _received


@contextlib.contextmanager
def sigint_handler() -> Iterator[None]:
    """Inside the block SIGINT raises ``KeyboardInterrupt`` as usual and is also remembered; the
    previous handler is restored after it. Elsewhere than in the main thread, where signal handlers
    cannot be set, nothing changes."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = False
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _received = False
