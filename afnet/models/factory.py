"""``create_model``: build an AF video model by name."""

from __future__ import annotations

import importlib
from typing import Any, Optional

from afnet.layers import POLICIES
from afnet.models.resnet import AFResNet
from afnet.models.tsn import TSN

ARCHS = ("af_resnet18", "af_resnet34", "af_resnet50", "af_resnet101", "af_mobilenetv3")
ALL_POLICIES = ("navigation",) + tuple(POLICIES)
_RESNET_OPTIONS = ("alpha", "focal_groups", "mix_frames", "fusion", "fill_zero_response")


def _check_common(arch: str, num_classes: Any, num_segments: Any, policy: str, rt: Any) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(num_segments, int) or isinstance(num_segments, bool) or num_segments < 1:
        raise ValueError(f"num_segments must be a positive int, got {num_segments!r}")
    if policy not in ALL_POLICIES:
        raise ValueError(f"policy must be one of {ALL_POLICIES}, got {policy!r}")
    if rt is not None and not (isinstance(rt, (int, float)) and not isinstance(rt, bool) and 0 < rt <= 1):
        raise ValueError(f"rt must be a number in (0, 1], got {rt!r}")
    if policy != "navigation" and rt is None:
        raise ValueError(f"policy={policy!r} needs rt, the ratio of selected frames in (0, 1]")


def create_model(
    arch: str,
    *,
    num_classes: int,
    num_segments: int,
    shift: bool = False,
    policy: str = "navigation",
    rt: Optional[float] = None,
    dropout: float = 0.5,
    **options: Any,
) -> TSN:
    """An AF video model: ``model(video [N, T, 3, H, W]) -> logits [N, num_classes]``.

    Args:
        arch: ``af_resnet18``, ``af_resnet34``, ``af_resnet50``, ``af_resnet101`` or ``af_mobilenetv3``.
        num_classes: output classes.
        num_segments: T, frames per video.
        shift: TSM in the residual branches (AFNet-TSM). AF-MobileNetV3 always shifts.
        policy: ``navigation`` (learned gates) or a fixed policy ``random``/``uniform``/``normal``.
        rt: ratio of selected frames for the fixed policies, in (0, 1].
        dropout: before the classifier.
        options: ResNets: ``alpha`` (2), ``focal_groups`` (2), ``mix_frames`` (False: released
            groups = T navigation; True: paper Eq. 3), ``fusion`` (``"dynamic"``/``"additive"``),
            ``fill_zero_response`` (True: unselected frames get ``F(0)`` as released; False: residual
            only, as the paper describes). AF-MobileNetV3: see ``afnet.models.mobilenetv3``.

    The model starts in training mode; ``model.eval()`` runs the sparse execution by default.
    """
    _check_common(arch, num_classes, num_segments, policy, rt)
    config = dict(
        arch=arch, num_classes=num_classes, num_segments=num_segments, shift=shift, policy=policy, rt=rt,
        dropout=dropout, **options,
    )
    if arch == "af_mobilenetv3":
        model = _create_mobilenetv3(config)
        model.config = config
        return model
    unknown = sorted(set(options) - set(_RESNET_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {arch}; valid: {_RESNET_OPTIONS}")
    depth = int(arch[len("af_resnet") :])
    backbone = AFResNet(depth, num_segments=num_segments, shift=shift, policy=policy, rt=rt, **options)
    model = TSN(
        backbone,
        num_segments=num_segments,
        num_classes=num_classes,
        feature_dim=backbone.feature_dim,
        dropout=dropout,
        arch=arch,
    )
    model.config = config
    return model


def _create_mobilenetv3(config: dict) -> TSN:
    try:
        module = importlib.import_module("afnet.models.mobilenetv3")
    except ImportError as exc:  # pragma: no cover - depends on the checkout
        raise NotImplementedError("af_mobilenetv3 is not available in this build") from exc
    kwargs = {k: v for k, v in config.items() if k != "arch"}
    return module.create_af_mobilenetv3(**kwargs)
