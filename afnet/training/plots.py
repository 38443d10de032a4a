"""PNG figures: training curves, per-module selection ratios (Figure 5), a clip's frames (Figure 6)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from afnet.training.runfiles import read_log  # noqa: E402

if TYPE_CHECKING:
    from afnet.tools.predict import Prediction

PathLike = Union[str, os.PathLike]


def _series(lines: List[Dict[str, Any]], key: str) -> List[float]:
    return [float("nan") if line.get(key) is None else line[key] for line in lines]


def plot_log(log_path: PathLike, png_path: PathLike) -> None:
    """Curves of a run's ``log.jsonl``: losses, the ratio loss, top-1/top-5, the selected ratio
    of every navigation module against the target, lr and τ, GFLOPs per video."""
    lines = read_log(log_path)
    if not lines:
        raise ValueError(f"{log_path} holds no epoch yet")
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, dict) or not isinstance(line.get("epoch"), int):
            raise ValueError(f"{log_path}: line {number} is not an epoch's record (no integer 'epoch')")
    epochs = [line["epoch"] for line in lines]

    def curves(ax, keys, title, log=False):
        for key, label in keys:
            if any(line.get(key) is not None for line in lines):
                ax.plot(epochs, _series(lines, key), marker="o", ms=3, label=label)
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_yscale("log")

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    curves(axes[0, 0], [("train_loss", "train loss"), ("train_ce", "train CE"), ("val_loss", "val CE")], "loss")
    curves(axes[0, 1], [("train_top1", "train top-1"), ("val_top1", "val top-1"), ("val_top5", "val top-5"),
                        ("val_map", "val mAP")], "accuracy")
    axes[0, 1].set_ylim(0, 1.02)
    ax = axes[0, 2]
    val = [line.get("val_selected_ratio") or [] for line in lines]
    for m in range(max(len(v) for v in val)):
        ax.plot(epochs, [v[m] if m < len(v) else float("nan") for v in val], marker="o", ms=3, label=f"module {m}")
    ax.plot(epochs, _series(lines, "rt_target"), "k--", label="target")
    ax.set_ylim(0, 1.05)
    ax.set_title("selected ratio (val) per navigation module", fontsize=10)
    curves(axes[1, 0], [("train_ratio_loss", "ratio loss (train)")], "ratio loss")
    curves(axes[1, 1], [("lr", "lr"), ("tau", "τ")], "lr and Gumbel τ (end of epoch)", log=True)
    curves(axes[1, 2], [("gflops", "paper convention"), ("gflops_executed", "executed (sparse)")],
           "GFLOPs / video (val masks)")
    for ax in axes.flat:
        ax.set_xlabel("epoch", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.95, wspace=0.25, hspace=0.35)
    fig.savefig(png_path, dpi=72)
    plt.close(fig)


def plot_selection(ratios: Sequence[float], names: Sequence[str], png_path: PathLike,
                   target: Optional[float] = None, title: str = "") -> None:
    """Bars of the mean selected ratio of every navigation module, in forward order: the
    measured counterpart of the paper's Figure 5."""
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(ratios) + 2), 4))
    ax.bar(range(len(ratios)), ratios, color="tab:blue")
    if target is not None:
        ax.axhline(target, color="k", ls="--", label=f"target RT {target:g}")
        ax.legend()
    short = [n.replace("base_model.", "") for n in names]
    ax.set_xticks(range(len(ratios)), short, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("selected ratio")
    ax.set_title(title or "frames selected per navigation module")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


def plot_prediction(prediction: "Prediction", png_path: PathLike) -> None:
    """The ``T`` frames in a row with the top classes in the title; frames the navigation did
    not select are dimmed, and a grid under them shows each module's decision (paper Figure 6)."""
    clip = prediction.clip.permute(0, 2, 3, 1).numpy()  # [T, S, S, 3]
    masks = prediction.masks.numpy()
    selection = prediction.selection.numpy()
    t, m = clip.shape[0], masks.shape[0]
    fig = plt.figure(figsize=(1.6 * t, 2.4 + 0.3 * m))
    grid = fig.add_gridspec(2, t, height_ratios=[4, 0.5 + 0.4 * m], hspace=0.1)
    for i in range(t):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(clip[i], alpha=0.35 + 0.65 * float(selection[i]))
        ax.set_xticks([])
        ax.set_yticks([])
        kept = selection[i] > 0
        for spine in ax.spines.values():
            spine.set_edgecolor("tab:green" if kept else "tab:red")
            spine.set_linewidth(3 if kept else 1)
        ax.set_title(f"#{prediction.frame_indices[i]}  {selection[i]:.0%}", fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    ax.imshow(masks, cmap="Greens", vmin=0, vmax=1.3, aspect="auto")
    ax.set_yticks(range(m), [n.replace("base_model.", "") for n in prediction.gate_names], fontsize=7)
    ax.set_xticks(range(t), [str(i) for i in range(t)], fontsize=7)
    ax.set_xlabel("frame (green: computed by the focal branch)")
    top = ", ".join(f"{name} {p:.0%}" for _, name, p in prediction.topk[:3])
    fig.suptitle(f"{os.path.basename(prediction.path)}: {top}", fontsize=10)
    fig.savefig(png_path, dpi=80, bbox_inches="tight")
    plt.close(fig)
