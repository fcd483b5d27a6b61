"""A run that stops early keeps what it finished and says how to finish it, for real:

- Ctrl-C: ``edgebench run`` as a subprocess gets SIGINT (as a terminal sends it, to its process group) while a
  cell is measured: it exits 130 within about a second with "interrupted; N cells kept; resume with ...",
  the run is marked interrupted, the finished cell is in the store, no worker is left running, and
  ``--resume`` completes the run with counts that cover both attempts (summary line, report, ``runs``).
- A full disk (faked: the second cell's spec file cannot be written): one line naming that file, exit 2,
  the run marked interrupted with its first cell kept, and ``--resume`` completes it.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from edgebench.bench.cli import main
from edgebench.bench.contracts.results import MeasureSettings
from edgebench.bench.store import Store
from test_cli import cli, edgebench_exe

pytestmark = pytest.mark.slow


def measure(min_seconds: float) -> dict[str, float]:
    """Short floors, and no quiet gate or re-measuring where this edgebench has them: on a busy machine they
    would stretch every cell (the test is about stopping, not about contention)."""
    names = {f.name for f in dataclasses.fields(MeasureSettings)}
    m = {"warmup_runs": 2, "warmup_seconds": 0.05, "min_runs": 20, "min_seconds": min_seconds}
    return m | {k: 0 for k in ("quiet_wait_s", "remeasure_contended") if k in names}


def suite_file(tmp: Path, min_seconds: float) -> Path:
    suite = tmp / "three.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "three", "models": ["small_cnn"], "recipes": ["dense"], "backends": ["onnxruntime"], "precisions": ["fp32"],
        "batch_sizes": [1, 2, 8], "measure": measure(min_seconds), "cell_timeout_s": 120,
    }))
    return suite


def home_with_dense(built, tmp: Path) -> Path:
    home = tmp / "home"
    shutil.copytree(built.cache_root, home / "cache")  # the trained model and its ONNX export: nothing to build
    return home


def worker_children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [c for c in proc.children(recursive=True) if "edgebench.bench.worker" in " ".join(c.cmdline()) and " run " in f" {' '.join(c.cmdline())} "]
    except psutil.NoSuchProcess:
        return []


def test_ctrl_c_stops_at_once_keeps_finished_cells_and_resume_finishes(built, tmp_path):
    home, suite = home_with_dense(built, tmp_path), suite_file(tmp_path, min_seconds=6.0)
    # its own process group, as a shell gives a foreground job: Ctrl-C signals the whole group
    proc = subprocess.Popen([edgebench_exe(), "run", str(suite), "--home", str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "250"}, start_new_session=True)
    lines: list[str] = []
    first_stored = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "/b1/local: p50" in line:
                first_stored.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first_stored.wait(240), "".join(lines)
    me = psutil.Process(proc.pid)
    deadline = time.monotonic() + 30
    while not (in_flight := worker_children(me)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight, "the second cell's worker never started:\n" + "".join(lines)
    time.sleep(0.5)  # well inside the 6 s the second cell measures for

    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    stderr = proc.stderr.read()
    code = proc.wait(30)
    stopped_after = time.monotonic() - t0
    reader.join(5)
    out = "".join(lines)

    assert code == 130, out + stderr
    m = re.search(r"^edgebench: interrupted; 1 cells kept; resume with edgebench run --resume (\S+)$", stderr, re.M)
    assert m, stderr
    run_id = m.group(1)
    assert "Traceback" not in stderr and "Aborted" not in stderr
    # the old behaviour waited for the in-flight cell (about 6 s here); the worker is killed instead
    assert stopped_after < 3.0, f"took {stopped_after:.1f}s to stop"
    time.sleep(0.2)
    assert not [p.pid for p in in_flight if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "a worker outlived the run"

    store = Store(home / "edgebench.sqlite")
    run = store.run(run_id)
    assert run.status == "interrupted"
    cells = store.cells(run_id, with_samples=True)
    assert [(c.batch, c.status) for c in cells] == [(1, "ok")] and cells[0].result.samples_ns
    assert f"report: {home / 'reports' / run_id / 'report.md'}" in out  # the finished cell is reported too

    resumed = cli("run", "--resume", run_id, "--home", str(home), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 cells already finished are kept" in resumed.stdout
    # the counts cover the first attempt's cell too, everywhere they are shown
    assert f"run {run_id}: 3 ok, 0 failed, 0 skipped" in resumed.stdout
    assert "Cells: 3 ok, 0 failed, 0 skipped." in (home / "reports" / run_id / "report.md").read_text()
    runs = cli("runs", "--home", str(home), cwd=tmp_path)
    assert f"{run_id}  finished     three: 3 ok, 0 failed, 0 skipped" in runs.stdout
    assert Store(home / "edgebench.sqlite").run(run_id).summary["cells_ok"] == 3


def test_a_full_disk_stops_the_run_with_one_line_and_resume_finishes(built, tmp_path, monkeypatch, capsys):
    home, suite = home_with_dense(built, tmp_path), suite_file(tmp_path, min_seconds=0.2)
    real_write_text = Path.write_text

    def full_after_the_first_cell(self: Path, *args, **kwargs):
        if self.name.endswith(".spec.json") and not self.name.startswith("cell-0000"):
            # what a full disk does: the file is created, then the write fails
            real_write_text(self, "")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_after_the_first_cell)
    monkeypatch.setattr(sys, "argv", ["edgebench", "run", str(suite), "--home", str(home)])
    with pytest.raises(SystemExit) as stop:
        main()
    monkeypatch.undo()
    captured = capsys.readouterr()
    assert stop.value.code == 2, captured.out + captured.err
    line = next(x for x in captured.err.splitlines() if x.startswith("edgebench: cannot write"))
    m = re.fullmatch(r"edgebench: cannot write (\S+cell-0001\.spec\.json): No space left on device; free some space there "
                     r"\(or make it writable\); 1 cells kept; resume with edgebench run --resume (\S+)", line)
    assert m, captured.err
    run_id = m.group(2)
    assert Path(m.group(1)).parent == home / "runs" / run_id / "cells"
    assert "Traceback" not in captured.err
    store = Store(home / "edgebench.sqlite")
    assert store.run(run_id).status == "interrupted"
    assert [c.batch for c in store.cells(run_id, with_samples=False)] == [1]

    monkeypatch.setattr(sys, "argv", ["edgebench", "run", "--resume", run_id, "--home", str(home)])
    with pytest.raises(SystemExit) as done:
        main()
    out = capsys.readouterr().out
    assert done.value.code in (0, None), out
    assert f"run {run_id}: 3 ok, 0 failed, 0 skipped" in out
    assert Store(home / "edgebench.sqlite").run(run_id).status == "finished"
