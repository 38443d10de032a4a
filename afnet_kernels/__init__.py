"""Temporary shim until the compiled ops land: exposes the reference ops."""
from afnet_kernels.reference import *  # noqa: F401,F403
