"""Prediction: the top-k classes of a clip, and which frames each navigation module kept.

``afnet.predict(model, path)`` runs one video file or frame folder; :func:`predict_many` runs a
long list in batches through a DataLoader, yielding one result at a time, so memory stays flat
however many clips there are. Clips are sampled and cropped as in evaluation (segment centres,
resize, centre crop).

``model`` is an AF model or one of our checkpoints. A checkpoint also gives the input settings it
was trained with (:func:`input_settings`: crop size, resize, frame-image names, class names,
multi-label), so ``afnet.predict("runs/x/best.pth", "clip.mp4")`` predicts as ``afnet predict``
does; arguments override them. A model alone carries no input size: pass ``size`` (default 224).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from afnet.data.datasets import ClipDataset, Failure, RecordSource
from afnet.data.decode import DEFAULT_TEMPLATE, DecodeError
from afnet.data.lists import VideoRecord
from afnet.data.loader import ShardSampler, make_loader
from afnet.data.transforms import Size, EvalTransform, normalize
from afnet.tools.checkpoint import build_from_checkpoint

PathLike = Union[str, os.PathLike]
# The input settings where neither the caller nor a checkpoint gives them (the crop: the paper's).
DEFAULTS: Dict[str, Any] = {"size": 224, "resize": None, "template": DEFAULT_TEMPLATE, "class_names": None,
                            "multi_label": False}


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
    """A video file, or a frame folder with its images counted (label 0: unknown).

    Raises ``FileNotFoundError`` for a missing path and for a folder without images named by ``template``.
    """
    if os.path.isdir(path):
        count = count_images(path, template)
        if count == 0:
            raise FileNotFoundError(f"folder {path!r} holds no frames matching the image template {template!r} "
                                    f"(its first frame would be {template.format(1)!r})")
        return VideoRecord(path, (0,), count)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"clip {path!r} is neither a video file nor a frame folder")
    return VideoRecord(path, (0,))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def input_settings(data: Mapping[str, Any], **given: Any) -> Dict[str, Any]:
    """The input settings of :data:`DEFAULTS`' keys: those ``given`` (None: not given), else the
    checkpoint's (``data``: ``report.extra["data"]`` of :func:`afnet.build_from_checkpoint`, as
    ``afnet train`` writes it; {} for none), else the defaults."""
    stored = {"size": data.get("size"), "resize": data.get("resize"), "template": data.get("image_template"),
              "class_names": data.get("class_names"), "multi_label": data.get("multi_label")}
    if isinstance(stored["resize"], list):  # YAML and JSON have no tuples
        stored["resize"] = tuple(stored["resize"])
    resolved = dict(DEFAULTS)
    for layer in (stored, given):  # later wins
        resolved.update({k: v for k, v in layer.items() if v is not None})
    return resolved


def _model_and_settings(model: Union[nn.Module, PathLike], device: Optional[Union[str, torch.device]]
                        ) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model to run and its checkpoint's data settings ({} for a model)."""
    if isinstance(model, nn.Module):
        return model, {}
    built, report = build_from_checkpoint(model)
    data = report.extra.get("data")
    return built.to(device or "cpu"), data if isinstance(data, Mapping) else {}


def predict_many(
    model: Union[nn.Module, PathLike],
    paths: Sequence[str],
    *,
    size: Optional[int] = None,
    resize: Optional[Size] = None,
    class_names: Optional[Sequence[str]] = None,
    topk: int = 5,
    batch_size: int = 8,
    workers: int = 0,
    template: Optional[str] = None,
    multi_label: Optional[bool] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Iterator[Union[Prediction, Failure]]:
    """Predict every clip of ``paths`` in order, ``batch_size`` clips per forward pass.

    Yields a :class:`Prediction` per readable clip and a :class:`afnet.data.datasets.Failure`
    per unreadable one. Missing paths, and frame folders without images named by ``template``,
    raise ``FileNotFoundError`` before anything runs.

    Args:
        model: an AF model (``model.num_segments`` frames per clip; it is put in eval mode), or
            the path of one of our checkpoints, whose settings fill the options left unset.
        size, resize: the centre crop and the resize before it (evaluation's transform); default:
            the checkpoint's, else 224 and none.
        class_names: names for the class indices (default: the checkpoint's, else the indices).
        template: image names in frame folders (default: the checkpoint's, else ``img_{:05d}.jpg``).
        multi_label: sigmoid scores instead of softmax (default: the checkpoint's, else False).
        device: where a model built from a checkpoint runs (default the CPU); a model stays where it is.
    """
    model, data = _model_and_settings(model, device)
    settings = input_settings(data, size=size, resize=resize, template=template, class_names=class_names,
                              multi_label=multi_label)
    size, resize, template = settings["size"], settings["resize"], settings["template"]
    class_names, multi_label = settings["class_names"], settings["multi_label"]
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


def predict(model: Union[nn.Module, PathLike], path: str, **options: Any) -> Prediction:
    """Predict one video file or frame folder with ``model``, an AF model or the path of one of
    our checkpoints (whose input settings then apply); ``options`` as in :func:`predict_many`.

    Raises ``DecodeError`` when the clip cannot be read.
    """
    result = next(predict_many(model, [path], batch_size=1, **options))
    if isinstance(result, Failure):
        raise DecodeError(result.path, result.reason)
    return result
