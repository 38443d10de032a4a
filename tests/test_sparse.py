"""Sparse execution: equals the dense masked form, syncs once per stage, caches stay valid."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

import afnet.sparse
import afnet_kernels
import afnet_kernels.reference as reference
from afnet.folding import FoldedConv, fold_conv_bn, fold_sequence, run_steps
from afnet.sparse import FrameSelection, select_stage, sparse_residual, zero_response
from model_utils import build_model, random_masks, random_state_like, relative_error

# 32x32 models: tiny tensors, where 2 threads only wait on each other's barriers (on a loaded
# machine 10x slower). The kernels' parallel paths are covered by test_ops at the default threads.
pytestmark = pytest.mark.usefixtures("one_thread")

RESNETS = ("af_resnet18", "af_resnet34", "af_resnet50", "af_resnet101")
LAYOUTS = (torch.contiguous_format, torch.channels_last)


def num_gates(model) -> int:
    return sum(len(s.list_gen) for s in model.base_model.stages())


def dense_and_sparse(model, video, masks, backend="torch", layout=torch.channels_last):
    model.execution = "dense"
    dense = model(video, masks=masks)
    model.execution, model.backend, model.memory_format = "sparse", backend, layout
    sparse, used = model(video, masks=masks, return_masks=True)
    assert all(torch.equal(u, m) for u, m in zip(used, masks))
    return dense, sparse


# -- whole models -------------------------------------------------------------------------
def sparse_backends():
    usable = afnet_kernels.backends()["cpu"]["usable"]
    return ["torch", "kernels"] if usable else ["torch"]


@pytest.mark.parametrize("arch,shift", list(itertools.product(RESNETS, (False, True))))
def test_sparse_equals_dense(arch: str, shift: bool) -> None:
    # float64: through 33 blocks of random weights fp32 rounding alone reaches 1e-5, while a
    # real difference (a wrong fill, a missed shift) is far above the 1e-10 we ask for here.
    T = 3
    model = build_model(arch, T, shift=shift).double()
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    masks = random_masks(num_gates(model), 2, T, seed=len(arch) + shift)
    model.execution = "dense"
    dense = model(video, masks=masks)
    model.execution = "sparse"
    for backend, layout in itertools.product(sparse_backends(), LAYOUTS):
        model.backend, model.memory_format = backend, layout
        sparse = model(video, masks=masks)
        assert relative_error(sparse, dense) < 1e-10, f"{backend}, {layout}"


@pytest.mark.parametrize("fill", ["none", "all", "one"])
def test_uniform_masks_every_block(fill: str) -> None:
    T = 3
    model = build_model("af_resnet50", T, shift=True)
    value = {"none": torch.zeros(2, T, dtype=torch.bool), "all": torch.ones(2, T, dtype=torch.bool)}.get(fill)
    if value is None:
        value = torch.zeros(2, T, dtype=torch.bool)
        value[1, 0] = True
    masks = [value] * num_gates(model)
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    dense, sparse = dense_and_sparse(model.double(), video.double(), masks)
    assert relative_error(sparse, dense) < 1e-10


def test_navigation_masks_equal_in_both_executions() -> None:
    model = build_model("af_resnet50", 3)
    video = torch.randn(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model.execution = "dense"
    dense, dense_masks = model(video, return_masks=True)
    model.execution = "sparse"
    sparse, sparse_masks = model(video, return_masks=True)
    assert all(torch.equal(a, b) for a, b in zip(dense_masks, sparse_masks))
    assert relative_error(sparse, dense) < 1e-5


def test_channels_last_input_in_dense() -> None:
    model = build_model("af_resnet18", 3)
    video = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    masks = random_masks(3, 2, 3, seed=5)
    model.execution = "dense"
    a = model(video, masks=masks)
    cl = video.reshape(6, 3, 32, 32).contiguous(memory_format=torch.channels_last).reshape(2, 3, 3, 32, 32)
    assert relative_error(model(cl, masks=masks), a) < 1e-5


# -- host syncs ---------------------------------------------------------------------------
def test_one_host_sync_per_af_stage(monkeypatch) -> None:
    model = build_model("af_resnet50", 3)
    video = torch.randn(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    model(video)  # warm the caches (F(0) is computed once per block and shape)
    reads = {"count_selected": 0, "tensor_reads": 0}
    count_selected = afnet.sparse.count_selected

    def counting(masks):
        reads["count_selected"] += 1
        return count_selected(masks)

    monkeypatch.setattr(afnet.sparse, "count_selected", counting)
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__", "__int__", "__float__")}

    def wrap(original):
        def read(self, *args, **kwargs):
            reads["tensor_reads"] += 1
            return original(self, *args, **kwargs)

        return read

    select_calls = []
    original_select = reference.select_frames

    def select(mask, num_selected=None):
        select_calls.append(num_selected)
        return original_select(mask) if num_selected is None else _select_known(mask, num_selected)

    def _select_known(mask, k):
        index, inverse = original_select(mask)
        assert index.numel() == k
        return index, inverse

    monkeypatch.setattr(reference, "select_frames", select)
    model.backend = "torch"
    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(original))
        model(video)
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        assert reads["count_selected"] == 3  # one per AF stage
    assert reads["tensor_reads"] == 3  # the .tolist() inside count_selected, nothing else
    assert len(select_calls) == 10 and all(k is not None for k in select_calls)


# -- caches -------------------------------------------------------------------------------
def test_caches_follow_weight_changes_and_training() -> None:
    model = build_model("af_resnet50", 3, shift=True)
    video = torch.randn(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    masks = random_masks(10, 1, 3, seed=3)
    dense, sparse = dense_and_sparse(model, video, masks)
    focal = model.base_model.layer2.refine_module[1]
    assert len(focal._inference_cache) > 0
    with torch.no_grad():  # in-place changes of a focal BN, a stem conv and a running stat
        focal.bn3.bias.add_(0.5)
        model.base_model.conv1.weight.mul_(1.1)
        model.base_model.layer3.base_transform[1].running_mean.add_(0.2)
    dense2, sparse2 = dense_and_sparse(model, video, masks)
    assert relative_error(dense2, dense) > 1e-3
    assert relative_error(sparse2, dense2) < 1e-5
    model.train()
    assert all(len(m._inference_cache) == 0 for m in model.modules() if hasattr(m, "_inference_cache"))
    model(video, masks=masks)  # training forward updates BN running stats
    model.eval()
    dense3, sparse3 = dense_and_sparse(model, video, masks)
    assert relative_error(sparse3, dense3) < 1e-5
    model.load_state_dict(random_state_like(model, 9))
    dense4, sparse4 = dense_and_sparse(model, video, masks)
    assert relative_error(sparse4, dense4) < 1e-5 and relative_error(dense4, dense3) > 1e-3


def test_zero_response_cached_per_spatial_size() -> None:
    model = build_model("af_resnet18", 2)
    masks = [torch.zeros(1, 2, dtype=torch.bool)] * 3
    for size in (32, 48, 32):
        dense, sparse = dense_and_sparse(model, torch.randn(1, 2, 3, size, size, generator=torch.Generator().manual_seed(size)), masks)
        assert relative_error(sparse, dense) < 1e-5
    focal = model.base_model.layer1.refine_module[0]
    assert sum(1 for k in focal._inference_cache._values if k[0] == "zero_response") == 2


# -- generic machinery (used by every focal block) ------------------------------------------
def _conv_bn(c_in, c_out, groups=1, bias=False, k=3):
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=bias).double()
    bn = nn.BatchNorm2d(c_out).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return conv.eval(), bn.eval()


@pytest.mark.parametrize("groups,bias,layout", list(itertools.product((1, 2), (False, True), LAYOUTS)))
def test_fold_conv_bn(groups: int, bias: bool, layout) -> None:
    conv, bn = _conv_bn(4, 6, groups, bias)
    x = torch.randn(3, 4, 9, 7, dtype=torch.float64).contiguous(memory_format=layout)
    w, b = fold_conv_bn(conv, bn)
    folded = FoldedConv(conv, bn, relu=True, memory_format=layout)
    expected = torch.relu(bn(conv(x)))
    torch.testing.assert_close(folded(x), expected)
    torch.testing.assert_close(nn.functional.conv2d(x, w, b, padding=1, groups=groups), bn(conv(x)))
    steps = fold_sequence([conv, bn, nn.ReLU(), nn.AvgPool2d(3, 2, 1)], layout)
    assert len(steps) == 2
    torch.testing.assert_close(run_steps(steps, x), nn.functional.avg_pool2d(expected, 3, 2, 1))


@pytest.mark.parametrize(
    "k_rows,relu,fill_kind,shift_div",
    list(itertools.product(((), (0,), (1, 4), (0, 1, 2, 3, 4, 5)), (False, True), ("none", "channel", "map"), (0, 4))),
)
def test_sparse_residual_matches_masked_formula(k_rows, relu, fill_kind, shift_div) -> None:
    torch.manual_seed(0)
    T, C = 3, 8
    x = torch.randn(2 * T, C, 5, 5, dtype=torch.float64)
    conv, bn = _conv_bn(C, C)
    branch = lambda z: bn(conv(z))  # noqa: E731
    shortcut = torch.randn_like(x)
    mask = torch.zeros(2 * T, dtype=torch.bool)
    mask[list(k_rows)] = True
    f0 = zero_response(branch, x)
    fill = {"none": None, "channel": f0.mean((1, 2)), "map": f0}[fill_kind]
    (selection,) = select_stage([mask.reshape(2, T)], reference)
    assert selection.count == len(k_rows)
    out = sparse_residual(x, selection, branch, shortcut, fill=fill, relu=relu, ops=reference, shift_div=shift_div)
    shifted = reference.temporal_shift(x, T, shift_div) if shift_div else x
    full = branch(shifted)
    rest = torch.zeros_like(full) if fill is None else (fill if fill.dim() == 3 else fill.reshape(-1, 1, 1)).expand_as(full)
    expected = shortcut + torch.where(mask.reshape(-1, 1, 1, 1), full, rest)
    if relu:
        expected = torch.relu(expected)
    torch.testing.assert_close(out, expected)
    assert isinstance(selection, FrameSelection)
