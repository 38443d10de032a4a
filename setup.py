"""Build of afnet / afnet_kernels.

Always builds the CPU extension ``afnet_kernels._C`` (schema + CPU kernels).
Builds the CUDA extension ``afnet_kernels._C_cuda`` when ``FORCE_CUDA=1``, or
when nvcc is found (via CUDA_HOME) and a GPU is visible; never with ``FORCE_CUDA=0``.

Environment: TORCH_CUDA_ARCH_LIST (CUDA targets), MAX_JOBS (parallel compile
jobs, read by ninja), DEBUG=1 (-O0 -g), NVCC_FLAGS (extra nvcc flags),
FORCE_CUDA=1 (build CUDA without a visible GPU) or 0 (CPU only). Install with
``pip install --no-build-isolation -e .`` so the build uses the installed torch.

The compiled extensions use torch's C++ ABI, which changes between torch releases,
so the package requires exactly the torch release it was built with
(``torch==X.Y.Z``, without the local ``+cu130``/``+cpu`` part).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shlex
import sys
import sysconfig
from pathlib import Path

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def build_id() -> str:
    """The sources' digest, compiled into both libraries (afnet_kernels/_build_id.py, loaded
    by path: importing the package would load the libraries this build is making)."""
    spec = importlib.util.spec_from_file_location("_afnet_build_id", ROOT / "afnet_kernels" / "_build_id.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_digest(CSRC)


def log(message: str) -> None:
    print(f"afnet-build: {message}", flush=True)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in {"1", "true", "yes", "on"}


def env_off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"0", "false", "no", "off"}


def torch_requirement() -> str:
    """The torch release the extensions are compiled against (their ABI), as a requirement."""
    release = torch.__version__.split("+")[0]
    return f"torch=={release}"


def sources(pattern: str) -> list[str]:
    # Relative paths keep the build reproducible across checkouts.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(str(CSRC / pattern)))


def nvcc_path() -> str | None:
    if CUDA_HOME is None:
        return None
    nvcc = Path(CUDA_HOME) / "bin" / "nvcc"
    return str(nvcc) if nvcc.exists() else None


def cuda_wanted(nvcc: str | None, cuda_sources: list[str]) -> tuple[bool, str]:
    if not cuda_sources:
        return False, "no csrc/cuda/*.cu sources"
    if env_off("FORCE_CUDA"):
        return False, "FORCE_CUDA=0"
    if env_flag("FORCE_CUDA"):
        if nvcc is None:
            raise RuntimeError(
                "afnet-build: FORCE_CUDA=1 but nvcc was not found; set CUDA_HOME to a CUDA toolkit"
            )
        return True, "FORCE_CUDA=1"
    if nvcc is None:
        return False, "nvcc not found (set CUDA_HOME, or FORCE_CUDA=1 to require it)"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return False, "no GPU visible (set FORCE_CUDA=1 to build anyway)"
    return True, "nvcc found and a GPU is visible"


def cuda_include_dirs() -> list[str]:
    # pip-installed CUDA headers (e.g. cusparse.h) that torch's headers include.
    dirs = [str(CSRC)]
    purelib = Path(sysconfig.get_paths()["purelib"])
    for candidate in sorted(purelib.glob("nvidia/cu*/include")):
        dirs.append(str(candidate))
    return dirs


def extensions() -> list:
    debug = env_flag("DEBUG")
    # -g0: Python's own CFLAGS carry -g, which doubles compile time for nothing.
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    ident = build_id()
    cxx_flags = opt + [f"-DAFNET_BUILD_ID={ident}"]
    # at::parallel_for is an inline `#pragma omp parallel`: without -fopenmp the
    # CPU kernels would silently run on one thread. The runtime is the
    # libgomp.so.1 that torch already loaded.
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    cpu = CppExtension(
        name="afnet_kernels._C",
        sources=sources("ops.cpp") + sources("cpu/*.cpp"),
        include_dirs=[str(CSRC)],
        extra_compile_args={"cxx": cxx_flags + openmp},
        extra_link_args=openmp + (["-g"] if debug else []),
    )
    exts = [cpu]

    nvcc = nvcc_path()
    cuda_sources = sources("cuda/*.cu")
    build_cuda, reason = cuda_wanted(nvcc, cuda_sources)
    nvcc_flags = (["-O0", "-g", "-lineinfo"] if debug else ["-O3", "-lineinfo"]) + [
        "--expt-relaxed-constexpr",
        f"-DAFNET_BUILD_ID={ident}",
    ]
    nvcc_flags += shlex.split(os.environ.get("NVCC_FLAGS", ""))
    if build_cuda:
        exts.append(
            CUDAExtension(
                name="afnet_kernels._C_cuda",
                sources=cuda_sources,
                include_dirs=cuda_include_dirs(),
                extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                extra_link_args=["-g"] if debug else [],
            )
        )

    log(f"torch {torch.__version__} (CUDA {torch.version.cuda}), debug={debug}; requires {torch_requirement()}")
    log(f"build id {ident} (digest of csrc/)")
    log(f"CPU extension afnet_kernels._C: {len(cpu.sources)} sources, cxx flags {cxx_flags + openmp}")
    if build_cuda:
        log(
            f"CUDA extension afnet_kernels._C_cuda: {len(cuda_sources)} sources ({reason}); "
            f"nvcc {nvcc}, TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(torch default)')}, "
            f"nvcc flags {nvcc_flags}"
        )
    else:
        log(f"CUDA extension skipped: {reason}")
    log(f"MAX_JOBS={os.environ.get('MAX_JOBS', '(ninja default)')}")
    return exts


setup(
    # Dynamic in pyproject.toml: the torch pin depends on the torch this build uses.
    install_requires=[torch_requirement(), "torchvision", "numpy"],
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
