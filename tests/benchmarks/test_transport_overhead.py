"""Transport benchmark (``make bench``): does running a cell over SSH change what it measures?

The same cells run through the real CLI on ``local`` (a child worker) and on ``ssh-loopback`` (the same
worker started by OpenSSH on 127.0.0.1 from a torch-free venv), alternating A B A B so drift hits both.
Latency is timed inside the worker, so the ratio should sit near 1.0; what SSH adds is wall time per
cell (connect, copy, spec and result over SFTP), printed separately.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgebench.bench.store import Store

pytestmark = pytest.mark.benchmark

MEASURE = {"warmup_runs": 20, "warmup_seconds": 0.5, "min_runs": 200, "min_seconds": 3.0}
SUITE = {"name": "transport-bench", "models": ["small_cnn"], "recipes": ["dense"],
         "backends": [{"name": "onnxruntime", "threads": 1}, {"name": "litert", "threads": 1}],
         "precisions": ["fp32"], "batch_sizes": [1, 8], "measure": MEASURE, "cell_timeout_s": 300}
ROUNDS = 3


def _run(suite: Path, target: str, targets: Path, home: Path, cwd: Path) -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edgebench.bench.cli", "run", str(suite), "--target", target, "--targets", str(targets),
                           "--home", str(home)], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id = next(line.split()[1].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("run "))
    return run_id, time.monotonic() - t0


def test_local_vs_ssh_loopback_latency(built, ssh_loopback, tmp_path) -> None:
    home = tmp_path / "home"
    shutil.copytree(built.cache_root, home / "cache")
    targets = ssh_loopback.write_targets(tmp_path / "targets.yaml", ssh_loopback.server.profile(workdir=tmp_path / "device"))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    _run(suite, "ssh-loopback", targets, home, tmp_path)  # first run copies the files: not part of the comparison

    store = Store(home / "edgebench.sqlite")
    p50: dict[tuple[str, str], list[float]] = {}
    p90: dict[tuple[str, str], list[float]] = {}
    other: dict[str, list[float]] = {"local": [], "ssh-loopback": []}
    wall: dict[str, list[float]] = {"local": [], "ssh-loopback": []}
    for _ in range(ROUNDS):
        for target in ("local", "ssh-loopback"):
            run_id, seconds = _run(suite, target, targets, home, tmp_path)
            wall[target].append(seconds)
            for cell in store.cells(run_id, with_samples=False):
                assert cell.status == "ok", cell.error
                key = (_short(cell.cell_key), target)
                p50.setdefault(key, []).append(cell.result.latency.p50_ms)
                p90.setdefault(key, []).append(cell.result.latency.p90_ms)
                if cell.result.contention and cell.result.contention.other_cpu_share is not None:
                    other[target].append(cell.result.contention.other_cpu_share)

    print(f"\n[local vs ssh-loopback] median of {ROUNDS} runs each, 1 thread, {MEASURE['min_seconds']} s floors")
    print(f"{'cell':40} {'p50 local':>10} {'p50 ssh':>10} {'ratio':>6} {'p90 local':>10} {'p90 ssh':>10} {'ratio':>6}")
    ratios = []
    for cell in sorted({k for k, _ in p50}):
        pl, pr = statistics.median(p50[cell, "local"]), statistics.median(p50[cell, "ssh-loopback"])
        ql, qr = statistics.median(p90[cell, "local"]), statistics.median(p90[cell, "ssh-loopback"])
        ratios.append(pr / pl)
        print(f"{cell:40} {pl:10.3f} {pr:10.3f} {pr / pl:6.3f} {ql:10.3f} {qr:10.3f} {qr / ql:6.3f}")
    print(f"p50 ratio ssh/local: median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    spread = [max(v) / min(v) for v in p50.values()]
    print(f"run-to-run p50 spread of one cell on one target (max/min of {ROUNDS}): median {statistics.median(spread):.3f}, max {max(spread):.3f}")
    print(f"run wall time (4 cells): local {statistics.median(wall['local']):.1f} s, ssh-loopback {statistics.median(wall['ssh-loopback']):.1f} s")
    for target, shares in other.items():
        if shares:
            print(f"other processes' CPU share during measurement on {target}: median {statistics.median(shares):.1%}, max {max(shares):.1%}")


def _short(cell_key: str) -> str:
    """The cell without its target part: model/recipe/backend/precision/batch."""
    parts = [p for p in cell_key.split("/") if p not in ("local", "ssh-loopback")]
    return "/".join(parts)
