"""The architecture registry: a new architecture is one file that calls :func:`register_model`.

The registry is the public API's boundary: each architecture declares the options it accepts
with their defaults (the released behaviour) and a check of their values; :func:`build_model`
validates every argument before anything is built, and records the resolved arguments in
``model.config`` so that a checkpoint describes its model completely
(:func:`computation_config` says which of them change what the model computes).

An architecture's build function takes ``num_classes, num_segments, shift, policy, rt, dropout``
and its options, and returns ``(backbone, feature_dim)``: the backbone maps frames
``[N*T, 3, H, W]`` to features ``[N*T, feature_dim]``, or ``feature_dim`` is None when the
backbone ends in its own classifier (AF-MobileNetV3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type

import torch.nn as nn

from afnet.layers import POLICIES, is_ratio
from afnet.models.tsn import TSN

__all__ = [
    "ALL_POLICIES",
    "Architecture",
    "architecture",
    "architectures",
    "build_model",
    "computation_config",
    "register_model",
    "resolve_config",
]

ALL_POLICIES = ("navigation",) + tuple(POLICIES)
# build_model's keyword arguments besides the options, with their defaults.
COMMON_DEFAULTS = {"shift": False, "policy": "navigation", "rt": None, "dropout": 0.5}

BuildFn = Callable[..., Tuple[nn.Module, Optional[int]]]


@dataclass(frozen=True)
class Architecture:
    """One registered architecture.

    Attributes:
        name: what ``create_model`` takes.
        build: ``build(num_classes=, num_segments=, shift=, policy=, rt=, dropout=, **options)``
            -> ``(backbone, feature_dim or None)``.
        options: the options it accepts, with their defaults.
        check: raises ``ValueError``/``TypeError`` naming a bad option value (options resolved).
        unavailable: options it does not offer, with the reason (a clearer error than "unknown").
        always_shifts: the network shifts whatever ``shift`` says (``shift`` is then ignored).
    """

    name: str
    build: BuildFn
    options: Mapping[str, Any]
    check: Callable[[Mapping[str, Any]], None] = lambda options: None
    unavailable: Mapping[str, str] = field(default_factory=dict)
    always_shifts: bool = False


_REGISTRY: Dict[str, Architecture] = {}


def register_model(
    name: str,
    *,
    options: Mapping[str, Any],
    check: Optional[Callable[[Mapping[str, Any]], None]] = None,
    unavailable: Optional[Mapping[str, str]] = None,
    always_shifts: bool = False,
) -> Callable[[BuildFn], BuildFn]:
    """Decorator registering a build function under ``name`` (see :class:`Architecture`)."""

    def register(build: BuildFn) -> BuildFn:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = Architecture(
            name, build, dict(options), check or (lambda options: None), dict(unavailable or {}), always_shifts
        )
        return build

    return register


def architectures() -> Tuple[str, ...]:
    """The registered architecture names, in registration order."""
    return tuple(_REGISTRY)


def architecture(name: Any) -> Architecture:
    """The registered architecture ``name``; ``ValueError`` listing the others if there is none."""
    if name not in _REGISTRY:
        raise ValueError(f"arch must be one of {architectures()}, got {name!r}")
    return _REGISTRY[name]


def is_int(value: Any) -> bool:
    """A Python int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_common(num_classes: Any, num_segments: Any, shift: Any, policy: Any, rt: Any, dropout: Any) -> None:
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not is_int(num_segments) or num_segments < 1:
        raise ValueError(f"num_segments must be a positive int, got {num_segments!r}")
    if not isinstance(shift, bool):
        raise TypeError(f"shift must be True or False, got {shift!r} ({type(shift).__name__})")
    if policy not in ALL_POLICIES:
        raise ValueError(f"policy must be one of {ALL_POLICIES}, got {policy!r}")
    if rt is not None and not is_ratio(rt):
        what = "the training target ratio" if policy == "navigation" else "the ratio of selected frames"
        raise ValueError(f"rt must be a number in (0, 1] ({what} with policy={policy!r}), got {rt!r}")
    if policy != "navigation" and rt is None:
        raise ValueError(f"policy={policy!r} needs rt, the ratio of selected frames in (0, 1]")
    if not (isinstance(dropout, Real) and not isinstance(dropout, bool) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")


def _check_options(arch: Architecture, options: Mapping[str, Any]) -> None:
    for name, reason in arch.unavailable.items():
        if options.get(name):
            raise ValueError(f"{name}={options[name]!r} is not available for {arch.name}: {reason}")
    unknown = sorted(set(options) - set(arch.options))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {arch.name}; valid: {tuple(arch.options)}")
    for name, value in options.items():  # switches must be real bools: "yes" and 1 are errors
        if isinstance(arch.options[name], bool) and not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    arch.check({**arch.options, **options})


def resolve_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` (``create_model`` keyword arguments, with ``arch``) with every default filled in.

    Unknown architectures are returned with the common defaults only (nothing to resolve)."""
    arch = _REGISTRY.get(config.get("arch"))
    options = arch.options if arch is not None else {}
    head = {k: config[k] for k in ("arch", "num_classes", "num_segments") if k in config}
    return {**head, **COMMON_DEFAULTS, **options, **config}


def computation_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The entries of a ``create_model`` config that change what the model computes, resolved.

    Everything counts except ``dropout`` (active in training only), ``rt`` under
    ``policy="navigation"`` and ``rs`` under ``spatial_policy="navigation"`` (ratio-loss targets of
    training, not used by the forward), the spatial settings without ``spatial=True``, and
    ``shift`` for an architecture that always shifts. Lists become tuples (``grid=[4, 4, 2]``
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
    arch = _REGISTRY.get(resolved.get("arch"))
    if arch is not None and arch.always_shifts:
        resolved.pop("shift", None)
    return resolved


def build_model(
    arch: str,
    *,
    model_class: Type[TSN] = TSN,
    num_classes: int,
    num_segments: int,
    shift: bool = False,
    policy: str = "navigation",
    rt: Optional[float] = None,
    dropout: float = 0.5,
    **options: Any,
) -> TSN:
    """The ``model_class`` (a :class:`TSN`) of architecture ``arch``, after checking every
    argument; ``model.config`` holds them all, defaults filled in. See ``afnet.create_model``."""
    spec = architecture(arch)
    _check_common(num_classes, num_segments, shift, policy, rt, dropout)
    _check_options(spec, options)
    options = {**spec.options, **options}  # the defaults of the public API are the registered ones
    common = dict(num_classes=num_classes, num_segments=num_segments, shift=shift, policy=policy, rt=rt)
    backbone, feature_dim = spec.build(**common, dropout=dropout, **options)
    model = model_class(
        backbone,
        num_segments=num_segments,
        num_classes=num_classes if feature_dim is not None else None,
        feature_dim=feature_dim,
        dropout=dropout,
        arch=arch,
    )
    model.config = dict(arch=arch, **common, dropout=dropout, **options)
    return model
