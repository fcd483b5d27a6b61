"""The GPU part of the report (reports/gpu.py) and the 2:4 flags of torch-cuda cells, from stored cells.

The timings below are constructed to check the arithmetic and the rendering (dense vs 2:4 per batch), not
measurements; kernel names come from the recorded fixtures in tests/backends/data/ (with their sources)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import finish, new_run, ok_cell, samples_ns

from edgebench.backends import _cuda_kernels
from edgebench.bench.board import pool
from edgebench.bench.contracts.evidence import Evidence, LayerEvidence
from edgebench.bench.contracts.results import CellResult, GpuMemory, MeasureSettings
from edgebench.bench.worker import device_timing, launch_flag
from edgebench.reports import gpu as gpumod
from edgebench.reports import html, render, tables

RUN = "20261202-000000-gpu0"
DATA = Path(__file__).resolve().parents[1] / "backends" / "data"


def recorded(kind: str) -> str:
    for f in sorted(DATA.glob("cuda_kernels_*.txt")):
        for line in f.read_text().splitlines():
            if line.strip() and not line.startswith("#") and _cuda_kernels.classify(line.strip()).kind == kind:
                return line.strip()
    raise AssertionError(f"no recorded {kind} kernel name in {DATA}")


def phases(e2e_ms: float, compute_ms: float, enqueue_ms: float, n: int = 40, seed: int = 0) -> dict[str, list[int]]:
    comp = samples_ns(compute_ms, n, seed)
    copy = samples_ns(0.01, n, seed + 1)
    return {"end_to_end": samples_ns(e2e_ms, n, seed + 2), "h2d": copy, "compute": comp, "d2h": copy, "enqueue": samples_ns(enqueue_ms, n, seed + 3)}


def plan(converted: bool) -> list[dict]:
    names = ["features.1", "features.3"]
    out = [{"name": n, "op": "linear", "shape": [4096, 4096], "convert": converted, "implementation": "cusparselt" if converted else None,
            "reason": "" if converted else "weights are not 2:4 (4096 of 4096 groups of 4 have more than 2 non-zeros)"} for n in names]
    return out + [{"name": "classifier", "op": "linear", "shape": [1000, 4096], "convert": False, "implementation": None,
                   "reason": "shape 1000x4096 is not a multiple of cusparselt's 16x16 minimum for fp16"}]


def gpu_cell(recipe: str, batch: int, compute_ms: float, sparse_ran: list[bool] | None, enqueue_ms: float = 0.01):
    converted = recipe != "dense"
    p = phases(compute_ms + 0.05, compute_ms, enqueue_ms, seed=batch)
    layers = [] if not converted else [LayerEvidence(n, "linear", recorded("sparse-gemm" if s else "gemm"), "fp16", s, compute_ms / 3)
                                       for n, s in zip(["features.1", "features.3"], sparse_ran or [])]
    ran = sum(sparse_ran) if sparse_ran is not None else None
    ev = Evidence("torch cuda", "2.13.0", device="NVIDIA H200", sparse_weights=2 if converted else 0,
                  sparse_kernels=bool(ran) if converted else False, layers=layers,
                  details={"conversion": plan(converted), "profile": {"runs": 3, "attributed": True, "kernel_kinds": {"gemm": 3}},
                           "sparse_layers": {"converted": 2 if converted else 0, "sparse_ran": ran if converted else None,
                                             "dense_ran": [n for n, s in zip(["features.1", "features.3"], sparse_ran or []) if not s]}})
    c = ok_cell("wide_mlp", recipe, "torch-cuda", batch, p["end_to_end"], 0.0, precision="fp16", sparsity=0.5 if converted else 0.0,
                evidence=ev, processes=1)
    c.result.device_timing = device_timing(p, batch)
    c.result.gpu_memory = GpuMemory(300.0, 400.0, 100.0 if converted else 150.0, 1000.0, 140_000.0)
    c.result.flags = [f for f in [launch_flag(c.result.device_timing)] if f]
    return c


@pytest.fixture
def store(tmp_path):
    cells = [gpu_cell("dense", 1, 0.05, None), gpu_cell("semi-structured-2-4", 1, 0.06, [True, True]),
             gpu_cell("dense", 32, 0.40, None), gpu_cell("semi-structured-2-4", 32, 0.30, [True, True]),
             gpu_cell("dense", 256, 2.00, None), gpu_cell("semi-structured-2-4", 256, 1.20, [True, False]),
             gpu_cell("dense", 128, 1.00, None, enqueue_ms=0.95)]
    s = new_run(tmp_path, RUN, name="gpu")
    finish(s, RUN, cells)
    return s


def test_rows_carry_the_time_split_and_where_2_4_pays(store):
    report = tables.load(store, RUN)
    assert len(report.gpu) == 7
    pay = gpumod.pays(report.gpu)
    assert [(p.batch, round(p.speedup, 1)) for p in pay] == [(1, 0.8), (32, 1.3), (256, 1.7)]
    assert gpumod.first_paying_batch(pay) == {("local", "wide_mlp", "fp16", "semi-structured-2-4"): 32}
    sparse = [r for r in report.gpu if r.recipe != "dense"]
    assert sparse[0].sparse_text == "sparse kernels ran in 2 of 2 converted layers (3 Linear)"
    assert sparse[2].sparse_text == "sparse kernels ran in 1 of 2 converted layers (3 Linear)"


def test_a_contended_pair_never_decides_where_2_4_pays(tmp_path):
    from edgebench.bench.contracts.flags import Flag

    cells = [gpu_cell("dense", 1, 0.05, None), gpu_cell("semi-structured-2-4", 1, 0.06, [True, True]),
             gpu_cell("dense", 32, 0.40, None), gpu_cell("semi-structured-2-4", 32, 0.30, [True, True])]
    cells[2].result.flags.append(Flag("contended", "contended: other processes used 40% of the CPU while measuring"))
    s = new_run(tmp_path, RUN, name="gpu")
    finish(s, RUN, cells)
    pay = gpumod.pays(tables.load(s, RUN).gpu)
    assert [p.untrusted for p in pay] == [[], ["contended"]]
    # the only faster pair was contended: it claims nothing, and batch 1 alone says 2:4 does not pay
    assert gpumod.first_paying_batch(pay) == {("local", "wide_mlp", "fp16", "semi-structured-2-4"): None}
    assert gpumod.pays_text(pay) == ["local wide_mlp fp16 semi-structured-2-4: 2:4 is not faster at the largest batch measured with trusted timing"]
    assert "1.33x (inconclusive: contended)" in gpumod.pay_cells(pay[1])


def test_a_converted_layer_that_ran_dense_kernels_is_flagged_and_a_dense_model_is_not(store):
    rows = {r.cell_key: r for r in tables.load(store, RUN).rows}
    partial = rows["wide_mlp/semi-structured-2-4/torch-cuda/fp16/b256/local"]
    flag = next(f for f in partial.flags if f.code == "sparse-not-used")
    assert flag.text == "sparse-not-used: sparse kernels ran in 1 of 2 converted layers; dense kernels in features.3"
    assert not any(f.code == "sparse-not-used" for f in rows["wide_mlp/semi-structured-2-4/torch-cuda/fp16/b32/local"].flags)
    assert not any(f.code == "sparse-not-used" for f in rows["wide_mlp/dense/torch-cuda/fp16/b32/local"].flags)
    launch = rows["wide_mlp/dense/torch-cuda/fp16/b128/local"]
    assert any(f.code == "launch-bound" for f in launch.flags)


def test_markdown_html_and_json_show_the_gpu_section(store, tmp_path):
    out = render.write(store, RUN, tmp_path / "reports")
    md = (out / "report.md").read_text()
    assert "## GPU: time split and 2:4 evidence" in md
    assert "- local wide_mlp fp16 semi-structured-2-4: 2:4 is faster from batch 32 up" in md
    assert "features.3 [fp16]: dense - " + recorded("gemm") in md
    assert "classifier: dense - shape 1000x4096 is not a multiple of cusparselt's 16x16 minimum for fp16" in md
    assert "(launch-bound)" in md
    page = (out / "report.html").read_text()
    assert '<section id="gpu">' in page and 'href="#gpu"' in page and "Where 2:4 pays" in page
    data = json.loads((out / "report.json").read_text())
    assert data["gpu"][1]["sparse_text"] == "sparse kernels ran in 2 of 2 converted layers (3 Linear)"
    assert data["gpu"][0]["phases_p50_ms"]["compute"] == pytest.approx(0.05, rel=0.05)


def test_a_run_without_gpu_cells_has_no_gpu_section(tmp_path):
    s = new_run(tmp_path, RUN)
    finish(s, RUN, [ok_cell("small_cnn", "dense", "onnxruntime", 1, samples_ns(0.3, 40, 0), 0.98)])
    report = tables.load(s, RUN, with_samples=True)
    assert report.gpu == [] and gpumod.markdown_lines(report.gpu) == []
    assert 'id="gpu"' not in html.render(report)


def test_processes_pool_their_time_splits_and_the_launch_flag_is_recomputed():
    settings = MeasureSettings()
    parts = []
    for seed, enqueue in ((0, 0.01), (1, 0.5)):
        p = phases(0.6, 0.5, enqueue, n=20, seed=seed)
        r = CellResult("ok", samples_ns=p["end_to_end"], device_timing=device_timing(p, 1), gpu_memory=GpuMemory(10.0 + seed, 20.0))
        from edgebench.bench.stats import summarize

        r.latency = summarize(r.samples_ns, 1)
        r.flags = [f for f in [launch_flag(r.device_timing)] if f]
        parts.append(r)
    assert [bool(p.flags) for p in parts] == [False, True]
    pooled = pool(parts, 1, settings)
    assert len(pooled.device_timing.samples_ns["compute"]) == 40
    assert pooled.gpu_memory.allocated_peak_mib == 11.0
    # the pooled medians decide: 0.01/0.5 ms enqueue medians pool to ~0.26 ms, under 0.8 x 0.5 ms compute
    assert not pooled.device_timing.launch_bound and not any(f.code == "launch-bound" for f in pooled.flags)
    again = CellResult.from_dict(json.loads(json.dumps(pooled.to_dict())))
    assert again.device_timing.samples_ns == pooled.device_timing.samples_ns
