"""Triton blend_branches forward against the reference.

On CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1), so the
test runs on any machine with triton installed; on a GPU it runs compiled.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

from afnet_kernels import reference  # noqa: E402
from conftest import cpu_and_cuda, needs_cuda  # noqa: E402

_SOURCE = Path(reference.__file__).with_name("triton_blend.py")


def _load(interpret: bool) -> ModuleType:
    """A private copy of afnet_kernels.triton_blend whose kernel is defined
    interpreted or compiled, whatever other tests imported before."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        name = f"_afnet_triton_blend_{'interpreted' if interpret else 'compiled'}"
        spec = importlib.util.spec_from_file_location(name, _SOURCE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
    return module


_MODULES: dict[bool, ModuleType] = {}


def _module(device: str) -> ModuleType:
    interpret = device == "cpu"
    if interpret not in _MODULES:
        _MODULES[interpret] = _load(interpret)
    return _MODULES[interpret]


# "cpu" runs the interpreter everywhere; "cuda" carries the `cuda` marker (pytest -m cuda)
# and is skipped with a reason when no GPU is visible.
DEVICES = cpu_and_cuda()

# (rows, C, H, W, h, w): factor 2, non-integer factors, identity, 1x1, downsampling.
# Height and width scales differ, so swapping the axes fails.
SHAPES = [
    (4, 3, 8, 6, 4, 3),
    (3, 5, 7, 9, 2, 6),
    (2, 4, 5, 5, 5, 5),
    (2, 2, 1, 1, 1, 1),
    (1, 6, 3, 4, 5, 9),
]


def _inputs(shape, dtype, device, channels_last, theta_4d, seed):
    rows, c, height, width, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    ample = torch.randn(rows, c, h, w, generator=gen, dtype=torch.float64)
    focal = torch.randn(rows, c, height, width, generator=gen, dtype=torch.float64)
    theta = torch.rand(rows, c, generator=gen, dtype=torch.float64)
    if theta_4d:
        theta = theta.reshape(rows, c, 1, 1)
    ample, focal, theta = (t.to(device=device, dtype=dtype) for t in (ample, focal, theta))
    if channels_last:
        ample = ample.contiguous(memory_format=torch.channels_last)
        focal = focal.contiguous(memory_format=torch.channels_last)
    return ample, focal, theta


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Outputs the op allocates start as NaN, so unwritten elements fail."""
    real = torch.empty_like

    def empty_like_nan(*args, **kwargs):
        return real(*args, **kwargs).fill_(float("nan"))

    monkeypatch.setattr(torch, "empty_like", empty_like_nan)


@pytest.mark.usefixtures("poisoned_outputs")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [True, False])
def test_matches_reference(device, shape, channels_last, relu):
    module = _module(device)
    for dtype, theta_4d in ((torch.float32, False), (torch.float64, True)):
        ample, focal, theta = _inputs(shape, dtype, device, channels_last, theta_4d, seed=len(shape))
        got = module.blend_branches_triton(ample, focal, theta, relu=relu)
        want = reference.blend_branches(ample, focal, theta, relu=relu)
        tol = 1e-6 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
        if channels_last and shape[1] > 1 and shape[2] * shape[3] > 1:
            assert got.is_contiguous(memory_format=torch.channels_last)
        else:
            assert got.is_contiguous()


@pytest.mark.usefixtures("poisoned_outputs")
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_half_precision_on_gpu(dtype, channels_last):
    module = _module("cuda")
    ample, focal, theta = _inputs((4, 16, 14, 14, 7, 7), dtype, "cuda", channels_last, False, 0)
    got = module.blend_branches_triton(ample, focal, theta).double()
    exact = reference.blend_branches(ample.double(), focal.double(), theta.double())
    own_error = (reference.blend_branches(ample, focal, theta).double() - exact).abs().max()
    assert (got - exact).abs().max() <= 2 * own_error + 1e-6


def test_rejects_mismatched_theta():
    module = _module("cpu")
    ample, focal, theta = _inputs((2, 3, 4, 4, 2, 2), torch.float32, "cpu", False, False, 0)
    with pytest.raises(ValueError, match="theta must be"):
        module.blend_branches_triton(ample, focal, theta[:, :2])
