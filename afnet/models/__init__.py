"""AF video models: AF-ResNet backbones, the TSN wrapper and ``create_model``."""

from afnet.models.factory import ARCHS, create_model
from afnet.models.resnet import AFResNet, AFStage, StageOptions
from afnet.models.tsn import TSN

__all__ = ["ARCHS", "AFResNet", "AFStage", "StageOptions", "TSN", "create_model"]
