"""Video transforms on uint8 ``[T, 3, H, W]`` tensors (torchvision.transforms.v2 functionals).

Every frame of a clip gets the same crop and flip. Randomness comes from an explicit
``torch.Generator``, so a clip's augmentation is a function of its seed only (the same in any
DataLoader worker, and again after ``--resume``). Clips stay uint8 through the DataLoader (a
quarter of the bytes of float32); :func:`normalize` turns a batch into the network's input on
its device.

- train (:class:`TrainTransform`): optional resize, TSN multi-scale crop with scales
  ``(1, .875, .75, .66)`` resized to ``size``, and a horizontal flip that can be turned off
  (off for Something-Something, where left and right are part of the label);
- test (:class:`EvalTransform`): resize the short side (or to a fixed ``(h, w)``), centre crop.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TSN_SCALES = (1.0, 0.875, 0.75, 0.66)
Size = Union[int, Tuple[int, int]]


def _check_video(video: torch.Tensor) -> None:
    if video.dim() != 4 or video.shape[1] != 3 or video.dtype != torch.uint8:
        raise ValueError(f"video must be uint8 [T, 3, H, W], got {video.dtype} {tuple(video.shape)}")


def _resize(video: torch.Tensor, size: Optional[Size]) -> torch.Tensor:
    """``size``: None (unchanged), an int (short side) or ``(h, w)``."""
    if size is None:
        return video
    target = [size] if isinstance(size, int) else list(size)
    return TF.resize(video, target, antialias=True)


def _choice(options: Sequence, generator: Optional[torch.Generator]):
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _check_size(name: str, size: Optional[Size], optional: bool) -> None:
    if size is None and optional:
        return
    values = [size] if isinstance(size, int) else list(size) if isinstance(size, (tuple, list)) else None
    if not values or len(values) > 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")


class MultiScaleCrop:
    """TSN's multi-scale crop: a crop of side ``int(min(H, W)·s)`` for scales ``s`` (height and
    width scales at most ``max_distort`` steps apart, sides within 3 px of ``size`` snapped to
    it), at one of 13 fixed positions (corners, centre, edge midpoints, quarter points), then
    resized to ``size × size``."""

    def __init__(self, size: int, scales: Sequence[float] = TSN_SCALES, max_distort: int = 1) -> None:
        _check_size("size", size, optional=False)
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f"scales must be a non-empty list of numbers in (0, 1], got {list(scales)!r}")
        self.size = size
        self.scales = tuple(float(s) for s in scales)
        self.max_distort = max_distort

    def crop_box(self, height: int, width: int, generator: Optional[torch.Generator] = None) -> Tuple[int, int, int, int]:
        """(top, left, crop height, crop width) for a ``height × width`` frame."""
        base = min(height, width)
        sides = [int(base * s) for s in self.scales]
        sides = [self.size if abs(side - self.size) < 3 else side for side in sides]
        pairs = [
            (h, w)
            for i, h in enumerate(sides)
            for j, w in enumerate(sides)
            if abs(i - j) <= self.max_distort
        ]
        crop_h, crop_w = _choice(pairs, generator)
        crop_h, crop_w = min(crop_h, height), min(crop_w, width)
        top, left = _choice(self.offsets(height, width, crop_h, crop_w), generator)
        return top, left, crop_h, crop_w

    @staticmethod
    def offsets(height: int, width: int, crop_h: int, crop_w: int) -> List[Tuple[int, int]]:
        """The 13 fixed (top, left) positions of a crop, on a 4 × 4 grid of quarter steps."""
        hs, ws = (height - crop_h) // 4, (width - crop_w) // 4
        grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
        return [(i * hs, j * ws) for i, j in grid]

    def __call__(self, video: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        top, left, h, w = self.crop_box(video.shape[-2], video.shape[-1], generator)
        return TF.resized_crop(video, top, left, h, w, [self.size, self.size], antialias=True)


class TrainTransform:
    """Training clip: ``resize`` (None: as decoded) → :class:`MultiScaleCrop` → random horizontal
    flip (``flip``). uint8 ``[T, 3, H, W]`` → uint8 ``[T, 3, size, size]``."""

    def __init__(
        self, size: int, *, scales: Sequence[float] = TSN_SCALES, flip: bool = True, resize: Optional[Size] = None
    ) -> None:
        _check_size("resize", resize, optional=True)
        self.crop = MultiScaleCrop(size, scales)
        self.flip = flip
        self.resize = resize

    def __call__(self, video: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        _check_video(video)
        video = self.crop(_resize(video, self.resize), generator)
        # Draw the flip coin even when flipping is off, so the crop sequence is the same either way.
        heads = bool(torch.rand((), generator=generator) < 0.5)
        return TF.horizontal_flip(video) if self.flip and heads else video


class EvalTransform:
    """Test clip: ``resize`` (int: the short side; ``(h, w)``: that size) → centre crop ``size``.
    uint8 ``[T, 3, H, W]`` → uint8 ``[T, 3, size, size]``."""

    def __init__(self, size: int, resize: Optional[Size] = None) -> None:
        _check_size("size", size, optional=False)
        _check_size("resize", resize, optional=True)
        self.size = size
        self.resize = resize if resize is not None else round(size * 256 / 224)

    def __call__(self, video: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        _check_video(video)
        return TF.center_crop(_resize(video, self.resize), [self.size, self.size])


def normalize(video: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` → ImageNet-normalised float (``(x/255 − mean)/std``) in ``dtype``."""
    if video.dtype != torch.uint8 or video.dim() < 3 or video.shape[-3] != 3:
        raise ValueError(f"video must be uint8 [..., 3, H, W], got {video.dtype} {tuple(video.shape)}")
    x = TF.to_dtype(video, dtype, scale=True)
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
