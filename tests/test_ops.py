"""afnet_kernels frame and fusion ops against the pure-PyTorch reference, on CPU and (when
visible) CUDA.

Every comparison runs with poisoned allocations (NaN), so an element a kernel forgets to write
fails the test. Shapes include channel counts that reach the CUDA kernels' 16-byte vector paths
(C = 32, 64, 256 with the TSM shift), and inputs at a misaligned storage offset. A library that
fails to load fails here (and in test_build.py); it never turns into skips.
"""

from __future__ import annotations

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
# (N, T, C, H, W): C not divisible by the shift divisors, N = 1, T = 1, H = W = 1; then C = 32,
# 64, 256, whose rows and TSM classes (shift_div 8) split into whole 16-byte packs.
SHAPES = [(2, 4, 10, 5, 6), (1, 3, 9, 4, 4), (3, 1, 8, 2, 3), (2, 3, 5, 1, 1)]
VECTOR_SHAPES = [(2, 4, 32, 3, 3), (1, 4, 64, 2, 2), (2, 2, 256, 1, 2)]
MASK_KINDS = ["none", "all", "one", "random"]
# gradcheck and opcheck call the ops thousands of times on tiny tensors: with 2 threads each call
# waits on a thread barrier, which on a loaded machine costs ~20x (5 s instead of 0.2 s a test).
# The forward and backward tests above them keep the default threads (the kernels' parallel paths).
ONE_THREAD = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def compiled_library():
    """The ops must run the compiled kernels: with a library that failed to load they would
    call the reference, and every comparison below would hold trivially."""
    assert ak.backends()["cpu"]["usable"], ak.backends()["cpu"]["reason"]


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


def misaligned(t: torch.Tensor) -> torch.Tensor:
    """A copy of the dense tensor ``t`` (same strides) whose storage starts one element into
    its buffer, so that no 16-byte vector access is aligned."""
    buffer = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    out = buffer[1:].as_strided(t.shape, t.stride())
    assert out.storage_offset() == 1
    return out.copy_(t)


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal strides along every dimension longer than 1 (the others are never stepped)."""
    return all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()) if n > 1)


def check_against(out: torch.Tensor, ref_fn: Callable, *args, exact: bool = False) -> None:
    """Compares ``out`` with ``ref_fn(*args)`` in out's dtype (and float64 for half)."""
    expected = ref_fn(*args)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert same_layout(out, expected), f"memory format differs: {out.stride()} vs {expected.stride()}"
    if exact:
        assert torch.equal(out, expected)
    elif out.dtype in FLOAT_DTYPES:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    else:
        exact_args = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        assert_close_lowp(out, expected, ref_fn(*exact_args))


def raised(call: Callable[[], object]) -> str:
    """The message of the RuntimeError ``call`` raises."""
    with pytest.raises(RuntimeError) as info:
        call()
    return str(info.value)


# --- select_frames -------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
@pytest.mark.parametrize("n,t", [(2, 4), (1, 1), (1, 5), (3, 1)])
def test_select_frames(device, kind, mask_dtype, n, t):
    mask = make_mask(kind, n, t, device).to(mask_dtype)
    count = int(mask.count_nonzero())
    rows = sorted(torch.nonzero(mask.reshape(-1).cpu()).reshape(-1).tolist())
    with poisoned_outputs():
        results = [ak.select_frames(mask), ak.select_frames(mask, num_selected=count)]
    expected_inverse = torch.full((n * t,), -1, dtype=torch.int64)
    expected_inverse[rows] = torch.arange(count)
    for index, inverse in results + [ref.select_frames(mask)]:
        assert index.dtype == torch.int64 and inverse.dtype == torch.int64
        assert index.tolist() == rows
        assert torch.equal(inverse.cpu(), expected_inverse)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("validate", [True, False])
def test_select_frames_pads_up_to_num_selected(device, validate):
    """Padding-bucket mode: K selected rows ascending, then -1 up to num_selected."""
    mask = misaligned(torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.float16, device=device))
    rows = [0, 2, 6, 7]
    for num_selected in range(4, 12):  # 12 > N*T: a bucket may exceed the frame count
        with poisoned_outputs():
            index, inverse = ak.select_frames(mask, num_selected, validate=validate)
        expected = rows + [-1] * (num_selected - 4)
        assert index.tolist() == expected
        assert inverse.tolist() == [0, -1, 1, -1, -1, -1, 2, 3]
        ref_index, ref_inverse = ref.select_frames(mask, num_selected, validate=validate)
        assert ref_index.tolist() == expected and torch.equal(ref_inverse, inverse)


@pytest.mark.parametrize("device", DEVICES)
def test_select_frames_rejects_too_small_num_selected(device):
    mask = torch.tensor([[1, 0, 1]], device=device)
    message = raised(lambda: ak.select_frames(mask, num_selected=1))
    assert message == (
        "select_frames: num_selected=1 is smaller than the number of frames the mask selects "
        "(2 of 3); pass None, or a value >= 2 (entries past 2 are -1 padding)"
    )
    assert raised(lambda: ref.select_frames(mask, num_selected=1)) == message
    # The CPU checks whatever validate says (it counts on the host anyway).
    if device == "cpu":
        assert raised(lambda: ak.select_frames(mask, num_selected=1, validate=False)) == message


# --- gather_frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shift_div", [0, 3, 8])
@pytest.mark.parametrize("shape", SHAPES + VECTOR_SHAPES)
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
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [SHAPES[0]] + VECTOR_SHAPES)
def test_gather_frames_misaligned_padded_repeated(device, dtype, layout, shape):
    """A misaligned input, -1 padding (zero rows) and repeated rows, with the shift."""
    n, t, c, h, w = shape
    x = misaligned(randn((n * t, c, h, w), dtype, device, layout, seed=1))
    index = torch.tensor([n * t - 1, -1, 0, n * t - 1, -1, 1 % (n * t)], device=device)
    with poisoned_outputs():
        out = ak.gather_frames(x, index, num_segments=t, shift_div=8, validate=False)
    check_against(out, ref.gather_frames, x, index, t, 8, exact=True)
    assert not out[1].any() and not out[4].any(), "padding entries must give zero rows"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gather_frames_unpadded(device, layout):
    """padded=False: the same rows (bit-exact) with no zeroing pass in the reference, and an
    index that does hold -1 is refused, in the same words, by the kernels and the reference."""
    x = misaligned(randn((6, 8, 5, 4), torch.float32, device, layout, seed=3))
    index = torch.tensor([5, 0, 3, 3], device=device)
    expected = x.detach().cpu()[[5, 0, 3, 3]]
    for gather in (ak.gather_frames, ref.gather_frames):
        out = gather(x, index, 3, 4, padded=False)
        assert torch.equal(out, gather(x, index, 3, 4)) and out.device.type == device
        assert torch.equal(gather(x, index, padded=False).cpu(), expected)
    padded = torch.tensor([5, -1, 0], device=device)
    message = raised(lambda: ref.gather_frames(x, padded, padded=False))
    assert message == ("gather_frames: index[1]=-1 is padding, but padded=False says the index has none; "
                       "pass padded=True (the default) for an index with -1 entries")
    assert raised(lambda: ak.gather_frames(x, padded, padded=False)) == message
    # The reference's rows are one index_select: no where() over the gathered rows.
    with torch.inference_mode():
        graph = torch.export.export(UnpaddedGather(), (x.detach().cpu().contiguous(), index.cpu())).graph
    assert not [n for n in graph.nodes if "where" in str(n.target)]


class UnpaddedGather(torch.nn.Module):
    def forward(self, x, index):
        return ref.gather_frames(x, index, validate=False, padded=False)


@pytest.mark.parametrize("device", DEVICES)
def test_gather_frames_repeated_index_backward(device):
    x = randn((6, 8, 3, 3), torch.float64, device, seed=1).requires_grad_()
    index = torch.tensor([4, 1, 4, -1, 4, 0], device=device)
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
@pytest.mark.parametrize("shift_div", [0, 3, 8])
@pytest.mark.parametrize("shape", SHAPES + VECTOR_SHAPES)
def test_gather_frames_backward(device, dtype, layout, shift_div, shape):
    n, t, c, h, w = shape
    index, _ = ref.select_frames(make_mask("random", n, t, device, seed=3), n * t)  # with padding
    grad = randn((index.numel(), c, h, w), dtype, device, layout, seed=4)

    def reference_backward(g):
        x = torch.zeros((n * t, c, h, w), dtype=g.dtype, device=device, requires_grad=True)
        (gx,) = torch.autograd.grad(ref.gather_frames(x, index, t, shift_div), x, g)
        return gx.contiguous(memory_format=ref.memory_format(g))

    for g in (grad, misaligned(grad)):
        with poisoned_outputs():
            out = OPS._gather_frames_backward(g, index, n * t, t, shift_div)
        check_against(out, reference_backward, g)


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
@pytest.mark.parametrize("shape", SHAPES + VECTOR_SHAPES)
def test_scatter_frames(device, dtype, layout, fill_kind, relu, shape):
    n, t, c, h, w = shape
    base = randn((n * t, c, h, w), dtype, device, layout, seed=5)
    fill = make_fill(fill_kind, c, h, w, dtype, device)
    for seed, kind in enumerate(MASK_KINDS):
        index, _ = ref.select_frames(make_mask(kind, n, t, device, seed))
        src = randn((index.numel(), c, h, w), dtype, device, layout, seed=6 + seed)
        base_copy = base.clone()
        with poisoned_outputs():
            out = ak.scatter_frames(base, src, index, fill, relu)
        assert torch.equal(base, base_copy), "scatter_frames modified its input"
        check_against(out, ref.scatter_frames, base, src, index, fill, relu)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C", "CHW"])
def test_scatter_frames_odd_inputs(device, dtype, layout, fill_kind):
    """Misaligned base and src, src in the other layout, an expanded fill."""
    n, t, c, h, w = VECTOR_SHAPES[0]
    base = misaligned(randn((n * t, c, h, w), dtype, device, layout, seed=5))
    other = torch.channels_last if layout == torch.contiguous_format else torch.contiguous_format
    index = torch.tensor([5, 0, 2], device=device)
    src = misaligned(randn((3, c, h, w), dtype, device, other, seed=6))
    fill = make_fill(fill_kind, c, h, w, dtype, device)
    if fill is not None:
        fill = fill[:1].expand(fill.shape) if fill_kind == "C" else fill[:, :1].expand(fill.shape)
    with poisoned_outputs():
        out = ak.scatter_frames(base, src, index, fill, True)
    check_against(out, ref.scatter_frames, base, src, index, fill, True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C"])
def test_padded_scatter_equals_exact_for_every_k(device, layout, fill_kind):
    """The padding-bucket scatter (index padded with -1 up to N*T, src padded with NaN rows)
    equals the exact scatter for every K from 0 to N*T; the backward ignores the padding."""
    n, t, c, h, w = 2, 3, 32, 2, 2
    rows = n * t
    base = randn((rows, c, h, w), torch.float64, device, layout, seed=20)
    fill = make_fill(fill_kind, c, h, w, torch.float64, device)
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(21))
    for k in range(rows + 1):
        mask = torch.zeros(rows, dtype=torch.bool)
        mask[order[:k]] = True
        mask = mask.reshape(n, t).to(device)
        exact, _ = ak.select_frames(mask)
        padded, _ = ak.select_frames(mask, num_selected=rows)
        src = randn((k, c, h, w), torch.float64, device, layout, seed=k).requires_grad_()
        garbage = torch.full((rows - k, c, h, w), float("nan"), dtype=torch.float64, device=device)
        src_padded = torch.cat([src, garbage]).contiguous(memory_format=layout)
        with poisoned_outputs():
            want = ak.scatter_frames(base, src, exact, fill, relu=True)
            got = ak.scatter_frames(base, src_padded, padded, fill, relu=True)
        assert torch.equal(got, want), f"K={k}"
        grad = randn((rows, c, h, w), torch.float64, device, seed=30 + k)
        (grad_src,) = torch.autograd.grad(want, src, grad)
        src_padded = src_padded.detach().requires_grad_()
        (grad_padded,) = torch.autograd.grad(
            ak.scatter_frames(base, src_padded, padded, fill, relu=True), src_padded, grad
        )
        assert torch.equal(grad_padded[:k], grad_src) and not grad_padded[k:].any(), f"K={k}"


# --- scatter_frames_ (in place) ------------------------------------------------------------------

# (N, T, C, H, W) drawn once with a fixed seed, beside the fixed SHAPES and VECTOR_SHAPES.
_SHAPE_DRAW = torch.Generator().manual_seed(2024)
RANDOM_SHAPES = [
    tuple(int(torch.randint(low, high + 1, (1,), generator=_SHAPE_DRAW))
          for low, high in ((1, 3), (1, 5), (1, 40), (1, 7), (1, 7)))
    for _ in range(3)
]


def identical(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal values, bit for bit (NaN matches NaN; -0.0 matches 0.0), whatever the strides."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def scatter_in_place(target, src, index, fill=None, relu=False, *, validate=True) -> None:
    """Runs ``ak.scatter_frames_`` on ``target`` (src and fill share no memory with it) and checks
    what must hold whatever the values: it returns ``target`` itself, written in its own storage
    (same data pointer, offset and strides), equal bit for bit to the out-of-place op on the same
    device; ``src``, ``index`` and ``fill`` are unchanged; and ``reference.scatter_frames_`` writes
    the reference's result into its own base."""
    before = target.clone()
    inputs = [t for t in (src, index, fill) if t is not None]
    copies = [t.clone() for t in inputs]
    expected = ak.scatter_frames(before, src, index, fill, relu, validate=validate)
    storage = (target.data_ptr(), target.storage_offset(), target.stride())
    with poisoned_outputs():
        out = ak.scatter_frames_(target, src, index, fill, relu, validate=validate)
    assert out is target, "scatter_frames_ must return base itself"
    assert (target.data_ptr(), target.storage_offset(), target.stride()) == storage
    identical(target, expected)
    for tensor, copy in zip(inputs, copies):
        identical(tensor, copy)
    ref_base = before.clone()
    assert ref.scatter_frames_(ref_base, src, index, fill, relu, validate=validate) is ref_base
    identical(ref_base, ref.scatter_frames(before, src, index, fill, relu))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C", "CHW"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", SHAPES + VECTOR_SHAPES + RANDOM_SHAPES)
def test_scatter_frames_inplace(device, dtype, layout, fill_kind, relu, shape):
    """scatter_frames_ = scatter_frames written into base, for no, all, one and some selected
    frames, with exact and -1-padded indices (the padded rows of src are NaN: ignored)."""
    n, t, c, h, w = shape
    base = randn((n * t, c, h, w), dtype, device, layout, seed=5)
    fill = make_fill(fill_kind, c, h, w, dtype, device)
    for seed, kind in enumerate(MASK_KINDS):
        mask = make_mask(kind, n, t, device, seed)
        count = int(mask.count_nonzero())
        for padding in (0, 2):
            index, _ = ref.select_frames(mask, count + padding)
            src = randn((count + padding, c, h, w), dtype, device, layout, seed=6 + seed)
            src[count:] = float("nan")
            target = base.clone()
            scatter_in_place(target, src, index, fill, relu, validate=padding == 0)
            check_against(target, ref.scatter_frames, base, src, index, fill, relu)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C", "CHW"])
@pytest.mark.parametrize("shape", VECTOR_SHAPES)
def test_scatter_frames_inplace_odd_inputs(device, dtype, layout, fill_kind, shape):
    """A base at a misaligned storage offset (no 16-byte access is aligned), src misaligned and
    in the other layout, an expanded fill."""
    n, t, c, h, w = shape
    base = randn((n * t, c, h, w), dtype, device, layout, seed=5)
    other = torch.channels_last if layout == torch.contiguous_format else torch.contiguous_format
    index = torch.tensor([n * t - 1, -1, 0], device=device)
    src = misaligned(randn((3, c, h, w), dtype, device, other, seed=6))
    fill = make_fill(fill_kind, c, h, w, dtype, device)
    if fill is not None:
        fill = fill[:1].expand(fill.shape) if fill_kind == "C" else fill[:, :1].expand(fill.shape)
    for relu in (False, True):
        target = misaligned(base)
        assert target.storage_offset() == 1
        scatter_in_place(target, src, index, fill, relu)
        check_against(target, ref.scatter_frames, base, src, index, fill, relu)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C", "CHW"])
@pytest.mark.parametrize("relu", [False, True])
def test_scatter_frames_inplace_nonfinite(device, dtype, layout, fill_kind, relu):
    """NaN and ±Inf in base, src and fill end up where the out-of-place op and the reference put
    them: ReLU keeps NaN, Inf + -Inf is NaN, in the named rows and in the filled ones."""
    n, t, c, h, w = VECTOR_SHAPES[0]
    g = torch.Generator().manual_seed(90)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=torch.float64)

    def with_specials(shape, seed):
        values = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        flat = values.view(-1)
        spots = torch.randperm(flat.numel(), generator=g)[: max(3, flat.numel() // 8)]
        flat[spots] = specials[torch.randint(3, (spots.numel(),), generator=g)]
        return values.to(device=device, dtype=dtype)

    base = with_specials((n * t, c, h, w), 91).contiguous(memory_format=layout)
    src = with_specials((3, c, h, w), 92).contiguous(memory_format=layout)
    fill = None if fill_kind is None else with_specials((c,) if fill_kind == "C" else (c, h, w), 93)
    index = torch.tensor([5, -1, 2], device=device)
    target = base.clone()
    scatter_in_place(target, src, index, fill, relu)
    expected = ref.scatter_frames(base, src, index, fill, relu)
    assert target.isnan().any() and target.isinf().any()
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype in FLOAT_DTYPES else {}
    torch.testing.assert_close(target, expected, equal_nan=True, **tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("relu", [False, True])
def test_scatter_frames_inplace_non_dense_base(device, layout, relu):
    """A base with gaps (a channel slice, a crop) or dense in neither layout (a permutation) is
    computed densely and copied back: the result lands in base, and the memory between its
    elements is untouched."""
    c = 32
    permuted = randn((4, 6, c, 5), torch.float32, device, seed=80).permute(1, 2, 0, 3)
    views = {
        "channel slice": (randn((6, 2 * c, 4, 5), torch.float32, device, layout, seed=81), lambda b: b[:, ::2]),
        "crop": (randn((6, c, 6, 7), torch.float32, device, layout, seed=82), lambda b: b[:, :, 1:5, 2:7]),
        "permuted": (permuted, lambda b: b),
    }
    index = torch.tensor([4, -1, 1], device=device)
    for name, (buffer, view) in views.items():
        base = view(buffer)
        assert base.shape == (6, c, 4, 5), name
        src = randn((3, c, 4, 5), torch.float32, device, layout, seed=83)
        fill = randn((c,), torch.float32, device, seed=84)
        expected_buffer = buffer.clone()
        view(expected_buffer).copy_(ref.scatter_frames(base, src, index, fill, relu))
        scatter_in_place(base, src, index, fill, relu)
        identical(buffer, expected_buffer)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scatter_frames_inplace_inputs_sharing_base_memory(device, layout):
    """src or fill that are views of base give the result computed from base's values before
    the call (the op computes aside and copies back), as the reference does."""
    base = randn((8, 32, 3, 3), torch.float32, device, layout, seed=85)
    index = torch.tensor([1, 6, -1, 3], device=device)
    other = randn((4, 32, 3, 3), torch.float32, device, layout, seed=86)
    cases = {
        "src = rows 2..5 of base": lambda b: (b[2:6], None),
        "fill = row 0 of base": lambda b: (other, b[0]),
        "fill = channels of pixel (0, 0) of row 7": lambda b: (other, b[7, :, 0, 0]),
    }
    for name, make in cases.items():
        for module in (ak, ref):
            target = base.clone()
            src, fill = make(target)
            expected = ref.scatter_frames(base, src.clone(), index, None if fill is None else fill.clone(), True)
            assert module.scatter_frames_(target, src, index, fill, True) is target, name
            identical(target, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_scatter_frames_inplace_empty(device):
    """No rows, or rows of no elements: base is returned as it is (the index still checked)."""
    for shape, index in (((0, 4, 3, 3), [-1]), ((4, 0, 3, 3), [2, -1]), ((4, 3, 0, 2), [0])):
        base = torch.empty(shape, device=device)
        src = torch.empty((len(index), *shape[1:]), device=device)
        idx = torch.tensor(index, device=device)
        assert ak.scatter_frames_(base, src, idx, None, True) is base
        assert ref.scatter_frames_(base, src, idx, None, True) is base
    message = raised(lambda: ak.scatter_frames_(torch.empty((0, 4, 3, 3), device=device),
                                                torch.empty((1, 4, 3, 3), device=device), _i([0], device)))
    assert message.startswith("scatter_frames_: index[0]=0 is out of range")


@pytest.mark.parametrize("device", DEVICES)
def test_scatter_frames_inplace_refuses_expanded_base(device):
    """A base whose elements share memory cannot hold the result: the same message from the
    kernels and the reference, and nothing written."""
    row = randn((1, 4, 3, 3), torch.float32, device, seed=87)
    base = row.expand(8, 4, 3, 3)
    src = randn((3, 4, 3, 3), torch.float32, device, seed=88)
    message = raised(lambda: ak.scatter_frames_(base, src, IDX.to(device)))
    assert message == (
        "scatter_frames_: base has elements that share memory (an expanded or overlapping view of "
        "shape [8, 4, 3, 3] and strides [0, 9, 3, 1]), so it cannot hold the result; pass "
        "base.clone(), or use the out-of-place scatter_frames"
    )
    assert raised(lambda: ref.scatter_frames_(base, src, IDX.to(device))) == message
    assert torch.equal(row, randn((1, 4, 3, 3), torch.float32, device, seed=87))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index", [[0, 9, 1], [-3, 1, 2], [1, -1, 1]], ids=["range", "negative", "duplicate"])
def test_scatter_frames_inplace_bad_index_leaves_base_unchanged(device, index):
    """Index values are checked before base is written (with validate=True on every device; the
    CPU checks whatever validate says)."""
    base = _x(device=device)
    src = _x((3, 4, 3, 3), device=device)
    before = base.clone()
    validates = (True, False) if device == "cpu" else (True,)
    messages = set()
    for module in (ak, ref):
        for validate in validates if module is ak else (True,):
            messages.add(raised(lambda: module.scatter_frames_(base, src, _i(index, device), validate=validate)))
            assert torch.equal(base, before)
    assert len(messages) == 1 and messages.pop().startswith("scatter_frames_: index")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["base", "src", "fill"])
def test_scatter_frames_inplace_refuses_inputs_requiring_grad(device, name):
    """No autograd: with grad mode on, an input that requires grad raises (the wrapper and the
    op itself), naming it and the differentiable scatter_frames, before base is written; under
    no_grad the op runs."""
    tensors = {"base": _x(device=device), "src": _x((3, 4, 3, 3), device=device), "fill": _x((4,), device=device)}
    leaf = tensors[name].requires_grad_()
    if name == "base":
        tensors["base"] = leaf * 1  # a leaf would be refused by autograd as well; this one would not
    base, src, fill = tensors["base"], tensors["src"], tensors["fill"]
    index = IDX.to(device)
    before = base.detach().clone()
    message = (
        f"scatter_frames_: {name} requires grad, but scatter_frames_ is an in-place inference op "
        "without autograd; use the out-of-place scatter_frames (differentiable), or call "
        "scatter_frames_ under torch.no_grad() or torch.inference_mode()"
    )
    assert raised(lambda: ak.scatter_frames_(base, src, index, fill)) == message
    assert raised(lambda: OPS.scatter_frames_(base, src, index, fill)) == message
    assert torch.equal(base.detach(), before)
    expected = ref.scatter_frames(before, src.detach(), index, fill.detach())
    with torch.no_grad():
        assert ak.scatter_frames_(base, src, index, fill) is base
    torch.testing.assert_close(base.detach(), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_scatter_frames_inplace_bumps_the_version_counter(device):
    """Autograd notices when scatter_frames_ overwrites a tensor it saved for a backward."""
    weight = _x(device=device).requires_grad_()
    base = _x(device=device)
    product = weight * base  # saves base
    version = base._version
    with torch.no_grad():
        ak.scatter_frames_(base, _x((3, 4, 3, 3), device=device), IDX.to(device))
    assert base._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        product.sum().backward()
    version = base._version
    with torch.inference_mode():
        ak.scatter_frames_(base, _x((3, 4, 3, 3), device=device), IDX.to(device))
    assert base._version > version


# --- odd strides -------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_non_dense_inputs_give_the_reference_result(device):
    """Slices, expanded tensors and a non-contiguous index are read correctly (made dense
    first), the same on every device."""
    wide = randn((6, 16, 4, 6), torch.float32, device, seed=40)
    x = wide[:, ::2, :, 1:5]  # non-dense in both layouts
    expanded = randn((1, 8, 4, 4), torch.float32, device, seed=41).expand(6, 8, 4, 4)
    index = torch.tensor([5, 9, 0, 7, 3, 1], device=device)[::2]  # [5, 0, 3], strided
    for source in (x, expanded):
        check_against(ak.gather_frames(source, index, 3, 4), ref.gather_frames, source, index, 3, 4, exact=True)
        src = randn((3, 8, 4, 4), torch.float32, device, seed=42)
        src_view = torch.cat([src, src], 3)[:, :, :, ::2]
        check_against(ak.scatter_frames(source, src_view, index, None, True), ref.scatter_frames,
                      source, src_view, index, None, True)
    ample = randn((6, 8, 2, 2), torch.float32, device, seed=43).expand(6, 8, 2, 2)
    theta = randn((6, 16), torch.float32, device, seed=44)[:, ::2]
    check_against(ak.blend_branches(ample, expanded, theta), ref.blend_branches, ample, expanded, theta)
    check_against(ak.pool_branches(ample, x), ref.pool_branches, ample, x)


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
@pytest.mark.parametrize("channels", [32, 64, 256])
@pytest.mark.parametrize("aligned", [True, False])
def test_fusion_vector_paths(device, dtype, layout, channels, aligned):
    """Blend, pool and the blend backward at channel counts that fill 16-byte packs, aligned
    and misaligned."""
    place = (lambda t: t) if aligned else misaligned
    ample = place(randn((4, channels, 2, 3), dtype, device, layout, seed=50))
    focal = place(randn((4, channels, 4, 6), dtype, device, layout, seed=51))
    theta = torch.rand(4, channels, generator=torch.Generator().manual_seed(52)).to(device, dtype)
    with poisoned_outputs():
        blended = ak.blend_branches(ample, focal, theta, True)
        pooled = ak.pool_branches(ample, focal)
        grads = OPS._blend_branches_backward(place(randn(focal.shape, dtype, device, layout, seed=53)),
                                             blended, ample, focal, theta, True)
    check_against(blended, ref.blend_branches, ample, focal, theta, True)
    check_against(pooled, ref.pool_branches, ample, focal)
    if dtype in FLOAT_DTYPES:
        a, f, t = (v.detach().clone().requires_grad_() for v in (ample, focal, theta))
        expected = torch.autograd.grad(ref.blend_branches(a, f, t, True), (a, f, t),
                                       randn(focal.shape, dtype, device, layout, seed=53))
        for got, want in zip(grads, expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


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
@pytest.mark.parametrize("spatial", SPATIAL + [((5, 9), (3, 4))])
def test_blend_branches_backward_matches_reference(device, layout, relu, spatial):
    (h, w), (hh, ww) = spatial
    ample = randn((4, 6, h, w), torch.float32, device, layout, seed=13).requires_grad_()
    focal = randn((4, 6, hh, ww), torch.float32, device, layout, seed=14).requires_grad_()
    theta = torch.rand(4, 6, generator=torch.Generator().manual_seed(15)).to(device).requires_grad_()
    grad = randn((4, 6, hh, ww), torch.float32, device, seed=16)
    with poisoned_outputs():
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
    index = torch.tensor([5, 0, -1, 2, 3, 0], device=device)
    validate = layout == torch.contiguous_format  # both values, without doubling the cases
    fn = lambda x: ak.gather_frames(x, index, num_segments=3, shift_div=shift_div, validate=validate)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C", "CHW"])
@pytest.mark.parametrize("relu", [False, True])
def test_gradcheck_scatter(device, layout, fill_kind, relu):
    validate = not relu  # both values, without doubling the cases
    base = _double((5, 4, 2, 3), device, layout, seed=1)
    src = _double((3, 4, 2, 3), device, seed=2)
    index = torch.tensor([3, -1, 1], device=device)
    inputs = [base, src]
    if fill_kind is not None:
        inputs.append(make_fill(fill_kind, 4, 2, 3, torch.float64, device).requires_grad_())
    fn = lambda base, src, *fill: ak.scatter_frames(base, src, index, *fill, relu=relu, validate=validate)  # noqa: E731
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
    index = torch.tensor([4, -1, 0, 1], device=device)
    grad = randn((4, 5, 2, 3), torch.float64, device, seed=9)
    src = _double((4, 5, 2, 3), device, seed=10)
    fill = _double((5,), device, seed=11)
    ample = _double((6, 5, 1, 2), device, torch.channels_last, seed=12)
    theta = torch.rand(6, 5, dtype=torch.float64, device=device).requires_grad_()
    out = ref.blend_branches(ample.detach(), x.detach(), theta.detach(), True)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]], device=device)
    return [
        (OPS.select_frames.default, (mask,), {}),
        (OPS.select_frames.default, (mask,), {"num_selected": 5, "validate": False}),
        (OPS.gather_frames.default, (x, index), {"num_segments": 3, "shift_div": 2}),
        (OPS.gather_frames.default, (x_cl, index), {"validate": False}),
        (OPS._gather_frames_backward.default, (grad, index, 6, 3, 2), {}),
        (OPS._gather_frames_backward.default, (grad, index, 6, 3, 2), {"validate": False}),
        (OPS.scatter_frames.default, (x, src, index), {"fill": fill, "relu": True}),
        (OPS.scatter_frames.default, (x_cl, src, index), {"validate": False}),
        (OPS.blend_branches.default, (ample, x, theta), {"relu": True}),
        (OPS.blend_branches.default, (ample, x_cl, theta[:, :, None, None]), {"relu": False}),
        (OPS._blend_branches_backward.default, (grad.new_ones(6, 5, 2, 3), out, ample.detach(), x.detach(), theta.detach(), True), {}),
        (OPS.pool_branches.default, (ample, x_cl), {}),
    ]


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", range(12))
def test_opcheck(device, sample):
    op, args, kwargs = opcheck_samples(device)[sample]
    torch.library.opcheck(op, args, kwargs)


def opcheck_inplace_samples(device):
    base = randn((6, 5, 2, 3), torch.float64, device, seed=94)
    base_cl = randn((6, 5, 2, 3), torch.float64, device, torch.channels_last, seed=95)
    wide = randn((6, 10, 2, 3), torch.float64, device, seed=96)
    index = torch.tensor([4, -1, 0, 1], device=device)
    src = randn((4, 5, 2, 3), torch.float64, device, seed=97)
    fill = randn((5,), torch.float64, device, seed=98)
    fill_chw = randn((5, 2, 3), torch.float64, device, seed=99)
    return [
        ((base, src, index), {"fill": fill, "relu": True}),
        ((base_cl, src, index), {"validate": False}),
        ((base, src.contiguous(memory_format=torch.channels_last), index), {"fill": fill_chw}),
        ((wide[:, ::2], src, index), {"fill": fill, "relu": True}),  # not dense: computed aside, copied back
        ((base, src[:0], index[:0]), {}),  # nothing named, no fill, no ReLU: base is left as it is
    ]


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", range(5))
def test_opcheck_inplace(device, sample):
    """scatter_frames_ mutates base and returns it (Tensor(a!), tag inplace), as torch asks of an
    in-place custom op: opcheck runs each check on copies of the samples and verifies that only
    base is written and that the return is base (schema), the fake kernel (which returns base) and
    AOT dispatch, where the mutation is functionalized. The samples require no grad: the op has no
    autograd and refuses such inputs (test_scatter_frames_inplace_refuses_inputs_requiring_grad)."""
    args, kwargs = opcheck_inplace_samples(device)[sample]
    torch.library.opcheck(OPS.scatter_frames_.default, args, kwargs)


@pytest.mark.parametrize("backend,validate", [("aot_eager", True), ("aot_eager", False), ("inductor", False)])
def test_torch_compile_fullgraph_inplace(backend, validate):
    """torch.compile(fullgraph=True) functionalizes scatter_frames_ (auto_functionalized_v2) and
    gives eager's results: an intermediate written in place, and a graph input whose mutation
    the compiled function applies as eager does."""

    def block(x, shortcut, mask, fill):
        index, _ = ak.select_frames(mask, num_selected=4, validate=validate)  # one padding entry
        y = ak.gather_frames(x, index, num_segments=4, shift_div=4, validate=validate) * 2
        out = ak.scatter_frames_(x * 3, y, index, fill, relu=True, validate=validate)
        ak.scatter_frames_(shortcut, y, index, validate=validate)
        return out + 1

    x = randn((8, 8, 3, 3), torch.float32, "cpu", seed=100)
    shortcut = randn((8, 8, 3, 3), torch.float32, "cpu", seed=101)
    fill = randn((8,), torch.float32, "cpu", seed=102)
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])
    eager_shortcut, compiled_shortcut = shortcut.clone(), shortcut.clone()
    expected = block(x, eager_shortcut, mask, fill)
    got = torch.compile(block, backend=backend, fullgraph=True)(x, compiled_shortcut, mask, fill)
    identical(got, expected)
    identical(compiled_shortcut, eager_shortcut)
    assert not torch.equal(eager_shortcut, shortcut)
    index, _ = ref.select_frames(mask, 4)
    y = ref.gather_frames(x, index, 4, 4) * 2
    torch.testing.assert_close(expected, ref.scatter_frames(x * 3, y, index, fill, True) + 1)


@pytest.mark.parametrize("validate", [True, False])
def test_torch_compile_fullgraph(validate):
    @torch.compile(backend="aot_eager", fullgraph=True)
    def block(x, mask):
        index, _ = ak.select_frames(mask, num_selected=4, validate=validate)  # one padding entry
        y = ak.gather_frames(x, index, num_segments=4, shift_div=4, validate=validate) * 2
        return ak.scatter_frames(x, y, index, relu=True, validate=validate)

    x = randn((8, 8, 3, 3), torch.float32, "cpu", seed=17).requires_grad_()
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])
    out = block(x, mask)
    index, _ = ref.select_frames(mask, 4)
    expected = ref.scatter_frames(x, ref.gather_frames(x, index, 4, 4) * 2, index, relu=True)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_reference_is_traceable_without_validation():
    """With validate=False the reference reads nothing back: fullgraph compile works."""

    @torch.compile(backend="aot_eager", fullgraph=True)
    def block(x, mask):
        index, _ = ref.select_frames(mask, 5, validate=False)
        y = ref.gather_frames(x, index, 4, 4, validate=False)
        return ref.scatter_frames(x, y, index, x[0, :, 0, 0], relu=True, validate=False)

    x = randn((8, 8, 3, 3), torch.float32, "cpu", seed=18)
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])
    index, _ = ak.select_frames(mask, 5)
    expected = ak.scatter_frames(x, ak.gather_frames(x, index, 4, 4), index, x[0, :, 0, 0], relu=True)
    torch.testing.assert_close(block(x, mask), expected)


# --- bad input -------------------------------------------------------------------------------


def _x(shape=(8, 4, 3, 3), dtype=torch.float32, device="cpu"):
    return torch.randn(shape, dtype=dtype, device=device)


def _i(values, device="cpu"):
    return torch.tensor(values, device=device)


# Index values: the same message on every device and in the reference.
INDEX_ERRORS = {
    "gather_range": (
        lambda m, d: m.gather_frames(_x(device=d), _i([0, 8], d)),
        "gather_frames: index[1]=8 is out of range: expected -1 (padding) or 0 <= index < 8 (rows of x)",
    ),
    "gather_negative": (
        lambda m, d: m.gather_frames(_x(device=d), _i([-1, 3, -2], d)),
        "gather_frames: index[2]=-2 is out of range: expected -1 (padding) or 0 <= index < 8 (rows of x)",
    ),
    "scatter_range": (
        lambda m, d: m.scatter_frames(_x(device=d), _x((3, 4, 3, 3), device=d), _i([0, 9, 1], d)),
        "scatter_frames: index[1]=9 is out of range: expected -1 (padding) or 0 <= index < 8 (rows of base)",
    ),
    "scatter_negative": (
        lambda m, d: m.scatter_frames(_x(device=d), _x((2, 4, 3, 3), device=d), _i([-3, 1], d)),
        "scatter_frames: index[0]=-3 is out of range: expected -1 (padding) or 0 <= index < 8 (rows of base)",
    ),
    "scatter_duplicate": (
        lambda m, d: m.scatter_frames(_x(device=d), _x((4, 4, 3, 3), device=d), _i([1, -1, -1, 1], d)),
        "scatter_frames: index must be distinct (apart from -1 padding), got row 1 at index[0] and index[3]",
    ),
    "scatter_inplace_range": (
        lambda m, d: m.scatter_frames_(_x(device=d), _x((3, 4, 3, 3), device=d), _i([0, 9, 1], d)),
        "scatter_frames_: index[1]=9 is out of range: expected -1 (padding) or 0 <= index < 8 (rows of base)",
    ),
    "scatter_inplace_negative": (
        lambda m, d: m.scatter_frames_(_x(device=d), _x((2, 4, 3, 3), device=d), _i([-3, 1], d)),
        "scatter_frames_: index[0]=-3 is out of range: expected -1 (padding) or 0 <= index < 8 (rows of base)",
    ),
    "scatter_inplace_duplicate": (
        lambda m, d: m.scatter_frames_(_x(device=d), _x((4, 4, 3, 3), device=d), _i([1, -1, -1, 1], d)),
        "scatter_frames_: index must be distinct (apart from -1 padding), got row 1 at index[0] and index[3]",
    ),
    "select_too_small": (
        lambda m, d: m.select_frames(torch.ones(2, 3, device=d), num_selected=5),
        "select_frames: num_selected=5 is smaller than the number of frames the mask selects (6 of 6); "
        "pass None, or a value >= 6 (entries past 6 are -1 padding)",
    ),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(INDEX_ERRORS))
def test_index_errors_match_the_reference(device, case):
    call, message = INDEX_ERRORS[case]
    assert raised(lambda: call(ak, device)) == message
    assert raised(lambda: call(ref, device)) == message


def test_gather_backward_index_error():
    message = raised(lambda: OPS._gather_frames_backward(_x((2, 4, 3, 3)), _i([0, 8]), 8, 4, 2))
    assert message == (
        "_gather_frames_backward: index[1]=8 is out of range: expected -1 (padding) or "
        "0 <= index < 8 (num_rows)"
    )


IDX = torch.tensor([0, 2, 5])
# Bad arguments of scatter_frames, as (base, src, index, fill) on a device; scatter_frames_ raises
# the same messages under its own name (test_scatter_frames_inplace_bad_arguments).
SCATTER_BAD_ARGS = {
    "scatter_rows": (lambda d: (_x(device=d), _x((4, 4, 3, 3), device=d), IDX.to(d)), r"src has 4 rows but index has 3 entries"),
    "scatter_dtype": (lambda d: (_x(device=d), _x((3, 4, 3, 3), torch.float64, d), IDX.to(d)), r"src must have the same dtype as base \(Float\), got Double"),
    "scatter_c": (lambda d: (_x(device=d), _x((3, 5, 3, 3), device=d), IDX.to(d)), r"src must have C=4 like base \(shape \[8, 4, 3, 3\]\), got 5"),
    "scatter_h": (lambda d: (_x(device=d), _x((3, 4, 2, 3), device=d), IDX.to(d)), r"src must have H=3 like base .* got 2"),
    "scatter_w": (lambda d: (_x(device=d), _x((3, 4, 3, 4), device=d), IDX.to(d)), r"src must have W=3 like base .* got 4"),
    "scatter_3d_src": (lambda d: (_x(device=d), _x((3, 4, 3), device=d), IDX.to(d)), r"src must be 4-D \[K, C, H, W\], got 3-D"),
    "scatter_3d_base": (lambda d: (_x((8, 4, 3), device=d), _x((3, 4, 3, 3), device=d), IDX.to(d)), r"base must be 4-D \[N\*T, C, H, W\], got 3-D"),
    "scatter_int_base": (lambda d: (torch.ones(8, 4, 3, 3, dtype=torch.int32, device=d), torch.ones(3, 4, 3, 3, dtype=torch.int32, device=d), IDX.to(d)), r"base must be a floating-point tensor .* got Int"),
    "scatter_index_dtype": (lambda d: (_x(device=d), _x((3, 4, 3, 3), device=d), IDX.int().to(d)), r"index must be int64 \(Long\), got Int"),
    "scatter_fill_shape": (lambda d: (_x(device=d), _x((3, 4, 3, 3), device=d), IDX.to(d), _x((4, 3), device=d)), r"fill must be \[C\]=\[4\] or \[C, H, W\]=\[4, 3, 3\] .* got shape \[4, 3\]"),
    "scatter_fill_dtype": (lambda d: (_x(device=d), _x((3, 4, 3, 3), device=d), IDX.to(d), _x((4,), torch.float64, d)), r"fill must have the same dtype as base \(Float\), got Double"),
}
BAD_INPUTS = {
    **{name: (lambda d, make=make: ak.scatter_frames(*make(d)), message) for name, (make, message) in SCATTER_BAD_ARGS.items()},
    "gather_index_dtype": (lambda d: ak.gather_frames(_x(device=d), IDX.float().to(d)), r"index must be int64 \(Long\), got Float"),
    "gather_index_2d": (lambda d: ak.gather_frames(_x(device=d), IDX[None].to(d)), r"index must be 1-D \[K\], got 2-D"),
    "gather_3d": (lambda d: ak.gather_frames(_x((8, 4, 3), device=d), IDX.to(d)), r"x must be 4-D \[N\*T, C, H, W\], got 3-D tensor of shape \[8, 4, 3\]"),
    "gather_segments": (lambda d: ak.gather_frames(_x((10, 4, 3, 3), device=d), IDX.to(d), 3), r"x.size\(0\)=10 is not divisible by num_segments=3"),
    "gather_shift_needs_t": (lambda d: ak.gather_frames(_x(device=d), IDX.to(d), None, 8), r"shift_div > 0 requires num_segments > 0"),
    "gather_int_x": (lambda d: ak.gather_frames(torch.ones(8, 4, 3, 3, dtype=torch.int32, device=d), IDX.to(d)), r"x must be a floating-point tensor .* got Int"),
    "gather_backward_rows": (lambda d: OPS._gather_frames_backward(_x((2, 4, 3, 3), device=d), IDX.to(d), 8, 4, 2), r"grad has 2 rows but index has 3 entries"),
    "blend_theta": (lambda d: ak.blend_branches(_x((8, 4, 2, 2), device=d), _x(device=d), _x((8, 3), device=d)), r"theta must be \[N\*T, C\]=\[8, 4\] or \[N\*T, C, 1, 1\], got shape \[8, 3\]"),
    "blend_c": (lambda d: ak.blend_branches(_x((8, 3, 2, 2), device=d), _x(device=d), _x((8, 4), device=d)), r"ample must have C=4 like focal .* got 3"),
    "blend_rows": (lambda d: ak.blend_branches(_x((6, 4, 2, 2), device=d), _x(device=d), _x((8, 4), device=d)), r"ample must have N\*T=8 like focal .* got 6"),
    "blend_dtype": (lambda d: ak.blend_branches(_x((8, 4, 2, 2), torch.float64, d), _x(device=d), _x((8, 4), device=d)), r"ample must have the same dtype as focal \(Float\), got Double"),
    "blend_3d": (lambda d: ak.blend_branches(_x((8, 4, 2), device=d), _x(device=d), _x((8, 4), device=d)), r"ample must be 4-D \[N\*T, C, h, w\], got 3-D"),
    "pool_3d": (lambda d: ak.pool_branches(_x((8, 4, 2, 2), device=d), _x((8, 4, 3), device=d)), r"focal must be 4-D \[N\*T, C, H, W\], got 3-D"),
    "select_3d": (lambda d: ak.select_frames(torch.ones(2, 3, 4, device=d)), r"mask must be 2-D \[N, T\], got 3-D"),
    "select_negative": (lambda d: ak.select_frames(torch.ones(2, 3, device=d), num_selected=-1), r"num_selected must be >= 0 \(or None\), got -1"),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(device, case):
    call, message = BAD_INPUTS[case]
    with pytest.raises(RuntimeError, match=message):
        call(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(SCATTER_BAD_ARGS))
def test_scatter_frames_inplace_bad_arguments(device, case):
    """scatter_frames_ checks its arguments as scatter_frames does, with the same messages under
    its own name, and writes nothing."""
    make, _ = SCATTER_BAD_ARGS[case]
    args = make(device)
    before = args[0].clone()
    message = raised(lambda: ak.scatter_frames(*args))
    assert message.startswith("scatter_frames: ")
    assert raised(lambda: ak.scatter_frames_(*args)) == "scatter_frames_: " + message[len("scatter_frames: "):]
    assert torch.equal(args[0], before)


@needs_cuda
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: ak.gather_frames(_x(device="cuda"), IDX), r"index must be on the same device as x \(cuda:0\), got cpu"),
        (lambda: ak.scatter_frames(_x(device="cuda"), _x((3, 4, 3, 3)), IDX.cuda()), r"src must be on the same device as base \(cuda:0\), got cpu"),
        (lambda: ak.scatter_frames(_x(device="cuda"), _x((3, 4, 3, 3), device="cuda"), IDX.cuda(), _x((4,))), r"fill must be on the same device as base \(cuda:0\), got cpu"),
        (lambda: ak.scatter_frames_(_x(device="cuda"), _x((3, 4, 3, 3)), IDX.cuda()), r"scatter_frames_: src must be on the same device as base \(cuda:0\), got cpu"),
        (lambda: ak.scatter_frames_(_x(), _x((3, 4, 3, 3)), IDX.cuda()), r"scatter_frames_: index must be on the same device as base \(cpu\), got cuda:0"),
        (lambda: ak.blend_branches(_x((8, 4, 2, 2), device="cuda"), _x(device="cuda"), _x((8, 4))), r"theta must be on the same device as focal \(cuda:0\), got cpu"),
    ],
    ids=["gather_index_device", "scatter_src_device", "scatter_fill_device", "scatter_inplace_src_device",
         "scatter_inplace_index_device", "blend_theta_device"],
)
def test_bad_input_mixed_devices(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


@needs_cuda
def test_validate_false_never_syncs_on_cuda():
    """validate=False (with num_selected) reads nothing back from the device."""
    x = randn((8, 64, 4, 4), torch.float16, "cuda", torch.channels_last, seed=60)
    mask = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0]], device="cuda")
    fill = randn((64,), torch.float16, "cuda", seed=61)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        index, _ = ak.select_frames(mask, num_selected=6, validate=False)
        y = ak.gather_frames(x, index, 4, 8, validate=False)
        out = ak.scatter_frames(x, y, index, fill, True, validate=False)
        in_place = ak.scatter_frames_(x.clone(), y, index, fill, True, validate=False)
        grad = OPS._gather_frames_backward(y, index, 8, 4, 8, False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    index_ref, _ = ref.select_frames(mask, 6)
    assert torch.equal(index, index_ref)
    check_against(out, ref.scatter_frames, x, ref.gather_frames(x, index_ref, 4, 8), index_ref, fill, True)
    identical(in_place, out)
    assert grad.shape == x.shape


# --- above 2^31 elements -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_gather_beyond_2_31_elements(device):
    """Rows at the far end of a tensor of more than 2^31 elements (64-bit offsets). Only the
    last frames are written, so the fp16 tensor (4.3 GB) is mostly untouched memory."""
    t, c, h, w = 8, 256, 16, 16
    rows = (2**31 // (c * h * w)) + t  # 2^31 + 8 frames' worth of elements
    x = torch.empty((rows, c, h, w), dtype=torch.float16, device=device)
    assert x.numel() > 2**31
    tail = randn((t, c, h, w), torch.float16, device, seed=70)
    x[rows - t :] = tail
    index = torch.tensor([rows - 1, -1, rows - t, rows - 3], device=device)
    out = ak.gather_frames(x, index, num_segments=t, shift_div=8)
    assert torch.equal(out, ref.gather_frames(tail, index - (rows - t) * (index >= 0), t, 8))
