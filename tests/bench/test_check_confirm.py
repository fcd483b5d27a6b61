"""`edgebench check --confirm 1` through the real CLI, re-measuring real cells on this machine.

One real run R of two ONNX Runtime cells is the truth. Two stored runs are derived from it by scaling one
cell's samples: a head whose cell looks 2.5x slower than R (a night that was slow for a minute), and a
base whose cell looks 2.5x faster than R (so R itself is 2.5x slower: a real change). Re-measuring the
head's cell from its suite gives R's speed again, so the first is not reproduced and the second is.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from edgebench.bench.stats import summarize
from edgebench.bench.store import CONFIRMATION, RunRecord, Store, now
from test_cli import cli

pytestmark = pytest.mark.slow

SUITE = {"name": "confirm", "models": ["small_cnn"], "recipes": ["dense"], "backends": [{"name": "onnxruntime", "threads": 1}],
         "precisions": ["fp32"], "batch_sizes": [1, 8],
         "measure": {"warmup_runs": 5, "warmup_seconds": 0.0, "min_runs": 100, "min_seconds": 0.5}}
SLOWED = "small_cnn/dense/onnxruntime/fp32/b8/local"
# Both sides of each check hold a 2.5x difference; a re-measurement must move by 1.5x to count, so
# this machine's run-to-run noise cannot make the test pass or fail by itself.
CHECK = ["--min-effect", "0.5", "--include-contended", "--no-history"]


def derive(store: Store, source: str, new_id: str, factor: float) -> None:
    """A copy of run ``source`` in which SLOWED's samples are multiplied by ``factor``."""
    run = store.run(source)
    store.create_run(dataclasses.replace(run, id=new_id, created_at=now(), status="running"))
    for target, env in store.environments(source).items():
        store.add_environment(new_id, target, env)
    for cell in store.cells(source):
        if cell.cell_key == SLOWED:
            samples = [int(s * factor) for s in cell.result.samples_ns]
            cell.result = dataclasses.replace(cell.result, samples_ns=samples, latency=summarize(samples, cell.batch))
        store.add_cell(new_id, cell)
    store.finish_run(new_id, "finished", run.summary or {})


@pytest.fixture(scope="module")
def measured(built, tmp_path_factory) -> tuple[Path, str]:
    import yaml

    home = tmp_path_factory.mktemp("confirm-home")
    shutil.copytree(built.cache_root, home / "cache")
    suite = home / "confirm.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    out = cli("run", str(suite), "--home", str(home), cwd=home)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_id = next(line.split()[1].rstrip(":") for line in out.stdout.splitlines() if line.startswith("run "))
    return home, run_id


def _verdict(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_slow_minute_is_not_reproduced_and_the_check_passes(measured, tmp_path):
    home, real = measured
    store = Store(home / "edgebench.sqlite")
    derive(store, real, "slow-night", 2.5)
    plain = cli("check", "slow-night", "--baseline", real, *CHECK, "--json", str(tmp_path / "a.json"), "--home", str(home), cwd=tmp_path)
    assert plain.returncode == 1, plain.stdout + plain.stderr  # without confirmation: a false alarm
    checked = cli("check", "slow-night", "--baseline", real, *CHECK, "--confirm", "1", "--json", str(tmp_path / "b.json"),
                  "--markdown", str(tmp_path / "b.md"), "--home", str(home), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "re-measurement 1 of 1" in checked.stdout
    v = _verdict(tmp_path / "b.json")
    cell = next(c for c in v["cells"] if c["cell_key"] == SLOWED)
    lat = next(m for m in cell["metrics"] if m["metric"] == "latency")
    assert cell["verdict"] == "inconclusive" and lat["reason"].startswith("not reproduced: 0 of 1 re-measurements reproduce it")
    assert "1 flagged cell(s) re-measured" in (tmp_path / "b.md").read_text()
    confirmations = [r for r in store.runs() if r.status == CONFIRMATION]
    assert confirmations and {c.cell_key for c in store.cells(confirmations[0].id, with_samples=False)} == {SLOWED}
    assert confirmations[0].summary["confirm_of"] == "slow-night"
    assert store.resolve("latest") == "slow-night"  # a confirmation run never becomes `latest`
    listed = cli("runs", "--home", str(home), cwd=tmp_path).stdout
    assert f"{confirmations[0].id}  confirmation" in listed and "(re-measures run slow-night)" in listed


def test_a_real_change_is_confirmed_and_the_check_fails(measured, tmp_path):
    home, real = measured
    store = Store(home / "edgebench.sqlite")
    derive(store, real, "fast-base", 1 / 2.5)
    checked = cli("check", real, "--baseline", "fast-base", *CHECK, "--confirm", "1", "--json", str(tmp_path / "c.json"),
                  "--home", str(home), cwd=tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    v = _verdict(tmp_path / "c.json")
    [reg] = [c for c in v["cells"] if c["verdict"] == "regressed"]
    assert reg["cell_key"] == SLOWED
    lat = next(m for m in reg["metrics"] if m["metric"] == "latency")
    assert "confirmed: 1 of 1 re-measurements reproduce it" in lat["reason"]
