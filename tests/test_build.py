"""Build guard: the compiled kernels are present wherever they can be built.

Nothing here skips. A CPU library that fails to load, or a machine with nvcc whose CUDA
kernels were not built and registered, fails the suite: otherwise every op would quietly
fall back to the reference and the op tests would compare the reference with itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import pytest
import torch

import afnet_kernels as ak
from afnet_kernels import _build_id, _loader, ops
from afnet_kernels import reference as ref
from model_utils import HostReads

# Every op the library declares; the registry below must hold at least these.
EXPECTED_OPS = {
    "select_frames",
    "gather_frames",
    "_gather_frames_backward",
    "scatter_frames",
    "scatter_frames_",
    "blend_branches",
    "_blend_branches_backward",
    "pool_branches",
    "gather_tiles",
    "_gather_tiles_backward",
    "scatter_tiles",
}


def _nvcc() -> Optional[Path]:
    """The nvcc the Makefile would build with: $CUDA_HOME's, else /usr/local/cuda's."""
    candidates = [Path("/usr/local/cuda/bin/nvcc")]
    if os.environ.get("CUDA_HOME"):
        candidates.insert(0, Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc")
    return next((c for c in candidates if c.exists()), None)


def _declared_ops() -> List[str]:
    names = torch._C._dispatch_get_all_op_names()
    return sorted(n.split("::", 1)[1] for n in names if n.startswith("afnet_kernels::"))


def _missing_kernels(dispatch_key: str) -> List[str]:
    return [
        name
        for name in _declared_ops()
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"afnet_kernels::{name}", dispatch_key)
    ]


def test_cpu_library_loads_with_every_op():
    info = ak.backends()
    assert info["cpu"]["usable"], f"afnet_kernels._C did not load: {info['cpu']['reason']}"
    assert EXPECTED_OPS <= set(_declared_ops()), f"ops without a schema: {EXPECTED_OPS - set(_declared_ops())}"
    missing = _missing_kernels("CPU")
    assert not missing, f"ops without a CPU kernel: {missing}"


def test_cuda_kernels_built_when_nvcc_is_present():
    """A silently skipped CUDA build must not pass: nvcc here means CUDA kernels."""
    nvcc = _nvcc()
    info = ak.backends()["cuda"]
    if nvcc is None:
        # A CPU-only build is right here; a CUDA library that exists must still load.
        assert not info["built"] or _loader.CUDA_LIB.loaded, info["reason"]
        return
    assert info["built"], (
        f"nvcc is present ({nvcc}) but afnet_kernels._C_cuda was not built: {info['reason']}. "
        "Rebuild with FORCE_CUDA=1 pip install --no-build-isolation -e ."
    )
    assert _loader.CUDA_LIB.loaded, info["reason"]
    missing = _missing_kernels("CUDA")
    assert not missing, f"nvcc is present ({nvcc}) but these ops have no CUDA kernel: {missing}"


def test_libraries_were_built_from_these_sources():
    """Both libraries carry the digest of today's csrc/: a stale build fails here, not later."""
    expected = _build_id.source_digest(Path(__file__).resolve().parents[1] / "csrc")
    for library in (_loader.CPU_LIB, _loader.CUDA_LIB):
        path = _loader._origin(library.name)
        if path is None:
            continue
        assert _build_id.library_build_id(path) == expected, (
            f"{path} was built from other sources than csrc/ (build {_build_id.library_build_id(path)}, "
            f"sources {expected}): rebuild with `make install`"
        )


def test_cuda_library_of_other_sources_is_refused(tmp_path, monkeypatch, caplog):
    """A _C_cuda left from other sources is not loaded (its kernels would register against
    schemas they do not match, which aborts the process): a warning names both builds."""
    cpu, cuda, old = tmp_path / "_C.so", tmp_path / "_C_cuda.so", tmp_path / "_C_old.so"
    cpu.write_bytes(b"\x7fELF" + _build_id.MARKER + b"0123456789abcdef\0tail")
    cuda.write_bytes(b"\x7fELF..." + _build_id.MARKER + b"fedcba9876543210\0")
    old.write_bytes(b"\x7fELF without a marker")
    assert _build_id.library_build_id(cpu) == "0123456789abcdef"
    assert _loader.mismatched_build(str(cpu), str(cpu)) is None
    reason = _loader.mismatched_build(str(cpu), str(cuda))
    assert "0123456789abcdef" in reason and "fedcba9876543210" in reason and "rebuild" in reason
    assert "without an id" in _loader.mismatched_build(str(cpu), str(old))

    loaded = []
    monkeypatch.setattr(_loader, "_origin", {"_C": str(cpu), "_C_cuda": str(cuda)}.get)
    monkeypatch.setattr(torch.ops, "load_library", loaded.append)
    with caplog.at_level("WARNING", logger="afnet_kernels"):
        cpu_lib, cuda_lib = _loader.load()
    assert loaded == [str(cpu)]
    assert cpu_lib.loaded and cuda_lib.built and not cuda_lib.loaded
    assert cuda_lib.reason == reason and "built from other sources" in caplog.text


def test_backends_report():
    info = ak.backends()
    assert info["reference"] is True
    assert info["cpu"] == {"built": True, "usable": True, "reason": None}
    assert info["cuda"]["usable"] == (info["cuda"]["built"] and torch.cuda.is_available())
    if not info["cuda"]["usable"]:
        assert info["cuda"]["reason"], "an unusable backend must say why"


def test_fallback_to_reference_when_library_missing(monkeypatch, caplog):
    """Which implementation ran, not what it returned (the kernels equal the reference either way)."""
    x = torch.randn(8, 4, 3, 3)
    index = torch.tensor([0, 2, -1, 5])
    reference_calls = []
    original = ref.gather_frames
    monkeypatch.setattr(ref, "gather_frames", lambda *a, **k: reference_calls.append(a) or original(*a, **k))
    # Built: the wrapper calls the compiled op and never the reference.
    with HostReads() as ran:
        compiled = ak.gather_frames(x, index, 4, 2)
    assert [name for name, _ in ran.kernel_calls] == ["afnet_kernels::gather_frames"] and not reference_calls
    # Without the library the same call runs the reference and no compiled op.
    missing = _loader._load("_no_such_library")
    assert not missing.built and "was not built" in missing.reason
    monkeypatch.setattr(ops, "CPU_LIB", missing)
    with HostReads() as ran:
        fallback = ak.gather_frames(x, index, 4, 2)
    assert ran.kernel_calls == [] and len(reference_calls) == 1
    assert torch.equal(fallback, compiled)
    # The in-place scatter falls back too (rows 0, 2 and 5 of base add src rows 0, 1 and 3; slot 2
    # is padding; ReLU last), and still refuses what the compiled op refuses.
    base, src = x.clone(), torch.randn(4, 4, 3, 3)
    expected = x.clone()
    expected[[0, 2, 5]] += src[[0, 1, 3]]
    expected = expected.relu()
    with HostReads() as ran:
        assert ak.scatter_frames_(base, src, index, None, True) is base
    assert ran.kernel_calls == [] and torch.equal(base, expected)
    with pytest.raises(RuntimeError, match="src requires grad, but scatter_frames_ is an in-place inference op"):
        ak.scatter_frames_(base, src.requires_grad_(), index)
    # And loading without it says so.
    monkeypatch.setattr(_loader, "_load", lambda name: missing)
    with caplog.at_level("WARNING", logger="afnet_kernels"):
        cpu, _ = _loader.load()
    assert not cpu.loaded and "falling back to the pure-PyTorch reference" in caplog.text
