"""The CPU allocator of an afnet process: glibc's thresholds, pinned by the ``afnet`` command.

glibc returns large freed blocks to the OS (they are mmapped, or trimmed from the top of the
heap), so a process that frees and re-allocates the same large activations every forward pass
takes fresh-page faults for them every time: about 13k faults (50 MB of zeroed pages) per CPU
forward of AF-ResNet50 at 8x224, several percent of its time. Pinning the thresholds keeps freed
memory for reuse, as jemalloc or tcmalloc would.

This is a process-wide setting, so the library never makes it on its own: the ``afnet`` command,
which owns its process, calls :func:`pin_malloc_thresholds` at start-up (``AFNET_MALLOC_TUNING=0``
turns that off). In your own program, set ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``
in the environment, preload jemalloc/tcmalloc, or call this function yourself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["malloc_tuned", "pin_malloc_thresholds"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_tuned = False


def pin_malloc_thresholds() -> bool:
    """Serve every allocation from the heap and never trim it (glibc only); True if applied."""
    global _tuned
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to pin
        return False
    _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _tuned


def malloc_tuned() -> bool:
    """Whether this process pinned glibc's thresholds (what a benchmark's header reports), by
    :func:`pin_malloc_thresholds` or through the environment."""
    return _tuned or os.environ.get("MALLOC_MMAP_MAX_") == "0"
