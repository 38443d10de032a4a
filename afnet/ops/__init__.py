"""The frame ops a model runs on: the compiled ``afnet_kernels`` or the pure-PyTorch reference."""

from afnet.ops.backend import BACKENDS, get_ops, shift_frames

__all__ = ["BACKENDS", "get_ops", "shift_frames"]
