"""Packaging: what the sdist holds, the metadata it declares, the version in one place, and the README's
install section. CI installs the same sdist into a fresh venv (``.ci/sdist-roundtrip``)."""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import torch

import afnet

ROOT = Path(__file__).resolve().parents[1]
BUILD_PRODUCTS = {".so", ".o", ".pyc", ".pyo"}


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist CI is about to install (``AFNET_SDIST``), else one built from this tree."""
    given = os.environ.get("AFNET_SDIST")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, FORCE_CUDA="0")  # an sdist compiles nothing; skip the CUDA probe
    done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = out.glob("afnet-*.tar.gz")
    return path


@pytest.fixture(scope="module")
def sdist_files(sdist) -> set:
    with tarfile.open(sdist) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    top = {n.split("/", 1)[0] for n in names}
    assert top == {f"afnet-{afnet.__version__}"}, top
    return {n.split("/", 1)[1] for n in names}


@pytest.fixture(scope="module")
def pkg_info(sdist):
    with tarfile.open(sdist) as tar:
        data = tar.extractfile(f"afnet-{afnet.__version__}/PKG-INFO").read().decode()
    return email.parser.Parser().parsestr(data)


def tree_files(folder: str, suffixes=None) -> set:
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in BUILD_PRODUCTS
        and (suffixes is None or p.suffix in suffixes)
    }


def test_sdist_contents(sdist_files) -> None:
    """Every source and header of both extensions is in; tests, fixtures and results are out.

    The sdist used to miss ``csrc/common/checks.h`` (so ``pip wheel`` of it failed) and to ship tests."""
    csrc = tree_files("csrc")
    assert {s for s in csrc if s.endswith((".cu", ".cuh"))} and {s for s in csrc if s.endswith(".h")}
    assert csrc <= sdist_files, sorted(csrc - sdist_files)
    python = tree_files("afnet", {".py"}) | tree_files("afnet_kernels", {".py"})
    assert python <= sdist_files, sorted(python - sdist_files)
    assert {"LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in"} <= sdist_files
    unwanted = [f for f in sdist_files if f.startswith(("tests/", "benchmarks/results/", "docs/", "build/"))
                or Path(f).suffix in BUILD_PRODUCTS or "__pycache__" in f]
    assert not unwanted, unwanted


def test_metadata(pkg_info) -> None:
    assert pkg_info["Name"] == "afnet" and pkg_info["Version"] == afnet.__version__
    assert pkg_info["License-Expression"] == "MIT" and "LICENSE" in pkg_info.get_all("License-File")
    assert "Homepage, https://github.com/afnet-dev/afnet" in pkg_info.get_all("Project-URL")
    requires = pkg_info.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    # The kernels are compiled against one torch ABI: exactly that release is required.
    assert f"torch=={torch.__version__.split('+')[0]}" in core, core
    assert not any(r.startswith(("av", "matplotlib", "onnx", "tqdm", "pyyaml")) for r in core), core
    extras = {}
    for r in requires:
        if "extra ==" in r:
            name, extra = re.match(r"(.+?); extra == \"(\w+)\"", r).groups()
            extras.setdefault(extra, []).append(name)
    assert extras["video"] == ["av"] and extras["plot"] == ["matplotlib"]
    assert extras["export"] == ["onnx", "onnxscript", "onnxruntime"] and extras["train"] == ["pyyaml", "tqdm"]
    assert extras["dev"] == ["pytest", "import-linter", "afnet[export,plot,train,video]"]


# What the optional groups bring; a base install (`pip install afnet`) has none of them.
OPTIONAL_MODULES = ("av", "matplotlib", "onnx", "onnxscript", "onnxruntime", "yaml", "tqdm")
# None in sys.modules makes `import` fail and importlib.util.find_spec answer None, as when absent.
WITHOUT_EXTRAS = f"""
import sys
sys.modules.update(dict.fromkeys({OPTIONAL_MODULES!r}))
import afnet, afnet.cli
for argv in (["--help"], ["bench", "--help"]):
    try:
        afnet.cli.main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
"""


def test_base_install_needs_no_extras() -> None:
    """``import afnet`` and the ``afnet`` command line start without any optional group installed;
    modules that need one import it when they are used."""
    done = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage: afnet bench" in done.stdout


def test_version_in_one_place() -> None:
    """``afnet/_version.py`` holds it; pyproject reads it (dynamic) and nothing else states it."""
    from afnet import _version

    assert afnet.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", afnet.__version__)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "afnet._version.__version__"}
    for name in ("pyproject.toml", "setup.py", "afnet/__init__.py"):
        assert afnet.__version__ not in (ROOT / name).read_text(), name


def test_torch_pins_agree() -> None:
    """The build requirement is the torch the Makefile installs (the one the ABI pin will name)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build_torch = [r for r in project["build-system"]["requires"] if r.startswith("torch")]
    pin = re.search(r"^TORCH_PIN \?= (.+)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1).split()
    assert build_torch == [p for p in pin if p.startswith("torch==")]


def test_license_is_mit() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_readme_install_section() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1)
    assert [line.split()[:2] for line in first_block.splitlines()[:2]] == [["make", "bench"], ["make", "test"]]
    install = readme[readme.index("## Install") : readme.index("## Using it")]
    for text in ("pip install --no-build-isolation .", "python -m build --sdist", "pip wheel",
                 "torch==", ".[video,plot,export,train]", "FORCE_CUDA=0"):
        assert text in install, text
