"""The build id: a digest of the C++/CUDA sources, compiled into both libraries.

``setup.py`` passes it to the compilers (``-DAFNET_BUILD_ID``), and each library stores it
after :data:`MARKER`. The loader reads it from the files before loading ``_C_cuda``: a CUDA
library left over from other sources (an editable tree rebuilt without nvcc, say) would
register kernels whose signatures no longer match the schemas, which aborts the process
instead of raising. This module imports nothing of the package, so ``setup.py`` can load it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Union

MARKER = b"afnet-build-id:"
_MAX_LENGTH = 64


def source_digest(csrc: Union[str, Path]) -> str:
    """16 hex digits of SHA-256 over every file under ``csrc``: relative path and bytes."""
    root = Path(csrc)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def library_build_id(path: Union[str, Path]) -> Optional[str]:
    """The build id stored in the library file ``path``, or None for a library without one."""
    data = Path(path).read_bytes()
    start = data.find(MARKER)
    if start < 0:
        return None
    start += len(MARKER)
    end = data.find(b"\0", start, start + _MAX_LENGTH)
    return data[start : end if end >= 0 else start + _MAX_LENGTH].decode("ascii", "replace")
