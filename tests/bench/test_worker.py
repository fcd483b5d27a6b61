"""The cell worker (bench/worker.py): in process, and as the child process the runner starts."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgebench.bench import worker
from edgebench.bench.contracts.results import CellResult, MeasureSettings
from edgebench.bench.stats import summarize
from edgebench.bench.worker import CellSpec, run_cell


def spec_for(built, backend: str = "onnxruntime", batch: int = 1, measure: MeasureSettings | None = None, **kw) -> CellSpec:
    artifact = built.ort_path if backend == "onnxruntime" else built.torch_path
    return CellSpec(
        cell_key=f"small_cnn/dense/{backend}/fp32/b{batch}/local", backend=backend, precision="fp32",
        artifact=str(kw.pop("artifact", artifact)), batch=batch, eval_data=str(built.eval_npz),
        options={"threads": 1}, measure=measure or MeasureSettings(warmup_runs=2, warmup_seconds=0.0, min_runs=10, min_seconds=0.05),
        **kw,
    )


def test_run_cell_ok_on_the_onnx_artifact(built, fast_measure):
    r = run_cell(spec_for(built, measure=fast_measure))
    assert r.status == "ok", r.error
    assert r.error is None
    assert len(r.samples_ns) >= fast_measure.min_runs
    assert all(isinstance(v, int) and v > 0 for v in r.samples_ns)
    assert r.latency == summarize(r.samples_ns, 1)
    assert r.latency.n == len(r.samples_ns)
    assert r.latency.min_ms <= r.latency.p50_ms <= r.latency.p90_ms <= r.latency.p99_ms <= r.latency.max_ms
    assert r.warmup_runs >= fast_measure.warmup_runs
    assert r.accuracy.n == 360 and r.accuracy.top1 > 0.9 and r.accuracy.top5 >= r.accuracy.top1
    assert r.fidelity.top1_agreement > 0.98 and r.fidelity.max_abs_diff < 1e-4
    assert r.fidelity.mean_abs_diff <= r.fidelity.max_abs_diff
    m = r.memory
    assert m.baseline_rss_mib > 0 and m.peak_rss_mib >= m.baseline_rss_mib and m.peak_rss_delta_mib >= 0
    assert m.n_samples == len(r.memory_timeline) >= 1
    assert r.load_s is not None and r.load_s > 0 and r.first_inference_s is not None and r.first_inference_s > 0
    assert r.contention is not None and r.contention.logical_cpus >= 1
    assert r.evidence.version and r.evidence.threads == 1
    # the result survives the JSON hop the runner makes
    assert CellResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_run_cell_at_a_batch_that_does_not_divide_the_split(built, fast_measure):
    """360 images at batch 7: the last batch is padded, yet accuracy counts exactly 360 images."""
    r1 = run_cell(spec_for(built, measure=fast_measure))
    r7 = run_cell(spec_for(built, batch=7, measure=fast_measure))
    assert r7.status == "ok", r7.error
    assert r7.accuracy.n == 360
    assert r7.accuracy.top1 == pytest.approx(r1.accuracy.top1)
    assert r7.latency.throughput_ips == pytest.approx(7 * r7.latency.n / (sum(r7.samples_ns) / 1e9))


def test_evaluate_pads_the_last_batch(built):
    from edgebench.backends import base

    d = built.eval_data()
    session = base.get("onnxruntime").load(built.ort_path, "fp32", {"threads": 1})
    seen = []

    class Spy:
        def run(self, batch):
            seen.append(batch.shape[0])
            return session.run(batch)

    out7 = worker.evaluate(Spy(), d["inputs"][:20], 7)
    assert seen == [7, 7, 7]  # 7 + 7 + 6 real, padded to 7
    out1 = worker.evaluate(session, d["inputs"][:20], 1)
    assert out7.shape == (20, 10)
    np.testing.assert_allclose(out7, out1, atol=1e-5)


def test_warnings_flag_high_variance_and_caps(built):
    s = MeasureSettings(warmup_runs=1, warmup_seconds=0.0, min_runs=1000, min_seconds=0.0, max_runs=5, cov_warn=1e-9)
    r = run_cell(spec_for(built, measure=s))
    assert r.status == "ok"
    assert len(r.samples_ns) == 5
    assert any("max_runs=5" in w for w in r.warnings)
    assert any(w.startswith("high variance") for w in r.warnings)


def _latency(samples_ms):
    return summarize([int(v * 1e6) for v in samples_ms], 1)


def test_variance_flag_reads_the_robust_ratio_not_the_cov():
    tail = [1.0] * 98 + [50.0, 50.0]  # a stable cell with two slow samples: CoV 348%, IQR/median 0
    stable = _latency(tail)
    assert stable.cov > 3 and stable.iqr_ratio == 0.0
    assert worker.variance_flag(stable, MeasureSettings()) is None
    wide = _latency(np.linspace(0.5, 1.5, 101))  # IQR/median 50%
    flag = worker.variance_flag(wide, MeasureSettings(dispersion_warn=0.2))
    assert flag.code == "high-variance" and flag.text.startswith(f"high variance: IQR/median {wide.iqr_ratio:.1%} > 20%")
    assert 0.45 < wide.iqr_ratio < 0.55 and f"CoV {wide.cov:.1%}" in flag.text
    assert f"outliers: {wide.stddev_outliers} beyond 1 std, {wide.iqr_outliers} beyond 1.5 IQR" in flag.text
    assert worker.variance_flag(wide, MeasureSettings(dispersion_warn=0.6)) is None


def test_a_suite_that_sets_cov_warn_still_gets_the_cov_warning():
    stable = _latency([1.0] * 98 + [50.0, 50.0])
    flag = worker.variance_flag(stable, MeasureSettings(cov_warn=0.05))
    assert flag is not None and flag.text.startswith("high variance: CoV") and "> cov_warn 5%" in flag.text


def test_an_old_suite_that_sets_cov_warn_still_loads(write_suite):
    from edgebench.bench.config import load_suite

    loaded = load_suite(write_suite("old.yaml", {"models": ["small_cnn"], "backends": ["onnxruntime"], "measure": {"cov_warn": 0.05}}))
    m = loaded.measure_settings()
    assert m.cov_warn == 0.05 and m.dispersion_warn == MeasureSettings().dispersion_warn
    assert MeasureSettings().cov_warn == 0.0  # off unless a suite asks for it


def test_run_cell_records_the_quiet_gate(built, fast_measure):
    r = run_cell(spec_for(built, measure=replace(fast_measure, quiet_wait_s=0.3)))
    assert r.status == "ok", r.error
    c = r.contention
    assert c.quiet in (True, False) and 0 < c.quiet_wait_s <= 0.3 + 0.2  # one or more 0.2 s looks, bounded
    assert c.attempts == 1 and r.latency.iqr_ratio is not None and r.latency.outliers is not None
    off = run_cell(spec_for(built, measure=replace(fast_measure, quiet_wait_s=0.0)))
    assert off.contention.quiet is None and off.contention.quiet_wait_s == 0.0


def test_corrupt_artifact_fails_naming_the_file(built, tmp_path, fast_measure):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00\xffthis is not an onnx model" * 50)
    r = run_cell(spec_for(built, artifact=bad, measure=fast_measure))
    assert r.status == "failed"
    assert str(bad) in r.error
    assert "\n" not in r.error
    assert r.latency is None and r.samples_ns == []
    assert r.traceback


def test_missing_artifact_fails_naming_the_path(built, tmp_path, fast_measure):
    missing = tmp_path / "gone" / "model.onnx"
    r = run_cell(spec_for(built, artifact=missing, measure=fast_measure))
    assert r.status == "failed"
    assert str(missing) in r.error and "not found" in r.error


def test_unavailable_backend_fails_with_the_reason(built, monkeypatch, fast_measure):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = run_cell(spec_for(built, measure=fast_measure))
    assert r.status == "failed"
    assert "onnxruntime" in r.error and "not installed" in r.error


def test_spec_json_round_trip(built):
    s = spec_for(built, batch=4)
    back = CellSpec.from_json(s.to_json())
    assert back == s and isinstance(back.measure, MeasureSettings)


def test_main_rejects_an_invalid_spec(tmp_path, capsys):
    bad = tmp_path / "spec.json"
    bad.write_text("{not json")
    assert worker.main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a valid cell spec" in err


# -- as a child process ------------------------------------------------------------------------

HOST_ONLY = ("torch", "torch_pruning", "onnx", "onnxscript", "sklearn", "scipy")

WRAPPER = """
import json, sys
from edgebench.bench.worker import main
rc = main(["run", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"rc": rc, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def run_worker_child(built, tmp_path, backend):
    spec = spec_for(built, backend=backend)
    spec_path, out = tmp_path / f"{backend}.spec.json", tmp_path / f"{backend}.result.json"
    spec_path.write_text(spec.to_json())
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(spec_path), str(out)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return info, CellResult.from_dict(json.loads(out.read_text()))


def test_worker_child_for_onnxruntime_imports_no_host_libraries(built, tmp_path):
    info, result = run_worker_child(built, tmp_path, "onnxruntime")
    assert info["rc"] == 0 and result.status == "ok", result.error
    assert "onnxruntime" in info["modules"]
    leaked = sorted(set(HOST_ONLY) & set(info["modules"]))
    assert leaked == [], f"the onnxruntime worker imported host-side libraries: {leaked}"


def test_worker_child_for_torch_does_import_torch(built, tmp_path):
    """Control for the test above: the same check does see torch when the cell needs it."""
    info, result = run_worker_child(built, tmp_path, "torch")
    assert result.status == "ok", result.error
    assert "torch" in info["modules"]


def test_worker_module_writes_result_file(built, tmp_path):
    spec_path, out = tmp_path / "c.spec.json", tmp_path / "c.result.json"
    spec_path.write_text(spec_for(built).to_json())
    proc = subprocess.run([sys.executable, "-m", "edgebench.bench.worker", "run", str(spec_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # the result goes to --out
    r = CellResult.from_dict(json.loads(out.read_text()))
    assert r.status == "ok" and r.accuracy.top1 > 0.9
    assert not Path(str(out) + ".tmp").exists()


def test_worker_probe_prints_a_fingerprint(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgebench.bench.worker", "probe"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    fp = json.loads(proc.stdout)
    for key in ("cpu_model", "logical_cpus", "backends", "python"):
        assert key in fp
    assert fp["python"] == sys.version.split()[0]
    assert fp["logical_cpus"] >= 1
    assert fp["backends"]["onnxruntime"]["available"] is True
    assert fp["backends"]["torch"]["available"] is True


# -- the device during a cell: contention and the monitor ----------------------------------------

BURNER = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 20:\n    pass\n"


def _contended_cell(built, burners: int) -> CellResult:
    """One real cell (in a child worker, as the harness runs it) with ``burners`` CPU-burning processes beside it."""
    import os

    from edgebench.targets.transport import run_worker

    measure = MeasureSettings(warmup_runs=5, warmup_seconds=0.0, min_runs=50, min_seconds=1.0, max_seconds=10.0, quiet_wait_s=0.6)
    procs = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(burners)]
    try:
        import time

        time.sleep(0.3 if burners else 0)  # past interpreter start-up
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))
        return run_worker(spec_for(built, measure=measure, monitor={"samplers": ["cpu"]}), tmp / f"contention-{os.getpid()}", 60).result
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _skip_unless_idle(when: str) -> None:
    """The premise of an idle-cell assertion, checked on this machine: other processes' CPU share over
    0.5 s at most the 5% threshold; otherwise skip and say what was seen (the machine may be shared)."""
    from edgebench.bench.measure import wait_for_quiet

    seen = wait_for_quiet(0.05, 0.5, window_s=0.5)
    if seen.quiet is False:
        pytest.skip(f"premise not met {when}: this machine is not idle (other processes used {seen.other_cpu_share:.0%} "
                    "of the CPU over 0.5 s, threshold 5%); the idle half of this test needs an idle machine")


def test_a_cell_beside_a_cpu_burner_is_contended_and_the_same_cell_idle_is_not(built):
    """Bounded: each cell measures ~1 s; the idle cell gets three tries because the machine is shared,
    and is skipped (not failed) when the machine is busy before or after a try."""
    import os

    burners = max(1, len(os.sched_getaffinity(0)) // 2)  # half the CPUs: well above the 5% threshold
    busy = _contended_cell(built, burners)
    assert busy.status == "ok", busy.error
    assert busy.contention.contended is True and busy.contention.other_cpu_share > 0.2
    assert busy.contention.quiet is False and busy.contention.quiet_wait_s <= 0.6 + 0.2  # the gate waited, bounded
    assert any(w.startswith("contended") for w in busy.warnings)
    assert any(row.get("other_cpu", 0) > 0.2 for row in busy.device["timeline"] if row.get("phase") == "measure")
    idle = []
    for _ in range(3):
        _skip_unless_idle("before the idle cell")
        result = _contended_cell(built, 0)
        idle.append(result.contention.other_cpu_share)
        if not result.contention.contended:
            assert not any(w.startswith("contended") for w in result.warnings)
            return
        _skip_unless_idle(f"after an idle cell read {idle[-1]:.0%} other CPU")
    pytest.fail(f"the idle cell was contended three times (other CPU shares {idle}) on a machine idle before and after each")


def test_worker_runs_the_monitor_and_reports_the_device(built, fast_measure):
    result = run_cell(spec_for(built, measure=fast_measure, monitor={"samplers": ["auto"], "interval_s": 0.05, "idle_s": 0.2}))
    assert result.status == "ok", result.error
    dev = result.device
    assert dev["samplers"] and dev["timeline"]
    marks = [p["phase"] for p in dev["phases"]]
    assert marks.count("idle") == 1 and marks.index("idle") < marks.index("load") < marks.index("measure") < marks.index("evaluate")
    assert "measure" in {row["phase"] for row in dev["timeline"]}  # loading may be shorter than one interval
    assert dev["samplers"]["cpu"] == "ok" and dev["measure_other_cpu"] is not None
    assert isinstance(dev["throttled"], bool)
    assert dev["power_rail"] is None and result.energy_mj_per_inference is None  # no input rail on a VM


def test_worker_without_monitor_reports_no_device(built, fast_measure):
    result = run_cell(spec_for(built, measure=fast_measure))
    assert result.status == "ok" and result.device is None


def test_probe_state_prints_only_the_device_state(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgebench.bench.worker", "probe", "--state"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    assert "backends" not in state and state
