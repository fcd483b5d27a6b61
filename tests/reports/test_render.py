"""Report files (reports/render.py): Markdown per target, JSON, cells.csv, every sample in samples.npz (and samples.csv when asked)."""

from __future__ import annotations

import csv
import datetime as dt
import json

import pytest

from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.results import Accuracy, CellResult, Fidelity, LatencyStats
from edgebench.bench.store import CellRecord, RunRecord, Store
from edgebench.reports import render

RUN = "20240102-030405-beef"


def ok_cell(recipe, backend, p50, top1, samples, target="local", sparsity=0.0, flags=()):
    key = f"small_cnn/{recipe}/{backend}/fp32/b1/{target}"
    lat = LatencyStats(n=len(samples), min_ms=p50 / 2, mean_ms=p50, std_ms=0.01, cov=0.01, p50_ms=p50, p90_ms=p50,
                       p95_ms=p50, p99_ms=p50, max_ms=p50 * 2, throughput_ips=1000 / p50)
    result = CellResult("ok", latency=lat, samples_ns=list(samples), accuracy=Accuracy(360, top1, 1.0),
                        fidelity=Fidelity(0.99, 1e-6, 1e-7), evidence=Evidence(backend, sparse_kernels=False), flags=list(flags))
    return CellRecord(key, "small_cnn", recipe, backend, "fp32", 1, target, "ok", options={"threads": 1},
                      facts={"model": {"weight_sparsity": sparsity}, "artifact": {"size_bytes": 2048, "export_check": {"max_abs_diff": 2e-6}}},
                      result=result)


@pytest.fixture
def report_dir(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.create_run(RunRecord(RUN, "unit", "/x/unit.yaml", "models: [small_cnn]\n", "running",
                               dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)))
    store.add_environment(RUN, "local", {"cpu_model": "Test CPU", "logical_cpus": 2, "cpufreq": "not available",
                                         "backends": {"torch": {"available": True, "version": "2.0"}}})
    store.add_environment(RUN, "board", {"error": "probe failed: no route"})
    cells = [
        ok_cell("dense", "torch", 4.0, 0.90, [4_000_000, 3_900_000, 4_100_000]),
        ok_cell("l1-50", "torch", 2.0, 0.85, [2_000_000, 2_100_000], sparsity=0.5, flags=[Flag("high-variance", "high variance: CoV 9% > 5%")]),
        ok_cell("dense", "torch", 8.0, 0.90, [8_000_000], target="board"),
        CellRecord("small_cnn/dense/onnxruntime/fp32/b1/local", "small_cnn", "dense", "onnxruntime", "fp32", 1, "local",
                   "failed", error="worker killed by SIGKILL (out of memory, or killed from outside)",
                   result=CellResult.failed("worker killed by SIGKILL (out of memory, or killed from outside)")),
        CellRecord("small_cnn/dense/torch/int8/b1/local", "small_cnn", "dense", "torch", "int8", 1, "local",
                   "skipped", error="torch supports precisions fp32, not int8"),
    ]
    for c in cells:
        store.add_cell(RUN, c)
    store.finish_run(RUN, "finished", {"cells_ok": 3, "cells_failed": 1, "cells_skipped": 1, "trained": 0, "exported": 0, "cache_hits": 4})
    out = render.write(store, "latest", tmp_path / "reports")
    return out, cells


def test_files_are_written_in_the_run_folder(report_dir, tmp_path):
    out, _ = report_dir
    assert out == tmp_path / "reports" / RUN
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "cells.csv", "samples.npz", "report.html"}  # samples.csv: asked for


def test_markdown_has_a_table_per_target_with_reference_rows(report_dir):
    out, _ = report_dir
    md = (out / "report.md").read_text()
    assert md.startswith(f"# edgebench run {RUN}")
    assert md.count("## Target `") == 2
    local, board = md.split("## Target `local`")[1].split("## Target `board`")
    assert "Test CPU" in local and "probe failed: no route" in board
    header = "| " + " | ".join(render.HEADERS) + " |"
    assert md.count(header) == 2
    local_rows = [l for l in local.splitlines() if l.startswith("| small_cnn |")]
    assert len(local_rows) == 4  # dense, l1-50, the failed and the skipped cell
    dense = next(l for l in local_rows if "| dense (ref) | torch | fp32 |" in l)
    sparse = next(l for l in local_rows if "| l1-50 | torch |" in l)
    assert dense.rstrip().endswith("| 1.00x |")
    assert sparse.rstrip().endswith("| 2.00x |")  # 4.0 ms / 2.0 ms
    assert "| -5.00 |" in sparse  # 85% - 90%
    assert "| 4.000 |" in dense and "| 2.000 |" in sparse
    assert any("| FAILED |" in l and "onnxruntime" in l for l in local_rows)
    assert any("| SKIPPED |" in l and "int8" in l for l in local_rows)
    board_rows = [l for l in board.splitlines() if l.startswith("| small_cnn |")]
    assert len(board_rows) == 1 and "8.000" in board_rows[0]


def test_markdown_lists_failures_and_warnings(report_dir):
    out, _ = report_dir
    md = (out / "report.md").read_text()
    failures = md.split("## Failed and skipped cells", 1)[1]
    assert "- `small_cnn/dense/onnxruntime/fp32/b1/local` (failed): worker killed by SIGKILL" in failures
    assert "- `small_cnn/dense/torch/int8/b1/local` (skipped): torch supports precisions fp32, not int8" in failures
    assert "- `small_cnn/l1-50/torch/fp32/b1/local`: sparse-not-used: 50% zero weights" in md
    assert "- `small_cnn/l1-50/torch/fp32/b1/local`: high variance: CoV 9% > 5%" in md
    assert "`small_cnn/dense/torch/fp32/b1/local`: sparse-not-used" not in md


def test_json_report(report_dir):
    out, _ = report_dir
    data = json.loads((out / "report.json").read_text())
    assert data["run"]["id"] == RUN and data["run"]["status"] == "finished"
    assert set(data["targets"]) == {"local", "board"}
    assert len(data["targets"]["local"]) == 4 and len(data["targets"]["board"]) == 1
    sparse = next(r for r in data["targets"]["local"] if r["recipe"] == "l1-50")
    assert sparse["speedup_p50"] == pytest.approx(2.0) and sparse["top1_delta_pts"] == pytest.approx(-5.0)
    assert {(f["cell"], f["status"]) for f in data["failures"]} == {
        ("small_cnn/dense/onnxruntime/fp32/b1/local", "failed"), ("small_cnn/dense/torch/int8/b1/local", "skipped")}
    assert data["environments"]["local"]["cpu_model"] == "Test CPU"


def test_cells_csv(report_dir):
    out, cells = report_dir
    with open(out / "cells.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["cell_key"] for r in rows] == [c.cell_key for c in cells]
    sparse = next(r for r in rows if r["recipe"] == "l1-50")
    assert float(sparse["speedup_p50"]) == pytest.approx(2.0)
    assert "sparse-not-used" in sparse["warnings"] and "high variance" in sparse["warnings"]
    failed = next(r for r in rows if r["status"] == "failed")
    assert "SIGKILL" in failed["error"]


def test_samples_csv_has_every_sample_in_order(report_dir, tmp_path):
    _, cells = report_dir
    out = render.write(Store(tmp_path / "s.sqlite"), RUN, tmp_path / "reports", samples_csv=True)
    assert 'href="samples.csv"' in (out / "report.html").read_text()
    with open(out / "samples.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["cell_key", "idx", "latency_ns"]
    expected = [[c.cell_key, str(i), str(v)] for c in cells if c.result for i, v in enumerate(c.result.samples_ns)]
    assert rows[1:] == expected
    assert len(expected) == 3 + 2 + 1


def test_samples_npz_has_every_sample_exactly_in_the_documented_layout(report_dir):
    import numpy as np

    out, cells = report_dir
    measured = [c for c in cells if c.result and c.result.samples_ns]
    with np.load(out / "samples.npz", allow_pickle=False) as z:  # plain arrays: no pickle needed to read it
        assert set(z.files) == {"cell_keys", "offsets", "latency_ns", "process_samples", "process_offsets"}
        assert list(z["cell_keys"]) == [c.cell_key for c in measured]
        assert z["offsets"].dtype == z["latency_ns"].dtype == np.int64
        assert list(z["offsets"]) == [0, 3, 5, 6] and list(z["process_offsets"]) == [0, 0, 0, 0]
        for i, c in enumerate(measured):
            assert z["latency_ns"][z["offsets"][i]:z["offsets"][i + 1]].tolist() == c.result.samples_ns
    assert 'href="samples.npz"' in (out / "report.html").read_text() and 'href="samples.csv"' not in (out / "report.html").read_text()


def test_samples_npz_splits_processes_and_keeps_large_values_exact(tmp_path):
    import numpy as np

    store = Store(tmp_path / "s.sqlite")
    store.create_run(RunRecord(RUN, "unit", "/x/unit.yaml", "", "running", dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)))
    a = [20_000, 30_000_000_000, 20_001, 2**40, 25_000]  # a 20 us sample beside a 30 s one, and beyond 32 bits
    b = list(range(1_000_000, 1_000_010))
    for cell, counts in ((ok_cell("dense", "torch", 1.0, 0.9, a), [2, 3]), (ok_cell("l1-50", "torch", 1.0, 0.9, b), [])):
        cell.result.process_samples = counts
        store.add_cell(RUN, cell)
    store.finish_run(RUN, "finished", {})
    out = render.write(store, RUN, tmp_path / "reports")
    got = render.read_samples(out / "samples.npz")
    whole, per = got["small_cnn/dense/torch/fp32/b1/local"]
    assert whole.tolist() == a and [p.tolist() for p in per] == [a[:2], a[2:]]
    whole, per = got["small_cnn/l1-50/torch/fp32/b1/local"]
    assert whole.tolist() == b and len(per) == 1  # one process: no counts stored
    with np.load(out / "samples.npz") as z:
        assert z["process_samples"].tolist() == [2, 3] and z["process_offsets"].tolist() == [0, 2, 2]


def test_samples_npz_of_a_run_without_samples_is_written_empty(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.create_run(RunRecord(RUN, "unit", "/x/unit.yaml", "", "running", dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)))
    store.add_cell(RUN, CellRecord("small_cnn/dense/torch/int8/b1/local", "small_cnn", "dense", "torch", "int8", 1, "local",
                                   "skipped", error="torch supports precisions fp32, not int8"))
    out = render.write(store, RUN, tmp_path / "reports")
    assert render.read_samples(out / "samples.npz") == {}


def test_samples_npz_on_a_full_disk_names_the_file_and_keeps_the_old_one(report_dir, tmp_path, monkeypatch):
    import errno
    import os

    import numpy as np

    from edgebench.bench.contracts.files import CannotWrite

    out, _ = report_dir
    old = (out / "samples.npz").read_bytes()

    def full(f, **arrays):
        f.write(b"PK partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(CannotWrite) as info:
        render.write(Store(tmp_path / "s.sqlite"), RUN, tmp_path / "reports")
    assert info.value.path == str(out / "samples.npz")
    assert (out / "samples.npz").read_bytes() == old and not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_fingerprint_line_markdown_and_short():
    from edgebench.reports.environment import fingerprint_line

    fp = {"board_model": "Raspberry Pi 5", "cpu_model": "Cortex-A76", "logical_cpus": 4, "memory_total_mib": 8000, "os": "Debian 12",
          "kernel": "6.6", "python": "3.11", "nvpmodel": "not available", "edgebench_version": "0.2", "edgebench_commit": "abc",
          "cpufreq": [{"governor": "ondemand"}, {"governor": "performance"}],
          "backends": {"litert": {"available": True, "version": "1.2"}, "torch": {"available": False}}}
    assert fingerprint_line(fp) == ("Raspberry Pi 5: Cortex-A76 (4 logical CPUs, governor: ondemand, performance), 8000 MiB, Debian 12, "
                                    "kernel 6.6, Python 3.11, litert 1.2; edgebench 0.2 @ abc")
    assert fingerprint_line(fp, short=True) == "Cortex-A76 · 4 logical CPUs · 8000 MiB · Debian 12 · kernel 6.6 · Python 3.11 · litert 1.2"
    assert fingerprint_line({"error": "probe failed"}) == fingerprint_line({"error": "probe failed"}, short=True) == "probe failed"
    assert fingerprint_line({}, short=True) == "not recorded"


def test_the_run_command_writes_samples_csv_only_when_asked(report_dir, tmp_path, capsys):
    # `edgebench run --samples-csv` reaches the report writer through cli._final_report (also after Ctrl-C or a full disk)
    from types import SimpleNamespace

    from edgebench.bench import cli

    out, _ = report_dir
    runner = SimpleNamespace(store=Store(tmp_path / "s.sqlite"), run_id=RUN)
    cli._final_report(runner, SimpleNamespace(reports=tmp_path / "reports"))
    assert not (out / "samples.csv").exists() and (out / "samples.npz").exists()
    cli._final_report(runner, SimpleNamespace(reports=tmp_path / "reports"), samples_csv=True)
    assert (out / "samples.csv").exists()
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
