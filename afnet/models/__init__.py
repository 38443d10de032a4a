"""The descriptions of the AF video models: backbones, the TSN wrapper and the architecture registry.

Importing this package registers the built-in architectures (one module each). A model here
computes the released dense form; the inference engine (``afnet.engine``) runs the same
description sparsely.
"""

from afnet.models import mobilenetv3, resnet  # noqa: F401 - each registers its architectures
from afnet.models.registry import (
    ALL_POLICIES,
    architecture,
    architectures,
    build_model,
    computation_config,
    register_model,
    resolve_config,
)
from afnet.models.resnet import AFResNet, AFStage, StageOptions
from afnet.models.tsn import TSN

#: The built-in architecture names.
ARCHS = architectures()

__all__ = [
    "ALL_POLICIES",
    "ARCHS",
    "AFResNet",
    "AFStage",
    "StageOptions",
    "TSN",
    "architecture",
    "architectures",
    "build_model",
    "computation_config",
    "register_model",
    "resolve_config",
]
