"""AFNet ("Look More but Care Less in Video Recognition") with sparse execution that really skips frames.

Public API: :func:`create_model`, :func:`load_checkpoint` (+ :func:`save_checkpoint`) and
:func:`count_flops`.
"""

from afnet.checkpoint import CheckpointError, LoadReport, load_checkpoint, save_checkpoint
from afnet.flops import FlopCount, count_flops
from afnet.models import ARCHS, create_model

__all__ = [
    "ARCHS",
    "CheckpointError",
    "FlopCount",
    "LoadReport",
    "count_flops",
    "create_model",
    "load_checkpoint",
    "save_checkpoint",
]
__version__ = "0.1.0"
