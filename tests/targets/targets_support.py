"""Helpers shared by the device-state tests: the real-output fixtures, a fake sysfs tree, fake tools.

Not a conftest.py: tests/reports imports its own ``conftest`` by name, and a second conftest module on
sys.path would shadow it. Modules that need ``fake_path`` import it from here."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def fixture_lines(name: str) -> list[str]:
    """The captured lines of a fixture, without its "# source:" header."""
    text = (DATA / name).read_text().splitlines()
    assert text[0].startswith("# source: "), f"{name} must name its source"
    return [ln for ln in text[1:] if ln.strip()]


def write(path: Path, text: str) -> None:
    """One sysfs-style file under a fake root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def tool(bin_dir: Path, name: str, script: str) -> Path:
    """A fake executable on PATH that answers like the real tool (replies taken from the fixtures)."""
    path = bin_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    """PATH holding only a tmp bin folder (plus /usr/bin for sh): no real vcgencmd/nvpmodel leaks in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def wait_for(predicate, timeout_s: float, what: str):
    """``predicate()``'s first truthy value, polled every 50 ms; the test fails naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
