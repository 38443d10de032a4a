"""Static-shape paths of a budgeted model: torch.export, ONNX, torch.compile, CUDA graphs, and
``afnet export``. GPU cases skip with a reason when no GPU is visible."""

from __future__ import annotations

import pytest
import torch

import afnet
from afnet.cli import main
from afnet.tools.export import export_model, run_exported
from conftest import needs_cuda
from model_utils import build_model, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")
T = 4


def budgeted(arch: str = "af_resnet18", **options):
    model = build_model(arch, T, **options)
    model.frame_budget = 0.5
    return model


def clip(seed: int = 0, n: int = 2, size: int = 32, device: str = "cpu") -> torch.Tensor:
    return torch.randn(n, T, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)


def eager(model, video):
    with torch.inference_mode():
        return model(video)


@pytest.mark.parametrize("arch", ["af_resnet18", "af_mobilenetv3"])
@pytest.mark.parametrize("backend", ["kernels", "torch"])
def test_torch_export_round_trip(tmp_path, arch, backend) -> None:
    model = budgeted(arch)
    model.backend = backend
    path = export_model(model, clip(), tmp_path / "m.pt2", "pt2", backend=backend)
    other = clip(seed=1)  # the program is not specialised to the example's values
    assert relative_error(run_exported(path, other), eager(model, other)) < 1e-5  # fp32: oneDNN vs ATen convs


def test_onnx_runs_in_onnxruntime(tmp_path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'afnet[export]')")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'afnet[export]')")
    model = budgeted()
    path = export_model(model, clip(), tmp_path / "m.onnx", "onnx")
    model.backend = "torch"
    other = clip(seed=2)
    assert relative_error(run_exported(path, other), eager(model, other)) < 1e-5


def test_budget_graph_gathers_frames_without_padding_passes() -> None:
    """Under a budget every count is exact, so the exported gathers are plain index_selects: no
    where() over gathered frames (onnxruntime ran each as a full pass over them)."""
    model = afnet.freeze(budgeted(), backend="torch")
    with torch.inference_mode():
        program = torch.export.export(model, (clip(),))
    # Every graph, the stages' grad-mode regions (wrapped subgraphs) included.
    nodes = [n for m in program.graph_module.modules() if isinstance(m, torch.fx.GraphModule) for n in m.graph.nodes]
    frame_wheres = [n for n in nodes if "where" in str(n.target) and n.meta["val"].dim() == 4]
    assert frame_wheres == []
    assert len([n for n in nodes if "index_select" in str(n.target)]) >= 4, "the gathers are index_selects"


def test_export_refuses_the_threshold_rule(tmp_path) -> None:
    with pytest.raises(ValueError, match="static frame and cell counts: set a frame budget"):
        export_model(build_model("af_resnet18", T), clip(), tmp_path / "m.pt2")
    with pytest.raises(ValueError, match="ONNX export needs backend='torch'"):
        export_model(budgeted(), clip(), tmp_path / "m.onnx", "onnx", backend="kernels")


@pytest.mark.slow
def test_inductor_fullgraph_equals_eager() -> None:
    model = budgeted()
    video = clip()
    expected = eager(model, video)
    torch._dynamo.reset()
    compiled = torch.compile(afnet.freeze(model), fullgraph=True)
    with torch.inference_mode():
        out = compiled(video)
    assert relative_error(out, expected) < 1e-5


def test_cli_export_and_its_errors(tmp_path, capsys) -> None:
    out = tmp_path / "m.pt2"
    rc = main(["export", "--arch", "af_resnet18", "--frames", "4", "--frame-budget", "0.5,0.25,1",
               "--format", "pt2", "--out", str(out), "--size", "32"])
    assert rc == 0 and out.is_file()
    assert "relative error" in capsys.readouterr().out
    bad = [
        (["--frame-budget", "1.5"], "--frame-budget: every ratio must be in (0, 1]"),
        (["--frame-budget", "0.5,0.5"], "--frame-budget: frame_budget: got 2 ratios but the model has 3"),
        (["--size", "33"], "--size: must be a multiple of 32"),
        (["--out", str(tmp_path / "missing" / "m.pt2")], "--out: folder"),
        (["--checkpoint", str(tmp_path / "none.pth")], "--checkpoint: no such file"),
        (["--format", "tflite"], "--format: invalid choice"),
    ]
    for extra, message in bad:
        args = {"--arch": "af_resnet18", "--frames": "4", "--frame-budget": "0.5", "--format": "pt2",
                "--out": str(out), "--size": "32"}
        args.update(dict(zip(extra[::2], extra[1::2])))
        with pytest.raises(SystemExit) as exit_info:
            main(["export", *[item for pair in args.items() for item in pair]])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err, message


def test_cuda_graph_needs_cuda_and_static_counts() -> None:
    with pytest.raises(ValueError, match="needs a CUDA model and input"):
        afnet.cuda_graph(budgeted(), clip())


@needs_cuda
@pytest.mark.parametrize("arch", ["af_resnet50", "af_mobilenetv3"])
def test_cuda_graph_replays_eager_without_syncs(arch, no_tf32) -> None:
    model = budgeted(arch).cuda()
    video = clip(device="cuda", size=64)
    expected = eager(model, video)
    runner = afnet.cuda_graph(model, video)
    other = clip(seed=3, device="cuda", size=64)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.inference_mode():
            model(other)  # the budgeted eager forward never syncs either
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert relative_error(runner(video), expected) < 1e-4
    assert relative_error(runner(other), eager(model, other)) < 1e-4
    with pytest.raises(ValueError, match="must match the captured input"):
        runner(clip(device="cuda", size=32))
    with torch.no_grad():
        next(model.parameters()).mul_(1.01)
    with pytest.raises(RuntimeError, match="weights or settings changed"):
        runner(video)
    with pytest.raises(ValueError, match="static frame and cell counts"):
        afnet.cuda_graph(build_model(arch, T).cuda(), video)


@needs_cuda
def test_reduce_overhead_compile_equals_eager(no_tf32) -> None:
    model = budgeted("af_resnet50").cuda()
    video = clip(device="cuda", size=64)
    expected = eager(model, video)
    torch._dynamo.reset()
    compiled = torch.compile(afnet.freeze(model), mode="reduce-overhead", fullgraph=True)
    with torch.inference_mode():
        for _ in range(3):
            out = compiled(video)
    assert relative_error(out, expected) < 1e-3
