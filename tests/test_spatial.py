"""Spatial navigation (paper §3.3): cells, semantics, identities, sparse tiles equal dense."""

from __future__ import annotations

import itertools

import pytest
import torch

import afnet
from afnet.engine import count_macs
from afnet.layers.spatial import SpatialNavigation, block_grid, upsample_cells
from afnet_kernels.reference import cell_of_position
from afnet.training.losses import afnet_loss, record_masks, record_spatial_masks, spatial_ratio_penalty
from model_utils import build_model, random_masks, random_state_like, relative_error
from model_utils import run_model as run

pytestmark = pytest.mark.usefixtures("one_thread")
T = 3


def spatial_model(arch="af_resnet50", seed=0, **options):
    return build_model(arch, T, seed=seed, spatial=True, **options)


def num_blocks(model) -> int:
    return len([m for m in model.modules() if isinstance(m, (afnet.layers.SpatialNavigation, afnet.layers.SpatialPolicy))])


def clip(n=2, size=64, seed=0, dtype=torch.float32):
    return torch.randn(n, T, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def grids_of(model, size):
    """The ``(Gh, Gw)`` of every focal block for ``size`` x ``size`` frames (ResNet stages at /4, /8, /16)."""
    out = []
    for stage, scale in zip(model.base_model.stages(), (4, 8, 16)):
        for gate in stage.spatial_gen:
            out.append(block_grid(gate.grid, (size // scale, size // scale)))
    return out


def random_cells(model, n, size, seed, special=True):
    g = torch.Generator().manual_seed(seed)
    cells = [torch.rand(n, T, *grid, generator=g) > 0.5 for grid in grids_of(model, size)]
    if special:  # no cell, every cell, one border cell
        cells[0] = torch.zeros_like(cells[0])
        cells[1] = torch.ones_like(cells[1])
        cells[2] = torch.zeros_like(cells[2])
        cells[2][0, 0, -1, -1] = True
    return cells


# -- cells ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size,cells", [(14, 4), (14, 2), (56, 7), (7, 7), (6, 4), (13, 1)])
def test_cells_follow_adaptive_pooling_starts(size, cells) -> None:
    owner = cell_of_position(size, cells)
    starts = [i * size // cells for i in range(cells)]
    for y in range(size):
        assert owner[y] == max(i for i in range(cells) if starts[i] <= y)
    mask = torch.arange(cells * cells, dtype=torch.float32).reshape(1, cells, cells)
    up = upsample_cells(mask, (size, size))
    assert up.shape == (1, 1, size, size) and up[0, 0, starts[-1], starts[-1]] == cells * cells - 1


def test_spatial_navigation_shapes_and_start() -> None:
    gate = SpatialNavigation(8, grid=4).eval()
    x = torch.randn(6, 8, 7, 7)
    assert gate(x, (14, 14)).shape == (6, 4, 4)
    assert gate(x, (3, 5)).shape == (6, 3, 4)  # grid clipped to the output size
    assert bool(gate(x, (14, 14)).all())  # every cell starts computed
    gate.train()
    with record_spatial_masks(gate) as recorded:
        out = gate(x, (14, 14))
    assert out.requires_grad and len(recorded) == 1


# -- semantics -------------------------------------------------------------------------------
@pytest.mark.parametrize("fill_zero_response", [True, False])
def test_all_cells_is_the_temporal_model_and_no_cell_is_no_frame(fill_zero_response) -> None:
    spatial = spatial_model(fill_zero_response=fill_zero_response).double()
    temporal = build_model("af_resnet50", T, fill_zero_response=fill_zero_response).double()
    report = temporal.load_state_dict(spatial.state_dict(), strict=False)
    assert report.missing_keys == [] and all("spatial_gen" in k for k in report.unexpected_keys)
    video = clip(dtype=torch.float64)
    masks = random_masks(10, 2, T, seed=4)
    grids = grids_of(spatial, 64)
    every = [torch.ones(2, T, *g, dtype=torch.bool) for g in grids]
    none = [torch.zeros(2, T, *g, dtype=torch.bool) for g in grids]
    reference = run(temporal, video, "dense", masks)[0]
    no_frame = run(temporal, video, "dense", [torch.zeros(2, T, dtype=torch.bool)] * 10)[0]
    for execution in ("dense", "folded"):
        assert relative_error(run(spatial, video, execution, masks, cells=every)[0], reference) < 1e-12
        assert relative_error(run(spatial, video, execution, masks, cells=none)[0], no_frame) < 1e-12


def test_dense_formula_of_one_block() -> None:
    """A selected frame: F at computed cells, F(0) elsewhere; an unselected frame: F(0)."""
    model = spatial_model().double()
    block = model.base_model.layer2.refine_module[1]  # identity shortcut, final ReLU
    x = torch.randn(2 * T, 512, 4, 4, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0, 1], [0, 1, 1]], dtype=torch.float64)
    cells = torch.zeros(2 * T, 4, 4, dtype=torch.float64)
    cells[:, 1:3, 0] = 1

    def branch(z):
        for m in block.branch_modules():
            z = m(z)
        return z

    with torch.no_grad():
        out = block(x, mask, spatial=cells)
        full, zero = branch(x), branch(torch.zeros_like(x[:1]))[0]
    computed = (mask.reshape(-1, 1, 1) * cells).bool()
    pixel = computed.unsqueeze(1)  # a 4x4 grid on 4x4 pixels: one pixel per cell
    expected = torch.relu(x + torch.where(pixel, full, zero))
    torch.testing.assert_close(out, expected)


# -- sparse tiles equal dense ---------------------------------------------------------------
@pytest.mark.parametrize("arch,shift", [("af_resnet50", False), ("af_resnet50", True), ("af_resnet18", True)])
@pytest.mark.parametrize("size", [64, 96, 80])
def test_sparse_tiles_equal_dense(arch, shift, size) -> None:
    model = spatial_model(arch, shift=shift).double()
    video = clip(size=size, dtype=torch.float64)
    masks = random_masks(len(model.navigation_modules), 2, T, seed=size)
    cells = random_cells(model, 2, size, seed=size + 1)
    dense = run(model, video, "dense", masks, cells=cells)[0]
    for backend, layout in itertools.product(("torch", "kernels"), (torch.contiguous_format, torch.channels_last)):
        sparse, used, used_cells = run(model, video, "sparse", masks, backend, layout, cells=cells)
        assert all(torch.equal(a, b) for a, b in zip(used_cells, cells))
        assert relative_error(sparse, dense) < 1e-10, (backend, layout)


def test_tiles_run_on_the_computed_cells_only() -> None:
    model = spatial_model(policy="uniform", rt=1.0, spatial_policy="center", rs=0.25)
    video = clip(n=1, size=64)
    run(model, video, "sparse")  # plan and F(0)
    with count_macs() as counter:
        run(model, video, "sparse")
    # layer1 is 16x16 px in a 4x4 grid: its 2 focal blocks' conv3 (64 -> 256) ran once each, on
    # 4 cells x 3 frames = 12 tiles of 4x4 px (the halo is gone after the 3x3 conv)...
    assert counter.by_shape[(12, 64, 256, 4, 4)] == 2, counter.by_shape
    # ... and their conv1 (64 -> 64) on the same tiles with a 1-px halo: 6x6.
    assert counter.by_shape[(12, 64, 64, 6, 6)] == 1 and counter.by_shape[(12, 256, 64, 6, 6)] == 1
    # On whole frames only block 0's 1x1 shortcut (same shape as a conv3): no focal conv3 there.
    assert counter.by_shape[(3, 64, 256, 16, 16)] == 1


def test_spatial_model_api_and_checkpoint_report() -> None:
    model = spatial_model()
    video = clip()
    logits, masks, cells = run(model, video, "dense")
    assert logits.shape == (2, 7) and len(masks) == 10 and len(cells) == 10
    assert [tuple(c.shape) for c in cells] == [(2, T, *g) for g in grids_of(model, 64)]
    assert all(c.dtype == torch.bool for c in cells)
    temporal = build_model("af_resnet50", T)
    report = afnet.load_checkpoint(model, {"state_dict": temporal.state_dict()}, strict=False)
    assert sorted(report.missing) == sorted(k for k in model.state_dict() if ".spatial_gen." in k)
    with pytest.raises(ValueError, match="spatial_masks"):
        build_model("af_resnet50", T)(video, spatial_masks=cells)
    with pytest.raises(ValueError, match=r"spatial_masks\[0\]: expected shape"):
        model(video, spatial_masks=[torch.ones(2, T, 3, 3, dtype=torch.bool)] * 10)


def test_fixed_spatial_policies() -> None:
    center = spatial_model(policy="uniform", rt=0.5, spatial_policy="center", rs=0.25)
    _, _, cells = run(center, clip(), "dense")
    first = cells[0][0, 0]
    assert int(first.sum()) == 4 and bool(first[1:3, 1:3].all())  # the 4 central cells of 4x4
    rand = spatial_model(policy="uniform", rt=0.5, spatial_policy="random", rs=0.5)
    _, _, cells = run(rand, clip(), "dense")
    assert all(int(c[n, t].sum()) == 8 for c in cells[:3] for n in range(2) for t in range(T))
    assert not torch.equal(cells[0][0, 0], cells[0][0, 1])


def test_first_layer_navigation() -> None:
    model = spatial_model(first_layer_navigation=True)
    assert len(model.navigation_modules) == 1
    assert not any(".list_gen." in k for k in model.state_dict())
    logits, masks, cells = run(model, clip(), "dense")
    assert len(masks) == 1 and len(cells) == 10


def test_training_step_and_spatial_loss() -> None:
    model = spatial_model("af_resnet18")
    model.train()
    video = clip()
    with record_masks(model) as masks, record_spatial_masks(model) as cells:
        logits = model(video)
    assert len(masks) == 3 and len(cells) == 3
    loss = afnet_loss(logits, torch.tensor([0, 1]), masks, 0.5, spatial_masks=cells, rs=0.25)
    loss.backward()
    gate = model.base_model.layer1.spatial_gen[0]
    assert gate.conv_logits.weight.grad is not None and gate.conv_logits.weight.grad.abs().sum() > 0
    frames = [torch.tensor([[1.0, 0, 1]]), torch.tensor([[0.0, 0, 0]])]
    cells = [torch.tensor([[[1.0, 0]], [[1.0, 1]], [[0.0, 0]]]), torch.ones(3, 1, 2)]
    # block 0: selected frames 0 and 2 compute 1 of their 4 cells -> 0.25; block 1: no frame -> 0.
    assert spatial_ratio_penalty(frames, cells, 0.25).item() == pytest.approx(((0.25 - 0.25) ** 2 + 0.25**2) / 2)


def test_mobilenet_has_no_spatial_navigation() -> None:
    with pytest.raises(ValueError, match="squeeze-excitation"):
        afnet.create_model("af_mobilenetv3", num_classes=3, num_segments=T, spatial=True)


def test_random_state_covers_spatial_gates() -> None:
    model = spatial_model()
    state = random_state_like(model, 3)
    assert any(".spatial_gen." in k for k in state)


def test_a_policy_keeping_every_cell_takes_the_frame_path() -> None:
    model = spatial_model(policy="uniform", rt=1.0, spatial_policy="center", rs=1.0)
    video = clip(n=1, size=64)
    run(model, video, "sparse")
    with count_macs() as counter:
        out = run(model, video, "sparse")[0]
    # layer1's focal conv3 on the 3 whole 16x16 frames (with the shortcut's 1x1: 2 + 1 calls), no tiles.
    assert counter.by_shape[(3, 64, 256, 16, 16)] == 3
    assert not any(size == 6 for _, _, _, size, _ in counter.by_shape)
    assert relative_error(out, run(model, video, "dense")[0]) < 1e-5


def test_sparse_tiles_equal_dense_with_one_frame() -> None:
    model = build_model("af_resnet18", 1, shift=True, spatial=True, grid=3).double()
    video = torch.randn(2, 1, 3, 96, 96, generator=torch.Generator().manual_seed(21), dtype=torch.float64)
    masks = [torch.tensor([[True], [False]])] * 3
    g = torch.Generator().manual_seed(22)
    cells = [torch.rand(2, 1, 3, 3, generator=g) > 0.5 for _ in range(3)]
    dense = run(model, video, "dense", masks, cells=cells)[0]
    for backend in ("torch", "kernels"):
        assert relative_error(run(model, video, "sparse", masks, backend, cells=cells)[0], dense) < 1e-10
