"""The package imports one way (kernels <- ops <- layers <- models <- engine <- tools <- training,
bench <- cli), checked by import-linter's contracts in pyproject.toml, and its top stays small."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml")], cwd=root, capture_output=True,
                          text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_the_import_contracts_hold() -> None:
    assert LINT.is_file(), f"import-linter is not installed next to {sys.executable} (pip install import-linter)"
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module,line,target,contract",
    [
        ("afnet/models/tsn.py", "from afnet.engine import freeze", "afnet.engine", "one way"),  # models -> engine
        ("afnet/layers/ratios.py", "import afnet.models", "afnet.models", "one way"),  # through a package
        ("afnet_kernels/reference.py", "import afnet.ops", "afnet.ops", "stands alone"),
    ],
)
def test_an_upward_import_breaks_a_contract(tmp_path, module, line, target, contract) -> None:
    """The contracts can fail: the same check on a copy with one import against the order."""
    for name in ("afnet", "afnet_kernels"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[1]
    importer = module[: -len(".py")].replace("/", ".")
    assert contract in broken and f"{importer} -> {target}" in broken, result.stdout


def test_the_top_of_the_package_stays_small() -> None:
    """Public re-exports, __main__ and the version: at most 4 modules at the top of afnet/."""
    top = sorted(p.name for p in (ROOT / "afnet").glob("*.py"))
    assert len(top) <= 4, top
    assert {"__init__.py", "__main__.py", "_version.py"} <= set(top)
