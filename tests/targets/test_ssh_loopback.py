"""ssh-loopback: the real CLI runs cells through a real OpenSSH server on 127.0.0.1 into a torch-free venv.

The server and the venv (`edgebench target setup`, for real) come from tests/conftest.py. These tests
check what a board user relies on: the same result shape as a local run, files copied once, a lost
connection or killed worker failing only its cell, `--resume` running only the rest, and names with
spaces, quotes and `;` going through untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgebench.bench.contracts.flags import CODES
from edgebench.bench.store import Store
from targets_support import wait_for

pytestmark = pytest.mark.slow

FAST = {"warmup_runs": 5, "warmup_seconds": 0.0, "min_runs": 50, "min_seconds": 0.3}
SUITE = {"name": "loopback", "models": ["small_cnn"], "recipes": ["dense"],
         "backends": [{"name": "onnxruntime", "threads": 1}, {"name": "litert", "threads": 1}],
         "precisions": ["fp32"], "batch_sizes": [1], "measure": FAST, "cell_timeout_s": 120}


@pytest.fixture(scope="module")
def home(built, tmp_path_factory) -> Path:
    """A home whose cache already holds the trained model (the tests time transport, not training)."""
    h = tmp_path_factory.mktemp("loopback-home")
    shutil.copytree(built.cache_root, h / "cache")
    return h


def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench.bench.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_id_of(out: str) -> str:
    return next(line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("run "))


def test_setup_made_a_torch_free_venv_and_reported_versions(ssh_loopback):
    out = ssh_loopback.setup_output
    assert "installing edgebench[onnxruntime,litert]" in out
    assert "onnxruntime: 1." in out and "litert:" in out
    venv = Path(ssh_loopback.server.profile()["venv"])
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "edgebench" in names and {"onnxruntime", "ai-edge-litert", "numpy", "psutil"} <= names
    assert not names & {"torch", "onnx", "torch-pruning", "litert-torch", "jax", "scikit-learn", "asyncssh"}, sorted(names)
    assert not names & {"sqlalchemy", "pydantic", "typer", "rich", "alembic", "pyyaml"}, sorted(names)  # host-side only: not installed
    assert "(worker only: numpy>=1.23, psutil>=5.9, onnxruntime>=1.17, ai-edge-litert>=1.0)" in out
    size = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True).stdout.split()[0]
    print(f"worker venv: {size} MiB, {len(names)} packages")


def test_loopback_run_has_the_shape_of_a_local_run_and_copies_files_once(ssh_loopback, home, tmp_path):
    targets = ssh_loopback.write_targets(tmp_path / "targets.yaml", ssh_loopback.server.profile(workdir=tmp_path / "device"))
    suite = write(tmp_path / "suite.yaml", SUITE)
    remote = cli("run", str(suite), "--target", "ssh-loopback", "--targets", str(targets), "--home", str(home), cwd=tmp_path)
    assert remote.returncode == 0, remote.stdout[-3000:] + remote.stderr[-3000:]
    local = cli("run", str(suite), "--target", "local", "--home", str(home), cwd=tmp_path)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    again = cli("run", str(suite), "--target", "ssh-loopback", "--targets", str(targets), "--home", str(home), cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]

    store = Store(home / "edgebench.sqlite")
    r_id, l_id, a_id = run_id_of(remote.stdout), run_id_of(local.stdout), run_id_of(again.stdout)
    rc = {c.cell_key.rsplit("/", 1)[0]: c for c in store.cells(r_id)}
    lc = {c.cell_key.rsplit("/", 1)[0]: c for c in store.cells(l_id)}
    assert set(rc) == set(lc) and len(rc) == 2
    for key, r in rc.items():
        l = lc[key]
        assert r.status == l.status == "ok", (r.error, l.error)
        assert r.target == "ssh-loopback" and l.target == "local"
        rd, ld = r.result.to_dict(), l.result.to_dict()
        # flags follow the measurement's noise (a busy CI machine flags one side high-variance or
        # contended), so the shape compared is every other field; a flag must still be a known code
        filled = lambda d: {k for k, v in d.items() if v not in (None, [], {}) and k != "flags"}
        assert filled(rd) == filled(ld)
        assert all(f.code in CODES and f.code != "other" for f in r.result.flags + l.result.flags)
        assert r.result.accuracy.top1 == l.result.accuracy.top1  # same artifact, same data, other machine path
        assert len(r.result.samples_ns) >= FAST["min_runs"]
        assert r.result.device["timeline"] and {"t", "phase"} <= set(r.result.device["timeline"][0])
        assert r.result.contention is not None
    env = store.environments(r_id)["ssh-loopback"]
    assert env["edgebench_source"] == store.environments(l_id)["local"]["edgebench_source"]
    assert env["state_start"] and env["state_end"] and env["target_profile"]["transport"] == "ssh"
    assert env["backends"]["onnxruntime"]["available"] and env["python"]

    copied_first, copied_again = store.run(r_id).summary, store.run(a_id).summary
    assert copied_first["copied_files"] >= 3  # two artifacts (+ external data) and the evaluation tensors
    assert copied_again["copied_files"] == 0 and "copied" not in again.stdout.splitlines()[-1]

    md = (home / "reports" / r_id / "report.md").read_text()
    assert "Device state per cell" in md and "other processes" in md


def test_lost_connection_and_killed_worker_fail_only_their_cells_and_resume_runs_the_rest(ssh_loopback, home, tmp_path):
    server = ssh_loopback.server
    targets = ssh_loopback.write_targets(tmp_path / "targets.yaml", server.profile(workdir=tmp_path / "device"))
    slow = {**SUITE, "batch_sizes": [1, 8], "measure": {**FAST, "min_seconds": 3.0}}
    suite = write(tmp_path / "suite.yaml", slow)
    proc = subprocess.Popen([sys.executable, "-m", "edgebench.bench.cli", "run", str(suite), "--target", "ssh-loopback", "--targets", str(targets),
                             "--home", str(home)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = wait_for(server.workers, 300, "the first remote worker")
        time.sleep(0.5)
        assert server.kill_connections() >= 1  # the link drops mid-cell
        second = wait_for(lambda: [p for p in server.workers() if p.pid not in {w.pid for w in first}], 120, "the next remote worker")
        time.sleep(0.5)
        os.kill(second[0].pid, signal.SIGKILL)  # the worker dies on the board
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out[-3000:]
    run_id = run_id_of(out)
    store = Store(home / "edgebench.sqlite")
    cells = {c.cell_key: c for c in store.cells(run_id, with_samples=False)}
    assert len(cells) == 4
    failed = {k: c.error for k, c in cells.items() if c.status == "failed"}
    assert len(failed) == 2, failed
    errors = " | ".join(failed.values())
    assert "connection lost to target ssh-loopback" in errors and "killed by SIGKILL" in errors
    assert f"`edgebench run --resume {run_id}` reruns it" in errors  # the lost cell names the command with this run's id
    ok_ids = {k: c.row_id for k, c in cells.items() if c.status == "ok"}
    assert len(ok_ids) == 2
    board_run = tmp_path / "device" / "runs" / run_id
    assert board_run.is_dir()  # a run with failed cells keeps its board folder, to debug
    host_cells = home / "runs" / run_id / "cells"
    first = {f.name: f.read_bytes() for f in host_cells.iterdir()}
    assert any(n.startswith("cell-0000") and n.endswith(".stderr.txt") for n in first), sorted(first)  # board cells keep stderr on the host
    assert any(n.endswith(".result.json") for n in first) and any(n.endswith(".spec.json") for n in first)

    resumed = cli("run", "--resume", run_id, "--targets", str(targets), "--home", str(home), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "2 cells already finished are kept" in resumed.stdout
    after = {c.cell_key: c for c in store.cells(run_id, with_samples=False)}
    assert all(c.status == "ok" for c in after.values()) and len(after) == 4, {k: (c.status, c.error) for k, c in after.items()}
    assert {k: after[k].row_id for k in ok_ids} == ok_ids  # finished cells were not measured again
    for key in failed:
        assert after[key].facts["previous_attempt"] == failed[key]
    assert store.run(run_id).status == "finished"
    assert not board_run.exists()  # every cell done and back on the host: the board's run folder is removed
    now = {f.name: f.read_bytes() for f in host_cells.iterdir()}
    assert {n: now[n] for n in first} == first  # the resume numbered its cells apart: no earlier file overwritten
    assert any("-r" in n for n in set(now) - set(first)), sorted(now)


def test_names_with_spaces_quotes_and_semicolons_go_through_safely(ssh_loopback, built, tmp_path):
    server = ssh_loopback.server
    nasty = "lab \"pi\" 'x'; touch PWNED-target $(touch PWNED-sub)"
    workdir = tmp_path / "dev ice's; touch PWNED-dir"
    targets = ssh_loopback.write_targets(tmp_path / "targets.yaml", server.profile(name=nasty, workdir=workdir))
    model_dir = tmp_path / "my models; touch PWNED-path"
    model_dir.mkdir()
    for f in built.ort_path.parent.iterdir():
        if f.name.startswith(built.ort_path.name):
            shutil.copy2(f, model_dir / f.name)
    suite = write(tmp_path / "suite.yaml", {
        "name": "nasty", "models": [{"name": "net \"q\"; touch PWNED-model", "onnx": str(model_dir / built.ort_path.name)}],
        "backends": [{"name": "onnxruntime", "threads": 1}], "measure": FAST, "targets": [nasty], "cell_timeout_s": 120})
    res = cli("run", str(suite), "--targets", str(targets), "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cells = Store(tmp_path / "home" / "edgebench.sqlite").cells(run_id_of(res.stdout), with_samples=False)
    assert [c.status for c in cells] == ["ok"] and cells[0].target == nasty
    assert workdir.is_dir() and (workdir / "files").is_dir()  # the path was used as written
    for where in (tmp_path, Path.home(), server.root, Path("/tmp")):
        assert not list(where.glob("PWNED*")), where


def test_the_device_build_runs_on_the_board_and_is_cached_there(ssh_loopback, home, tmp_path):
    """onnxruntime's optimize_on_device: built by the worker on the board, in WORKDIR/builds, once."""
    server = ssh_loopback.server
    workdir = tmp_path / "device"
    targets = ssh_loopback.write_targets(tmp_path / "targets.yaml", server.profile(workdir=workdir))
    suite = write(tmp_path / "suite.yaml", {**SUITE, "backends": [{"name": "onnxruntime", "threads": 1, "options": {"optimize_on_device": True}}]})
    builds = []
    for _ in range(2):
        res = cli("run", str(suite), "--target", "ssh-loopback", "--targets", str(targets), "--home", str(home), cwd=tmp_path)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        (cell,) = Store(home / "edgebench.sqlite").cells(run_id_of(res.stdout), with_samples=False)
        assert cell.status == "ok", cell.error
        builds.append(cell.result.evidence.build)
    first, second = builds
    assert first.cached is False and second.cached is True and first.key == second.key
    assert (workdir / "builds" / first.key / "model.opt.onnx").exists()  # on the board, not in the host's cache
    assert not (home / "cache" / "device-builds" / first.key).exists()


def test_fit_measures_its_lookup_table_on_the_board(ssh_loopback, home, tmp_path):
    """`edgebench fit` over SSH: the table's cells run on the board's worker, keyed by the board's fingerprint."""
    targets = ssh_loopback.write_targets(tmp_path / "targets.yaml", ssh_loopback.server.profile(workdir=tmp_path / "device"))
    out = cli("fit", "small_cnn", "--target", "ssh-loopback", "--targets", str(targets), "--budget", "0.9x", "--quick", "--steps", "1",
              "--epochs-per-step", "0", "--finetune-epochs", "0", "--max-accuracy-drop", "100", "--threads", "1", "--home", str(home), cwd=tmp_path)
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]  # 1: over the budget on a busy machine, still a fit
    store = Store(home / "edgebench.sqlite")
    result = store.fits()[0]
    assert result.target == "ssh-loopback" and result.table.target == "ssh-loopback" and result.steps
    assert result.table.fingerprint["target"] == "ssh-loopback" and result.table.fingerprint["backend_version"]
    env = store.environments(result.table.run_id)["ssh-loopback"]
    assert env["target_profile"]["transport"] == "ssh"
    assert store.run(result.table.run_id).status == "fit" and result.fitted is not None
