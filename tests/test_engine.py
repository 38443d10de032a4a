"""The inference engine: sparse equals dense, what it really runs, host reads, plan validity,
and that it never changes an answer (NaN, gradients in eval, stale weights, dtypes)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

import afnet
import afnet_kernels
import afnet_kernels.reference as reference
from afnet.engine import ExecutionContext, count_macs
from afnet.models.decisions import GateDecision
from afnet.engine.executor import run_focal_block, zero_response
from afnet.engine.folding import FoldedConv, StepOptions, fold_conv_bn, fold_sequence, run_steps
from afnet.engine.plan import BlockPlan
from afnet.engine.selection import FrameSelection, select_stage
from conftest import cpu_and_cuda, needs_cuda
from model_utils import HostReads, build_model, random_masks, random_state_like, relative_error
from model_utils import run_model as run

# 32x32 models: tiny tensors, where 2 threads only wait on each other's barriers (on a loaded
# machine 10x slower). The kernels' parallel paths are covered by test_ops at the default threads.
pytestmark = pytest.mark.usefixtures("one_thread")

RESNETS = ("af_resnet18", "af_resnet34", "af_resnet50", "af_resnet101")
LAYOUTS = (torch.contiguous_format, torch.channels_last)


def num_gates(model) -> int:
    return len(model.navigation_modules)


def sparse_backends():
    usable = afnet_kernels.backends()["cpu"]["usable"]
    return ["torch", "kernels"] if usable else ["torch"]


# -- sparse equals dense ---------------------------------------------------------------------
@pytest.mark.parametrize("arch,shift", list(itertools.product(RESNETS, (False, True))))
def test_sparse_equals_dense(arch: str, shift: bool) -> None:
    # float64: through 33 blocks of random weights fp32 rounding alone reaches 1e-5, while a
    # real difference (a wrong fill, a missed shift) is far above the 1e-10 we ask for here.
    T = 3
    model = build_model(arch, T, shift=shift).double()
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    masks = random_masks(num_gates(model), 2, T, seed=len(arch) + shift)
    dense, _ = run(model, video, "dense", masks)
    for backend, layout in itertools.product(sparse_backends(), LAYOUTS):
        sparse, used = run(model, video, "sparse", masks, backend, layout)
        assert all(torch.equal(u, m) for u, m in zip(used, masks))
        assert relative_error(sparse, dense) < 1e-10, f"{backend}, {layout}"


@pytest.mark.parametrize("fill", ["none", "all", "one"])
def test_uniform_masks_every_block(fill: str) -> None:
    T = 3
    model = build_model("af_resnet50", T, shift=True).double()
    value = {"none": torch.zeros(2, T, dtype=torch.bool), "all": torch.ones(2, T, dtype=torch.bool)}.get(fill)
    if value is None:
        value = torch.zeros(2, T, dtype=torch.bool)
        value[1, 0] = True
    masks = [value] * num_gates(model)
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dense, _ = run(model, video, "dense", masks)
    for backend in sparse_backends():
        assert relative_error(run(model, video, "sparse", masks, backend)[0], dense) < 1e-10


def test_masks_change_the_output() -> None:
    """Guard for the tests above: the focal branch contributes, so a wrong scatter would show."""
    T = 3
    model = build_model("af_resnet50", T)
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    outs = [run(model, video, "sparse", [torch.full((2, T), v)] * num_gates(model))[0] for v in (False, True)]
    assert relative_error(outs[0], outs[1]) > 1e-2


def test_navigation_masks_equal_in_both_executions() -> None:
    model = build_model("af_resnet50", 3)
    video = torch.randn(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    dense, dense_masks = run(model, video, "dense")
    sparse, sparse_masks = run(model, video, "sparse", backend="kernels")
    assert all(torch.equal(a, b) for a, b in zip(dense_masks, sparse_masks))
    assert relative_error(sparse, dense) < 1e-5


def test_channels_last_input_in_dense() -> None:
    model = build_model("af_resnet18", 3)
    video = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    masks = random_masks(3, 2, 3, seed=5)
    a = run(model, video, "dense", masks)[0]
    cl = video.reshape(6, 3, 32, 32).contiguous(memory_format=torch.channels_last).reshape(2, 3, 3, 32, 32)
    assert relative_error(run(model, cl, "dense", masks)[0], a) < 1e-5


# -- what the engine really runs -------------------------------------------------------------
def test_focal_convs_run_on_the_selected_frames_only() -> None:
    T = 4
    model = build_model("af_resnet50", T)
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    n = num_gates(model)
    masks = [torch.zeros(2, T, dtype=torch.bool) for _ in range(n)]
    masks[0][0, 1] = True  # layer1 focal block 0: 1 frame; block 1: none
    masks[2][:, :3] = True  # layer2 focal block 0: 6 frames; then 0, 0
    run(model, video, "sparse", masks, "kernels")  # builds the plan and F(0): not per-video work
    with count_macs() as counter:
        run(model, video, "sparse", masks, "kernels")
    # layer2 is 512 wide at 4x4; its focal conv3 (128 -> 512) ran once, on the 6 selected rows.
    layer2 = [(key[0], calls) for key, calls in counter.by_shape.items() if key[1:] == (128, 512, 4, 4)]
    assert layer2 == [(6, 1)], layer2
    # Nothing ran for the empty selections: 2 AF focal blocks with work in all.
    with count_macs() as none:
        run(model, video, "sparse", [torch.zeros(2, T, dtype=torch.bool)] * n, "kernels")
    assert none.macs < counter.macs and none.calls == counter.calls - 2 * 3


def test_executed_macs_come_from_what_ran() -> None:
    T = 3
    model = build_model("af_resnet50", T)
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    n = num_gates(model)
    full = afnet.count_flops(model, video, masks=[torch.ones(2, T, dtype=torch.bool)] * n)
    empty = afnet.count_flops(model, video, masks=[torch.zeros(2, T, dtype=torch.bool)] * n)
    # The paper convention scales the focal convs by the selected fraction, exactly as the
    # executed count (focal convs that did not run) does.
    assert full.executed - empty.executed == pytest.approx(full.paper - empty.paper, rel=1e-9)
    assert empty.executed < full.executed


# -- host reads ------------------------------------------------------------------------------
def test_host_read_counter_sees_reads_in_python_and_in_cpp() -> None:
    """The counter behind the tests below: each of these reads the tensor's values once."""
    x = torch.randn(6, generator=torch.Generator().manual_seed(2))
    reads_once = {
        "item": lambda: x.sum().item(),
        "bool": lambda: bool(x.any()),
        "int": lambda: int(x.argmax()),
        "tolist": lambda: x.tolist(),  # no dispatcher on the CPU: seen by the patched method
        "numpy": lambda: x.numpy(),
        "nonzero": lambda: torch.nonzero(x > 0),  # data-dependent output size: a sync on CUDA
        "bool mask": lambda: x[x > 0],
        "C++": lambda: x.narrow(0, torch.tensor(1), 2),  # ATen's C++ narrow reads its tensor start
    }
    for name, read in reads_once.items():
        with HostReads() as reads:
            read()
        assert reads.count == 1, (name, reads.reads)
    with HostReads() as reads:
        x[torch.tensor([0, 2])] + x.sum() * 2  # integer indexing and arithmetic read nothing
    assert reads.count == 0, reads.reads
    # A kernel reading its own input is invisible to the dispatcher: its arguments say it.
    mask = torch.tensor([[True, False, True]])
    with HostReads() as reads:
        index = afnet_kernels.select_frames(mask, num_selected=2, validate=False)[0]
        afnet_kernels.gather_frames(torch.randn(3, 2, 1, 1), index, 3, 0)  # validate=True by default
        afnet_kernels.select_frames(mask, validate=False)  # K itself is read back on CUDA
    assert [name for name, _ in reads.device_reading_calls] == ["afnet_kernels::gather_frames", "afnet_kernels::select_frames"]
    assert reads.count == 0


def test_one_host_read_per_af_stage_with_the_threshold_rule() -> None:
    model = build_model("af_resnet50", 3)
    video = torch.randn(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    run(model, video, "sparse", backend="kernels")  # builds the plan and F(0)
    with HostReads() as reads, torch.no_grad():
        model(video)
    # 1 NaN check of the fp32 input (CPU only), then 3 AF stages, one read of their frame counts each.
    assert reads.sites == ["executor.py:run_plan"] + ["selection.py:count_selected"] * 3, reads.sites
    reads.assert_kernels_read_nothing()


@pytest.mark.parametrize("arch", ["af_resnet50", "af_mobilenetv3"])
def test_fixed_policy_reads_nothing_back(arch: str) -> None:
    model = build_model(arch, 4, policy="uniform", rt=0.5)
    video = torch.randn(1, 4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    run(model, video, "sparse", backend="kernels")
    with HostReads() as reads, torch.no_grad():
        model(video.double().float())
    assert reads.sites == ["executor.py:run_plan"], reads.sites  # the NaN check of the input; no frame count
    reads.assert_kernels_read_nothing()


# -- the plan follows the weights ------------------------------------------------------------
def _sparse_equals_dense(model, video, masks) -> float:
    dense = run(model, video, "dense", masks)[0]
    return relative_error(run(model, video, "sparse", masks, "kernels")[0], dense)


def test_plan_rebuilt_after_every_kind_of_weight_change() -> None:
    model = build_model("af_resnet50", 3, shift=True)
    video = torch.randn(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    masks = random_masks(num_gates(model), 1, 3, seed=3)
    assert _sparse_equals_dense(model, video, masks) < 1e-5
    plan = model._plans.get(model.base_model, torch.channels_last)[0]
    before = run(model, video, "sparse", masks, "kernels")[0]

    with torch.no_grad():  # in-place no-grad updates of a focal BN, a stem conv and a running stat
        model.base_model.layer2.refine_module[1].bn3.bias.add_(0.5)
        model.base_model.conv1.weight.mul_(1.1)
        model.base_model.layer3.base_transform[1].running_mean.add_(0.2)
    assert model._plans.get(model.base_model, torch.channels_last)[0] is not plan
    assert _sparse_equals_dense(model, video, masks) < 1e-5
    assert relative_error(run(model, video, "sparse", masks, "kernels")[0], before) > 1e-3

    # optimizer.step() on a training step, then back to eval
    model.train()
    assert len(model._plans) == 0  # training drops the plan
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    logits = model(video, masks=masks)
    (logits / logits.detach().abs().max()).sum().backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # BN on 3 frames: raw gradients reach 1e9
    opt.step()
    model.eval()
    assert _sparse_equals_dense(model, video, masks) < 1e-5
    assert relative_error(run(model, video, "sparse", masks, "kernels")[0], before) > 1e-3

    model.load_state_dict(random_state_like(model, 9))
    assert _sparse_equals_dense(model, video, masks) < 1e-5
    model.double()
    assert _sparse_equals_dense(model, video.double(), masks) < 1e-10
    model.float()

    # .data writes bypass version counters: documented, and refresh_plan() is the remedy
    stale_before = run(model, video, "sparse", masks, "kernels")[0]
    model.base_model.layer1.refine_module[0].conv2.weight.data.mul_(1.5)
    stale = run(model, video, "sparse", masks, "kernels")[0]
    assert torch.equal(stale, stale_before)
    model.refresh_plan()
    assert _sparse_equals_dense(model, video, masks) < 1e-5


def test_plan_built_at_the_first_eval_forward_and_zero_response_cached_per_size() -> None:
    model = afnet.create_model("af_resnet18", num_classes=3, num_segments=2)
    model.load_state_dict(random_state_like(model, 0))
    model.eval()
    assert len(model._plans) == 0
    masks = [torch.zeros(1, 2, dtype=torch.bool)] * 3
    for size in (32, 48, 32):
        video = torch.randn(1, 2, 3, size, size, generator=torch.Generator().manual_seed(size))
        assert _sparse_equals_dense(model, video, masks) < 1e-5
    plan = model._plans.get(model.base_model, torch.channels_last)[0]
    assert len(plan.stages[0].focal[0].zero_responses) == 2


# -- the engine never changes an answer ------------------------------------------------------
@pytest.mark.parametrize("arch", ["af_resnet18", "af_mobilenetv3"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_input_propagates_as_in_dense(arch: str, value: float) -> None:
    model = build_model(arch, 3)
    video = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    video[1, 2] = value  # one frame of the second video
    dense = run(model, video, "dense")[0]
    sparse = run(model, video, "sparse", backend="kernels")[0]
    assert torch.equal(torch.isfinite(dense), torch.isfinite(sparse))
    assert not torch.isfinite(sparse[1]).any()
    assert relative_error(sparse[0], dense[0]) < 1e-5


def test_eval_with_autograd_gives_true_gradients() -> None:
    """Eval under autograd differentiates the function the model computes: its gradients equal
    central differences of the no-grad sparse forward (float64), for the input and a parameter of
    each kind; the gates decide by argmax, so their true gradient is zero and none is recorded."""
    model = build_model("af_resnet18", 3).double()
    video = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(7), dtype=torch.float64,
                        requires_grad=True)
    with pytest.warns(UserWarning, match="dense, differentiable path"):
        logits = model(video)
    assert model.last_execution == "dense"
    logits.square().sum().backward()
    params = dict(model.named_parameters())
    for name, p in params.items():
        assert (p.grad is None) == (".list_gen." in name), name

    def loss() -> float:
        with torch.no_grad():
            out = model(video)
        assert model.last_execution == "sparse"
        return float(out.square().sum())

    probes = {"input": video, **{name: params[name] for name in (
        "base_model.conv1.weight",                      # stem
        "base_model.layer2.base_module.0.conv1.weight",  # ample branch
        "base_model.layer2.refine_module.0.conv2.weight",  # focal branch, selected frames
        "base_model.layer2.refine_module.0.bn2.bias",      # focal BN: also F(0) of the unselected frames
        "base_model.layer2.att_gen.fc.0.weight",           # dynamic fusion
        "new_fc.weight",
        "base_model.layer2.list_gen.0.conv_gs.weight",     # a gate
    )}}
    eps = 1e-6
    for name, tensor in probes.items():
        grad = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
        i = int(grad.abs().argmax())  # the largest entry: the best-conditioned difference
        flat = tensor.detach().view(-1)
        original = float(flat[i])
        with torch.no_grad():
            flat[i] = original + eps
            up = loss()
            flat[i] = original - eps
            down = loss()
            flat[i] = original
        difference = (up - down) / (2 * eps)
        assert float(grad.view(-1)[i]) == pytest.approx(difference, rel=1e-5, abs=1e-6), name
        assert (abs(difference) > 1e-3) == (".list_gen." not in name), (name, difference)  # the probe says something
    with torch.no_grad():
        assert relative_error(model(video), logits) < 1e-10


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_input_dtype_must_match_the_model(dtype) -> None:
    model = build_model("af_resnet18", 3)
    with pytest.raises(ValueError, match=f"video dtype {dtype} does not match the model's dtype torch.float32"):
        model(torch.randn(1, 3, 3, 32, 32, dtype=dtype))


# -- training on the compiled ops -----------------------------------------------------------
@pytest.mark.skipif(not afnet_kernels.backends()["cpu"]["usable"], reason="needs afnet_kernels._C")
@pytest.mark.parametrize("arch", ["af_resnet18", "af_mobilenetv3"])
def test_training_step_equal_on_both_backends(arch: str) -> None:
    T = 4
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    target = torch.tensor([1, 2])
    results = {}
    for backend in ("torch", "kernels"):
        model = build_model(arch, T, shift=True).double()
        model.backend = backend
        model.train()
        masks = random_masks(num_gates(model), 2, T, seed=9)
        torch.manual_seed(0)  # the same dropout on both backends
        loss = nn.functional.cross_entropy(model(video, masks=masks), target)
        assert model.last_execution == "dense"
        with OpCounter() as ops_run:
            loss.backward()
        calls = {op: ops_run.count(op) for op in ("_blend_branches_backward", "_gather_frames_backward")}
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results[backend] = (loss.detach(), grads, calls)
    (loss_t, grads_t, calls_t), (loss_k, grads_k, calls_k) = results["torch"], results["kernels"]
    # The kernels' registered backward ops ran (and the reference's did not).
    assert all(count == 0 for count in calls_t.values()) and all(count > 0 for count in calls_k.values()), calls_k
    torch.testing.assert_close(loss_k, loss_t, rtol=1e-10, atol=0)
    assert grads_k.keys() == grads_t.keys()
    for name in grads_t:
        torch.testing.assert_close(grads_k[name], grads_t[name], rtol=1e-8, atol=1e-12, msg=name)


class OpCounter(TorchDispatchMode):
    """Counts the ATen and custom ops that run inside the block, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))

    def count(self, op: str) -> int:
        return sum(op in name for name in self.names)


# -- the executor's pieces -------------------------------------------------------------------
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


def test_fused_relu_is_replaced_in_exact_mode() -> None:
    conv, bn = _conv_bn(8, 8)
    conv, bn = conv.float(), bn.float()
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    x[0, :, 2, 2] = float("nan")
    folded = FoldedConv(conv, bn, relu=True, memory_format=torch.channels_last)
    expected = torch.relu(bn(conv(x)))
    exact = folded(x, StepOptions(exact=True))
    assert torch.equal(torch.isnan(exact), torch.isnan(expected)) and torch.isnan(exact).any()


@pytest.mark.parametrize(
    "k_rows,relu,fill,shift_div",
    list(itertools.product(((), (0,), (1, 4), (0, 1, 2, 3, 4, 5)), (False, True), (False, True), (0, 4))),
)
def test_focal_block_matches_masked_formula(k_rows, relu, fill, shift_div) -> None:
    torch.manual_seed(0)
    T, C = 3, 8
    x = torch.randn(2 * T, C, 5, 5, dtype=torch.float64)
    conv, bn = _conv_bn(C, C)
    shortcut_conv, shortcut_bn = _conv_bn(C, C, k=1)
    block = BlockPlan(
        branch=fold_sequence([conv, bn]), shortcut=fold_sequence([shortcut_conv, shortcut_bn]), has_residual=True,
        relu=relu, shift_div=shift_div, num_segments=T, fill_zero_response=fill,
    )
    mask = torch.zeros(2 * T, dtype=torch.bool)
    mask[list(k_rows)] = True
    (selection,) = select_stage([GateDecision(mask.reshape(2, T).double(), None)], reference)
    assert isinstance(selection, FrameSelection) and selection.count == len(k_rows)
    out = run_focal_block(block, x, selection, ExecutionContext(reference))
    shifted = reference.temporal_shift(x, T, shift_div) if shift_div else x
    full = bn(conv(shifted))
    rest = bn(conv(torch.zeros_like(x))) if fill else torch.zeros_like(full)
    expected = shortcut_bn(shortcut_conv(x)) + torch.where(mask.reshape(-1, 1, 1, 1), full, rest)
    if relu:
        expected = torch.relu(expected)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(zero_response(block, x, False), bn(conv(torch.zeros_like(x[:1])))[0])


def test_select_stage_reads_only_unknown_counts() -> None:
    masks = [torch.tensor([[1.0, 0, 1], [0, 0, 1]]), torch.tensor([[1.0, 1, 0], [0, 1, 1]])]
    with HostReads() as reads:
        selections = select_stage([GateDecision(masks[0], None), GateDecision(masks[1], 2)], reference)
    assert reads.sites == ["selection.py:count_selected"], reads.sites
    assert [s.count for s in selections] == [3, 4]
    with HostReads() as reads:
        select_stage([GateDecision(masks[1], 2)], afnet_kernels)
    assert reads.count == 0
    assert [(name, args["num_selected"], args["validate"]) for name, args in reads.kernel_calls] == [
        ("afnet_kernels::select_frames", 4, False)
    ]


def test_folded_execution_computes_every_frame_with_the_plan() -> None:
    T = 3
    model = build_model("af_resnet50", T, shift=True).double()
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    masks = random_masks(num_gates(model), 2, T, seed=12)
    dense = run(model, video, "dense", masks)[0]
    with count_macs() as sparse_macs:
        run(model, video, "sparse", masks, "kernels")
    with count_macs() as folded_macs:
        folded = run(model, video, "folded", masks, "kernels")[0]
    assert relative_error(folded, dense) < 1e-10
    # Every focal conv ran on all 6 frames: more work than the sparse run, none skipped.
    assert folded_macs.macs > sparse_macs.macs
    assert all(rows == 6 for (rows, *_), _ in folded_macs.by_shape.items())


def test_padded_counts_equal_exact_counts() -> None:
    T = 4
    model = build_model("af_resnet50", T, shift=True).double()
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    masks = random_masks(num_gates(model), 2, T, seed=14)
    exact = run(model, video, "sparse", masks, "kernels")[0]
    model.pad_counts = "pow2"
    for backend in sparse_backends():
        with count_macs() as counter:
            padded = run(model, video, "sparse", masks, backend)[0]
        assert relative_error(padded, exact) < 1e-12
        # Every focal batch is a power of two (the stage's largest count, rounded up).
        focal_rows = {key[0] for key in counter.by_shape if key[1:3] in ((64, 256), (128, 512), (256, 1024))}
        assert focal_rows and all(r & (r - 1) == 0 for r in focal_rows), focal_rows
    with pytest.raises(ValueError, match="pad_counts must be None or one of"):
        model.pad_counts = "fib"


def test_model_converted_inside_inference_mode() -> None:
    """Buffers converted under inference_mode are inference tensors, which keep no version counter."""
    model = build_model("af_resnet18", 2)
    video = torch.randn(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    with torch.inference_mode():
        model.double()
        sparse = model(video)
    assert model.last_execution == "sparse"
    assert relative_error(sparse, run(model, video, "dense")[0]) < 1e-10


# -- devices and precisions --------------------------------------------------------------------
@pytest.mark.parametrize("device", cpu_and_cuda())
def test_af_resnet_sparse_equals_dense_on_device(device, no_tf32) -> None:
    T = 3
    model = build_model("af_resnet50", T, shift=True).to(device)
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(16)).to(device)
    masks = [m.to(device) for m in random_masks(num_gates(model), 2, T, seed=17)]
    dense = run(model, video, "dense", masks)[0]
    for backend in ("kernels", "torch"):
        assert relative_error(run(model, video, "sparse", masks, backend)[0], dense) < 1e-5, backend


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_bf16_model_within_twice_the_dense_error(device) -> None:
    """bf16 sparse against the float64 computation: no worse than twice bf16 dense's own error."""
    T = 3
    model = build_model("af_resnet18", T, shift=True)
    video = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(18))
    masks = random_masks(num_gates(model), 2, T, seed=19)
    exact = run(model.double(), video.double(), "dense", masks)[0]
    low = model.to(device=device, dtype=torch.bfloat16)
    video, masks = video.to(device, torch.bfloat16), [m.to(device) for m in masks]
    dense = run(low, video, "dense", masks)[0].double().cpu()
    sparse = run(low, video, "sparse", masks, "kernels")[0].double().cpu()
    dense_err = relative_error(dense, exact)
    assert 0 < dense_err < 0.1  # bf16 really ran (and is not garbage)
    assert relative_error(sparse, exact) <= 2 * dense_err


@needs_cuda
def test_threshold_rule_syncs_once_per_stage_on_cuda() -> None:
    model = build_model("af_resnet50", 3).cuda()
    video = torch.randn(1, 3, 3, 64, 64, device="cuda")
    run(model, video, "sparse", backend="kernels")  # plan, F(0), cuDNN choices
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning) as syncs, torch.inference_mode():
            model(video)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len([w for w in syncs if "synchroniz" in str(w.message)]) == 3  # one read per AF stage


def test_threshold_rule_breaks_the_graph_only_at_its_per_stage_read() -> None:
    """The released rule reads each stage's frame counts (a graph break), and nothing else does."""
    model = build_model("af_resnet50", 3)
    video = torch.randn(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(20))
    frozen = afnet.freeze(model)
    torch._dynamo.reset()
    with torch.inference_mode():
        explanation = torch._dynamo.explain(frozen)(video)
    sites = {(frame.filename.rsplit("/", 1)[-1], frame.name) for b in explanation.break_reasons for frame in b.user_stack[-1:]}
    assert explanation.graph_break_count >= 3 and sites == {("selection.py", "count_selected")}, sites


def test_residual_adds_write_into_dead_shortcuts() -> None:
    """On oneDNN every residual block's last conv adds into its shortcut in place (a fresh
    downsample output, or an input nobody reads later): no block allocates a new output. The
    stage input, which the focal branch still needs after the first ample block, is never written."""
    model = build_model("af_resnet18", 3)
    frozen = afnet.freeze(model)
    video = torch.randn(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(21))
    with torch.no_grad():
        expected = frozen(video)
        with OpCounter() as ops_run:
            out = frozen(video)
    in_place = ops_run.count("mkldnn._convolution_pointwise_.binary")
    copies = ops_run.count("mkldnn._convolution_pointwise.binary")
    # AF-ResNet18: per AF stage 1 ample + 1 fuse block, plus 2 layer4 blocks: all residual.
    assert (in_place, copies) == (3 * 2 + 2, 0)
    assert torch.equal(out, expected)
    model.execution = "dense"
    with torch.no_grad():
        assert relative_error(out, model(video)) < 1e-5


@pytest.mark.parametrize("backend", ["kernels", "torch"])
def test_focal_blocks_scatter_into_their_shortcut(backend) -> None:
    """Every focal block writes its output into its shortcut (the downsample output, or the
    previous block's output, which nobody reads afterwards): the in-place scatter runs, the
    out-of-place one never does, and the answer equals the dense computation."""
    model = build_model("af_resnet50", 3)
    model.backend = backend
    masks = random_masks(num_gates(model), 1, 3, seed=22)
    masks[0] = torch.ones(1, 3, dtype=torch.bool)  # no block without work (K = 0 skips the scatter)
    masks = [m | torch.tensor([[True, False, False]]) for m in masks]
    frozen = afnet.freeze(model)
    video = torch.randn(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(23))
    with torch.no_grad(), OpCounter() as ops_run:
        out = frozen(video, masks=masks)
    assert ops_run.count("afnet_kernels.scatter_frames_") == (num_gates(model) if backend == "kernels" else 0)
    assert ops_run.count("afnet_kernels.scatter_frames.") == 0
    assert relative_error(out, run(model, video, "dense", masks)[0]) < 1e-5
