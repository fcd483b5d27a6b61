"""Wrong results must not pass as good: NaN/Inf outputs, outputs that do not match the classes,
fidelity against a reference that is the cell's own file, and the input shape a cell timed.

Fast tests on the worker's, prepare's and the reports' functions; slow ones run real suites with
ONNX files made here with onnx.helper (a Div by zero gives NaN outputs).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgebench.bench import prepare
from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.flags import Flag, has
from edgebench.bench.contracts.results import Accuracy, CellResult, Fidelity, LatencyStats
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench.store import CellRecord, RunRecord, Store
from edgebench.bench.worker import accuracy_and_fidelity, nan_flag, nonfinite, reference_of
from edgebench.models.data import Dataset
from edgebench.reports import render
from edgebench.reports.tables import load as load_report

MEASURE = {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 10, "min_seconds": 0.05}
RUN = "20260101-000000-feed"


# -- the worker ------------------------------------------------------------------------------------
def test_nan_logits_give_no_accuracy_and_no_fidelity() -> None:
    logits = np.zeros((4, 10))
    logits[1, 3] = np.nan
    labels = np.array([0, 1, 2, 3])
    acc, fid = accuracy_and_fidelity(logits, labels, np.zeros((4, 10)), "ref")
    assert acc is None and fid is None  # before: top-1 and 100% agreement from NaN rows' argmax
    assert nonfinite(logits) == 1 and nonfinite(np.array([np.inf, -np.inf, 1.0])) == 2 and nonfinite("not numbers") == 0
    flag = nan_flag(1, 10, 40)
    assert flag.code == "nan-outputs" and "1 of 40 evaluation output values" in flag.text and "10 in the timed run" in flag.text
    assert nan_flag(0, 0, 40) is None


def test_finite_logits_keep_accuracy_and_name_the_reference() -> None:
    logits = np.eye(4)
    acc, fid = accuracy_and_fidelity(logits, np.arange(4), logits + 0.5, "the dense PyTorch model (m)", True)
    assert acc.top1 == 1.0 and fid.top1_agreement == 1.0 and fid.max_abs_diff == pytest.approx(0.5)
    assert fid.reference == "the dense PyTorch model (m)" and fid.independent
    # a NaN reference is no reference
    assert accuracy_and_fidelity(logits, np.arange(4), np.full((4, 4), np.nan))[1] is None


def test_labels_outside_the_outputs_fail_instead_of_scoring() -> None:
    with pytest.raises(ValueError, match=r"labels are 0\.\.9 but the model has 4 outputs"):
        accuracy_and_fidelity(np.zeros((10, 4)), np.arange(10), None)


def _eval_file(tmp_path: Path, **arrays: np.ndarray) -> np.lib.npyio.NpzFile:
    np.savez(tmp_path / "eval.npz", inputs=np.zeros((1, 3, 4, 4), np.float32), **arrays)
    return np.load(tmp_path / "eval.npz")


@pytest.mark.parametrize("backend, precision, given, independent", [
    ("onnxruntime", "fp32", True, False),  # the given file on the runtime that made its reference
    ("onnxruntime", "int8", True, True),  # quantised: measured against the given file at fp32
    ("torch", "fp32", False, True),  # a factory model's reference is the dense PyTorch model
])
def test_reference_is_independent_unless_it_is_the_same_file_on_the_same_runtime(tmp_path: Path, backend: str, precision: str,
                                                                                  given: bool, independent: bool) -> None:
    data = _eval_file(tmp_path, reference_name=np.array("R"), reference_backend=np.array("onnxruntime" if given else "torch"),
                      reference_given=np.array(given))
    spec = CellSpec("k", backend, precision, "a.onnx", 1, str(tmp_path / "eval.npz"))
    assert reference_of(data, spec) == ("R", independent)


def test_an_eval_file_written_before_references_were_named_reads_as_independent(tmp_path: Path) -> None:
    spec = CellSpec("k", "onnxruntime", "fp32", "a.onnx", 1, str(tmp_path / "eval.npz"))
    assert reference_of(_eval_file(tmp_path), spec) == ("", True)


# -- prepare -------------------------------------------------------------------------------------
def _data(classes: int = 10, labels: bool = True) -> Dataset:
    x = np.zeros((classes, 3, 4, 4), np.float32)
    y = np.arange(classes)
    return Dataset("d", x, y, x, y, classes, has_labels=labels, source="/data/d.npz")


@pytest.mark.parametrize("outputs, strict, expected", [
    (4, False, r"/m\.onnx: the model has 4 outputs but /data/d\.npz has 10 classes \(labels 0\.\.9\); score it on a dataset with labels 0\.\.3"),
    (1000, True, r"has 1000 outputs but /data/d\.npz has 10 classes.*unrelated label sets.*`dataset: synthetic` for latency only"),
])
def test_outputs_that_do_not_match_the_classes_are_a_config_error(outputs: int, strict: bool, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as err:
        _data().check_outputs("/m.onnx", outputs, strict)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)


def test_more_outputs_are_fine_for_a_model_trained_here_and_without_labels() -> None:
    _data().check_outputs("m", 1000, strict=False)  # trained on this data: extra outputs go unused
    _data(labels=False).check_outputs("m", 4, strict=True)  # latency only: no classes to match
    _data().check_outputs("m", 10, strict=True)


def test_eval_file_names_its_reference_and_drops_a_nan_one(tmp_path: Path) -> None:
    data = _data()
    facts = prepare._write_eval(tmp_path, data, np.eye(10), "the given ONNX file f.onnx run by onnxruntime at fp32", "onnxruntime", given=True)
    z = np.load(tmp_path / "eval.npz")
    assert str(z["reference_name"]).startswith("the given ONNX file") and str(z["reference_backend"]) == "onnxruntime" and bool(z["reference_given"])
    assert facts["top1_torch"] == 1.0
    bad = np.eye(10)
    bad[0, 0] = np.nan
    facts = prepare._write_eval(tmp_path, data, bad, "R", "torch")
    assert "reference_logits" not in np.load(tmp_path / "eval.npz").files
    assert facts["reference_nonfinite"] == 1 and facts["top1_torch"] is None


# -- reports ---------------------------------------------------------------------------------------
def _cell(precision: str, **result: object) -> CellRecord:
    lat = LatencyStats(n=3, min_ms=1, mean_ms=1, std_ms=0.01, cov=0.01, p50_ms=1, p90_ms=1, p95_ms=1, p99_ms=1, max_ms=1, throughput_ips=1000)
    res = CellResult("ok", latency=lat, samples_ns=[1_000_000] * 3, evidence=Evidence("onnxruntime", input_shape=[8, 3, 48, 48], input_layout="NCHW"),
                     **result)
    return CellRecord(f"m/dense/onnxruntime/{precision}/b8/local", "m", "dense", "onnxruntime", precision, 8, "local", "ok",
                      options={}, facts={"model": {}, "artifact": {"size_bytes": 10}}, result=res)


@pytest.fixture
def report(tmp_path: Path) -> Path:
    store = Store(tmp_path / "s.sqlite")
    store.create_run(RunRecord(RUN, "unit", "/x/unit.yaml", "models: []\n", "running", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)))
    nan = Flag("nan-outputs", "nan outputs: 3600 of 3600 evaluation output values are NaN/Inf; accuracy and fidelity are not valid")
    store.add_cell(RUN, _cell("fp32", flags=[nan]))
    store.add_cell(RUN, _cell("int8", accuracy=Accuracy(360, 0.9, None),
                              fidelity=Fidelity(1.0, 0.0, 0.0, "the given ONNX file f.onnx run by onnxruntime at fp32", independent=False)))
    store.finish_run(RUN, "finished", {"cells_ok": 2})
    return render.write(store, RUN, tmp_path / "reports")


def test_reports_show_nan_accuracy_as_failed_and_a_self_reference_as_none(report: Path) -> None:
    md = (report / "report.md").read_text()
    nan_row = next(line for line in md.splitlines() if line.startswith("| m | dense (ref) | onnxruntime | fp32"))
    assert "FAILED (NaN/Inf outputs)" in nan_row and "100.00%" not in nan_row
    self_row = next(line for line in md.splitlines() if line.startswith("| m | dense | onnxruntime | int8"))
    assert "no independent reference" in self_row and "100.00%" not in self_row
    assert "no independent reference: the cell runs the same file on the same runtime as its reference (the given ONNX file f.onnx" in md
    # the shape timed, for every measured cell (a dynamic batch and H/W took 8 and 48)
    assert "- `m/dense/onnxruntime/fp32/b8/local`: 8x3x48x48 NCHW" in md
    html = (report / "report.html").read_text()
    assert "input timed" in html and "8x3x48x48 NCHW" in html and "FAILED (NaN/Inf outputs)" in html and "no independent reference" in html


def test_report_rows_carry_the_accuracy_failure_and_the_reference(report: Path, tmp_path: Path) -> None:
    rows = {r.precision: r for r in load_report(Store(tmp_path / "s.sqlite"), RUN).rows}
    assert rows["fp32"].accuracy_error == "NaN/Inf outputs" and rows["fp32"].top1 is None and has(rows["fp32"].flags, "nan-outputs")
    assert rows["int8"].independent_reference is False and rows["int8"].agreement is None and rows["int8"].max_abs_diff is None
    assert rows["int8"].fidelity_reference.startswith("the given ONNX file")


def test_a_fidelity_stored_before_references_were_named_reads_as_the_dense_model() -> None:
    fid = CellResult.from_dict({"status": "ok", "fidelity": {"top1_agreement": 0.99, "max_abs_diff": 1e-6, "mean_abs_diff": 1e-7}}).fidelity
    assert fid.reference == "" and fid.independent


# -- real runs -------------------------------------------------------------------------------------
def _onnx(path: Path, classes: int, nan: bool = False) -> Path:
    """GlobalAveragePool -> MatMul(3 x classes); with ``nan`` the logits are multiplied by 0 and divided by 0."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, classes)).astype(np.float32), "W")
    zero = numpy_helper.from_array(np.zeros((1,), np.float32), "Z")
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "W"], ["l" if nan else "y"])]
    if nan:
        nodes += [helper.make_node("Mul", ["l", "Z"], ["m"]), helper.make_node("Div", ["m", "Z"], ["y"])]
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])], [w] + ([zero] if nan else []))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _suite(tmp_path: Path, name: str, model: dict, precisions: tuple[str, ...] = ("fp32",)) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "models": [model], "recipes": ["dense"], "measure": MEASURE, "cell_timeout_s": 120,
                                    "backends": [{"name": "onnxruntime", "precisions": list(precisions)}], "batch_sizes": [1, 4]}))
    return path


@pytest.mark.slow
def test_a_model_with_nan_outputs_is_measured_but_its_accuracy_fails(tmp_path: Path) -> None:
    from edgebench.bench.config import load_suite
    from edgebench.bench.runner import Paths, Runner

    _onnx(tmp_path / "nan.onnx", 10, nan=True)
    log: list[str] = []
    runner = Runner(Paths(tmp_path / "home"), log=log.append)
    summary = runner.run(load_suite(_suite(tmp_path, "nan", {"name": "nan", "onnx": "nan.onnx", "dataset": "digits"})))
    cells = runner.store.cells(summary.run_id)
    assert len(cells) == 2 and summary.cells_ok == 2
    for cell in cells:
        r = cell.result
        assert r.latency is not None and r.accuracy is None and r.fidelity is None, cell.cell_key
        flag = next(f for f in r.flags if f.code == "nan-outputs")
        assert "3600 of 3600 evaluation output values" in flag.text and f"{4 * 10 if cell.batch == 4 else 10} in the timed run" in flag.text
    assert any("output values are NaN/Inf" in line for line in log)  # said when the file is imported
    md = (render.write(runner.store, summary.run_id, tmp_path / "reports") / "report.md").read_text()
    assert md.count("FAILED (NaN/Inf outputs)") == 4  # top-1 and agreement of both cells


@pytest.mark.slow
@pytest.mark.parametrize("classes, expected", [(4, "has 4 outputs but digits has 10 classes"), (1000, "has 1000 outputs but digits has 10 classes")])
def test_a_given_file_whose_outputs_do_not_match_the_classes_exits_2(tmp_path: Path, classes: int, expected: str) -> None:
    import subprocess
    import sys

    _onnx(tmp_path / "m.onnx", classes)
    suite = _suite(tmp_path, "mismatch", {"name": "m", "onnx": "m.onnx", "dataset": "digits"})
    done = subprocess.run([sys.executable, "-m", "edgebench.bench.cli", "run", str(suite), "--home", str(tmp_path / "home")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    line = next(line for line in (done.stdout + done.stderr).splitlines() if expected in line)
    assert str(tmp_path / "m.onnx") in line and "p50" not in done.stdout  # refused before anything was measured
