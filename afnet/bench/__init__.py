"""The latency benchmark behind ``afnet bench``: configuration, timing, running and reporting."""

from afnet.bench.config import BenchConfig, Entry, default_suite
from afnet.bench.runner import BenchCheckError, run_bench

__all__ = ["BenchCheckError", "BenchConfig", "Entry", "default_suite", "run_bench"]
