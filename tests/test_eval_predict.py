"""Evaluation and prediction: metrics against hand-computed cases, a rigged model whose numbers are
known in advance, GFLOPs as a function of the ratios, eval.json, predict's JSON and PNG."""

from __future__ import annotations

import json
import math

import matplotlib.image
import matplotlib.pyplot as plt
import pytest
import torch

import afnet
from afnet.cli import main as cli_main
from afnet.data.datasets import ClipDataset, MotionSource, RecordSource
from afnet.data.decode import DecodeError
from afnet.data.loader import ShardSampler, make_loader
from afnet.data.sampling import tsn_test_indices
from afnet.data.synthetic import MotionTask
from afnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from afnet.layers import Navigation
from afnet.training import plots
from afnet.training.cost import FlopTable, flop_table
from afnet.training.distributed import DistInfo
from afnet.training.evaluate import _summarise, evaluate
from afnet.training.metrics import average_precision, mean_average_precision, selection_precision_recall, topk_hits
from afnet.tools.predict import predict_many
from data_utils import frame_number, write_frame_folder, write_lines, write_numbered_video
from hand_flops import CLASSES, CONVS, FOCAL, NEW_FC, PAPER_ONLY

pytestmark = pytest.mark.usefixtures("one_thread")
T, SIZE = 4, 32


# -- metrics, by hand ----------------------------------------------------------------------------
SCORES = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
LABELS = torch.tensor([1, 1, 0, 0])


def test_topk_by_hand():
    hits = topk_hits(SCORES, LABELS, (1, 2, 5))
    assert hits[1].tolist() == [True, False, False, True]  # argmax 1, 0, 2, 0
    assert hits[2].tolist() == [True, True, False, True]  # sample 2's top two are {2, 1}
    assert hits[5].all()  # k is capped at the 3 classes
    multi = torch.tensor([[0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1]])
    assert topk_hits(SCORES, multi, (1,))[1].tolist() == [False, True, False, False]


def test_average_precision_by_hand():
    # class 0, ranked 0.6(+) 0.5(-) 0.2(+) 0.1(-): precisions 1/1 and 2/3 at the positives.
    assert average_precision(SCORES[:, 0], LABELS == 0) == pytest.approx((1 + 2 / 3) / 2)
    # class 1: 0.7(+), then 0.3 three times with one positive: recall steps 1/2 at precision 1,
    # then 1/2 at precision 2/4 (tied scores enter together).
    assert average_precision(SCORES[:, 1], LABELS == 1) == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert math.isnan(average_precision(SCORES[:, 2], LABELS == 2))
    assert mean_average_precision(SCORES, LABELS) == pytest.approx(((1 + 2 / 3) / 2 + 0.75) / 2)


def test_selection_precision_recall_by_hand():
    # 2 clips of 4 frames; the frames that matter: clip 0's frames 1 and 2, clip 1's frame 3.
    salient = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    selected = torch.tensor([  # [clip, module, frame]
        [[0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]],
        [[1, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
    ], dtype=torch.bool)
    scores = selection_precision_recall(selected, salient)
    # Module 0 selected 3 frames (0:1, 1:0, 1:3), 2 of which matter, and found 2 of the 3 that matter;
    # module 1 selected 5, the 3 that matter among them; module 2 selected none.
    assert scores.precision[:2] == pytest.approx([2 / 3, 3 / 5]) and math.isnan(scores.precision[2])
    assert scores.recall == pytest.approx([2 / 3, 1.0, 0.0])
    assert scores.base_rate == 3 / 8  # 3 of the 8 frames matter: the precision of a blind choice
    # Blind to the content, at each position's keep rate: the positions matter at rates (0, 1/2, 1/2,
    # 1/2); module 0 keeps them at (1/2, 1/2, 0, 1/2), module 1 at (1/2, 1/2, 1/2, 1).
    assert scores.blind_precision[:2] == pytest.approx([(1 / 4 + 1 / 4) / (3 / 2), (1 / 4 + 1 / 4 + 1 / 2) / (5 / 2)])
    assert math.isnan(scores.blind_precision[2])
    with pytest.raises(ValueError, match="salient"):
        selection_precision_recall(selected, salient[:, :3])


def test_summary_refuses_overlapping_shards():
    shard = {"index": [torch.tensor([0, 1])], "scores": [SCORES[:2]], "target": [LABELS[:2]],
             "ratios": [torch.ones(2, 3)], "failed": [], "time": (1.0, 2, 1.0)}
    with pytest.raises(RuntimeError, match="evaluated twice"):
        _summarise([shard, shard], None, None)


# -- a model whose outputs are known ---------------------------------------------------------------
def rigged_model(bias=(0.0, 3.0, 1.0, 2.0)) -> torch.nn.Module:
    """Uniform policy at RT 0.5 (2 of 4 frames in every module) and a classifier that ignores the
    features: the logits are ``bias`` for every clip."""
    torch.manual_seed(0)
    model = afnet.create_model("af_resnet18", num_classes=len(bias), num_segments=T, policy="uniform", rt=0.5)
    with torch.no_grad():
        model.new_fc.weight.zero_()
        model.new_fc.bias.copy_(torch.tensor(bias))
    return model.eval()


@pytest.fixture
def listed_videos(tmp_path):
    labels = [1, 1, 0, 3, 2]
    for i in range(len(labels)):
        write_numbered_video(tmp_path / f"v{i}.mp4", 20 + 3 * i)
    (tmp_path / "bad.mp4").write_bytes(b"\x00garbage" * 50)
    lines = [f"v{i}.mp4 {label}" for i, label in enumerate(labels)] + ["bad.mp4 2"]
    return write_lines(tmp_path / "val.txt", lines), labels


def test_eval_numbers_match_the_hand_computed_case(tmp_path, listed_videos):
    val_list, labels = listed_videos
    model = rigged_model()
    ckpt = tmp_path / "rigged.pth"
    afnet.save_checkpoint(model, ckpt, data={"size": SIZE, "resize": SIZE, "class_names": list("abcd")})
    reports = {}
    for execution in ("sparse", "dense"):
        out = tmp_path / execution
        assert cli_main(["eval", "--checkpoint", str(ckpt), "--data-root", str(tmp_path), "--list", str(val_list),
                         "--execution", execution, "--batch-size", "2", "--workers", "0", "--out", str(out)]) == 0
        reports[execution] = json.loads((out / "eval.json").read_text())
        assert matplotlib.image.imread(out / "selection.png").ndim == 3
    report = reports["sparse"]
    # Constant logits (0, 3, 1, 2): the prediction is always class 1, the top two {1, 3}.
    assert report["num_clips"] == 5 and report["top1"] == pytest.approx(2 / 5) and report["top5"] == 1.0
    log_softmax = torch.log_softmax(torch.tensor([0.0, 3.0, 1.0, 2.0]), 0)
    assert report["loss"] == pytest.approx(-sum(log_softmax[c].item() for c in labels) / 5, rel=1e-5)
    assert report["selected_ratio"] == [0.5, 0.5, 0.5] and report["selected_ratio_mean"] == 0.5
    assert [f["path"].split("/")[-1] for f in report["failed"]] == ["bad.mp4"] and report["num_failed"] == 1
    # All scores are equal within a class, so every positive ties with every sample: AP = positives / 5.
    assert report["map"] == pytest.approx((1 / 5 + 2 / 5 + 1 / 5 + 1 / 5) / 4)
    # Counted by hand (tests/hand_flops.py: this architecture, size and class count): T frames of
    # everything but the focal convs, and each stage's focal convs on the 2 frames it keeps.
    assert (model.config["arch"], model.config["num_classes"], SIZE) == ("af_resnet18", CLASSES, 32)
    assert report["gflops"] * 1e9 == pytest.approx(T * (CONVS + PAPER_ONLY) + 2 * sum(FOCAL), rel=1e-12)
    assert report["gflops_executed"] * 1e9 == pytest.approx(T * (CONVS + NEW_FC) + 2 * sum(FOCAL), rel=1e-12)
    assert report["clips_per_s"] > 0
    # Nothing says which frames of listed files matter: no navigation precision.
    assert all(report[k] is None for k in ("nav_precision", "nav_recall", "nav_base_rate", "nav_blind_precision"))
    dense = reports["dense"]
    for key in ("top1", "top5", "map", "selected_ratio", "gflops", "gflops_executed", "num_clips", "failed"):
        assert dense[key] == report[key], key
    assert dense["loss"] == pytest.approx(report["loss"], rel=1e-5)


class PixelGates(torch.nn.Module):
    """A stand-in model whose three "navigation modules" decide from the pixels: module 0 keeps
    the frames that show the square (a colour channel 120 above the others on over 100 pixels, as
    in test_data), module 1 the others, module 2 frames 0 and 1."""

    def forward(self, video: torch.Tensor, return_masks: bool = True):
        std, mean = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_STD, IMAGENET_MEAN))
        rgb = (video * std + mean) * 255  # [N, T, 3, H, W], as loaded
        excess = torch.stack([rgb[:, :, c] - rgb[:, :, [o for o in range(3) if o != c]].mean(dim=2) for c in (0, 2)])
        shows = ((excess > 120).sum(dim=(3, 4)) > 100).any(dim=0)  # [N, T]
        first_two = (torch.arange(video.shape[1]) < 2).expand_as(shows)
        return torch.zeros(video.shape[0], 4), [shows, ~shows, first_two]


def test_evaluate_scores_each_modules_frames_against_the_task():
    task = MotionTask(seed=0)
    clips = ClipDataset(MotionSource(task, 0, 6), num_segments=T, transform=EvalTransform(64, 64), train=False)
    loader = make_loader(clips, ShardSampler(6, 0, 1), batch_size=4)  # two batches: 4 clips, then 2
    table = FlopTable(("a", "b", "c"), 1.0, 1.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    result, _ = evaluate(PixelGates(), loader, DistInfo(), table=table)
    shown = torch.tensor([task.shows_square(i, tsn_test_indices(task.num_frames, T)) for i in range(6)])  # [6, T]
    # The pixel test finds exactly the frames the task says show the square, clip by clip.
    assert result.nav_precision[:2] == [1.0, 0.0] and result.nav_recall[:2] == [1.0, 0.0]
    assert result.nav_precision[2] == float(shown[:, :2].sum()) / 12  # 2 frames of 6 clips
    assert result.nav_recall[2] == float(shown[:, :2].sum()) / float(shown.sum())
    assert result.nav_base_rate == float(shown.sum()) / shown.numel()
    assert 0 < result.nav_base_rate < 1 and result.nav_precision[2] not in (0.0, 1.0)
    # Module 2 decides by position alone: a content-blind choice at its position rates does as well.
    assert result.nav_blind_precision[2] == pytest.approx(result.nav_precision[2])
    assert result.nav_blind_precision[0] < 1.0


def test_eval_of_a_multi_label_list(tmp_path, listed_videos):
    label_sets = ["1,3", "0", "2,3", "0,1,2"]
    write_lines(tmp_path / "multi.txt", [f"v{i}.mp4 {labels}" for i, labels in enumerate(label_sets)])
    ckpt = tmp_path / "rigged.pth"
    afnet.save_checkpoint(rigged_model(), ckpt, data={"size": SIZE, "resize": SIZE})
    assert cli_main(["eval", "--checkpoint", str(ckpt), "--data-root", str(tmp_path), "--list", str(tmp_path / "multi.txt"),
                     "--workers", "0", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    # Constant scores (0, 3, 1, 2): top-1 is class 1, in the label sets of clips 0 and 3.
    assert report["top1"] == pytest.approx(2 / 4)
    # Per class, all scores tie, so AP = positives / 4: classes 0..3 have 2, 2, 2, 2 positives.
    assert report["map"] == pytest.approx(0.5)
    sig = torch.sigmoid(torch.tensor([0.0, 3.0, 1.0, 2.0]))
    hot = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.float)
    bce = -(hot * sig.log() + (1 - hot) * (1 - sig).log()).mean()
    assert report["loss"] == pytest.approx(bce.item(), rel=1e-5)


def test_flop_table_is_count_flops_at_the_measured_ratios():
    torch.manual_seed(1)
    model = afnet.create_model("af_resnet18", num_classes=3, num_segments=T).eval()
    for nav in (m for m in model.modules() if isinstance(m, Navigation)):
        with torch.no_grad():
            nav.conv_gs.bias.zero_()  # gates decided by the input: mixed masks
    video = torch.randn(3, T, 3, SIZE, SIZE)
    with torch.inference_mode():
        _, masks = model(video, return_masks=True)
    ratios = [m.float().mean().item() for m in masks]
    assert any(0 < r < 1 for r in ratios), ratios
    table = flop_table(model, torch.zeros(1, T, 3, SIZE, SIZE))
    assert table.names == ("base_model.layer1.list_gen.0", "base_model.layer2.list_gen.0", "base_model.layer3.list_gen.0")
    paper, executed = table.at(ratios)
    direct = afnet.count_flops(model, video)
    assert paper == pytest.approx(direct.paper, rel=1e-9) and executed == pytest.approx(direct.executed, rel=1e-9)
    assert table.at([1, 1, 1])[0] > paper > table.at([0, 0, 0])[0]


# -- prediction ----------------------------------------------------------------------------------
def test_predict_writes_json_and_png_for_videos_and_frame_folders(tmp_path, capsys):
    model = rigged_model()
    ckpt = tmp_path / "m.pth"
    afnet.save_checkpoint(model, ckpt, data={"size": SIZE, "resize": SIZE, "class_names": ["a", "b", "c", "d"]})
    video = write_numbered_video(tmp_path / "walk.mp4", 30)
    folder = write_frame_folder(tmp_path / "jump", 9)
    out = tmp_path / "pred"
    assert cli_main(["predict", str(video), str(folder), "--checkpoint", str(ckpt), "--topk", "2",
                     "--batch-size", "1", "--workers", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "walk.mp4: b 0." in printed and ", d 0." in printed
    for stem, frames in (("walk", 30), ("jump", 9)):
        result = json.loads((out / f"{stem}.json").read_text())
        probs = torch.softmax(torch.tensor([0.0, 3.0, 1.0, 2.0]), 0)
        assert [t["name"] for t in result["topk"]] == ["b", "d"]
        assert result["topk"][0]["prob"] == pytest.approx(probs[1].item(), rel=1e-5)
        assert result["frame_indices"] == tsn_test_indices(frames, T)
        assert result["masks"] == [[0, 1, 0, 1]] * 3  # uniform policy: frames floor(2·(i + 1/2))
        assert result["selected_ratio"] == [0.5] * 3 and result["frame_selection"] == [0.0, 1.0, 0.0, 1.0]
        image = matplotlib.image.imread(out / f"{stem}.png")
        assert image.ndim == 3 and image.shape[1] > image.shape[0]  # frames in a row


def test_predict_streams_batches_and_python_api(tmp_path, monkeypatch):
    paths = [str(write_numbered_video(tmp_path / f"c{i}.mp4", 12)) for i in range(6)]
    (tmp_path / "bad.mp4").write_bytes(b"x" * 10)
    reads = []
    original = RecordSource.read
    monkeypatch.setattr(RecordSource, "read", lambda self, i, choose: reads.append(i) or original(self, i, choose))
    model = rigged_model()
    results = predict_many(model, paths[:3] + [str(tmp_path / "bad.mp4")] + paths[3:], size=SIZE, resize=SIZE,
                           batch_size=2)
    first = next(results)
    assert len(reads) == 2  # only the first batch was read
    rest = list(results)
    assert [type(r).__name__ for r in [first] + rest] == ["Prediction"] * 3 + ["Failure"] + ["Prediction"] * 3
    assert [frame_number(f) for f in first.clip] == tsn_test_indices(12, T)
    one = afnet.predict(model, paths[0], size=SIZE, resize=SIZE, class_names=list("abcd"))
    assert one.topk[0][1] == "b" and one.masks.shape == (3, T) and one.masks.dtype == torch.bool
    with pytest.raises(DecodeError, match="bad.mp4"):
        afnet.predict(model, str(tmp_path / "bad.mp4"), size=SIZE, resize=SIZE)


def test_plot_log_command(tmp_path, capsys, monkeypatch):
    lines = [{"epoch": e, "train_loss": 1.0 / e, "train_ce": 0.9 / e, "train_ratio_loss": 0.01, "train_top1": 0.3 * e,
              "val_top1": 0.25 * e, "val_top5": 1.0, "val_loss": 1.1 / e, "val_selected_ratio": [1.0, 0.8 - 0.1 * e],
              "rt_target": 1.0 - 0.2 * e, "lr": 0.01, "tau": 0.5 / e, "gflops": 1.0, "gflops_executed": 0.9}
             for e in (1, 2)]
    write_lines(tmp_path / "log.jsonl", [json.dumps(line) for line in lines])
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figure, to read what it drew
    assert cli_main(["plot-log", str(tmp_path)]) == 0
    (figure,) = figures
    panels = {ax.get_title(): ax for ax in figure.axes}

    def drawn(title):
        return {line.get_label(): (list(line.get_xdata()), pytest.approx(list(line.get_ydata())))
                for line in panels[title].get_lines()}

    # The curves are the log's values, epoch by epoch, each in its panel under its name.
    assert drawn("loss") == {"train loss": ([1, 2], [1.0, 0.5]), "train CE": ([1, 2], [0.9, 0.45]),
                             "val CE": ([1, 2], [1.1, 0.55])}
    assert drawn("accuracy") == {"train top-1": ([1, 2], [0.3, 0.6]), "val top-1": ([1, 2], [0.25, 0.5]),
                                 "val top-5": ([1, 2], [1.0, 1.0])}  # no val_map in the log: no curve
    assert drawn("selected ratio (val) per navigation module") == {
        "module 0": ([1, 2], [1.0, 1.0]), "module 1": ([1, 2], [0.7, 0.6]), "target": ([1, 2], [0.8, 0.6])}
    assert drawn("lr and Gumbel τ (end of epoch)") == {"lr": ([1, 2], [0.01, 0.01]), "τ": ([1, 2], [0.5, 0.25])}
    assert drawn("GFLOPs / video (val masks)") == {"paper convention": ([1, 2], [1.0, 1.0]),
                                                   "executed (sparse)": ([1, 2], [0.9, 0.9])}
    plt.close(figure)
    assert matplotlib.image.imread(tmp_path / "training_curves.png").shape == (7 * 72, 13 * 72, 4)  # 13 x 7 in at 72 dpi
    with pytest.raises(SystemExit):
        cli_main(["plot-log", str(tmp_path / "nope")])
    assert "RUN_DIR" in capsys.readouterr().err


@pytest.mark.parametrize("arch, options", [("af_resnet18", {}), ("af_mobilenetv3", {}),
                                           ("af_resnet18", {"first_layer_navigation": True})])
def test_gate_names_follow_the_forward_order(arch, options):
    """The names label the masks: they must be the gates in the order the forward calls them."""
    model = afnet.create_model(arch, num_classes=3, num_segments=2, **options).eval()
    called = []
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: called.append(name))
             for name, m in model.named_modules() if isinstance(m, Navigation)]
    with torch.inference_mode():
        masks = model(torch.randn(1, 2, 3, 64, 64), return_masks=True)[1]
    for h in hooks:
        h.remove()
    assert model.gate_names() == called and len(called) == len(masks)
