"""Budgets hold on any input, on every path; spatial models get static cell counts too.

- A NaN or Inf pixel in one video: every video still keeps exactly k frames (NaN margins rank
  last), that video's logits are non-finite, and every other video's logits are what they are
  without it: on the CPU kernels and the reference ops, frozen and compiled, exported to pt2 and
  ONNX, and on CUDA.
- The reference ops raise instead of truncating an index to a count that is too small.
- A budgeted spatial model reads nothing back: it compiles with ``fullgraph=True``, exports, and
  equals the dense computation.
"""

from __future__ import annotations

import pytest
import torch

import afnet
import afnet_kernels
import afnet_kernels.reference as reference
from afnet.layers import keep_largest
from afnet.tools.export import export_model, run_exported
from conftest import cpu_and_cuda, needs_cuda
from model_utils import HostReads, build_model, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")
T = 6
BUDGET = 0.5  # 3 frames of 6


def budgeted(**options) -> torch.nn.Module:
    model = build_model("af_resnet18", T, **options)
    model.frame_budget = BUDGET
    return model


def batch(bad: float, device: str = "cpu") -> torch.Tensor:
    video = torch.randn(3, T, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    video[1, 2, 1, 5, 7] = bad  # one pixel of one frame of the middle video
    return video.to(device)


def check_one_video_poisoned(out: torch.Tensor, clean: torch.Tensor) -> None:
    """Video 1's logits are non-finite; videos 0 and 2 equal their logits in a clean batch."""
    assert not torch.isfinite(out[1]).all()
    assert torch.isfinite(out[[0, 2]]).all()
    assert relative_error(out[[0, 2]], clean[[0, 2]]) < 1e-5


@pytest.mark.parametrize("scores,k,kept", [
    ([0.3, float("nan"), 0.9, 0.9], 2, [0, 0, 1, 1]),  # ties to the earlier, NaN last
    ([float("nan")] * 4, 2, [1, 1, 0, 0]),  # all NaN: the first k, deterministically
    ([float("inf"), float("nan"), float("-inf"), 0.0], 3, [1, 0, 1, 1]),
    ([1.0, 2.0, 3.0], 0, [0, 0, 0]),
    ([1.0, float("nan")], 5, [1, 1]),
])
def test_keep_largest_is_a_total_order(scores, k, kept) -> None:
    mask = keep_largest(torch.tensor([scores]), k)
    assert mask[0].tolist() == kept


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("backend", ["kernels", "torch"])
def test_a_bad_pixel_poisons_only_its_video(bad, backend) -> None:
    model = budgeted()
    model.backend = backend
    clean = batch(0.0)
    with torch.no_grad():
        expected = model(clean)
        out, masks = model(batch(bad), return_masks=True)
    assert model.last_execution == "sparse"
    assert all(m.sum(1).tolist() == [3, 3, 3] for m in masks)  # the budget held for the bad video too
    check_one_video_poisoned(out, expected)
    frozen = afnet.freeze(model)
    torch._dynamo.reset()
    compiled = torch.compile(frozen, fullgraph=True, backend="eager")
    with torch.no_grad():
        check_one_video_poisoned(frozen(batch(bad)), expected)
        check_one_video_poisoned(compiled(batch(bad)), expected)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_a_bad_pixel_poisons_only_its_video_when_exported(tmp_path, fmt) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'afnet[export]')")
    model = budgeted()
    with torch.no_grad():
        expected = model(batch(0.0))
    path = export_model(model, batch(0.0), tmp_path / f"m.{fmt}", fmt)
    check_one_video_poisoned(run_exported(path, batch(float("nan"))), expected)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_a_bad_pixel_on_each_device(device, no_tf32) -> None:
    model = budgeted().to(device)
    with torch.no_grad():
        expected = model(batch(0.0, device))
        out = model(batch(float("nan"), device))
    check_one_video_poisoned(out.cpu(), expected.cpu())


@pytest.mark.parametrize("ops", [afnet_kernels, reference], ids=["kernels", "reference"])
@pytest.mark.parametrize("validate", [True, False])
def test_select_frames_never_truncates(ops, validate) -> None:
    mask = torch.tensor([[True, True, False], [False, True, False]])  # 3 selected
    with pytest.raises(RuntimeError, match="num_selected=2 is smaller than the number of frames"):
        ops.select_frames(mask, num_selected=2, validate=validate)
    index, _ = ops.select_frames(mask, num_selected=4, validate=validate)
    assert index.tolist() == [0, 1, 4, -1]


# -- spatial budgets ---------------------------------------------------------------------------------
def spatial_model() -> torch.nn.Module:
    model = build_model("af_resnet18", 4, spatial=True, rs=0.5, grid=(2, 2, 2))
    model.frame_budget = 0.5
    return model


def spatial_clip() -> torch.Tensor:
    return torch.randn(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(8))


def test_budgeted_spatial_model_has_static_counts_and_equals_dense() -> None:
    model = spatial_model()
    assert model.cell_budget == 0.5  # the model's rs, since it was not given
    video = spatial_clip()
    with torch.no_grad():
        logits, masks, cells = model(video, return_masks=True)
    assert all(m.sum(1).tolist() == [2, 2] for m in masks)
    assert all(c.flatten(2).sum(2).tolist() == [[2] * 4] * 2 for c in cells)  # 2 of 2x2 cells, every frame
    model.execution = "dense"
    with torch.no_grad():
        dense, dense_masks, dense_cells = model(video, return_masks=True)
    assert all(torch.equal(a, b) for a, b in zip(masks + cells, dense_masks + dense_cells))
    assert relative_error(logits, dense) < 1e-5
    frozen = afnet.freeze(model)
    assert frozen.static_counts
    with HostReads() as reads, torch.no_grad():
        frozen(video)
    assert reads.count == 1  # the NaN check of the fp32 CPU input; no frame or cell count


def test_budgeted_spatial_model_compiles_whole_and_exports(tmp_path) -> None:
    model = spatial_model()
    video = spatial_clip()
    frozen = afnet.freeze(model)
    with torch.no_grad():
        expected = frozen(video)
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(frozen, fullgraph=True, backend="eager")(video)
    assert relative_error(out, expected) < 1e-6
    path = export_model(frozen, video, tmp_path / "spatial.pt2", "pt2")
    assert relative_error(run_exported(path, video), expected) < 1e-5


def test_spatial_budget_needs_a_cell_ratio_and_calibration_measures_it() -> None:
    model = build_model("af_resnet18", 4, spatial=True, grid=(2, 2, 2))  # no rs
    with pytest.raises(ValueError, match="cell_budget=<ratio of cells"):
        model.frame_budget = 0.5
    with pytest.raises(ValueError, match="export|static frame and cell counts"):
        export_model(model, spatial_clip(), "unused.pt2")
    calibration = afnet.calibrate_budget(model, [spatial_clip()])
    assert len(calibration.frame_budget) == 3 and 0 < calibration.cell_budget <= 1
    with torch.no_grad():
        _, masks, cells = model(spatial_clip(), return_masks=True)  # the threshold rule
    selected = sum(int((c & m[..., None, None]).sum()) for m, c in zip(masks, cells))
    assert calibration.cell_budget == pytest.approx(max(selected / sum(int(m.sum()) * 4 for m in masks), 1 / 16))
    frozen = afnet.freeze(model, frame_budget=calibration.frame_budget, cell_budget=calibration.cell_budget)
    assert frozen.static_counts


# -- nothing read back or copied from the host on CUDA -------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("kind", ["budget", "spatial budget", "fixed", "fixed spatial", "eval noise"])
def test_budget_paths_never_sync_on_cuda(kind, no_tf32) -> None:
    """The very first forward included: mask caches, F(0) and noise are made on the device, so no
    pageable host copy (a sync, and illegal while a CUDA graph captures) and no read happens."""
    options = {
        "budget": {}, "eval noise": {},
        "spatial budget": dict(spatial=True, rs=0.5, grid=(2, 2, 2)),
        "fixed": dict(policy="uniform", rt=0.5),
        "fixed spatial": dict(policy="uniform", rt=0.5, spatial=True, spatial_policy="center", rs=0.5, grid=(2, 2, 2)),
    }[kind]
    model = build_model("af_resnet18", 4, **options).cuda()
    if not kind.startswith("fixed"):
        model.frame_budget = 0.5
    if kind == "eval noise":  # the released noisy eval, drawn by the gates themselves
        gates = model.navigation_modules
        inputs = [torch.randn(8, g.conv_pool.in_channels, 8, 8, device="cuda") for g in gates]
        for gate in gates:
            gate.set_eval_noise(True, seed=1)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            masks = [gate(x) for gate, x in zip(gates, inputs)]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert all(m.is_cuda and m.shape == (2, 4) for m in masks)
        return
    video = torch.randn(2, 4, 3, 64, 64, device="cuda")
    frozen = afnet.freeze(model)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.inference_mode():
            model(video)
            frozen(video)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    runner = afnet.cuda_graph(frozen, video)
    with torch.inference_mode():
        assert relative_error(runner(video), frozen(video)) < 1e-4
