"""``create_model``: build an AF video model by name, after checking every argument.

The factory is the public API's boundary: it declares which options each architecture accepts
and their defaults (:data:`ARCH_OPTIONS`), validates every value before anything is built, and
records the resolved arguments in ``model.config`` so that a checkpoint describes its model
completely (:func:`computation_config` says which of them change what the model computes).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Dict, Mapping, Optional

from afnet.layers import POLICIES, SPATIAL_POLICIES
from afnet.models.blocks import block_type
from afnet.models.mobilenetv3 import create_af_mobilenetv3
from afnet.models.resnet import DEFAULT_GRIDS, FUSIONS, RESNET_DEPTHS, AFResNet
from afnet.models.tsn import TSN

__all__ = ["ARCHS", "ARCH_OPTIONS", "ALL_POLICIES", "computation_config", "create_model", "resolve_config"]

ARCHS = ("af_resnet18", "af_resnet34", "af_resnet50", "af_resnet101", "af_mobilenetv3")
ALL_POLICIES = ("navigation",) + tuple(POLICIES)

# The options each architecture accepts, with their defaults (the released behaviour).
_NAVIGATION_OPTIONS = {"mix_frames": False, "fusion": "dynamic", "fill_zero_response": True, "soft_weights": False}
_SPATIAL_OPTIONS = {
    "spatial": False, "rs": None, "spatial_policy": "navigation", "grid": DEFAULT_GRIDS,
    "first_layer_navigation": False,
}
_RESNET_OPTIONS = {"alpha": 2, "focal_groups": 2, **_NAVIGATION_OPTIONS, **_SPATIAL_OPTIONS}
ARCH_OPTIONS: Dict[str, Dict[str, Any]] = {
    **{arch: _RESNET_OPTIONS for arch in ARCHS if arch.startswith("af_resnet")},
    "af_mobilenetv3": dict(_NAVIGATION_OPTIONS),
}
_BOOL_OPTIONS = ("mix_frames", "fill_zero_response", "soft_weights", "spatial", "first_layer_navigation")
# create_model's keyword arguments besides the options, with their defaults.
_COMMON_DEFAULTS = {"shift": False, "policy": "navigation", "rt": None, "dropout": 0.5}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _resnet_width_gcd(arch: str) -> int:
    """Greatest common divisor of every channel count an AF stage's convs see (``alpha`` divides the
    ample widths and ``focal_groups`` the focal convs' channels, so both must divide this)."""
    block, _ = RESNET_DEPTHS[int(arch[len("af_resnet") :])]
    expansion = block_type(block).expansion
    inputs = (64, 64 * expansion, 128 * expansion)
    outputs = (64 * expansion, 128 * expansion, 256 * expansion)
    inner = tuple(w // expansion for w in outputs)  # bottleneck mid width (the output itself for basic)
    return math.gcd(*inputs, *outputs, *inner)


def _check_common(
    arch: Any, num_classes: Any, num_segments: Any, shift: Any, policy: Any, rt: Any, dropout: Any
) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not _is_int(num_segments) or num_segments < 1:
        raise ValueError(f"num_segments must be a positive int, got {num_segments!r}")
    if not isinstance(shift, bool):
        raise TypeError(f"shift must be True or False, got {shift!r} ({type(shift).__name__})")
    if policy not in ALL_POLICIES:
        raise ValueError(f"policy must be one of {ALL_POLICIES}, got {policy!r}")
    if rt is not None and not (_is_real(rt) and 0 < rt <= 1):
        what = "the training target ratio" if policy == "navigation" else "the ratio of selected frames"
        raise ValueError(f"rt must be a number in (0, 1] ({what} with policy={policy!r}), got {rt!r}")
    if policy != "navigation" and rt is None:
        raise ValueError(f"policy={policy!r} needs rt, the ratio of selected frames in (0, 1]")
    if not (_is_real(dropout) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")


def _check_spatial(options: Mapping[str, Any]) -> None:
    policy = options.get("spatial_policy", "navigation")
    if policy not in SPATIAL_POLICIES:
        raise ValueError(f"spatial_policy must be one of {SPATIAL_POLICIES}, got {policy!r}")
    rs = options.get("rs")
    if rs is not None and not (_is_real(rs) and 0 < rs <= 1):
        raise ValueError(f"rs (the ratio of computed cells of the selected frames) must be a number in (0, 1], got {rs!r}")
    if options.get("spatial") and policy != "navigation" and rs is None:
        raise ValueError(f"spatial_policy={policy!r} needs rs, the ratio of computed cells in (0, 1]")
    grid = options.get("grid", DEFAULT_GRIDS)
    grids = (grid,) * 3 if _is_int(grid) else tuple(grid) if isinstance(grid, (tuple, list)) else None
    if grids is None or len(grids) != 3 or not all(_is_int(g) and g >= 1 for g in grids):
        raise ValueError(f"grid must be a positive int or one positive int per AF stage (3), got {grid!r}")


def _check_options(arch: str, options: Mapping[str, Any]) -> None:
    if arch == "af_mobilenetv3" and options.get("spatial"):
        raise ValueError(
            "spatial=True is not available for af_mobilenetv3: its blocks' squeeze-excitation pools "
            "every pixel, so a block cannot compute only some regions; use an AF-ResNet"
        )
    valid = ARCH_OPTIONS[arch]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {arch}; valid: {tuple(valid)}")
    for name in _BOOL_OPTIONS:
        if name in options and not isinstance(options[name], bool):
            value = options[name]
            raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    _check_spatial(options)
    if "fusion" in options and options["fusion"] not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {options['fusion']!r}")
    for name, what in (("alpha", "the ample width divisor"), ("focal_groups", "the focal convs' groups")):
        if name not in options:
            continue
        value, gcd = options[name], _resnet_width_gcd(arch)
        if not _is_int(value) or value < 1 or gcd % value:
            divisors = [d for d in range(1, gcd + 1) if gcd % d == 0]
            raise ValueError(
                f"{name} ({what}) must be a positive int dividing every AF-stage width of {arch} "
                f"(one of {divisors}), got {value!r}"
            )


def resolve_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` (``create_model`` keyword arguments, with ``arch``) with every default filled in.

    Unknown architectures are returned with the common defaults only (nothing to resolve)."""
    options = ARCH_OPTIONS.get(config.get("arch"), {})
    head = {k: config[k] for k in ("arch", "num_classes", "num_segments") if k in config}
    return {**head, **_COMMON_DEFAULTS, **options, **config}


def computation_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The entries of a ``create_model`` config that change what the model computes, resolved.

    Everything counts except ``dropout`` (active in training only), ``rt`` under
    ``policy="navigation"`` and ``rs`` under ``spatial_policy="navigation"`` (ratio-loss targets of
    training, not used by the forward), the spatial settings without ``spatial=True``, and
    ``shift`` for ``af_mobilenetv3`` (which always shifts). Lists become tuples (``grid=[4, 4, 2]``
    builds what ``grid=(4, 4, 2)`` does).
    """
    resolved = {k: tuple(v) if isinstance(v, list) else v for k, v in resolve_config(config).items()}
    resolved.pop("dropout", None)
    if resolved.get("policy") == "navigation":
        resolved.pop("rt", None)
    if not resolved.get("spatial", False):  # the spatial settings of a model without spatial gates
        for name in ("spatial_policy", "rs", "grid"):
            resolved.pop(name, None)
    elif resolved.get("spatial_policy") == "navigation":  # rs: a training target, like rt
        resolved.pop("rs", None)
    if resolved.get("arch") == "af_mobilenetv3":
        resolved.pop("shift", None)
    return resolved


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
        rt: in (0, 1]. With a fixed policy, the ratio of selected frames (required). With
            ``navigation``, the training target ratio: the target of the ratio loss that
            ``afnet train`` uses by default; it does not change the forward.
        dropout: before the classifier, in [0, 1).
        options: per architecture (:data:`ARCH_OPTIONS`, defaults = the released code):

            - ``mix_frames`` (False): True makes navigation mix all T frames (paper Eq. 3);
            - ``fusion`` (``"dynamic"``): or ``"additive"`` (paper Table 8);
            - ``fill_zero_response`` (True): unselected frames get ``F(0)`` as released;
              False gives them the residual only, as the paper describes;
            - ``soft_weights`` (False): the paper's soft-weights navigation (dense execution only);
            - AF-ResNets only: ``alpha`` (2), the ample width divisor, and ``focal_groups`` (2),
              the groups of the focal convs; both must divide every AF-stage width;
            - AF-ResNets only, spatial navigation (paper §3.3): ``spatial`` (False);
              ``spatial_policy`` (``"navigation"``, or fixed ``"random"``/``"center"``);
              ``rs``, the ratio of computed cells of the selected frames (required by the fixed
              policies, the ratio-loss target for navigation); ``grid`` (``(4, 4, 2)``): cells
              per side in layer1..3, or one int for all; ``first_layer_navigation`` (False): one
              temporal navigation after the stem decides the frames of every focal block.

    Raises ``ValueError``/``TypeError`` naming the argument for any invalid value, before
    building anything. ``model.config`` holds every argument, defaults filled in. The model
    starts in training mode; ``model.eval()`` runs the sparse execution by default.
    """
    _check_common(arch, num_classes, num_segments, shift, policy, rt, dropout)
    _check_options(arch, options)
    common = dict(num_classes=num_classes, num_segments=num_segments, shift=shift, policy=policy, rt=rt)
    options = {**ARCH_OPTIONS[arch], **options}  # the defaults of the public API are the ones above
    if arch == "af_mobilenetv3":
        model = create_af_mobilenetv3(**common, dropout=dropout, **options)
    else:
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
    model.config = dict(arch=arch, **common, dropout=dropout, **options)
    return model

