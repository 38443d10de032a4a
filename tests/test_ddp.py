"""torchrun DDP on the CPU (gloo): two processes on the built-in task against one process with the
same global batch; the sharded validation counts every clip exactly once.

The runs use the fixed ``uniform`` policy: with learned navigation, every rank draws its own
Gumbel noise, and the straight-through gradient depends on the noise even where the sampled masks
agree, so two ranks and one process could not be compared to float precision."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from afnet.training.runfiles import read_log
from afnet.training.trainer import train
from train_utils import state_of, tiny_config

# 20 clips: 16 train (4 steps of a global batch of 4) and 4 validation; 2 processes x 2 clips.
COMMON = {"frames": 4, "size": 32, "resize": 32, "epochs": 1, "workers": 0, "rt": 0.5, "dropout": 0.0,
          "policy": "uniform"}
SETS = {"demo_videos": 20}


def _torchrun_argv(out) -> list:
    flags = ["--frames", "4", "--size", "32", "--resize", "32", "--epochs", "1", "--workers", "0", "--rt", "0.5",
             "--policy", "uniform", "--dropout", "0", "--batch-size", "2", "--sync-bn", "--device", "cpu",
             "--out", str(out)]
    sets = [x for k, v in SETS.items() for x in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "afnet", "train", *flags, *sets]


def test_two_gloo_processes_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(_torchrun_argv(tmp_path / "ddp"), env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp_log = read_log(tmp_path / "ddp" / "log.jsonl")
    assert len(ddp_log) == 1 and ddp_log[0]["rank_param_max_diff"] == 0.0  # the ranks hold identical weights
    assert ddp_log[0]["train_clips"] == 16 and ddp_log[0]["val_clips"] == 4  # each clip once, no padding
    assert proc.stdout.count("epoch 1/1") == 1  # rank 0 alone logs

    single = train(tiny_config(tmp_path / "one", sets=SETS, batch_size=4, **COMMON))
    assert single.last["train_clips"] == 16
    a, b = state_of(tmp_path / "ddp" / "last.pth"), state_of(tmp_path / "one" / "last.pth")
    initial = state_of_initial(tmp_path)
    moved = max((b[k].double() - initial[k].double()).abs().max().item() for k in b if b[k].is_floating_point())
    differ = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
    assert moved > 1e-2  # training changed the weights ...
    assert differ < 1e-5, differ  # ... and two processes changed them as one process did (SyncBN, averaging)
    for key in ("train_loss", "train_top1", "val_top1", "val_loss"):
        assert ddp_log[0][key] == pytest.approx(single.last[key], rel=1e-4, abs=1e-5), key


def state_of_initial(tmp_path):
    """The weights both runs start from (``seed`` 0, as ``train`` builds them)."""
    from afnet.training.trainer import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config(tmp_path / "init", sets=SETS, **COMMON), 4)
    return model.state_dict()
