from __future__ import annotations

import pytest


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    """PATH holding only a tmp bin folder (plus /usr/bin for sh): no real vcgencmd/nvpmodel leaks in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir
