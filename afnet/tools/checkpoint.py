"""Saving, reading, loading and rebuilding AF models from checkpoint files.

Accepted layouts (all read with ``torch.load(..., weights_only=True)``):

- our format (:func:`save_checkpoint`): ``{'afnet_checkpoint': 2, 'config': {...},
  'state_dict': {...}, <extra entries>, 'digest': 'sha256:...'}``. ``config`` holds every
  ``create_model`` argument; ``digest`` covers everything else in the file (every tensor's
  dtype, shape and bytes, and every number and string, in a fixed order). Format 1 had
  neither a complete config nor a digest, and is still read;
- released ImageNet backbones: ``{'state_dict': {'module.<backbone key>': tensor}}``; the
  backbone's ``fc`` becomes the model's ``new_fc`` when the model has one;
- released video models: ``{'state_dict': {'module.base_model.*', 'module.new_fc.*'}, 'arch', ...}``;
- a bare state dict in any of these key layouts.

Wrapper prefixes are stripped from the keys: ``module.`` (``DataParallel`` /
``DistributedDataParallel``, once per wrapper) and ``_orig_mod.`` (``torch.compile``, at any depth).

Every way a file can be unreadable (missing, empty, not a ``torch.save`` file, truncated,
damaged, holding objects ``weights_only`` refuses, not a dict, a changed digest) raises one
:class:`CheckpointError` naming the file and the cause. Our checkpoints' config is compared with
the model's (:func:`afnet.models.computation_config` says which fields count); a
difference is refused unless ``check_config=False``. Missing, unexpected and wrongly shaped keys
are fatal unless ``strict=False`` (partial loading, e.g. an ImageNet backbone fine-tuned onto new
classes); a checkpoint sharing no key with the model is always an error.
"""

from __future__ import annotations

import argparse
import collections
import enum
import hashlib
import os
import pathlib
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from afnet.tools.atomic_files import replace_file
from afnet.engine import create_model
from afnet.models import computation_config

__all__ = [
    "CheckpointError",
    "LoadReport",
    "build_from_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT_KEY = "afnet_checkpoint"
FORMAT_VERSION = 2
DIGEST_KEY = "digest"
_RESERVED = (FORMAT_KEY, "config", "state_dict", DIGEST_KEY)
_DIGEST_PREFIX = "sha256:"
_SHOW = 8
_REQUIRED_WITHOUT_CONFIG = ("arch", "num_segments", "num_classes")

PathLike = Union[str, os.PathLike]
Source = Union[PathLike, Mapping[str, Any]]


class CheckpointError(ValueError):
    """A checkpoint cannot be read, is damaged, or does not fit the model.

    The message ends with advice in Python terms (``strict=False``, ``check_config=False``, the
    arguments to pass). A command line gives its own instead: ``cause`` is the message without
    that advice, ``needs`` names the Python arguments that would get past the error, and
    ``differing`` the config fields a ``check_config`` refusal is about.
    """

    def __init__(self, message: str, *, cause: Optional[str] = None, needs: Sequence[str] = (),
                 differing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.cause = cause if cause is not None else message
        self.needs, self.differing = tuple(needs), tuple(differing)


@dataclass
class LoadReport:
    """What a :func:`load_checkpoint` call matched (keys in the model's naming).

    Attributes:
        loaded, missing, unexpected: keys loaded, absent from the checkpoint, absent from the model.
        mismatched: ``(key, checkpoint shape, model shape)`` of keys whose shapes differ.
        layout: the container and key layout that was recognised.
        config: the model config stored in the checkpoint (ours only; None otherwise).
        digest_verified: whether a stored content digest was checked (files of our format 2; a dict
            passed in is the caller's own and is not checked).
        extra: the checkpoint's other entries (``save_checkpoint(**extra)``; epoch, optimizer, ...).
    """

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    layout: str = ""
    config: Optional[Dict[str, Any]] = None
    digest_verified: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        def head(items: List[Any]) -> str:
            shown = ", ".join(str(i) for i in items[:_SHOW])
            return shown + (f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")

        lines = [f"layout {self.layout!r}: {len(self.loaded)} tensors match"]
        if self.missing:
            lines.append(f"{len(self.missing)} missing in checkpoint: {head(self.missing)}")
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} unexpected in checkpoint: {head(self.unexpected)}")
        if self.mismatched:
            items = [f"{k} (checkpoint {tuple(c)} vs model {tuple(m)})" for k, c, m in self.mismatched]
            lines.append(f"{len(self.mismatched)} with wrong shape: {head(items)}")
        return "; ".join(lines)


# ----------------------------------------------------------------------------- storable values

# Types torch.load(weights_only=True) reads back as they are (exact types: numpy.float64 is a
# float subclass that it refuses).
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device, torch.Size)
_HINTS = (
    (nn.Module, "store its state_dict() instead"),
    (torch.optim.Optimizer, "store its state_dict() instead"),
    (torch.Generator, "store generator.get_state() (a uint8 tensor) instead"),
)


def _unloadable(value: Any, where: str) -> TypeError:
    hint = next((h for cls, h in _HINTS if isinstance(value, cls)), None)
    if hint is None:
        hint = "store its state_dict() instead" if callable(getattr(value, "state_dict", None)) else (
            "convert it to plain containers (dict, list, tuple, set), numbers, strings or tensors"
        )
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    return TypeError(
        f"save_checkpoint: {where} is a {kind}, which torch.load(weights_only=True) cannot read back; {hint}"
    )


def _storable_key(key: Any, where: str) -> Any:
    """A dict key as ``weights_only`` reads it: numbers, strings, bytes, None or tuples of these."""
    key = _storable(key, f"{where} (a key)", set())
    if isinstance(key, (torch.Tensor, list, dict, set, bytearray)):
        raise TypeError(f"save_checkpoint: {where} has a key of type {type(key).__name__}, which cannot be a dict key")
    return key


def _storable(value: Any, where: str, active: set) -> Any:
    """``value`` converted to types ``torch.load(weights_only=True)`` reads; ``where`` names it in errors.

    Converts numpy scalars (to Python numbers) and arrays (to tensors, or lists for string and
    object arrays), ``argparse.Namespace`` (to a dict), paths (to str), enums (to their value),
    named tuples (to tuples) and frozensets (to sets); detaches tensors. Raises ``TypeError``
    naming ``where`` for anything else.
    """
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return value
    if isinstance(value, torch.Tensor):
        if kind not in (torch.Tensor, nn.Parameter):
            raise _unloadable(value, where)
        if value.is_meta:
            raise TypeError(f"save_checkpoint: {where} is a tensor on the meta device: it holds no data")
        return value.detach()
    if isinstance(value, enum.Enum):
        return _storable(value.value, where, active)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    np = sys.modules.get("numpy")  # only set when numpy was imported, i.e. when value may be numpy's
    if np is not None and isinstance(value, np.generic):
        return _storable(value.item(), where, active)
    if np is not None and isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return torch.from_numpy(np.array(value, dtype=value.dtype.newbyteorder("="), copy=True))
        return _storable(value.tolist(), where, active)
    for base in (str, int, float):  # subclasses of plain types pickle as their own class
        if isinstance(value, base):
            return base(value)
    if isinstance(value, argparse.Namespace):
        return _storable_mapping(vars(value), where, active, attribute=True)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        if id(value) in active:
            raise TypeError(f"save_checkpoint: {where} contains itself")
        active.add(id(value))
        try:
            if isinstance(value, Mapping):
                return _storable_mapping(value, where, active)
            if isinstance(value, (set, frozenset)):
                return {_storable(v, f"{where} (a set element)", active) for v in value}
            items = [_storable(v, f"{where}[{i}]", active) for i, v in enumerate(value)]
            return items if isinstance(value, list) else tuple(items)
        finally:
            active.discard(id(value))
    raise _unloadable(value, where)


def _storable_mapping(value: Mapping, where: str, active: set, attribute: bool = False) -> Dict[Any, Any]:
    out: Dict[Any, Any] = collections.OrderedDict() if isinstance(value, collections.OrderedDict) else {}
    for key, item in value.items():
        new_key = _storable_key(key, where)
        if new_key in out:
            raise TypeError(f"save_checkpoint: {where} has two keys that both become {new_key!r}")
        out[new_key] = _storable(item, f"{where}.{key}" if attribute else f"{where}[{key!r}]", active)
    return out


# ----------------------------------------------------------------------------- content digest


def _feed(h: "hashlib._Hash", value: Any) -> None:
    """Add ``value`` to ``h`` in a canonical form: a type tag, then its content."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        t = (t.to_dense() if t.layout != torch.strided else t).cpu().resolve_conj().resolve_neg().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, Mapping):
        h.update(f"M{len(value)}|".encode())
        for k, v in value.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}|".encode())
        for v in value:
            _feed(h, v)
    elif isinstance(value, set):
        # Set order depends on string hashing, which changes from process to process.
        parts = []
        for v in value:
            sub = hashlib.sha256()
            _feed(sub, v)
            parts.append(sub.digest())
        h.update(f"E{len(value)}|".encode() + b"".join(sorted(parts)))
    elif isinstance(value, (bytes, bytearray)):
        h.update(f"B{len(value)}|".encode() + bytes(value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}|".encode() + data)
    else:  # None, bool, numbers, dtype, device, Size: their repr is canonical
        h.update(f"V{type(value).__name__}:{value!r}|".encode())


def _digest(payload: Mapping[str, Any]) -> str:
    h = hashlib.sha256(b"afnet-checkpoint-digest-1|")
    _feed(h, {k: v for k, v in payload.items() if k != DIGEST_KEY})
    return _DIGEST_PREFIX + h.hexdigest()


# ----------------------------------------------------------------------------- saving


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile`` (``_orig_mod``) and ``DataParallel``/DDP (``module``) wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(model: nn.Module, path: PathLike, **extra: Any) -> None:
    """Save ``model`` in our format: its config, its state dict, ``extra`` and a content digest.

    Args:
        model: the model (``torch.compile``, ``DataParallel`` and DDP wrappers are unwrapped, so
            the keys carry no wrapper prefix).
        path: the file to write. It is written atomically (temporary file, then rename).
        extra: more entries (epoch, optimizer and scheduler state dicts, metrics, ...). Only
            types ``torch.load(weights_only=True)`` reads are stored: numpy scalars and arrays,
            ``argparse.Namespace``, paths, enums and named tuples are converted; anything else
            raises ``TypeError`` naming its key path (e.g. ``extra['opt']['foo']``) before
            anything is written.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    reserved = sorted(set(extra) & set(_RESERVED))
    if reserved:
        raise ValueError(f"save_checkpoint: extra key(s) {reserved} are reserved for the checkpoint's own entries")
    model = _unwrap(model)
    payload: Dict[str, Any] = {FORMAT_KEY: FORMAT_VERSION}
    config = getattr(model, "config", None)
    if config is not None:
        payload["config"] = _storable(dict(config), "model.config", set())
    payload["state_dict"] = _storable(model.state_dict(), "model.state_dict()", set())
    for key, value in extra.items():
        payload[key] = _storable(value, f"extra[{key!r}]", set())
    payload[DIGEST_KEY] = _digest(payload)
    replace_file(path, lambda fh: torch.save(payload, fh))


# ----------------------------------------------------------------------------- reading


def _source_name(source: Source) -> str:
    return "checkpoint dict" if isinstance(source, Mapping) else f"checkpoint {os.fspath(source)}"


def _what_it_is(head: bytes) -> str:
    """A description of a file that is not a ``torch.save`` file, from its first bytes."""
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file itself (fetch it with `git lfs pull`)"
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page (a failed download?)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unknown format, first bytes {head[:8]!r}"
    if all(c.isprintable() or c.isspace() for c in text):
        return f"it is a text file starting with {text[:40]!r}"
    return f"unknown format, first bytes {head[:8]!r}"


def _check_zip(path: pathlib.Path, fail: Callable[[str], CheckpointError]) -> None:
    """Read every member of a zip-format checkpoint and check its CRC-32 (``torch.load`` does not)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size:  # written with CRC-32 turned off: nothing to check
                    continue
                with archive.open(info) as member:
                    while member.read(1 << 22):
                        pass
    except Exception as exc:  # BadZipFile for a bad CRC or header; EOFError, zlib.error, ... for others
        raise fail(
            f"the zip archive is damaged ({exc}); the file was truncated or altered after it was written"
        ) from exc


def _load_file(path: pathlib.Path) -> Any:
    name = f"checkpoint {path}"

    def fail(cause: str) -> CheckpointError:
        return CheckpointError(f"cannot read {name}: {cause}")

    try:
        if path.is_dir():
            raise fail("it is a directory")
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from exc
    if not head:
        raise fail("the file is empty (0 bytes)")
    is_zip = head.startswith(b"PK\x03\x04")
    is_legacy = head[:1] == b"\x80" or head[257:262] == b"ustar"  # pickle protocol >= 2, or the old tar format
    if not (is_zip or is_legacy):
        raise fail(f"not a file written by torch.save: {_what_it_is(head)}")
    if is_zip:
        _check_zip(path, fail)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            detail = next((line.strip() for line in text.splitlines() if "WeightsUnpickler error" in line), "")
            detail = detail.replace("WeightsUnpickler error: ", "").split(". Please")[0]
            raise fail(
                "torch.load(weights_only=True) refused it: it holds objects that are not tensors or plain "
                f"data ({detail}). Unpickling those can run arbitrary code; it was not loaded"
            ) from exc
        raise fail(f"the pickled data is damaged ({text or type(exc).__name__})") from exc
    except EOFError as exc:
        raise fail("the file is truncated (unexpected end of data)") from exc
    except Exception as exc:  # torch/miniz report damage as RuntimeError, OSError, KeyError, ...
        text = str(exc).split(". This is an internal miniz error")[0]
        raise fail(f"the file is damaged or truncated ({type(exc).__name__}: {text})") from exc


def read_checkpoint(source: Source) -> Dict[str, Any]:
    """Read a checkpoint file and verify it (a dict is checked, and returned as it is).

    Returns the checkpoint dict as stored. Raises :class:`CheckpointError` naming the file and
    the cause when it cannot be read or is not a dict, when it is ours and its content digest
    does not match (``digest mismatch``), or when it was written in a newer format.
    """
    return _read(source)[0]


def _read(source: Source) -> Tuple[Dict[str, Any], bool]:
    """(checkpoint, whether a content digest was verified). Only files are verified: a dict
    the caller passes may have been edited on purpose (e.g. a classifier removed)."""
    if isinstance(source, Mapping):
        checkpoint: Any = source
    elif isinstance(source, (str, os.PathLike)):
        checkpoint = _load_file(pathlib.Path(source))
    else:
        raise TypeError(f"path_or_dict must be a path or a dict, got {type(source).__name__}")
    name = _source_name(source)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{name} holds a {type(checkpoint).__name__}, not a dict of tensors")
    verified = False
    if FORMAT_KEY in checkpoint:
        version = checkpoint[FORMAT_KEY]
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(
                f"{name} has afnet format {version!r}; this version of afnet reads formats 1 to {FORMAT_VERSION}"
            )
        stored = checkpoint.get(DIGEST_KEY)
        if not isinstance(source, Mapping) and (version >= 2 or stored is not None):
            if not isinstance(stored, str):
                raise CheckpointError(f"{name} has no content digest (format {version} always stores one)")
            computed = _digest(checkpoint)
            if computed != stored:
                raise CheckpointError(
                    f"{name}: digest mismatch: its contents changed after it was saved (stored {stored}, "
                    f"computed {computed}); the file is damaged or was edited"
                )
            verified = True
    return dict(checkpoint), verified


# ----------------------------------------------------------------------------- matching


def _state_dict_of(checkpoint: Mapping[str, Any], name: str) -> Tuple[Dict[str, torch.Tensor], str, Dict[str, Any]]:
    """(tensors, container name, the other entries) from any accepted container."""
    if FORMAT_KEY in checkpoint or isinstance(checkpoint.get("state_dict"), Mapping):
        if not isinstance(checkpoint.get("state_dict"), Mapping):
            raise CheckpointError(f"{name} is an afnet checkpoint without a state_dict")
        extra = {k: v for k, v in checkpoint.items() if k not in _RESERVED}
        return dict(checkpoint["state_dict"]), "afnet" if FORMAT_KEY in checkpoint else "released", extra
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{name} holds no tensors (keys: {sorted(map(str, checkpoint))[:_SHOW]})")
    return tensors, "state_dict", {k: v for k, v in checkpoint.items() if k not in tensors}


def _strip_wrappers(tensors: Dict[str, torch.Tensor], name: str) -> Dict[str, torch.Tensor]:
    """Keys without ``_orig_mod.`` (``torch.compile``, at any depth) and without the ``module.``
    of each ``DataParallel``/DDP wrapper (in front of every key)."""
    stripped = {".".join(p for p in k.split(".") if p != "_orig_mod"): v for k, v in tensors.items()}
    if len(stripped) != len(tensors):
        raise CheckpointError(f"{name}: keys collide once the torch.compile '_orig_mod.' parts are removed")
    while stripped and all(k.startswith("module.") for k in stripped):
        stripped = {k[len("module.") :]: v for k, v in stripped.items()}
    return stripped


def _to_model_keys(
    tensors: Dict[str, torch.Tensor], model_keys: Mapping[str, torch.Tensor], name: str
) -> Tuple[Dict[str, torch.Tensor], str]:
    """Rename checkpoint keys into the model's naming; returns (renamed, layout description)."""
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{name}: its state_dict holds non-tensors at {bad[:_SHOW]}")
    tensors = _strip_wrappers(tensors, name)
    if any(k.startswith("base_model.") for k in tensors):
        return tensors, "video model"
    # A backbone: prefix base_model., its classifier fc -> new_fc when the model has new_fc.
    has_new_fc = any(k.startswith("new_fc.") for k in model_keys)
    renamed = {}
    for k, v in tensors.items():
        if has_new_fc and k.startswith("fc."):
            renamed["new_fc." + k[len("fc.") :]] = v
        else:
            renamed["base_model." + k] = v
    return renamed, "backbone"


def _match(model_state: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], layout: str) -> LoadReport:
    report = LoadReport(layout=layout)
    for key, value in tensors.items():
        if key not in model_state:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(model_state[key].shape)))
        else:
            report.loaded.append(key)
    report.missing = [k for k in model_state if k not in tensors]
    return report


_ABSENT = "<absent>"


def _config_differences(stored: Mapping[str, Any], other: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(field, stored value, other value) for every field that changes computation and differs."""
    a, b = computation_config(stored), computation_config(other)
    keys = list(a) + [k for k in b if k not in a]
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in keys if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _describe_differences(diffs: List[Tuple[str, Any, Any]], other: str) -> str:
    return "; ".join(f"{k}: checkpoint {x!r}, {other} {y!r}" for k, x, y in diffs)


def _load_into(
    model: nn.Module, checkpoint: Mapping[str, Any], name: str, *, strict: bool, check_config: bool, verified: bool
) -> LoadReport:
    model = _unwrap(model)
    tensors, container, extra = _state_dict_of(checkpoint, name)
    config = checkpoint.get("config") if container == "afnet" else None
    if config is not None and not isinstance(config, Mapping):
        raise CheckpointError(f"{name}: its config is a {type(config).__name__}, not a dict")
    model_config = getattr(model, "config", None)
    if check_config and config is not None and model_config is not None:
        diffs = _config_differences(config, model_config)
        if diffs:
            cause = f"{name} was saved from a model that computes differently: {_describe_differences(diffs, 'model')}"
            raise CheckpointError(f"{cause}. Pass check_config=False to load it anyway", cause=cause,
                                  needs=("check_config",), differing=[k for k, _, _ in diffs])
    model_state = model.state_dict()
    tensors, layout = _to_model_keys(tensors, model_state, name)
    report = _match(model_state, tensors, f"{container} {layout}")
    report.config = dict(config) if config is not None else None
    report.digest_verified = verified
    report.extra = extra
    arch = getattr(model, "arch", type(model).__name__)
    source = config.get("arch") if config is not None else extra.get("arch")
    where = f"{name} (arch {source!r})" if source else name
    if not report.loaded:
        raise CheckpointError(f"{where} does not fit model {arch!r}: no tensor matches. {report.describe()}")
    if strict and not report.ok:
        raise CheckpointError(
            f"{where} does not fit model {arch!r} (pass strict=False to load the matching part): "
            + report.describe(),
            cause=f"{where} does not fit model {arch!r}: {report.describe()}", needs=("strict",),
        )
    with torch.no_grad():
        for key in report.loaded:
            model_state[key].copy_(tensors[key])
    if hasattr(model, "refresh_plan"):  # copy_ bumps version counters too; this states it
        model.refresh_plan()
    return report


def load_checkpoint(
    model: nn.Module,
    path_or_dict: Source,
    *,
    strict: bool = True,
    check_config: bool = True,
) -> LoadReport:
    """Load weights into ``model`` from any accepted layout (see the module docstring).

    Args:
        model: an ``afnet`` model (``create_model``); wrappers (``torch.compile``, DDP) are fine.
        path_or_dict: a file path or an already loaded checkpoint dict.
        strict: raise :class:`CheckpointError` on any missing, unexpected or wrongly shaped key.
            With False, the matching tensors are loaded and the rest is reported.
        check_config: refuse a checkpoint of ours whose config differs from ``model.config`` in a
            field that changes what the model computes (every differing field is named).

    Returns a :class:`LoadReport`. Raises :class:`CheckpointError` when the file cannot be read
    or was altered, or when the checkpoint does not fit (always when no key matches).
    """
    checkpoint, verified = _read(path_or_dict)
    name = _source_name(path_or_dict)
    return _load_into(model, checkpoint, name, strict=strict, check_config=check_config, verified=verified)


def build_from_checkpoint(
    path: Source,
    *,
    arch: Optional[str] = None,
    num_segments: Optional[int] = None,
    num_classes: Optional[int] = None,
    strict: bool = True,
    check_config: bool = True,
    **options: Any,
) -> Tuple[nn.Module, LoadReport]:
    """Rebuild the model a checkpoint was saved from and load its weights.

    Our checkpoints carry their config, so ``build_from_checkpoint(path)`` is enough. The released
    checkpoints (and bare state dicts) carry none: pass ``arch``, ``num_segments`` and
    ``num_classes`` (and ``shift=True`` for TSM models, or any other ``create_model`` option).

    Args:
        path: a checkpoint file (or an already loaded dict).
        arch, num_segments, num_classes, options: ``create_model`` arguments; with our
            checkpoints they override the stored config.
        strict: as in :func:`load_checkpoint` (False to fine-tune onto new classes).
        check_config: refuse overrides that change what the stored model computes (every
            differing field is named); False builds the model as asked.

    Returns ``(model, report)``: the model in eval mode (call ``model.train()`` to train it) and
    the :class:`LoadReport` (``report.extra`` holds the checkpoint's other entries).
    """
    name = _source_name(path)
    checkpoint, verified = _read(path)
    named = dict(arch=arch, num_segments=num_segments, num_classes=num_classes)
    given = {k: v for k, v in named.items() if v is not None}
    given.update(options)
    stored = checkpoint.get("config") if FORMAT_KEY in checkpoint else None
    if stored is None:
        missing = [k for k in _REQUIRED_WITHOUT_CONFIG if k not in given]
        if missing:
            cause = f"{name} carries no model config (a released checkpoint or a bare state dict)"
            raise CheckpointError(f"{cause}: pass {', '.join(missing)} to build_from_checkpoint", cause=cause,
                                  needs=missing)
        try:
            model = create_model(**given)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{name}: the arguments do not build a model: {exc}") from exc
    else:
        if not isinstance(stored, Mapping):
            raise CheckpointError(f"{name}: its config is a {type(stored).__name__}, not a dict")
        config = {**stored, **given}
        diffs = _config_differences(stored, config)
        if check_config and diffs:
            cause = f"{name}: the arguments change what its model computes: {_describe_differences(diffs, 'given')}"
            raise CheckpointError(
                f"{cause}. Pass check_config=False (and strict=False where shapes change) to build it anyway",
                cause=cause, needs=("check_config",), differing=[k for k, _, _ in diffs],
            )
        try:
            model = create_model(**config)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{name}: its config does not build a model: {exc}") from exc
    # The model was built from the stored config (overrides checked above): nothing to compare.
    report = _load_into(model, checkpoint, name, strict=strict, check_config=False, verified=verified)
    return model.eval(), report
