"""The package layering is a contract (pyproject.toml [tool.importlinter]): a backwards import fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail(f"{lint} not found: install the dev extra (make install) to get import-linter")
    proc = subprocess.run([str(lint), "--no-cache", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout


def test_contracts_import_only_the_standard_library_and_numpy() -> None:
    """The device side imports the contracts: no pydantic, SQLAlchemy or torch behind them (strict.py aside)."""
    code = ("import sys; import edgebench.bench.contracts.results, edgebench.bench.contracts.spec, edgebench.bench.contracts.identity, "
            "edgebench.bench.contracts.registry; "
            "print(sorted(m for m in ('pydantic', 'sqlalchemy', 'torch', 'yaml', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert out == "[]"
