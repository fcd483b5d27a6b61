"""measure.processes: a cell measured by several worker processes, its samples pooled."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgebench.bench.config import load_suite
from edgebench.bench.board import per_process, pool
from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.results import Accuracy, CellResult, Contention, MeasureSettings, MemoryStats
from edgebench.bench.runner import Paths, Runner
from edgebench.bench.stats import summarize


def part(median_ms: float, n: int, seed: int, *, rss: float = 70.0, contended: bool = False, throttled: bool = False,
         warnings: list[str] | None = None) -> CellResult:
    rng = np.random.default_rng(seed)
    samples = [int(v) for v in rng.lognormal(np.log(median_ms * 1e6), 0.01, n)]
    return CellResult("ok", evidence=Evidence("onnxruntime", providers=["cpu"]), load_s=0.01, warmup_runs=10, warmup_s=0.5, samples_ns=samples,
                      latency=summarize(samples, 1), memory=MemoryStats(rss - 10, rss, 10.0, None, None, None, 0.01, 5),
                      accuracy=Accuracy(360, 0.97, 1.0), contention=Contention(0.3 if contended else 0.01, 0.5, 2, contended),
                      flags=[Flag.from_data(w) for w in warnings or []], worker_wall_s=3.0,
                      device={"timeline": [{"t": 0.0, "phase": "measure"}], "throttled": throttled,
                              "throttle_reasons": ["pi: soft temperature limit active"] if throttled else [], "temp_max_c": 50.0 + seed})


def test_each_process_gets_its_share_of_the_floors_and_the_full_warm_up():
    s = MeasureSettings(warmup_runs=10, warmup_seconds=0.5, min_runs=100, min_seconds=2.0, max_runs=1000, max_seconds=60, processes=3)
    p = per_process(s)
    assert (p.min_runs, p.min_seconds, p.max_runs, p.max_seconds, p.processes) == (34, pytest.approx(2 / 3), 334, 20.0, 1)
    assert (p.warmup_runs, p.warmup_seconds) == (10, 0.5)
    assert per_process(MeasureSettings()) == MeasureSettings()


def test_pooling_concatenates_samples_and_keeps_the_worst_state():
    parts = [part(1.0, 100, 1), part(1.5, 100, 2, rss=90.0, contended=True, warnings=["high variance: CoV 9.0% > 5%"]),
             part(1.0, 100, 3, throttled=True)]
    pooled = pool(parts, 1, MeasureSettings(processes=3))
    assert pooled.samples_ns == parts[0].samples_ns + parts[1].samples_ns + parts[2].samples_ns
    assert pooled.latency == summarize(pooled.samples_ns, 1) and pooled.processes == 3
    assert pooled.process_p50_ms == [p.latency.p50_ms for p in parts]
    assert pooled.memory.peak_rss_mib == 90.0 and pooled.contention.contended is True and pooled.contention.other_cpu_share == 0.3
    assert pooled.device["throttled"] is True and pooled.device["throttle_reasons"] == ["pi: soft temperature limit active"]
    assert [r["process"] for r in pooled.device["timeline"]] == [0, 1, 2] and pooled.device["temp_max_c"] == 53.0
    assert (pooled.warmup_runs, pooled.worker_wall_s) == (30, 9.0)
    assert any(w.startswith("processes disagree: per-process p50") for w in pooled.warnings)
    close = pool([part(1.0, 100, 1), part(1.2, 100, 2), part(1.1, 100, 3)], 1, MeasureSettings(processes=3))
    assert not any(f.code == "processes-disagree" for f in close.flags)  # a usual swing: the intervals carry it
    variance = [w for w in pooled.warnings if w.startswith("high variance")]
    assert len(variance) == 1 and f"{pooled.latency.cov:.1%}" in variance[0]  # recomputed on the pooled samples


def test_agreeing_processes_raise_no_warning():
    pooled = pool([part(1.0, 200, 1), part(1.0, 200, 2)], 1, MeasureSettings(processes=2))
    assert pooled.warnings == [] and pooled.contention.contended is False and pooled.device["throttled"] is False


@pytest.mark.slow
def test_a_run_with_three_processes_per_cell(built, write_suite, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(built.cache_root, home / "cache")
    suite = write_suite("s.yaml", {"models": ["small_cnn"], "backends": [{"name": "onnxruntime", "threads": 1}],
                                   "measure": {"warmup_runs": 3, "warmup_seconds": 0.0, "min_runs": 90, "min_seconds": 0.3, "processes": 3,
                                               "quiet_wait_s": 0, "remeasure_contended": 0}})  # one attempt: the file names below
    runner = Runner(Paths(home=home), log=lambda m: None)
    summary = runner.run(load_suite(suite))
    [cell] = runner.store.cells(summary.run_id)
    assert cell.status == "ok", cell.error
    r = cell.result
    assert r.processes == 3 and len(r.process_p50_ms) == 3 and len(r.samples_ns) >= 90
    assert r.warmup_runs >= 9 and r.accuracy.top1 > 0.5
    cells_dir = Paths(home=home).cells_dir(summary.run_id)
    assert sorted(p.name for p in cells_dir.glob("*-p?.result.json")) == [f"cell-0000-p{i}.result.json" for i in (1, 2, 3)]


# -- the quiet gate's second half: a contended cell measured again ------------------------------

def quiet_part(share: float, seed: int = 1) -> CellResult:
    r = part(1.0, 50, seed, contended=share > 0.05)
    r.contention.other_cpu_share = share
    if share > 0.05:
        r.flags = [Flag("contended", f"contended: other processes used {share:.0%} of the CPU while measuring")]
    return r


class FakeTransport:
    """Hands back the prepared results in order and records the worker names it was asked to run."""

    def __init__(self, results: list[CellResult]) -> None:
        self.results, self.names, self.waits = list(results), [], []

    async def run_cell(self, spec_json, name, timeout_s):
        import json

        from edgebench.targets.transport import WorkerOutcome

        self.names.append(name)
        self.waits.append(json.loads(spec_json)["measure"]["quiet_wait_s"])
        return WorkerOutcome(self.results.pop(0))


def measure_with(results: list[CellResult], **measure) -> tuple[CellResult, list[str]]:
    import asyncio
    import types

    from edgebench.bench.board import Board
    from edgebench.bench.contracts.spec import CellSpec

    board = Board.__new__(Board)  # only what one cell's measurement touches
    board.transport, board.timeout_s, board._task, board._unreachable, board._last_reason = FakeTransport(results), 60, None, 0, ""
    board._resume_tag = ""  # not a resumed run
    spec = CellSpec("m/dense/onnxruntime/fp32/b1/local", "onnxruntime", "fp32", "a.onnx", 1, "e.npz", measure=MeasureSettings(**measure))
    result = asyncio.run(board._measure_until_quiet(types.SimpleNamespace(index=3, spec=spec), spec))
    measure_with.waits = board.transport.waits
    return result, board.transport.names


def test_a_contended_cell_is_measured_again_and_the_quiet_attempt_kept():
    quiet = quiet_part(0.01, seed=9)
    result, names = measure_with([quiet_part(0.6), quiet_part(0.4), quiet])
    assert names == ["cell-0003", "cell-0003-a2", "cell-0003-a3"]  # each attempt keeps its own files
    assert result.samples_ns == quiet.samples_ns and result.contention.contended is False
    assert result.contention.attempts == 3 and result.contention.attempt_other_shares == [0.6, 0.4, 0.01]
    assert not any(f.code == "contended" for f in result.flags)


def test_a_cell_contended_in_every_attempt_keeps_the_flag_and_the_least_contended_samples():
    least = quiet_part(0.3, seed=5)
    result, names = measure_with([quiet_part(0.6), least, quiet_part(0.5)], remeasure_contended=2)
    assert len(names) == 3 and result.samples_ns == least.samples_ns
    assert result.contention.contended is True and result.contention.attempt_other_shares == [0.6, 0.3, 0.5]
    [flag] = [f for f in result.flags if f.code == "contended"]
    assert "all 3 attempts" in flag.text and "60%, 30%, 50%" in flag.text and "excluded from wins" in flag.text


def test_a_remeasured_cell_keeps_the_first_attempts_device_build_facts():
    # the first attempt built the artifact on the device; the kept (quiet) attempt found it cached
    from edgebench.bench.contracts.evidence import BuildFacts, Evidence

    first, quiet = quiet_part(0.6), quiet_part(0.01, seed=9)
    first.evidence = Evidence(runtime="onnxruntime", build=BuildFacts("k", False, 1.5, 10, "model.opt.onnx"))
    quiet.evidence = Evidence(runtime="onnxruntime", build=BuildFacts("k", True, None, 10, "model.opt.onnx"))
    result, _ = measure_with([first, quiet])
    assert result.samples_ns == quiet.samples_ns
    assert result.evidence.build.cached is False and result.evidence.build.build_s == 1.5


def test_an_uncontended_cell_is_measured_once_and_remeasure_can_be_off():
    result, names = measure_with([quiet_part(0.01), quiet_part(0.01)])
    assert names == ["cell-0003"] and result.contention.attempts == 1 and result.contention.attempt_other_shares == [0.01]
    result, names = measure_with([quiet_part(0.6), quiet_part(0.01)], remeasure_contended=0)
    assert names == ["cell-0003"] and result.contention.contended is True


def test_a_failed_attempt_ends_the_cell():
    result, names = measure_with([quiet_part(0.6), CellResult.failed("boom")])
    assert result.status == "failed" and result.error == "boom" and len(names) == 2


def test_remeasured_attempts_with_several_processes_each():
    results = [quiet_part(0.6, 1), quiet_part(0.01, 2), quiet_part(0.01, 3), quiet_part(0.01, 4)]
    result, names = measure_with(results, processes=2)
    assert names == ["cell-0003-p1", "cell-0003-p2", "cell-0003-a2-p1", "cell-0003-a2-p2"]
    assert result.processes == 2 and result.contention.attempts == 2 and result.contention.contended is False
    # a process right after an uncontended one skips the gate's look; after a contended one, or first, it waits
    assert measure_with.waits == [3.0, 3.0, 3.0, 0.0]


def test_pooled_processes_give_one_contended_flag():
    parts = [quiet_part(0.3, 1), quiet_part(0.01, 2), quiet_part(0.6, 3)]
    pooled = pool(parts, 1, MeasureSettings(processes=3))
    [flag] = [f for f in pooled.flags if f.code == "contended"]
    assert flag.text == "contended: other processes used up to 60% of the CPU while measuring (2 of 3 worker processes)"
