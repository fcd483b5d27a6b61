"""Two hosts, one board: two real `edgebench run` processes (each its own home, as two CI hosts have) target
the same ssh-loopback board through the same targets file and report into the same PostgreSQL store.

The board's lease (bench/lease.py, a PostgreSQL advisory lock) lets one measure at a time: both runs
succeed, the second says whom it waited for, and the stored [started_at, finished_at] of no cell of one
run overlaps any cell of the other - the runs' shares of the board do not even interleave.
The server and the worker venv come from tests/conftest.py, as in tests/targets/test_ssh_loopback.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgebench.bench.store import Store
from targets_support import wait_for

pytestmark = pytest.mark.slow

# Each cell measures for about 3 s: the first run's share lasts well beyond the second's start-up.
MEASURE = {"warmup_runs": 2, "warmup_seconds": 0.05, "min_runs": 20, "min_seconds": 3.0, "quiet_wait_s": 0, "remeasure_contended": 0}
SUITE = {"name": "lease", "models": ["small_cnn"], "recipes": ["dense"], "backends": [{"name": "onnxruntime", "threads": 1}],
         "precisions": ["fp32"], "batch_sizes": [1, 2, 8], "measure": MEASURE, "cell_timeout_s": 120}


def start(suite: Path, targets: Path, home: Path, store: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgebench.bench.cli", "run", str(suite), "--target", "ssh-loopback", "--targets", str(targets),
                             "--home", str(home), "--store", store], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "250"})


def run_id_of(out: str) -> str:
    return re.search(r"^run (\S+): suite", out, re.M).group(1)


def test_two_runs_on_one_board_never_measure_at_the_same_time(ssh_loopback, built, postgres, tmp_path):
    server = ssh_loopback.server
    targets = ssh_loopback.write_targets(tmp_path / "targets.yaml", server.profile(workdir=tmp_path / "device"))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    store = postgres.new_database()
    Store(store)  # created once, before the two runs
    homes = []
    for name in ("host-a", "host-b"):
        home = tmp_path / name
        shutil.copytree(built.cache_root, home / "cache")  # the trained model: the test times the board, not training
        homes.append(home)

    first = start(suite, targets, homes[0], store, tmp_path)
    procs = [first]
    try:
        wait_for(server.workers, 300, "the first run's first remote worker")  # the first run holds the board now
        second = start(suite, targets, homes[1], store, tmp_path)
        procs.append(second)
        out_a, _ = first.communicate(timeout=600)
        out_b, _ = second.communicate(timeout=600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert first.returncode == 0, out_a[-3000:]
    assert second.returncode == 0, out_b[-3000:]
    run_a, run_b = run_id_of(out_a), run_id_of(out_b)
    # the premise of the check below: the second run did come while the first measured, and said so
    assert f"target ssh-loopback: waiting for its lease: held by run {run_a} on " in out_b, out_b[-3000:]
    assert "waiting for its lease" not in out_a

    db = Store(store)
    cells = {run: db.cells(run, with_samples=False) for run in (run_a, run_b)}
    assert all(len(c) == 3 and all(x.status == "ok" for x in c) for c in cells.values()), {r: [(x.status, x.error) for x in c] for r, c in cells.items()}
    spans = {run: [(c.started_at, c.finished_at) for c in cs] for run, cs in cells.items()}
    for a_start, a_end in spans[run_a]:
        for b_start, b_end in spans[run_b]:
            assert a_end <= b_start or b_end <= a_start, f"cells overlap: A {a_start}-{a_end}, B {b_start}-{b_end}"
    # the shares do not interleave: every cell of the first ends before any cell of the second starts
    assert max(end for _, end in spans[run_a]) <= min(start for start, _ in spans[run_b])
    # and each stored span is a measurement (about 3 s), not the time since its artifact was prepared
    assert all(1.0 < (end - start).total_seconds() < 60 for cs in spans.values() for start, end in cs), spans
