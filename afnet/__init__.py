"""AFNet ("Look More but Care Less in Video Recognition") with sparse execution that really skips
frames and regions.

Public API: :func:`create_model`; checkpoints (:func:`build_from_checkpoint`, :func:`load_checkpoint`,
:func:`save_checkpoint`, :func:`read_checkpoint`); :func:`count_flops`; the frame budget
(:func:`calibrate_frame_budget`, ``model.frame_budget``); :func:`cuda_graph`; :func:`predict`.
Export: ``afnet.export``; training: ``afnet.training``; the engine: ``afnet.engine``.
"""

from afnet._version import __version__
from afnet.budget import calibrate_frame_budget
from afnet.checkpoint import (
    CheckpointError,
    LoadReport,
    build_from_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from afnet.cuda_graph import cuda_graph
from afnet.flops import FlopCount, count_flops
from afnet.models import ARCHS, create_model

__all__ = [
    "ARCHS",
    "CheckpointError",
    "FlopCount",
    "LoadReport",
    "__version__",
    "build_from_checkpoint",
    "calibrate_frame_budget",
    "count_flops",
    "cuda_graph",
    "create_model",
    "load_checkpoint",
    "predict",
    "read_checkpoint",
    "save_checkpoint",
]


def __getattr__(name: str):
    # afnet.predict loads the data stack (PyAV, torchvision transforms) only when first used.
    if name == "predict":
        from afnet.training.predict import predict

        return predict
    raise AttributeError(f"module 'afnet' has no attribute {name!r}")
