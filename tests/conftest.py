"""Shared test helpers: device parametrization, output poisoning, thread counts, tolerances."""

from __future__ import annotations

import contextlib
from typing import Iterator, List

import pytest
import torch

NO_GPU = "no CUDA GPU visible"


def cpu_and_cuda() -> List:
    """``pytest.mark.parametrize`` values ``"cpu"`` and ``"cuda"``; CUDA is marked
    ``cuda`` and skipped with a reason when no GPU is visible."""
    return [
        pytest.param("cpu", id="cpu"),
        pytest.param(
            "cuda",
            id="cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU),
            ],
        ),
    ]


def needs_cuda(fn):
    """Marks a test as needing a GPU (skipped with a reason when none is visible)."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)(fn))


@contextlib.contextmanager
def poisoned_outputs() -> Iterator[None]:
    """Inside the block every ``empty`` allocation (also those made by the C++/CUDA
    kernels) is filled with NaN (integers: their maximum), so an element a kernel
    forgets to write shows up in the comparison."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.utils.deterministic.fill_uninitialized_memory = previous[2]


@pytest.fixture
def poison() -> Iterator[None]:
    """Fixture form of ``poisoned_outputs`` for a whole test."""
    with poisoned_outputs():
        yield


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Inside the block torch runs intra-op work on ``n`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small tensors gain nothing from intra-op threads, and on a shared machine the thread
    barriers make every op wait for a busy core (several times slower). Use per module with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``, or per test."""
    with torch_threads(1):
        yield


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Run a test on 2 threads, as CI does (``pytest.mark.usefixtures("two_threads")``)."""
    with torch_threads(2):
        yield


def assert_close_lowp(out: torch.Tensor, ref_lowp: torch.Tensor, ref_exact: torch.Tensor) -> None:
    """Half-precision check: the kernel's error against the float64 reference is
    at most twice the reference's own error at that precision (plus one rounding
    step of the largest value, since the kernel may round at different points)."""
    assert out.dtype == ref_lowp.dtype and out.shape == ref_exact.shape
    assert not out.isnan().any() or ref_exact.isnan().any(), "NaN in the output"
    err = (out.double() - ref_exact).abs().max().item() if out.numel() else 0.0
    ref_err = (ref_lowp.double() - ref_exact).abs().max().item() if out.numel() else 0.0
    ulp = torch.finfo(out.dtype).eps * (ref_exact.abs().max().item() if out.numel() else 0.0)
    assert err <= 2 * ref_err + ulp, f"error {err:.3g} > 2 x reference error {ref_err:.3g} + {ulp:.3g}"


@pytest.fixture
def no_tf32():
    """cuDNN convolutions default to TF32 (10-bit mantissa), far above these tolerances."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
