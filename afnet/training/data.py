"""The datasets of a run, from its config: the built-in task, or lists / trees checked up front."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from afnet.data.datasets import ClipDataset, MotionSource, RecordSource
from afnet.data.lists import (
    DataError,
    check_exist,
    is_multi_label,
    load_entries,
    num_classes_of,
    read_class_names,
)
from afnet.data.synthetic import CLASSES, MotionTask, demo_split
from afnet.data.transforms import EvalTransform, TrainTransform
from afnet.training.config import TrainConfig


@dataclass
class RunData:
    """Training and validation datasets, and what the model needs to know about the classes."""

    train: ClipDataset
    val: ClipDataset
    num_classes: int
    multi_label: bool
    class_names: Optional[List[str]]


def eval_transform(cfg: TrainConfig) -> EvalTransform:
    return EvalTransform(cfg.size, resize=_size(cfg.resize))


def _size(value):
    return tuple(value) if isinstance(value, list) else value


def build_data(cfg: TrainConfig) -> RunData:
    """Datasets for ``cfg``. Listed files that do not exist are a :class:`DataError` here, before
    any training (the message lists the first few)."""
    train_tf = TrainTransform(cfg.size, scales=cfg.scales, flip=cfg.flip, resize=_size(cfg.train_resize))
    test_tf = eval_transform(cfg)
    if cfg.uses_builtin_task:
        task = MotionTask(seed=cfg.demo_seed)
        n_train, n_val = demo_split(cfg.demo_videos)
        train_src, val_src = MotionSource(task, 0, n_train), MotionSource(task, n_train, n_val)
        names: Optional[List[str]] = list(CLASSES)
        num_classes, multi = len(CLASSES), False
    else:
        train_records, tree_names = load_entries(cfg.train_list, cfg.data_root)
        val_records, _ = load_entries(cfg.val_list, cfg.data_root, tree_names)
        check_exist(train_records, cfg.train_list)
        check_exist(val_records, cfg.val_list)
        names = read_class_names(cfg.class_names) if cfg.class_names else tree_names
        implied = max(num_classes_of(train_records), num_classes_of(val_records))
        num_classes = cfg.num_classes or (len(names) if names else implied)
        if implied > num_classes:
            given = "--num-classes" if cfg.num_classes else "--class-names"
            raise DataError(f"the lists hold label {implied - 1}, but {given} gives only {num_classes} classes")
        multi = is_multi_label(train_records) or is_multi_label(val_records)
        train_src = RecordSource(train_records, num_classes, multi_label=multi, template=cfg.image_template)
        val_src = RecordSource(val_records, num_classes, multi_label=multi, template=cfg.image_template)
    if names is not None and len(names) != num_classes:
        raise DataError(f"--class-names gives {len(names)} names but --num-classes is {num_classes}")
    return RunData(
        ClipDataset(train_src, num_segments=cfg.frames, transform=train_tf, train=True, sampling=cfg.sampling),
        ClipDataset(val_src, num_segments=cfg.frames, transform=test_tf, train=False, sampling=cfg.sampling),
        num_classes,
        multi,
        names,
    )
