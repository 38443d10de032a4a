"""afnet_kernels ops against the pure-PyTorch reference, on CPU and (when visible) CUDA.

Every comparison runs with poisoned allocations (NaN), so an element a kernel
forgets to write fails the test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

import afnet_kernels as ak
from afnet_kernels import reference as ref
from conftest import assert_close_lowp, cpu_and_cuda, needs_cuda, poisoned_outputs

OPS = torch.ops.afnet_kernels
DEVICES = cpu_and_cuda()
FLOAT_DTYPES = [torch.float32, torch.float64]
ALL_DTYPES = FLOAT_DTYPES + [torch.float16, torch.bfloat16]
LAYOUTS = [torch.contiguous_format, torch.channels_last]
# (N, T, C, H, W): C not divisible by the shift divisors, N = 1, T = 1, H = W = 1.
SHAPES = [(2, 4, 10, 5, 6), (1, 3, 9, 4, 4), (3, 1, 8, 2, 3), (2, 3, 5, 1, 1)]
MASK_KINDS = ["none", "all", "one", "random"]
# gradcheck and opcheck call the ops thousands of times on tiny tensors: with 2 threads each call
# waits on a thread barrier, which on a loaded machine costs ~20x (5 s instead of 0.2 s a test).
# The forward and backward tests above them keep the default threads (the kernels' parallel paths).
ONE_THREAD = pytest.mark.usefixtures("one_thread")

pytestmark = pytest.mark.skipif(
    not ak.backends()["cpu"]["usable"], reason="afnet_kernels._C is not built"
)


def make_mask(kind: str, n: int, t: int, device: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        mask = torch.zeros(n, t, dtype=torch.bool)
    elif kind == "all":
        mask = torch.ones(n, t, dtype=torch.bool)
    elif kind == "one":
        mask = torch.zeros(n * t, dtype=torch.bool)
        mask[torch.randint(n * t, (1,), generator=g)] = True
        mask = mask.reshape(n, t)
    else:
        mask = torch.rand(n, t, generator=g) < 0.5
    return mask.to(device)


def randn(shape, dtype, device, layout=torch.contiguous_format, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    return x.to(device=device, dtype=dtype).contiguous(memory_format=layout)


def check_against(out: torch.Tensor, ref_fn: Callable, *args, exact: bool = False) -> None:
    """Compares ``out`` with ``ref_fn(*args)`` in out's dtype (and float64 for half)."""
    expected = ref_fn(*args)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert out.stride() == expected.stride(), "memory format differs from the reference"
    if exact:
        assert torch.equal(out, expected)
    elif out.dtype in FLOAT_DTYPES:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    else:
        exact_args = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        assert_close_lowp(out, expected, ref_fn(*exact_args))


# --- select_frames -------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
@pytest.mark.parametrize("n,t", [(2, 4), (1, 1), (1, 5), (3, 1)])
def test_select_frames(device, kind, mask_dtype, n, t):
    mask = make_mask(kind, n, t, device).to(mask_dtype)
    with poisoned_outputs():
        index, inverse = ak.select_frames(mask)
        index_k, inverse_k = ak.select_frames(mask, num_selected=int(mask.count_nonzero()))
    expected_index, expected_inverse = ref.select_frames(mask)
    for got_index, got_inverse in [(index, inverse), (index_k, inverse_k)]:
        assert got_index.dtype == torch.int64 and got_inverse.dtype == torch.int64
        assert torch.equal(got_index, expected_index)
        assert torch.equal(got_inverse, expected_inverse)


def test_select_frames_num_selected_mismatch():
    mask = torch.tensor([[1, 0, 1]])
    with pytest.raises(RuntimeError, match=r"num_selected=1 does not match the mask, which selects 2"):
        ak.select_frames(mask, num_selected=1)


# --- gather_frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shift_div", [0, 3, 8])
@pytest.mark.parametrize("shape", SHAPES)
def test_gather_frames(device, dtype, layout, shift_div, shape):
    n, t, c, h, w = shape
    x = randn((n * t, c, h, w), dtype, device, layout)
    for seed, kind in enumerate(MASK_KINDS):
        index, _ = ref.select_frames(make_mask(kind, n, t, device, seed))
        with poisoned_outputs():
            out = ak.gather_frames(x, index, num_segments=t, shift_div=shift_div)
        # A pure copy: bit-exact in every dtype.
        check_against(out, ref.gather_frames, x, index, t, shift_div, exact=True)


@pytest.mark.parametrize("device", DEVICES)
def test_gather_frames_repeated_index(device):
    x = randn((6, 8, 3, 3), torch.float64, device, seed=1).requires_grad_()
    index = torch.tensor([4, 1, 4, 4, 0], device=device)
    out = ak.gather_frames(x, index, num_segments=3, shift_div=4)
    torch.testing.assert_close(out, ref.gather_frames(x.detach(), index, 3, 4), rtol=0, atol=0)
    grad = randn(out.shape, torch.float64, device, seed=2)
    (got,) = torch.autograd.grad(out, x, grad)
    x_ref = x.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(ref.gather_frames(x_ref, index, 3, 4), x_ref, grad)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shift_div", [0, 3])
@pytest.mark.parametrize("shape", SHAPES)
def test_gather_frames_backward(device, dtype, layout, shift_div, shape):
    n, t, c, h, w = shape
    index, _ = ref.select_frames(make_mask("random", n, t, device, seed=3))
    grad = randn((index.numel(), c, h, w), dtype, device, layout, seed=4)

    def reference_backward(g):
        x = torch.zeros((n * t, c, h, w), dtype=g.dtype, device=device, requires_grad=True)
        (gx,) = torch.autograd.grad(ref.gather_frames(x, index, t, shift_div), x, g)
        return gx.contiguous(memory_format=ref.memory_format(g))

    with poisoned_outputs():
        out = OPS._gather_frames_backward(grad, index, n * t, t, shift_div)
    check_against(out, reference_backward, grad)


# --- scatter_frames --------------------------------------------------------------------------


def make_fill(kind: Optional[str], c: int, h: int, w: int, dtype, device) -> Optional[torch.Tensor]:
    if kind is None:
        return None
    shape = (c,) if kind == "C" else (c, h, w)
    return randn(shape, dtype, device, seed=7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C", "CHW"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_scatter_frames(device, dtype, layout, fill_kind, relu, shape):
    n, t, c, h, w = shape
    base = randn((n * t, c, h, w), dtype, device, layout, seed=5)
    fill = make_fill(fill_kind, c, h, w, dtype, device)
    for seed, kind in enumerate(MASK_KINDS):
        index, _ = ref.select_frames(make_mask(kind, n, t, device, seed))
        # src in the other layout on purpose: the output follows base.
        src = randn((index.numel(), c, h, w), dtype, device, seed=6 + seed)
        base_copy = base.clone()
        with poisoned_outputs():
            out = ak.scatter_frames(base, src, index, fill, relu)
        assert torch.equal(base, base_copy), "scatter_frames modified its input"
        check_against(out, ref.scatter_frames, base, src, index, fill, relu)


# --- blend_branches / pool_branches ----------------------------------------------------------

# (ample h, w) -> (focal H, W): factor 2, identity, non-integer ratios, 1x1.
SPATIAL = [((3, 4), (6, 8)), ((5, 5), (5, 5)), ((3, 2), (7, 5)), ((1, 1), (1, 1)), ((1, 1), (3, 2))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("spatial", SPATIAL)
@pytest.mark.parametrize("theta_4d", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_blend_branches(device, dtype, layout, spatial, theta_4d, relu):
    (h, w), (hh, ww) = spatial
    rows, c = 6, 9
    ample = randn((rows, c, h, w), dtype, device, layout, seed=8)
    focal = randn((rows, c, hh, ww), dtype, device, layout, seed=9)
    theta = torch.rand(rows, c, generator=torch.Generator().manual_seed(10)).to(device, dtype)
    if theta_4d:
        theta = theta[:, :, None, None]
    with poisoned_outputs():
        out = ak.blend_branches(ample, focal, theta, relu)
    check_against(out, ref.blend_branches, ample, focal, theta, relu)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("spatial", SPATIAL)
def test_pool_branches(device, dtype, layout, spatial):
    (h, w), (hh, ww) = spatial
    ample = randn((5, 11, h, w), dtype, device, layout, seed=11)
    focal = randn((5, 11, hh, ww), dtype, device, layout, seed=12)
    with poisoned_outputs():
        out = ak.pool_branches(ample, focal)
    check_against(out, ref.pool_branches, ample, focal)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("relu", [False, True])
def test_blend_branches_backward_matches_reference(device, layout, relu):
    ample = randn((4, 6, 3, 4), torch.float32, device, layout, seed=13).requires_grad_()
    focal = randn((4, 6, 6, 8), torch.float32, device, layout, seed=14).requires_grad_()
    theta = torch.rand(4, 6, generator=torch.Generator().manual_seed(15)).to(device).requires_grad_()
    grad = randn((4, 6, 6, 8), torch.float32, device, seed=16)
    got = torch.autograd.grad(ak.blend_branches(ample, focal, theta, relu), (ample, focal, theta), grad)
    expected = torch.autograd.grad(ref.blend_branches(ample, focal, theta, relu), (ample, focal, theta), grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


# --- autograd: gradcheck in float64 ----------------------------------------------------------


def _double(shape, device, layout=torch.contiguous_format, seed=0) -> torch.Tensor:
    return randn(shape, torch.float64, device, layout, seed).requires_grad_()


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shift_div", [0, 3])
def test_gradcheck_gather(device, layout, shift_div):
    x = _double((6, 7, 2, 3), device, layout)
    index = torch.tensor([5, 0, 2, 3], device=device)
    fn = lambda x: ak.gather_frames(x, index, num_segments=3, shift_div=shift_div)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C", "CHW"])
@pytest.mark.parametrize("relu", [False, True])
def test_gradcheck_scatter(device, layout, fill_kind, relu):
    base = _double((5, 4, 2, 3), device, layout, seed=1)
    src = _double((2, 4, 2, 3), device, seed=2)
    index = torch.tensor([3, 1], device=device)
    inputs = [base, src]
    if fill_kind is not None:
        inputs.append(make_fill(fill_kind, 4, 2, 3, torch.float64, device).requires_grad_())
    fn = lambda base, src, *fill: ak.scatter_frames(base, src, index, *fill, relu=relu)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(inputs))


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("spatial", [((2, 3), (4, 6)), ((2, 2), (3, 5))])
def test_gradcheck_blend(device, layout, relu, spatial):
    (h, w), (hh, ww) = spatial
    ample = _double((3, 4, h, w), device, layout, seed=3)
    focal = _double((3, 4, hh, ww), device, layout, seed=4)
    theta = torch.rand(3, 4, 1, 1, dtype=torch.float64, device=device).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, f, t: ak.blend_branches(a, f, t, relu), (ample, focal, theta))


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("spatial", [((2, 3), (4, 6)), ((2, 2), (3, 5))])
def test_gradcheck_pool(device, layout, spatial):
    (h, w), (hh, ww) = spatial
    ample = _double((3, 4, h, w), device, layout, seed=5)
    focal = _double((3, 4, hh, ww), device, layout, seed=6)
    assert torch.autograd.gradcheck(ak.pool_branches, (ample, focal))


# --- opcheck: schema, fake kernels, autograd registration, AOT dispatch ----------------------


def opcheck_samples(device):
    x = _double((6, 5, 2, 3), device, seed=7)
    x_cl = _double((6, 5, 2, 3), device, torch.channels_last, seed=8)
    index = torch.tensor([4, 0, 1], device=device)
    grad = randn((3, 5, 2, 3), torch.float64, device, seed=9)
    src = _double((3, 5, 2, 3), device, seed=10)
    fill = _double((5,), device, seed=11)
    ample = _double((6, 5, 1, 2), device, torch.channels_last, seed=12)
    theta = torch.rand(6, 5, dtype=torch.float64, device=device).requires_grad_()
    out = ref.blend_branches(ample.detach(), x.detach(), theta.detach(), True)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]], device=device)
    return [
        (OPS.select_frames.default, (mask,), {}),
        (OPS.select_frames.default, (mask,), {"num_selected": 3}),
        (OPS.gather_frames.default, (x, index), {"num_segments": 3, "shift_div": 2}),
        (OPS.gather_frames.default, (x_cl, index), {}),
        (OPS._gather_frames_backward.default, (grad, index, 6, 3, 2), {}),
        (OPS.scatter_frames.default, (x, src, index), {"fill": fill, "relu": True}),
        (OPS.scatter_frames.default, (x_cl, src, index), {}),
        (OPS.blend_branches.default, (ample, x, theta), {"relu": True}),
        (OPS.blend_branches.default, (ample, x_cl, theta[:, :, None, None]), {"relu": False}),
        (OPS._blend_branches_backward.default, (grad.new_ones(6, 5, 2, 3), out, ample.detach(), x.detach(), theta.detach(), True), {}),
        (OPS.pool_branches.default, (ample, x_cl), {}),
    ]


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", range(11))
def test_opcheck(device, sample):
    op, args, kwargs = opcheck_samples(device)[sample]
    torch.library.opcheck(op, args, kwargs)


def test_torch_compile_smoke():
    @torch.compile(backend="aot_eager", fullgraph=True)
    def block(x, mask):
        index, _ = ak.select_frames(mask, num_selected=3)
        y = ak.gather_frames(x, index, num_segments=4, shift_div=4) * 2
        return ak.scatter_frames(x, y, index, relu=True)

    x = randn((8, 8, 3, 3), torch.float32, "cpu", seed=17).requires_grad_()
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])
    out = block(x, mask)
    index, _ = ref.select_frames(mask)
    expected = ref.scatter_frames(x, ref.gather_frames(x, index, 4, 4) * 2, index, relu=True)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --- bad input -------------------------------------------------------------------------------


def _x(shape=(8, 4, 3, 3), dtype=torch.float32, device="cpu"):
    return torch.randn(shape, dtype=dtype, device=device)


IDX = torch.tensor([0, 2, 5])
BAD_INPUTS = {
    "gather_index_dtype": (lambda: ak.gather_frames(_x(), IDX.float()), r"index must be int64 \(Long\), got Float"),
    "gather_index_2d": (lambda: ak.gather_frames(_x(), IDX[None]), r"index must be 1-D \[K\], got 2-D"),
    "gather_index_range": (lambda: ak.gather_frames(_x(), torch.tensor([0, 8])), r"index\[1\]=8 is out of range: expected 0 <= index < 8"),
    "gather_index_negative": (lambda: ak.gather_frames(_x(), torch.tensor([-1])), r"index\[0\]=-1 is out of range"),
    "gather_3d": (lambda: ak.gather_frames(_x((8, 4, 3)), IDX), r"x must be 4-D \[N\*T, C, H, W\], got 3-D tensor of shape \[8, 4, 3\]"),
    "gather_segments": (lambda: ak.gather_frames(_x((10, 4, 3, 3)), IDX, 3), r"x.size\(0\)=10 is not divisible by num_segments=3"),
    "gather_shift_needs_t": (lambda: ak.gather_frames(_x(), IDX, None, 8), r"shift_div > 0 requires num_segments > 0"),
    "gather_int_x": (lambda: ak.gather_frames(torch.ones(8, 4, 3, 3, dtype=torch.int32), IDX), r"x must be a floating-point tensor .* got Int"),
    "gather_backward_rows": (lambda: OPS._gather_frames_backward(_x((2, 4, 3, 3)), IDX, 8, 4, 2), r"grad has 2 rows but index has 3 entries"),
    "scatter_rows": (lambda: ak.scatter_frames(_x(), _x((4, 4, 3, 3)), IDX), r"src has 4 rows but index has 3 entries"),
    "scatter_dtype": (lambda: ak.scatter_frames(_x(), _x((3, 4, 3, 3), torch.float64), IDX), r"src must have the same dtype as base \(Float\), got Double"),
    "scatter_c": (lambda: ak.scatter_frames(_x(), _x((3, 5, 3, 3)), IDX), r"src must have C=4 like base \(shape \[8, 4, 3, 3\]\), got 5"),
    "scatter_h": (lambda: ak.scatter_frames(_x(), _x((3, 4, 2, 3)), IDX), r"src must have H=3 like base .* got 2"),
    "scatter_w": (lambda: ak.scatter_frames(_x(), _x((3, 4, 3, 4)), IDX), r"src must have W=3 like base .* got 4"),
    "scatter_3d_src": (lambda: ak.scatter_frames(_x(), _x((3, 4, 3)), IDX), r"src must be 4-D \[K, C, H, W\], got 3-D"),
    "scatter_index_range": (lambda: ak.scatter_frames(_x(), _x((3, 4, 3, 3)), torch.tensor([0, 9, 1])), r"index\[1\]=9 is out of range: expected 0 <= index < 8"),
    "scatter_index_dtype": (lambda: ak.scatter_frames(_x(), _x((3, 4, 3, 3)), IDX.int()), r"index must be int64 \(Long\), got Int"),
    "scatter_duplicate": (lambda: ak.scatter_frames(_x(), _x((3, 4, 3, 3)), torch.tensor([1, 4, 1])), r"index must be distinct, got row 1 at index\[0\] and index\[2\]"),
    "scatter_fill_shape": (lambda: ak.scatter_frames(_x(), _x((3, 4, 3, 3)), IDX, _x((4, 3))), r"fill must be \[C\]=\[4\] or \[C, H, W\]=\[4, 3, 3\] .* got shape \[4, 3\]"),
    "scatter_fill_dtype": (lambda: ak.scatter_frames(_x(), _x((3, 4, 3, 3)), IDX, _x((4,), torch.float64)), r"fill must have the same dtype as base \(Float\), got Double"),
    "blend_theta": (lambda: ak.blend_branches(_x((8, 4, 2, 2)), _x(), _x((8, 3))), r"theta must be \[N\*T, C\]=\[8, 4\] or \[N\*T, C, 1, 1\], got shape \[8, 3\]"),
    "blend_c": (lambda: ak.blend_branches(_x((8, 3, 2, 2)), _x(), _x((8, 4))), r"ample must have C=4 like focal .* got 3"),
    "blend_rows": (lambda: ak.blend_branches(_x((6, 4, 2, 2)), _x(), _x((8, 4))), r"ample must have N\*T=8 like focal .* got 6"),
    "blend_dtype": (lambda: ak.blend_branches(_x((8, 4, 2, 2), torch.float64), _x(), _x((8, 4))), r"ample must have the same dtype as focal \(Float\), got Double"),
    "blend_3d": (lambda: ak.blend_branches(_x((8, 4, 2)), _x(), _x((8, 4))), r"ample must be 4-D \[N\*T, C, h, w\], got 3-D"),
    "pool_3d": (lambda: ak.pool_branches(_x((8, 4, 2, 2)), _x((8, 4, 3))), r"focal must be 4-D \[N\*T, C, H, W\], got 3-D"),
    "select_3d": (lambda: ak.select_frames(torch.ones(2, 3, 4)), r"mask must be 2-D \[N, T\], got 3-D"),
    "select_num_selected": (lambda: ak.select_frames(torch.ones(2, 3), num_selected=7), r"num_selected must be in \[0, N\*T=6\], got 7"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(case):
    call, message = BAD_INPUTS[case]
    with pytest.raises(RuntimeError, match=message):
        call()


@needs_cuda
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: ak.gather_frames(_x(device="cuda"), IDX), r"index must be on the same device as x \(cuda:0\), got cpu"),
        (lambda: ak.scatter_frames(_x(device="cuda"), _x((3, 4, 3, 3)), IDX.cuda()), r"src must be on the same device as base \(cuda:0\), got cpu"),
        (lambda: ak.blend_branches(_x((8, 4, 2, 2), device="cuda"), _x(device="cuda"), _x((8, 4))), r"theta must be on the same device as focal \(cuda:0\), got cpu"),
        (lambda: ak.gather_frames(_x(device="cuda"), torch.tensor([0, 8], device="cuda")), r"gather_frames: index is out of range: expected 0 <= index < 8, got values in \[0, 8\]"),
        (lambda: ak.scatter_frames(_x(device="cuda"), _x((1, 4, 3, 3), device="cuda"), torch.tensor([-2], device="cuda")), r"scatter_frames: index is out of range"),
    ],
    ids=["gather_device", "scatter_device", "blend_device", "gather_range", "scatter_range"],
)
def test_bad_input_cuda(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


@needs_cuda
def test_trusted_indices_skips_the_host_check():
    x = _x(device="cuda")
    index = torch.tensor([1, 3], device="cuda")
    with ak.trusted_indices():
        out = ak.gather_frames(x, index)
    torch.testing.assert_close(out, x[index])


# --- build and backends ----------------------------------------------------------------------


def _nvcc() -> Optional[str]:
    candidates = [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    if os.environ.get("CUDA_HOME"):
        candidates.insert(0, str(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc"))
    return next((c for c in candidates if c and Path(c).exists()), None)


def test_cuda_kernels_registered_when_nvcc_present():
    """A silently skipped CUDA build must not pass: nvcc here means CUDA kernels."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("no nvcc on this machine: a CPU-only build is expected")
    missing = [
        name
        for name in ("select_frames", "gather_frames", "_gather_frames_backward", "scatter_frames",
                     "blend_branches", "_blend_branches_backward", "pool_branches")
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"afnet_kernels::{name}", "CUDA")
    ]
    assert not missing, (
        f"nvcc is present ({nvcc}) but these ops have no CUDA kernel: {missing}. "
        f"backends()={ak.backends()}. Rebuild with FORCE_CUDA=1 pip install --no-build-isolation -e ."
    )


def test_backends_report():
    info = ak.backends()
    assert info["reference"] is True
    assert info["cpu"] == {"built": True, "usable": True, "reason": None}
    assert info["cuda"]["usable"] == (info["cuda"]["built"] and torch.cuda.is_available())
    if not info["cuda"]["usable"]:
        assert info["cuda"]["reason"], "an unusable backend must say why"


def test_fallback_to_reference_when_library_missing(monkeypatch, caplog):
    from afnet_kernels import _loader, ops

    missing = _loader._load("_no_such_library")
    assert not missing.built and "was not built" in missing.reason
    monkeypatch.setattr(ops, "CPU_LIB", missing)
    x = _x()
    out = ak.gather_frames(x, IDX, 4, 2)
    torch.testing.assert_close(out, ref.gather_frames(x, IDX, 4, 2))
    monkeypatch.setattr(_loader, "_load", lambda name: missing)
    with caplog.at_level("WARNING", logger="afnet_kernels"):
        cpu, _ = _loader.load()
    assert not cpu.loaded and "falling back to the pure-PyTorch reference" in caplog.text
