"""Recipes of the golden fixtures (``tests/data/*.pt``, see ``../shared/fixtures/official/README.md``).

Shared by the model tests: weights from ``seed`` walked over ``keys_shapes``, the input from
``input_seed``, and small helpers to load a fixture and compare logits.
"""

from __future__ import annotations

import math
import os
import traceback
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

DATA = Path(__file__).parent / "data"
FIXTURES = ("af_resnet50_t8", "af_resnet50_tsm_t8", "af_mobilenetv3_tsm_t8")


def load_fixture(name: str) -> dict:
    """The fixture dict of ``tests/data/<name>.pt`` (plain tensors, lists and numbers)."""
    return torch.load(DATA / f"{name}.pt", weights_only=True)


def fixture_state_dict(fixture: dict) -> Dict[str, torch.Tensor]:
    """Weights of the released model by the README recipe, keyed like ``keys_shapes``
    (``base_model.*``, ``new_fc.*``), drawn from one generator seeded with ``fixture["seed"]``."""
    g = torch.Generator().manual_seed(fixture["seed"])
    state: Dict[str, torch.Tensor] = {}
    for key, shape, _dtype in fixture["keys_shapes"]:
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:
            state[key] = torch.randn(shape, generator=g) * 0.1 + (1.0 if key.endswith("weight") else 0.0)
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
    return state


def fixture_video(fixture: dict) -> torch.Tensor:
    """The fixture's input as a video ``[N, T, 3, 224, 224]`` (the recipe's ``[N, T*3, H, W]`` reshaped)."""
    n, t3, h, w = fixture["input_shape"]
    t = t3 // 3
    g = torch.Generator().manual_seed(fixture["input_seed"])
    a = torch.randn(n, t, 3, h, w, generator=g)
    b = torch.rand(n, t, 1, 1, 1, generator=g)
    c = torch.randn(n, t, 3, 1, 1, generator=g)
    return a * (0.5 + b) + c


def fixture_masks(fixture: dict) -> List[torch.Tensor]:
    """Golden masks as bool ``[N, T]``."""
    return [m.bool() for m in fixture["masks"]]


def relative_error(ours: torch.Tensor, golden: torch.Tensor) -> float:
    """``‖ours − golden‖ / ‖golden‖`` in float64."""
    ours, golden = ours.double(), golden.double()
    return ((ours - golden).norm() / golden.norm()).item()


def random_state_like(model: torch.nn.Module, seed: int) -> Dict[str, torch.Tensor]:
    """Random weights for ``model`` by the fixture recipe (BN statistics away from the identity),
    so that every block contributes and ``F(0)`` is far from zero."""
    keys = [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()]
    return fixture_state_dict({"seed": seed, "keys_shapes": keys})


_MODELS: Dict[tuple, torch.nn.Module] = {}


def build_model(arch: str, num_segments: int, seed: int = 0, num_classes: int = 7, **options) -> torch.nn.Module:
    """An eval-mode model with :func:`random_state_like` weights; built once per argument set and
    deep-copied on every call (building and drawing 25M+ weights dominates small tests)."""
    import copy
    import inspect

    import afnet

    # Options given at their default build the same model: one cache entry (shift=False == no shift).
    defaults = {k: p.default for k, p in inspect.signature(afnet.create_model).parameters.items()}
    options = {k: v for k, v in options.items() if k not in defaults or defaults[k] != v}
    key = (arch, num_segments, seed, num_classes, tuple(sorted(options.items())))
    if key not in _MODELS:
        model = afnet.create_model(arch, num_classes=num_classes, num_segments=num_segments, **options)
        model.load_state_dict(random_state_like(model, seed))
        _MODELS[key] = model.eval()
    return copy.deepcopy(_MODELS[key])


def random_masks(count: int, n: int, t: int, seed: int) -> List[torch.Tensor]:
    """``count`` bool masks ``[n, t]``: the first selects no frame, the second every frame, the third
    exactly one frame, the rest random."""
    g = torch.Generator().manual_seed(seed)
    masks = [torch.rand(n, t, generator=g) > 0.5 for _ in range(count)]
    special = [torch.zeros(n, t, dtype=torch.bool), torch.ones(n, t, dtype=torch.bool)]
    one = torch.zeros(n, t, dtype=torch.bool)
    one[n - 1, t // 2] = True
    special.append(one)
    for i, m in enumerate(special[:count]):
        masks[i] = m
    return masks


class HostReads(TorchDispatchMode):
    """Records every read of tensor values by the host while active (``with HostReads() as reads``);
    on CUDA each is a device sync. The CPU has no sync to count, so reads are seen where they
    happen, in Python or in C++ code that goes through the dispatcher:

    - ``aten::_local_scalar_dense`` (and ``aten::item``, torch's ``data_dependent_output`` tag):
      what ``.item()``, ``bool()``, ``int()``, ``float()`` and ATen's own C++ call (``narrow``
      with a tensor start, ``one_hot``, ...);
    - ops whose output size depends on the values (the ``dynamic_output_shape`` tag: ``nonzero``,
      ``masked_select``, ``unique``, indexing with a bool mask, ...) and ops returning a host
      value (``equal``, ``allclose``);
    - ``Tensor.tolist`` and ``Tensor.numpy``, which read a CPU tensor's memory without the
      dispatcher: patched while the block runs.

    A C++ kernel reading its own inputs is invisible to any of these. The ``afnet_kernels`` ops
    do so on CUDA only when asked to (``validate=True``; ``select_frames`` without
    ``num_selected``), so each of their calls is recorded with its arguments (``kernel_calls``),
    and ``device_reading_calls`` lists those that would read back on CUDA.

    Attributes:
        sites: per read, ``"file.py:function"`` of the innermost caller outside torch and this
            module, in order.
        reads: per read, what read (an op name or ``Tensor.tolist``), in order.
        kernel_calls: ``(op name, {argument: value})`` of every ``afnet_kernels`` op call.
    """

    PYTHON_READS = ("tolist", "numpy")
    VALUE_RESULTS = ("aten::equal", "aten::allclose", "aten::is_nonzero")

    def __init__(self) -> None:
        super().__init__()
        self.reads: List[str] = []
        self.sites: List[str] = []
        self.kernel_calls: List[Tuple[str, Dict[str, Any]]] = []
        self._originals: Dict[str, Any] = {}

    @property
    def count(self) -> int:
        return len(self.reads)

    @property
    def device_reading_calls(self) -> List[Tuple[str, Dict[str, Any]]]:
        """The ``afnet_kernels`` calls that read from the device on CUDA."""
        return [
            (name, args) for name, args in self.kernel_calls
            if args.get("validate") is True or (name.endswith("select_frames") and args.get("num_selected") is None)
        ]

    def assert_kernels_read_nothing(self) -> None:
        """The block ran ``afnet_kernels`` index ops (so the check says something), and none of
        them reads from the device: ``validate=False`` and ``select_frames`` given its count."""
        ran = {name for name, _ in self.kernel_calls}
        assert {"afnet_kernels::select_frames", "afnet_kernels::gather_frames"} <= ran, sorted(ran)
        assert not self.device_reading_calls, self.device_reading_calls

    def _record(self, what: str) -> None:
        here = os.path.abspath(__file__)
        torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
        caller = next(
            (f for f in reversed(traceback.extract_stack()) if f.filename != here and not f.filename.startswith(torch_dir)),
            None,
        )
        self.reads.append(what)
        self.sites.append("?" if caller is None else f"{os.path.basename(caller.filename)}:{caller.name}")

    @staticmethod
    def _reads_values(func, args, kwargs) -> bool:
        """Whether ATen op ``func`` reads its input's values to the host."""
        name = func._schema.name
        if torch.Tag.data_dependent_output in func.tags or name in HostReads.VALUE_RESULTS:
            return True
        if torch.Tag.dynamic_output_shape not in func.tags:
            return False
        if name == "aten::index":  # the output size depends on the values for bool masks only
            return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1])
        if name == "aten::repeat_interleave":
            return kwargs.get("output_size") is None
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "afnet_kernels":
            # The dispatcher drops trailing arguments left at their default: take them from the schema.
            schema = func._schema.arguments
            given = {**{a.name: v for a, v in zip(schema, args)}, **kwargs}
            defaults = {a.name: a.default_value for a in schema if a.has_default_value()}
            self.kernel_calls.append((func._schema.name, {**defaults, **given}))
        elif self._reads_values(func, args, kwargs):
            self._record(str(func))
        return func(*args, **kwargs)

    def __enter__(self) -> "HostReads":
        for name in self.PYTHON_READS:
            original = getattr(torch.Tensor, name)
            self._originals[name] = original

            def read(tensor, *args, _original=original, _name=name, **kwargs):
                self._record(f"Tensor.{_name}")
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, read)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        super().__exit__(*exc)


def run_model(model, video, execution, masks=None, backend="kernels", layout=torch.channels_last, *, cells=None):
    """One no-grad forward of ``model`` in ``execution`` with ``backend`` and ``layout`` (the engine's
    memory format; None keeps the input's), masks and spatial masks forced when given. Returns what
    ``model(..., return_masks=True)`` returns, after asserting the model took that path."""
    model.execution, model.backend, model.memory_format = execution, backend, layout
    with torch.no_grad():
        out = model(video, masks=masks, spatial_masks=cells, return_masks=True)
    assert model.last_execution == execution
    return out
