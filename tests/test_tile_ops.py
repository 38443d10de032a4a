"""Tile ops (gather_tiles, scatter_tiles) against the reference, on CPU and (when visible) CUDA.

Cells follow adaptive pooling's bin starts, so the cases include sizes the grid does not
divide, G = 1, G = H (one-pixel cells), non-square sizes, stride 2, halos 0 and 1, the TSM
shift, cells at the image border, none / all / one cell and -1 padding, in both layouts, all
four dtypes, and misaligned storage. Outputs are poisoned (NaN) before the kernels run.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F

import afnet_kernels as ak
from afnet_kernels import _loader
from afnet_kernels import reference as ref
from conftest import assert_close_lowp, cpu_and_cuda, needs_cuda, poisoned_outputs
from test_ops import ALL_DTYPES, FLOAT_DTYPES, LAYOUTS, _i, misaligned, randn, raised, same_layout

OPS = torch.ops.afnet_kernels
DEVICES = cpu_and_cuda()
ONE_THREAD = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def compiled_library():
    assert ak.backends()["cpu"]["usable"], ak.backends()["cpu"]["reason"]


@dataclass(frozen=True)
class Case:
    """A block: N*T input frames of C channels, H_in x W_in, conv stride, output cut in cells."""

    n: int
    t: int
    c: int
    in_size: Tuple[int, int]
    grid: Tuple[int, int]
    stride: int = 1
    halo: int = 1
    shift_div: int = 0

    @property
    def rows(self) -> int:
        return self.n * self.t

    @property
    def out_size(self) -> Tuple[int, int]:
        # A 3x3 conv with padding 1 (or a 1x1 conv when halo = 0) at this stride.
        return tuple(-(-s // self.stride) for s in self.in_size)  # type: ignore[return-value]

    @property
    def cells(self) -> int:
        return self.rows * self.grid[0] * self.grid[1]

    @property
    def tile_size(self) -> Tuple[int, int]:
        return tuple(-(-o // g) for o, g in zip(self.out_size, self.grid))  # type: ignore[return-value]

    def __str__(self) -> str:
        return (f"{self.n}x{self.t}x{self.c}x{self.in_size[0]}x{self.in_size[1]}-g{self.grid[0]}x{self.grid[1]}"
                f"-s{self.stride}-h{self.halo}-div{self.shift_div}")


CASES = [
    Case(2, 2, 6, (7, 9), (3, 4)),  # 7 and 9 not divisible by 3 and 4, non-square
    Case(1, 3, 5, (8, 10), (2, 3), stride=2, shift_div=3),  # stride 2, shift
    Case(2, 1, 4, (5, 5), (1, 1)),  # G = 1: one cell is the whole image
    Case(1, 2, 3, (4, 3), (4, 3), halo=0),  # G = H: one-pixel cells, no halo
    Case(1, 2, 3, (4, 3), (4, 3), shift_div=3),  # one-pixel cells with a halo
    Case(2, 2, 7, (9, 6), (2, 3), stride=2, halo=0, shift_div=3),  # stride 2 without halo
    Case(2, 2, 32, (6, 6), (3, 3), shift_div=8),  # 16-byte packs along C with the shift
    Case(1, 4, 64, (7, 8), (2, 3), stride=2, shift_div=8),
]
INDEX_KINDS = ["none", "all", "one", "border", "random_padded"]


def make_index(kind: str, case: Case, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    gh, gw = case.grid
    if kind == "none":
        values: List[int] = []
    elif kind == "all":
        values = list(range(case.cells))
    elif kind == "one":
        values = [int(torch.randint(case.cells, (1,), generator=g))]
    elif kind == "border":  # the corner and edge cells of the last frame, in reverse order
        last = (case.rows - 1) * gh * gw
        values = sorted({last, last + gw - 1, last + (gh - 1) * gw, last + gh * gw - 1}, reverse=True)
    else:  # a random half of the cells, shuffled, with -1 padding mixed in
        chosen = torch.randperm(case.cells, generator=g)[: max(1, case.cells // 2)].tolist()
        values = chosen[:1] + [-1] + chosen[1:] + [-1, -1]
    return torch.tensor(values, dtype=torch.int64, device=device)


def check_against(out: torch.Tensor, expected: torch.Tensor, exact_fn=None) -> None:
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert same_layout(out, expected), f"memory format differs: {out.stride()} vs {expected.stride()}"
    if exact_fn is None:
        assert torch.equal(out, expected)
    elif out.dtype in FLOAT_DTYPES:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    else:
        assert_close_lowp(out, expected, exact_fn())


def _double(args):
    return [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]


# --- gather_tiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_gather_tiles(device, dtype, layout, case):
    x = randn((case.rows, case.c, *case.in_size), dtype, device, layout, seed=1)
    for seed, kind in enumerate(INDEX_KINDS):
        index = make_index(kind, case, device, seed)
        args = (x, index, case.grid, case.out_size, case.stride, case.halo, case.t, case.shift_div)
        with poisoned_outputs():
            out = ak.gather_tiles(*args)
        th, tw = ((s - 1) * case.stride + 1 + 2 * case.halo for s in case.tile_size)
        assert out.shape == (index.numel(), case.c, th, tw)
        check_against(out, ref.gather_tiles(*args))  # a copy: bit-exact


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [CASES[0], CASES[6]], ids=str)
def test_gather_tiles_misaligned(device, dtype, layout, case):
    x = misaligned(randn((case.rows, case.c, *case.in_size), dtype, device, layout, seed=2))
    index = make_index("random_padded", case, device, seed=3)
    args = (x, index, case.grid, case.out_size, case.stride, case.halo, case.t, case.shift_div)
    with poisoned_outputs():
        out = ak.gather_tiles(*args, validate=False)
    check_against(out, ref.gather_tiles(*args))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_gather_tiles_backward(device, dtype, layout, case):
    """The overlapping tiles' gradients add up in x (repeated cells and padding included)."""
    index = make_index("random_padded", case, device, seed=4)
    index = torch.cat([index, index[:1]])  # a repeated cell
    th, tw = ((s - 1) * case.stride + 1 + 2 * case.halo for s in case.tile_size)
    grad = randn((index.numel(), case.c, th, tw), dtype, device, layout, seed=5)
    geometry = (case.grid, case.out_size, case.stride, case.halo, case.t, case.shift_div)

    def reference_backward(g):
        x = torch.zeros((case.rows, case.c, *case.in_size), dtype=g.dtype, device=device, requires_grad=True)
        (gx,) = torch.autograd.grad(ref.gather_tiles(x, index, *geometry), x, g)
        return gx.contiguous(memory_format=ref.memory_format(g))

    for g in (grad, misaligned(grad)):
        with poisoned_outputs():
            out = OPS._gather_tiles_backward(g, index, list(case.grid), list(case.out_size),
                                             list(case.in_size), case.rows, case.stride, case.halo,
                                             case.t, case.shift_div)
        check_against(out, reference_backward(g), lambda: reference_backward(g.double()))


# --- scatter_tiles -----------------------------------------------------------------------------


def make_fill(kind: Optional[str], c: int, size, dtype, device) -> Optional[torch.Tensor]:
    if kind is None:
        return None
    return randn((c,) if kind == "C" else (c, *size), dtype, device, seed=7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C", "CHW"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_scatter_tiles(device, dtype, layout, fill_kind, relu, case):
    base = randn((case.rows, case.c, *case.out_size), dtype, device, layout, seed=8)
    fill = make_fill(fill_kind, case.c, case.out_size, dtype, device)
    for seed, kind in enumerate(INDEX_KINDS):
        index = make_index(kind, case, device, seed)
        src = randn((index.numel(), case.c, *case.tile_size), dtype, device, layout, seed=9 + seed)
        args = (base, src, index, case.grid, fill, relu)
        base_copy = base.clone()
        with poisoned_outputs():
            out = ak.scatter_tiles(*args)
        assert torch.equal(base, base_copy), "scatter_tiles modified its input"
        check_against(out, ref.scatter_tiles(*args), lambda: ref.scatter_tiles(*_double(args)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scatter_tiles_misaligned_and_mixed_layouts(device, dtype, layout):
    case = CASES[6]
    other = torch.channels_last if layout == torch.contiguous_format else torch.contiguous_format
    base = misaligned(randn((case.rows, case.c, *case.out_size), dtype, device, layout, seed=10))
    index = make_index("random_padded", case, device, seed=11)
    src = misaligned(randn((index.numel(), case.c, *case.tile_size), dtype, device, other, seed=12))
    fill = make_fill("CHW", case.c, case.out_size, dtype, device)
    args = (base, src, index, case.grid, fill, True)
    with poisoned_outputs():
        out = ak.scatter_tiles(*args, validate=False)
    check_against(out, ref.scatter_tiles(*args), lambda: ref.scatter_tiles(*_double(args)))


@pytest.mark.parametrize("device", DEVICES)
def test_scatter_tiles_ignores_pixels_beyond_small_cells_and_padding(device):
    """7 rows in 3 cells: sizes 2, 2, 3 with tiles of 3; the third row of the small cells' tiles
    and the tiles of padding entries (NaN here) must not reach the output."""
    base = torch.zeros(1, 1, 7, 7, dtype=torch.float64, device=device)
    index = torch.tensor([0, -1, 4], device=device)  # cells (0, 0) and (1, 1)
    src = torch.full((3, 1, 3, 3), float("nan"), dtype=torch.float64, device=device)
    src[0, 0, :2, :2] = 1.0
    src[2, 0, :2, :2] = 2.0
    out = ak.scatter_tiles(base, src, index, 3)
    expected = torch.zeros(7, 7, dtype=torch.float64)
    expected[0:2, 0:2] = 1.0
    expected[2:4, 2:4] = 2.0
    assert torch.equal(out[0, 0].cpu(), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[6]], ids=str)
def test_scatter_tiles_backward(device, layout, case):
    base = randn((case.rows, case.c, *case.out_size), torch.float32, device, layout, seed=13).requires_grad_()
    index = make_index("random_padded", case, device, seed=14)
    src = randn((index.numel(), case.c, *case.tile_size), torch.float32, device, layout, seed=15).requires_grad_()
    fill = make_fill("CHW", case.c, case.out_size, torch.float32, device).requires_grad_()
    grad = randn(base.shape, torch.float32, device, seed=16)
    with poisoned_outputs():
        got = torch.autograd.grad(ak.scatter_tiles(base, src, index, case.grid, fill, True), (base, src, fill), grad)
    expected = torch.autograd.grad(ref.scatter_tiles(base, src, index, case.grid, fill, True), (base, src, fill), grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


# --- the mechanism: convolutions on tiles equal the dense convolution at the cells --------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2], CASES[4], CASES[7]], ids=str)
def test_bottleneck_on_tiles_equals_dense_at_the_cells(device, layout, case):
    """gather (halo 1) -> 1x1 conv + bias + ReLU -> zero the pixels outside the image
    (tile_valid_mask) -> 3x3 VALID conv at the stride -> scatter: equals the dense
    1x1 -> 3x3 (padding 1) at the computed cells, and the fill elsewhere."""
    g = torch.Generator().manual_seed(17)
    w1 = torch.randn(5, case.c, 1, 1, generator=g, dtype=torch.float64).to(device)
    b1 = torch.randn(5, generator=g, dtype=torch.float64).to(device)
    w2 = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64).to(device)
    x = randn((case.rows, case.c, *case.in_size), torch.float64, device, layout, seed=18)
    shifted = ref.temporal_shift(x, case.t, case.shift_div) if case.shift_div else x
    dense = F.conv2d(F.relu(F.conv2d(shifted, w1, b1)), w2, stride=case.stride, padding=1)
    index = make_index("random_padded", case, device, seed=19)
    tiles = ak.gather_tiles(x, index, case.grid, case.out_size, case.stride, 1, case.t, case.shift_div)
    inner = F.relu(F.conv2d(tiles, w1, b1))
    inner = inner * ref.tile_valid_mask(index, case.grid, case.out_size, case.in_size, case.stride, 1)
    computed = F.conv2d(inner, w2, stride=case.stride)
    assert computed.shape[2:] == case.tile_size
    fill = randn((4,), torch.float64, device, seed=20)
    out = ak.scatter_tiles(torch.zeros_like(dense), computed, index, case.grid, fill)
    covered = ref.tile_of_pixel(index, case.grid, case.rows, case.out_size)[:, None] >= 0
    assert covered.any() and not covered.all()
    torch.testing.assert_close(out, torch.where(covered, dense, fill.view(-1, 1, 1)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_tile_valid_mask_marks_the_pixels_inside_the_image(device, case):
    """The mask equals the nonzero pattern of the tiles of an all-ones image (padding: False)."""
    index = make_index("random_padded", case, device, seed=21)
    ones = torch.ones((case.rows, 1, *case.in_size), device=device)
    tiles = ak.gather_tiles(ones, index, case.grid, case.out_size, case.stride, case.halo)
    mask = ref.tile_valid_mask(index, case.grid, case.out_size, case.in_size, case.stride, case.halo)
    assert mask.dtype == torch.bool and torch.equal(mask, tiles != 0)
    assert not mask[index == -1].any()


# --- autograd ----------------------------------------------------------------------------------


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "case", [Case(1, 2, 2, (5, 4), (2, 3)), Case(1, 2, 3, (5, 6), (2, 2), stride=2, shift_div=3)], ids=str
)
def test_gradcheck_gather_tiles(device, layout, case):
    validate = layout == torch.contiguous_format  # both values, without doubling the cases
    x = randn((case.rows, case.c, *case.in_size), torch.float64, device, layout, seed=22).requires_grad_()
    index = make_index("random_padded", case, device, seed=23)
    index = torch.cat([index, index[:1]])  # a repeated cell

    def fn(x):
        return ak.gather_tiles(x, index, case.grid, case.out_size, case.stride, case.halo, case.t,
                               case.shift_div, validate=validate)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fill_kind", [None, "C", "CHW"])
@pytest.mark.parametrize("relu", [False, True])
def test_gradcheck_scatter_tiles(device, layout, fill_kind, relu):
    case = Case(1, 2, 3, (5, 4), (2, 3))
    base = randn((case.rows, case.c, *case.out_size), torch.float64, device, layout, seed=24).requires_grad_()
    index = torch.tensor([7, -1, 0, 5], device=device)
    src = randn((4, case.c, *case.tile_size), torch.float64, device, seed=25).requires_grad_()
    inputs = [base, src]
    if fill_kind is not None:
        inputs.append(make_fill(fill_kind, case.c, case.out_size, torch.float64, device).requires_grad_())

    def fn(base, src, *fill):
        return ak.scatter_tiles(base, src, index, case.grid, *fill, relu=relu)

    assert torch.autograd.gradcheck(fn, tuple(inputs))


def opcheck_samples(device):
    case = CASES[1]
    x = randn((case.rows, case.c, *case.in_size), torch.float64, device, seed=26).requires_grad_()
    x_cl = randn((case.rows, case.c, *case.in_size), torch.float64, device, torch.channels_last, seed=27)
    index = torch.tensor([4, -1, 0, 4], device=device)
    geometry = (list(case.grid), list(case.out_size))
    th, tw = ((s - 1) * case.stride + 1 + 2 * case.halo for s in case.tile_size)
    grad = randn((4, case.c, th, tw), torch.float64, device, seed=28)
    base = randn((case.rows, case.c, *case.out_size), torch.float64, device, seed=29).requires_grad_()
    src = randn((3, case.c, *case.tile_size), torch.float64, device, seed=30).requires_grad_()
    fill = randn((case.c,), torch.float64, device, seed=31).requires_grad_()
    distinct = torch.tensor([4, -1, 0], device=device)
    return [
        (OPS.gather_tiles.default, (x, index, *geometry, case.stride, case.halo, case.t, case.shift_div), {}),
        (OPS.gather_tiles.default, (x_cl, index, *geometry), {"validate": False}),
        (OPS._gather_tiles_backward.default,
         (grad, index, *geometry, list(case.in_size), case.rows, case.stride, case.halo, case.t, case.shift_div), {}),
        (OPS.scatter_tiles.default, (base, src, distinct, list(case.grid)), {"fill": fill, "relu": True}),
        (OPS.scatter_tiles.default, (base, src, distinct, list(case.grid)), {"validate": False}),
    ]


@ONE_THREAD
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", range(5))
def test_opcheck(device, sample):
    op, args, kwargs = opcheck_samples(device)[sample]
    torch.library.opcheck(op, args, kwargs)


def test_torch_compile_fullgraph():
    case = CASES[0]

    @torch.compile(backend="aot_eager", fullgraph=True)
    def block(x, index):
        tiles = ak.gather_tiles(x, index, case.grid, case.out_size, 1, 0, validate=False)
        return ak.scatter_tiles(x, tiles * 2, index, case.grid, relu=True, validate=False)

    x = randn((case.rows, case.c, *case.in_size), torch.float32, "cpu", seed=32)
    index = make_index("random_padded", case, "cpu", seed=33)
    expected = ref.scatter_tiles(x, ref.gather_tiles(x, index, case.grid, case.out_size, 1, 0) * 2,
                                 index, case.grid, relu=True)
    torch.testing.assert_close(block(x, index), expected)


# --- bad input ---------------------------------------------------------------------------------


def _x(shape=(2, 4, 6, 6), dtype=torch.float32, device="cpu"):
    return torch.randn(shape, dtype=dtype, device=device)


# Index values: the same message on every device and in the reference.
INDEX_ERRORS = {
    "gather_range": (
        lambda m, d: m.gather_tiles(_x(device=d), _i([0, 18], d), 3, 6),
        "gather_tiles: index[1]=18 is out of range: expected -1 (padding) or 0 <= index < 18 "
        "(rows x Gh x Gw = 2 x 3 x 3)",
    ),
    "gather_negative": (
        lambda m, d: m.gather_tiles(_x(device=d), _i([-1, -5], d), (3, 2), 6),
        "gather_tiles: index[1]=-5 is out of range: expected -1 (padding) or 0 <= index < 12 "
        "(rows x Gh x Gw = 2 x 3 x 2)",
    ),
    "scatter_range": (
        lambda m, d: m.scatter_tiles(_x(device=d), _x((2, 4, 2, 2), device=d), _i([3, 72], d), 3),
        "scatter_tiles: index[1]=72 is out of range: expected -1 (padding) or 0 <= index < 18 "
        "(rows x Gh x Gw = 2 x 3 x 3)",
    ),
    "scatter_duplicate": (
        lambda m, d: m.scatter_tiles(_x(device=d), _x((4, 4, 2, 2), device=d), _i([5, -1, 2, 5], d), 3),
        "scatter_tiles: index must be distinct (apart from -1 padding), got cell 5 at index[0] and index[3]",
    ),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(INDEX_ERRORS))
def test_index_errors_match_the_reference(device, case):
    call, message = INDEX_ERRORS[case]
    assert raised(lambda: call(ak, device)) == message
    assert raised(lambda: call(ref, device)) == message


BAD_INPUTS = {
    "gather_grid_too_fine": (lambda d: ak.gather_tiles(_x(device=d), _i([0], d), (7, 3), 6),
                             r"gather_tiles: grid must satisfy 1 <= grid <= out_size along both axes .* got grid=\[7, 3\] for out_size=\[6, 6\]"),
    "gather_grid_zero": (lambda d: ak.gather_tiles(_x(device=d), _i([0], d), (0, 3), 6), r"grid must satisfy 1 <= grid"),
    "gather_grid_three": (lambda d: OPS.gather_tiles(_x(device=d), _i([0], d), [2, 2, 2], [6, 6]), r"grid must have 2 values \(height, width\), got 3"),
    "gather_out_size": (lambda d: ak.gather_tiles(_x(device=d), _i([0], d), 1, (0, 6)), r"out_size must be >= 1 along both axes, got \[0, 6\]"),
    "gather_stride": (lambda d: ak.gather_tiles(_x(device=d), _i([0], d), 3, 6, stride=0), r"stride must be >= 1, got 0"),
    "gather_halo": (lambda d: ak.gather_tiles(_x(device=d), _i([0], d), 3, 6, halo=-1), r"halo must be >= 0, got -1"),
    "gather_3d": (lambda d: ak.gather_tiles(_x((2, 4, 6), device=d), _i([0], d), 3, 6), r"x must be 4-D \[N\*T, C, H_in, W_in\], got 3-D"),
    "gather_index_dtype": (lambda d: ak.gather_tiles(_x(device=d), _i([0.0], d), 3, 6), r"index must be int64 \(Long\), got Float"),
    "gather_segments": (lambda d: ak.gather_tiles(_x(device=d), _i([0], d), 3, 6, num_segments=3), r"x.size\(0\)=2 is not divisible by num_segments=3"),
    "gather_int_x": (lambda d: ak.gather_tiles(_x(device=d).int(), _i([0], d), 3, 6), r"x must be a floating-point tensor"),
    "backward_tile_shape": (lambda d: OPS._gather_tiles_backward(_x((1, 4, 3, 3), device=d), _i([0], d), [3, 3], [6, 6], [6, 6], 2, 1, 1, 0, 0),
                            r"grad must have tiles of \[Th, Tw\]=\[4, 4\] for grid=\[3, 3\], out_size=\[6, 6\], stride=1, halo=1, got shape \[1, 4, 3, 3\]"),
    "backward_rows": (lambda d: OPS._gather_tiles_backward(_x((2, 4, 4, 4), device=d), _i([0], d), [3, 3], [6, 6], [6, 6], 2, 1, 1, 0, 0),
                      r"grad has 2 tiles but index has 1 entries"),
    "scatter_src_shape": (lambda d: ak.scatter_tiles(_x(device=d), _x((2, 4, 3, 2), device=d), _i([0, 1], d), 3),
                          r"src must be \[K, C, Sh, Sw\]=\[2, 4, 2, 2\] \(K index entries, base's C, Sh = ceil\(H_out/Gh\), Sw = ceil\(W_out/Gw\) for grid=\[3, 3\]\), got shape \[2, 4, 3, 2\]"),
    "scatter_src_channels": (lambda d: ak.scatter_tiles(_x(device=d), _x((1, 5, 2, 2), device=d), _i([0], d), 3), r"src must be \[K, C, Sh, Sw\]=\[1, 4, 2, 2\]"),
    "scatter_grid": (lambda d: ak.scatter_tiles(_x(device=d), _x((1, 4, 1, 1), device=d), _i([0], d), 7),
                     r"grid must satisfy 1 <= grid <= base's \(H_out, W_out\) along both axes .* got grid=\[7, 7\]"),
    "scatter_dtype": (lambda d: ak.scatter_tiles(_x(device=d), _x((1, 4, 2, 2), torch.float64, d), _i([0], d), 3), r"src must have the same dtype as base \(Float\), got Double"),
    "scatter_fill": (lambda d: ak.scatter_tiles(_x(device=d), _x((1, 4, 2, 2), device=d), _i([0], d), 3, _x((4, 6), device=d)), r"fill must be \[C\]=\[4\] or \[C, H, W\]=\[4, 6, 6\]"),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(device, case):
    call, message = BAD_INPUTS[case]
    with pytest.raises(RuntimeError, match=message):
        call(device)


def test_python_pairs_are_checked():
    with pytest.raises(ValueError, match=r"grid must be an int or 2 ints \(height, width\), got \(1, 2, 3\)"):
        ak.gather_tiles(_x(), _i([0]), (1, 2, 3), 6)


@needs_cuda
def test_validate_false_never_syncs_on_cuda():
    case, device = CASES[6], "cuda"
    x = randn((case.rows, case.c, *case.in_size), torch.float16, device, torch.channels_last, seed=40)
    index = make_index("random_padded", case, device, seed=41)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        tiles = ak.gather_tiles(x, index, case.grid, case.out_size, 1, 0, case.t, 8, validate=False)
        out = ak.scatter_tiles(x, tiles, index, case.grid, relu=True, validate=False)
        grad = OPS._gather_tiles_backward(tiles, index, list(case.grid), list(case.out_size),
                                          list(case.in_size), case.rows, 1, 0, case.t, 8, False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = ref.scatter_tiles(x, ref.gather_tiles(x, index, case.grid, case.out_size, 1, 0, case.t, 8),
                                 index, case.grid, relu=True)
    assert torch.equal(out, expected) and grad.shape == x.shape


# --- above 2^31 elements -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_gather_tiles_beyond_2_31_elements(device):
    """Tiles of the last frame of a tensor of more than 2^31 elements (64-bit offsets)."""
    t, c, h, w = 4, 256, 16, 16
    rows = 2**31 // (c * h * w) + t
    x = torch.empty((rows, c, h, w), dtype=torch.bfloat16, device=device)
    assert x.numel() > 2**31
    tail = randn((t, c, h, w), torch.bfloat16, device, seed=42)
    x[rows - t :] = tail
    per_row = 4 * 4
    last = (rows - 1) * per_row
    index = torch.tensor([last, last + 5, -1, last + per_row - 1, (rows - t) * per_row], device=device)
    out = ak.gather_tiles(x, index, 4, (h, w), 1, 1, t, 8)
    local = torch.where(index >= 0, index - (rows - t) * per_row, -1)
    assert torch.equal(out, ref.gather_tiles(tail, local, 4, (h, w), 1, 1, t, 8))


# --- 32-bit index arithmetic of the CUDA kernels -----------------------------------------------
#
# The CUDA tile kernels divide by FastDivmod (common/tiles.h) and compute cells through
# FastTileGrid. The CPU kernels run the same FastTileGrid whenever it holds the sizes, so every
# CPU test above checks it; FastDivmod itself is checked here through a test hook of the CPU
# library, and the 64-bit fallback of the CPU kernels (and CUDA's refusal) below.

MAX_32 = 2**31 - 1


def fast_divmod(n: torch.Tensor, d: int):
    """(status, n // d, n % d) by the kernels' FastDivmod (status -1: an argument out of range)."""
    hook = ctypes.CDLL(_loader._origin("_C")).afnet_kernels_fast_divmod
    hook.restype = ctypes.c_int
    hook.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    n = n.to(torch.int64).contiguous()
    q, r = torch.full_like(n, -7), torch.full_like(n, -7)
    status = hook(n.data_ptr(), n.numel(), d, q.data_ptr(), r.data_ptr())
    return status, q, r


def _edge_values() -> List[int]:
    """0, 1, small numbers, powers of two and their neighbours, and values near 2^31."""
    values = set(range(0, 18)) | {MAX_32 - i for i in range(4)} | {10**k for k in range(10)}
    for k in range(32):
        values |= {2**k - 1, 2**k, 2**k + 1}
    return sorted(v for v in values if 0 <= v <= MAX_32)


def test_fast_divmod_matches_integer_division():
    g = torch.Generator().manual_seed(50)
    edges = _edge_values()
    # Divisors: the edge values, and log-uniform random ones (every magnitude up to 2^31).
    random_divisors = (2.0 ** (torch.rand(300, generator=g, dtype=torch.float64) * 31)).long().clamp(1, MAX_32)
    divisors = sorted({v for v in edges if v >= 1} | set(random_divisors.tolist()))
    random_n = torch.randint(0, MAX_32 + 1, (2000,), generator=g)
    small_n = torch.randint(0, 1 << 16, (500,), generator=g)
    for d in divisors:
        top = MAX_32 // d * d  # the largest multiple of d in range
        around = {d - 1, d, d + 1, 2 * d - 1, 2 * d, top - 1, top, top + 1, top + d - 1}
        n = torch.cat([torch.tensor(edges + sorted(v for v in around if 0 <= v <= MAX_32)), random_n, small_n])
        status, q, r = fast_divmod(n, d)
        assert status == 0, d
        wrong = (q != n // d) | (r != n % d)
        assert not wrong.any(), f"d={d}: n={n[wrong][:5].tolist()} gave q={q[wrong][:5].tolist()}"


def test_fast_divmod_refuses_arguments_out_of_range():
    n = torch.tensor([0, 5])
    for d in (0, -1, 2**31):
        assert fast_divmod(n, d)[0] == -1
    for bad in (-1, 2**31):
        assert fast_divmod(torch.tensor([3, bad]), 3)[0] == -1


@pytest.mark.parametrize("device", DEVICES)
def test_gather_tiles_at_the_32_bit_limit(device):
    """46340 x 46340 one-pixel cells: 2147395600 cells and Gh x H_out just below 2^31, the
    largest the 32-bit cell arithmetic holds (the CPU kernels run it too); cell ids up to the
    last, divided by a divisor of the same size."""
    side = 46340
    assert side * side <= MAX_32 < (side + 1) ** 2
    x = randn((1, 2, side, 3), torch.float32, device, seed=56)
    last = side * side - 1
    index = torch.tensor([last, (side - 1) * side, (side - 1) * side + 2, 20000 * side + 1, side + 3, 1, 0, -1],
                         device=device)
    args = (x, index, side, side, 1, 1)
    with poisoned_outputs():
        out = ak.gather_tiles(*args)
    check_against(out, ref.gather_tiles(*args))
    assert (out[1:5].flatten(1).abs().sum(1) > 0).all()  # cells over the image's columns, rows near the end


# Cell arithmetic the 32-bit form cannot hold: Gh * H_out and rows * Gh * Gw must stay below 2^31.
CUDA_REFUSES = r"the CUDA kernels compute cells in 32 bits"


@pytest.mark.parametrize("device", DEVICES)
def test_gather_tiles_beyond_32_bit_cells(device):
    """Gh x H_out = 50000 x 50000 > 2^31 - 1: the CPU kernels fall back to 64-bit cell
    arithmetic (forward and backward, with the shift); CUDA refuses with a message."""
    grid, out_size, t = (50000, 2), (50000, 5), 2
    x = randn((2 * t, 3, 4, 5), torch.float64, device, seed=51)
    cells = [(row, cy, cx) for row in (0, 1, 3) for cy in (0, 1, 2, 3, 49999) for cx in (0, 1)]
    index = torch.tensor([(row * grid[0] + cy) * grid[1] + cx for row, cy, cx in cells] + [-1], device=device)
    args = (x, index, grid, out_size, 1, 1, t, 3)
    if device == "cuda":
        with pytest.raises(RuntimeError, match=CUDA_REFUSES):
            ak.gather_tiles(*args)
        return
    with poisoned_outputs():
        out = ak.gather_tiles(*args)
    check_against(out, ref.gather_tiles(*args))
    assert out.abs().sum() > 0  # the first cells' tiles overlap the image
    grad = randn(out.shape, torch.float64, device, seed=52)
    with poisoned_outputs():
        got = OPS._gather_tiles_backward(grad, index, list(grid), list(out_size), [4, 5], 2 * t, 1, 1, t, 3)
    x_ = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(ref.gather_tiles(x_, *args[1:]), x_, grad)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_scatter_tiles_beyond_32_bit_cells(device):
    """One-pixel cells along H_out = 46341 rows: Gh x H_out = 46341^2 > 2^31 - 1."""
    height = 46341
    base = randn((1, 2, height, 1), torch.float32, device, seed=53)
    index = torch.tensor([0, 5, -1, height - 1], device=device)
    src = randn((4, 2, 1, 1), torch.float32, device, seed=54)
    fill = randn((2,), torch.float32, device, seed=55)
    args = (base, src, index, (height, 1), fill, True)
    if device == "cuda":
        with pytest.raises(RuntimeError, match=CUDA_REFUSES):
            ak.scatter_tiles(*args)
        return
    with poisoned_outputs():
        out = ak.scatter_tiles(*args)
    check_against(out, ref.scatter_tiles(*args))


@pytest.mark.parametrize("device", DEVICES)
def test_gather_tiles_frames_beyond_2_31_elements_on_cuda(device):
    """Frames of x of 2^32 elements (x has no rows, so no memory): the CUDA kernels address
    inside a frame in 32 bits and refuse them; the CPU gathers the zero (padding) tile."""
    x = torch.empty((0, 2**16, 2**8, 2**8), device=device)
    index = torch.tensor([-1], device=device)
    if device == "cuda":
        with pytest.raises(RuntimeError, match=r"frames of x of more than 2\^31 - 1 elements"):
            ak.gather_tiles(x, index, 1, 1, 1, 1)
        return
    out = ak.gather_tiles(x, index, 1, 1, 1, 1)
    assert out.shape == (1, 2**16, 3, 3) and not out.any()
