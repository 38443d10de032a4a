"""``afnet train``: the paper's training recipe, checkpoints that resume exactly, and the run log.

One epoch: every iteration sets the lr (step or cosine, optional warm-up) and the Gumbel
temperature τ, runs the dense differentiable forward (bf16 autocast on GPUs), and minimises
``CE + λ·mean_over_masks((mean(mask) − RT_now)²)`` with the target ratio ``RT_now`` of the
epoch; gradients are clipped to norm 20. Then the model is evaluated on the validation set
(sparse execution), a line is appended to ``RUN_DIR/log.jsonl`` and ``last.pth`` is written
(``best.pth`` too when the validation score improved).

Checkpoints hold the weights and the model config (``afnet.load_checkpoint`` /
``afnet.build_from_checkpoint`` read them) plus the training state: optimiser, epoch, best score,
the run config, and every rank's RNG state. The lr, τ and target ratio are functions of
(epoch, iteration), and each clip's sampling and augmentation a function of (seed, epoch,
index), so ``--resume`` continues exactly as the uninterrupted run would have.

A run folder belongs to one run (:func:`afnet.training.runfiles.claim_run_dir`: a lock, and no
earlier run's results replaced without ``--resume`` or ``overwrite``). Ctrl-C ends a run with
:class:`TrainingInterrupted`, whose message says where it stopped and how to resume.
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from afnet.tools.checkpoint import load_checkpoint, save_checkpoint
from afnet.tools.interrupts import sigint_received
from afnet.tools.progress import progress_bar, track
from afnet.data.datasets import Batch
from afnet.data.loader import SeededSampler, ShardSampler, make_loader
from afnet.data.transforms import normalize
from afnet.layers import Navigation
from afnet.training.losses import navigation_penalty, record_masks, record_spatial_masks
from afnet.engine import create_model
from afnet.training.schedules import set_temperature, target_ratio, temperature
from afnet.training.config import ConfigError, TrainConfig, save_config
from afnet.training.cost import FlopTable, flop_table
from afnet.training.data import RunData, build_data
from afnet.training.distributed import (
    DistInfo,
    all_reduce_sum,
    any_rank,
    convert_sync_batchnorm,
    gather_to_main,
    max_param_divergence,
    setup,
    teardown,
)
from afnet.training.evaluate import EvalResult, autocast, evaluate, model_loss
from afnet.training.metrics import topk_hits
from afnet.training.plots import plot_log
from afnet.training.optim import learning_rate, make_optimizer, set_learning_rate
from afnet.training.runfiles import RunFolderError, RunLock, append_log, atomic_copy, claim_run_dir, read_log, truncate_log

LOG_NAME = "log.jsonl"


@dataclass
class TrainSummary:
    """The outcome of :func:`train` (rank 0): the run folder, the last epoch's log line, the best score."""

    run_dir: Path
    last: Dict[str, Any]
    best_score: float
    best_epoch: int


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    if cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """``create_model`` from the config, initialised from ``cfg.pretrained`` when given."""
    try:
        model = create_model(
            cfg.arch, num_classes=num_classes, num_segments=cfg.frames, shift=cfg.shift, policy=cfg.policy,
            rt=cfg.rt, dropout=cfg.dropout, **cfg.model_options,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build the model from the config (arch, model_options, ...): {exc}") from None
    set_gate_bias(model, *cfg.nav_bias)
    if cfg.pretrained:
        init_from_pretrained(model, cfg.pretrained)
    return model


def set_gate_bias(model: nn.Module, skip: float, keep: float) -> None:
    """Initial logit biases of every navigation gate (``conv_gs.bias``: ``2t`` skip, ``2t+1`` keep).

    The released (1, 10) keeps every frame at first: under Gumbel noise a frame is dropped with
    probability ``σ(−9) ≈ 1e-4``, and the straight-through gradient is as small, so the gates
    only move over the paper's long schedules. A smaller margin lets short runs (the built-in
    task) learn the navigation in minutes.
    """
    for module in model.modules():
        if isinstance(module, Navigation):
            module.reset_gate_bias(skip, keep)


def _classifier_keys(model: nn.Module) -> Set[str]:
    """State-dict keys of the last linear layer (the classifier)."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return {f"{name}.weight", f"{name}.bias"}


def init_from_pretrained(model: nn.Module, path: str) -> None:
    """Load a released ImageNet backbone, a released video checkpoint or one of ours.

    The classifier is kept freshly initialised when the class count differs; any other key the
    checkpoint lacks or shapes differently is printed as a warning (fine-tuning from ImageNet
    leaves the navigation modules new, for example).
    """
    report = load_checkpoint(model, path, strict=False, check_config=False)
    classifier = _classifier_keys(model)
    replaced = [k for k, _, _ in report.mismatched if k in classifier]
    if replaced:
        print(f"afnet train: {path}: classifier replaced (class count differs): {', '.join(sorted(replaced))}")
    others = [k for k in report.missing if k not in classifier] + [k for k, _, _ in report.mismatched if k not in classifier]
    if others or report.unexpected:
        print(f"afnet train: warning: {path} does not cover the whole model: {report.describe()}", file=sys.stderr)


def _rng_state(device: torch.device) -> Dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


_STARTING = "before training started"  # Ctrl-C while the data, the model or the resumed state load


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`. The message says where the run stopped and how to resume it
    from its last checkpoint (``afnet train`` prints it as its one line)."""

    def __init__(self, where: str, checkpoint: Optional[Path]) -> None:
        if checkpoint is not None:
            then = f"resume with: afnet train --resume {shlex.quote(str(checkpoint))}"
        else:
            then = "no checkpoint was written yet (the first one ends epoch 1): start the run again"
        super().__init__(f"interrupted {where}; {then}")
        self.where, self.checkpoint = where, checkpoint


class Trainer:
    """One run of :func:`train` (state shared by the epoch loop, the checkpoints and the log).

    ``progress``: the bar inside each epoch and validation, as :func:`afnet.tools.progress.progress_bar`
    takes it (True, False, None: on a terminal); drawn on rank 0 only.
    """

    def __init__(self, cfg: TrainConfig, info: DistInfo, resume: Optional[str] = None,
                 progress: Optional[bool] = None) -> None:
        self.cfg, self.info = cfg, info
        self.progress = progress if info.is_main else False
        self.where = _STARTING  # what the run is doing, for the message of Ctrl-C
        self.checkpoint: Optional[Path] = Path(resume) if resume else None  # the latest one of this run
        self.run_dir = Path(cfg.out)
        self.data: RunData = build_data(cfg)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and in one process
        model = build_model(cfg, self.data.num_classes)
        rt = cfg.rt if cfg.rt is not None else model.config.get("rt")
        if rt is None:
            raise ConfigError("the target ratio is not set: give --rt (the model config has none either)")
        self.rt = float(rt)
        # Spatial navigation (model_options spatial=True): its ratio loss term targets rs.
        self.rs: Optional[float] = None
        if model.is_spatial:
            if model.config.get("rs") is None:
                raise ConfigError("spatial navigation needs its target ratio: set model_options.rs")
            self.rs = float(model.config["rs"])
        if cfg.sync_bn and info.enabled:
            convert_sync_batchnorm(model)
        self.model = model.to(info.device)
        # GFLOPs depend on shapes only; measured on the initial weights, so a resumed run logs
        # exactly the numbers of the uninterrupted one.
        clip = torch.zeros(1, cfg.frames, 3, cfg.size, cfg.size, device=info.device)
        self.table: Optional[FlopTable] = flop_table(self.model, clip) if info.is_main else None
        self.optimizer = make_optimizer(self.model, cfg)
        self.net: nn.Module = self.model
        if info.enabled:
            ids = [info.device.index] if info.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.amp_dtype = _amp_dtype(cfg, info.device)
        self.start_epoch, self.best_score, self.best_epoch = 0, -math.inf, 0
        # Gumbel noise and dropout draw from the global RNG: one stream per rank.
        torch.manual_seed(cfg.seed + info.rank)
        if resume:
            self._resume(resume)
        self.sampler = SeededSampler(len(self.data.train), seed=cfg.seed, rank=info.rank, world_size=info.world_size)
        loader_args = dict(workers=cfg.workers, pin_memory=cfg.pin_memory and info.device.type == "cuda",
                           persistent_workers=cfg.persistent_workers)
        self.train_loader = make_loader(self.data.train, self.sampler, batch_size=cfg.batch_size, drop_last=True, **loader_args)
        if len(self.train_loader) == 0:
            raise ConfigError(f"batch_size {cfg.batch_size} x {info.world_size} process(es) exceeds the "
                              f"{len(self.data.train)} training clips: no full batch per epoch")
        val_sampler = ShardSampler(len(self.data.val), info.rank, info.world_size)
        self.val_loader = make_loader(self.data.val, val_sampler, batch_size=cfg.batch_size, **loader_args)
        self.warned: Set[str] = set()

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint_extra(self, epoch: int, line: Dict[str, Any], rng: List[Dict[str, torch.Tensor]]) -> Dict[str, Any]:
        cfg = self.cfg
        return {
            "train_config": cfg.to_dict(),
            "data": {
                "size": cfg.size, "resize": cfg.resize, "frames": cfg.frames, "sampling": cfg.sampling,
                "image_template": cfg.image_template, "class_names": self.data.class_names,
                "num_classes": self.data.num_classes, "multi_label": self.data.multi_label,
                "builtin_task": {"videos": cfg.demo_videos, "seed": cfg.demo_seed} if cfg.uses_builtin_task else None,
            },
            "training_state": {
                "epoch": epoch + 1, "optimizer": self.optimizer.state_dict(), "rng": rng,
                "world_size": self.info.world_size, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "target_ratio": self.rt,
            },
            "metrics": line,
        }

    def _save(self, epoch: int, line: Dict[str, Any], improved: bool) -> None:
        rng = gather_to_main(self.info, _rng_state(self.info.device))
        if not self.info.is_main:
            return
        last = self.run_dir / "last.pth"
        save_checkpoint(self.model, last, **self._checkpoint_extra(epoch, line, rng))  # atomic
        self.checkpoint = last
        if improved:
            atomic_copy(last, self.run_dir / "best.pth")

    def _resume(self, path: str) -> None:
        state = load_checkpoint(self.model, path).extra.get("training_state")
        if not isinstance(state, dict):
            raise ConfigError(f"--resume {path}: not a training checkpoint (no training state); "
                              "use --pretrained to start a new run from its weights")
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"])
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])
        rng = state["rng"]
        if len(rng) == self.info.world_size:
            _set_rng_state(rng[self.info.rank], self.info.device)
        elif self.info.is_main:
            print(f"afnet train: warning: {path} was written by {len(rng)} process(es), this run has "
                  f"{self.info.world_size}: the random streams restart from --seed", file=sys.stderr)

    # -- one epoch -----------------------------------------------------------------------------
    def _warn_failures(self, batch: Batch) -> None:
        for failure in batch.failures:
            if failure.path not in self.warned:
                self.warned.add(failure.path)
                tqdm.write(f"afnet train: warning: skipping unreadable clip {failure.path} ({failure.reason})", file=sys.stderr)

    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        cfg, info = self.cfg, self.info
        self.sampler.set_epoch(epoch)
        self.net.train()
        rt_now = target_ratio(epoch, self.rt, rt_begin=cfg.rt_begin, rt_end=cfg.rt_end)
        rs_now = None if self.rs is None else target_ratio(epoch, self.rs, rt_begin=cfg.rt_begin, rt_end=cfg.rt_end)
        iters = len(self.train_loader)
        # Sums over clips, kept on the device so that a step reads nothing back (the progress bar
        # reads them every 10 steps): clips, loss, ce, ratio loss, top1, top5.
        sums = torch.zeros(6, dtype=torch.float64, device=info.device)
        ratio_sums: Optional[torch.Tensor] = None
        skipped = 0
        lr = tau = float("nan")
        self.where = f"at epoch {epoch + 1}, before its first step"
        bar = progress_bar(iters * cfg.batch_size, f"epoch {epoch + 1}/{cfg.epochs}", self.progress)
        for i, batch in enumerate(track(bar, self.train_loader, Batch.num_items)):
            self.where = f"at epoch {epoch + 1}, step {i + 1} of {iters}"
            skipped += len(batch.failures)
            self._warn_failures(batch)
            if any_rank(info, batch.video is None):
                continue  # every rank skips the step, so collectives stay matched
            lr = learning_rate(cfg, epoch, i, iters)
            set_learning_rate(self.optimizer, lr)
            tau = temperature(epoch, i, iters, kind=cfg.tau_schedule, t0=cfg.tau0, t1=cfg.tau1, t_end=cfg.tau_end)
            set_temperature(self.model, tau)
            video = normalize(batch.video.to(info.device, non_blocking=True))
            target = batch.target.to(info.device, non_blocking=True)
            with autocast(info.device, self.amp_dtype), record_masks(self.model) as masks, \
                    record_spatial_masks(self.model) as cells:
                logits = self.net(video)
            logits = logits.float()
            ce = model_loss(logits, target)
            # With spatial gates, the spatial term too, on the same schedule towards rs.
            ratio_loss = navigation_penalty(masks, rt_now, [c.float() for c in cells], rs_now)
            loss = ce + cfg.lam * ratio_loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
            self.optimizer.step()
            n = len(batch)
            hits = topk_hits(logits.detach(), target, (1, 5))
            sums += torch.stack([torch.tensor(n, dtype=torch.float64, device=info.device),
                                 *(t.detach().double() * n for t in (loss, ce, ratio_loss)),
                                 hits[1].sum().double(), hits[5].sum().double()])
            per_module = torch.stack([m.detach().float().mean() for m in masks]).double() * n
            ratio_sums = per_module if ratio_sums is None else ratio_sums + per_module
            if i % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", top1=f"{sums[4] / sums[0]:.3f}",
                                ratio=f"{float(per_module.mean()) / n:.2f}", lr=f"{lr:.2g}")
        self.where = f"at epoch {epoch + 1}, in its validation"
        no_ratios = torch.zeros(0, dtype=torch.float64, device=info.device)
        totals = all_reduce_sum(info, torch.cat([sums, ratio_sums if ratio_sums is not None else no_ratios,
                                                 torch.tensor([skipped], dtype=torch.float64, device=info.device)])).cpu()
        clips = float(totals[0])
        ratios = (totals[6:-1] / clips).tolist() if clips else []
        return {
            "lr": lr, "tau": tau, "rt_target": rt_now,
            "train_loss": float(totals[1] / clips), "train_ce": float(totals[2] / clips),
            "train_ratio_loss": float(totals[3] / clips), "train_top1": float(totals[4] / clips),
            "train_top5": float(totals[5] / clips), "train_selected_ratio": ratios,
            "train_clips": int(clips), "skipped": int(totals[-1]),
        }

    def validate(self) -> Optional[EvalResult]:
        result, self.table = evaluate(self.model, self.val_loader, self.info, amp_dtype=self.amp_dtype,
                                      table=self.table, progress=self.progress)
        return result

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> Optional[TrainSummary]:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            truncate_log(self.run_dir / LOG_NAME, self.start_epoch)
        started = time.perf_counter()
        line: Dict[str, Any] = {}
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            line = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            result = self.validate()
            divergence = max_param_divergence(info, self.model) if info.enabled else None
            improved = False
            if info.is_main:
                line.update(_val_fields(result, self.data.multi_label))
                score = line["val_map"] if self.data.multi_label else line["val_top1"]
                improved = score >= self.best_score  # ties: the later epoch (its ratios are closer to the target)
                if improved:
                    self.best_score, self.best_epoch = score, epoch + 1
                if divergence is not None:
                    line["rank_param_max_diff"] = divergence
                line["epoch_time_s"] = time.perf_counter() - t0
                append_log(self.run_dir / LOG_NAME, line)
                _print_epoch(line, cfg.epochs)
            self.where = f"at the end of epoch {epoch + 1}, while writing its checkpoints (each is replaced whole or not at all)"
            self._save(epoch, line, improved)
        if not info.is_main:
            return None
        if (self.run_dir / LOG_NAME).exists():
            plot_log(self.run_dir / LOG_NAME, self.run_dir / "training_curves.png")
        if cfg.epochs > self.start_epoch:
            print(f"afnet train: done in {time.perf_counter() - started:.0f} s; best val "
                  f"{'mAP' if self.data.multi_label else 'top-1'} {self.best_score:.4f} at epoch {self.best_epoch}; "
                  f"run folder {self.run_dir}")
        else:
            print(f"afnet train: nothing to do, the checkpoint is at epoch {self.start_epoch} >= --epochs {cfg.epochs}")
        last = read_log(self.run_dir / LOG_NAME)
        return TrainSummary(self.run_dir, last[-1] if last else line, self.best_score, self.best_epoch)


def _val_fields(result: EvalResult, multi_label: bool) -> Dict[str, Any]:
    out = {
        "val_top1": result.top1, "val_top5": result.top5, "val_loss": result.loss,
        "val_selected_ratio": result.selected_ratio, "val_selected_ratio_mean": result.selected_ratio_mean,
        "gflops": result.gflops, "gflops_executed": result.gflops_executed, "val_clips": result.num_clips,
        "val_failed": len(result.failed),
    }
    if multi_label:
        out["val_map"] = result.map
    if result.nav_precision is not None:  # the data knows which frames matter (the built-in task)
        out.update(val_nav_precision=result.nav_precision, val_nav_recall=result.nav_recall,
                   val_nav_base_rate=result.nav_base_rate, val_nav_blind_precision=result.nav_blind_precision)
    return out


def _print_epoch(line: Dict[str, Any], epochs: int) -> None:
    ratios = ", ".join(f"{r:.2f}" for r in line["val_selected_ratio"])
    print(f"epoch {line['epoch']}/{epochs}: loss {line['train_loss']:.3f} (ce {line['train_ce']:.3f}, "
          f"ratio {line['train_ratio_loss']:.4f}), train top-1 {line['train_top1']:.3f}, val top-1 "
          f"{line['val_top1']:.3f}, selected [{ratios}] (target {line['rt_target']:.2f}), "
          f"{line['gflops']:.3f} GFLOPs/video, {line['epoch_time_s']:.0f} s"
          + (f", {line['skipped']} skipped" if line["skipped"] else ""), flush=True)


def train(cfg: TrainConfig, resume: Optional[str] = None, *, overwrite: bool = False,
          progress: Optional[bool] = None) -> Optional[TrainSummary]:
    """Run training for ``cfg`` (resuming from the checkpoint ``resume``); under ``torchrun`` one
    call per rank. Returns the summary on rank 0, None on the other ranks.

    Args:
        overwrite: start in a folder that holds another run's results; its files are moved
            into ``RUN_DIR/replaced-N/`` (see :func:`afnet.training.runfiles.claim_run_dir`).
        progress: the progress bars, as :func:`afnet.tools.progress.progress_bar` takes them.
    Raises :class:`afnet.training.runfiles.RunFolderError` when the run folder cannot be used, and
    :class:`TrainingInterrupted` on Ctrl-C.
    """
    info = setup(cfg.device)
    lock: Optional[RunLock] = None
    trainer: Optional[Trainer] = None
    try:
        refused: Optional[RunFolderError] = None
        if info.is_main:  # rank 0 owns the folder; the others learn whether it could
            try:
                lock = claim_run_dir(cfg.out, resume=resume, overwrite=overwrite)
            except RunFolderError as exc:
                refused = exc
        if any_rank(info, refused is not None):
            raise refused or RunFolderError(f"rank 0 could not use the run folder {cfg.out}")
        trainer = Trainer(cfg, info, resume, progress=progress)
        return trainer.run()
    except KeyboardInterrupt:
        pass  # reported below, once the folder is released
    except Exception:
        if not sigint_received():
            raise
        # Ctrl-C surfaced as a failure it caused (a DataLoader worker it killed): an interrupt too.
    finally:
        if lock is not None:
            lock.release()
        teardown(info)
    if trainer is None:
        raise TrainingInterrupted(_STARTING, Path(resume) if resume else None)
    raise TrainingInterrupted(trainer.where, trainer.checkpoint)
