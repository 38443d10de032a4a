"""Prediction: the top-k classes of a clip, and which frames each navigation module kept.

``afnet.predict(model, path)`` runs one video file or frame folder; :func:`predict_many` runs a
long list in batches through a DataLoader, yielding one result at a time, so memory stays flat
however many clips there are. Clips are sampled and cropped as in evaluation (segment centres,
resize, centre crop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from afnet.data.datasets import ClipDataset, Failure, RecordSource
from afnet.data.decode import DEFAULT_TEMPLATE, DecodeError
from afnet.data.lists import VideoRecord
from afnet.data.loader import ShardSampler, make_loader
from afnet.data.transforms import Size, EvalTransform, normalize


@dataclass
class Prediction:
    """One clip's result.

    Attributes:
        path: the video file or frame folder.
        scores: class probabilities ``[C]`` (softmax; sigmoid for multi-label models).
        topk: ``(class index, class name, probability)``, best first.
        masks: bool ``[M, T]``: frame t kept by navigation module m.
        frame_indices: the ``T`` 0-based frames of the video the clip was made of.
        gate_names: the navigation modules' names, in the masks' order.
        clip: the uint8 frames the model saw, ``[T, 3, S, S]``.
    """

    path: str
    scores: torch.Tensor
    topk: List[Tuple[int, str, float]]
    masks: torch.Tensor
    frame_indices: List[int]
    gate_names: List[str]
    clip: torch.Tensor

    @property
    def selection(self) -> torch.Tensor:
        """Mean selection of each frame over the modules, ``[T]`` in [0, 1]."""
        return self.masks.float().mean(dim=0)

    def as_dict(self) -> Dict[str, Any]:
        """The JSON form (``<clip name>.json``)."""
        return {
            "path": self.path,
            "topk": [{"class": c, "name": n, "prob": p} for c, n, p in self.topk],
            "frame_indices": self.frame_indices,
            "gates": self.gate_names,
            "masks": self.masks.int().tolist(),
            "selected_ratio": self.masks.float().mean(dim=1).tolist(),
            "frame_selection": self.selection.tolist(),
        }


def count_images(folder: str, template: str = DEFAULT_TEMPLATE) -> int:
    """Images ``template.format(1), template.format(2), ...`` present in ``folder`` (stops at the first gap)."""
    n = 0
    while os.path.isfile(os.path.join(folder, template.format(n + 1))):
        n += 1
    return n


def clip_record(path: str, template: str = DEFAULT_TEMPLATE) -> VideoRecord:
    """A video file, or a frame folder with its images counted (label 0: unknown)."""
    if os.path.isdir(path):
        return VideoRecord(path, (0,), count_images(path, template))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"clip {path!r} is neither a video file nor a frame folder")
    return VideoRecord(path, (0,))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def predict_many(
    model: nn.Module,
    paths: Sequence[str],
    *,
    size: int = 224,
    resize: Optional[Size] = None,
    class_names: Optional[Sequence[str]] = None,
    topk: int = 5,
    batch_size: int = 8,
    workers: int = 0,
    template: str = DEFAULT_TEMPLATE,
    multi_label: bool = False,
) -> Iterator[Union[Prediction, Failure]]:
    """Predict every clip of ``paths`` in order, ``batch_size`` clips per forward pass.

    Yields a :class:`Prediction` per readable clip and a :class:`afnet.data.datasets.Failure`
    per unreadable one. Missing paths raise ``FileNotFoundError`` before anything runs.

    Args:
        model: an AF model (``model.num_segments`` frames per clip); it is put in eval mode.
        size, resize: the centre crop and the resize before it (evaluation's transform).
        class_names: names for the class indices (default: the indices as strings).
    """
    records = [clip_record(p, template) for p in paths]
    num_classes = model.new_fc.out_features if getattr(model, "new_fc", None) is not None else None
    dataset = ClipDataset(
        RecordSource(records, num_classes or 1, template=template), num_segments=model.num_segments,
        transform=EvalTransform(size, resize), train=False,
    )
    loader = make_loader(dataset, ShardSampler(len(dataset)), batch_size=batch_size, workers=workers)
    device = _device_of(model)
    model.eval()
    names = model.gate_names()
    for batch in loader:
        results: Dict[int, Union[Prediction, Failure]] = {f.index: f for f in batch.failures}
        if batch.video is not None:
            video = normalize(batch.video.to(device))
            with torch.inference_mode():
                logits, masks = model(video, return_masks=True)[:2]  # a spatial model adds its cell masks
            probs = (logits.float().sigmoid() if multi_label else logits.float().softmax(dim=1)).cpu()
            masks = torch.stack(masks, dim=1).cpu()  # [N, M, T]
            for row, index in enumerate(batch.index.tolist()):
                values, classes = probs[row].topk(min(topk, probs.shape[1]))
                top = [(int(c), class_names[int(c)] if class_names is not None else str(int(c)), float(v))
                       for v, c in zip(values, classes)]
                results[index] = Prediction(dataset.source.name(index), probs[row], top, masks[row],
                                            batch.frames[row].tolist(), names, batch.video[row].clone())
        for index in sorted(results):
            yield results[index]


def predict(model: nn.Module, path: str, **options: Any) -> Prediction:
    """Predict one video file or frame folder; ``options`` as in :func:`predict_many`.

    Raises ``DecodeError`` when the clip cannot be read.
    """
    result = next(predict_many(model, [path], batch_size=1, **options))
    if isinstance(result, Failure):
        raise DecodeError(result.path, result.reason)
    return result
