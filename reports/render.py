"""Write a run's report: ``report.md``, ``report.json``, ``cells.csv``, ``samples.npz`` and ``report.html``
(and ``samples.csv`` when asked: ``edgebench run/report --samples-csv``).

``samples.npz`` holds every raw latency sample of the run, written with ``np.savez_compressed``; read it
with ``np.load(path)`` (no pickle needed) or :func:`read_samples`. Its arrays, for the ``C`` cells that
have samples, in the report's cell order:

- ``cell_keys`` (str, ``C``): each cell's key ``model/recipe/backend/precision/bN/target``;
- ``offsets`` (int64, ``C + 1``): cell ``i``'s samples are ``latency_ns[offsets[i]:offsets[i + 1]]``;
- ``latency_ns`` (int64): every cell's per-batch latencies in nanoseconds, in measurement order, concatenated;
- ``process_samples`` (int64) and ``process_offsets`` (int64, ``C + 1``): cell ``i``'s samples per worker
  process are ``process_samples[process_offsets[i]:process_offsets[i + 1]]``, in the order the processes
  ran, so its samples split into processes at their cumulative sums; empty for a cell measured in one
  process (or stored before the counts were kept).

Why ``.npz`` and not Parquet: numpy is already a core dependency (the worker needs it), while pyarrow
would add 100+ MB to every install for one file; an ``.npz`` is exact for int64 nanoseconds and loads
into numpy directly (pandas or polars from those arrays). Measured on a real run (small_cnn on ONNX
Runtime, 3 305 samples): ``samples.npz`` 2.8 bytes a sample, ``samples.csv`` 54 (5.4 gzipped), so the
default suite's 560k samples take about 1.5 MB instead of 30 MB. A run whose samples ``edgebench gc``
dropped has no ``samples.npz`` (its report says so); an earlier report's file is left where it is.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.bench.contracts.files import atomic_open, atomic_write_text, writing
from edgebench.bench.store import Store
from edgebench.reports import history as histmod
from edgebench.reports import html
from edgebench.reports import gpu as gpumod
from edgebench.reports import robustness as robmod
from edgebench.reports.environment import fingerprint_line
from edgebench.reports.htmlkit import size_text
from edgebench.reports.recommend import OBJECTIVES, Constraints, describe_margin, recommend, tie_rule
from edgebench.reports.stats import Bootstrapper
from edgebench.reports.tables import (Row, RunReport, agreement_text, by_target, device_line, fidelity_reference_text, load, remeasure_notes,
                                      top1_text)


def fmt(value: Any, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def table_cells(row: Row) -> list[str]:
    """The columns shared by the Markdown report and the terminal table."""
    recipe = f"{row.recipe} (ref)" if row.is_reference else row.recipe
    if row.status != "ok":
        return [row.model, recipe, row.backend, row.precision, str(row.batch), row.status.upper()] + ["-"] * (len(HEADERS) - 6)
    return [
        row.model, recipe, row.backend, row.precision, str(row.batch),
        fmt(row.p50_ms), fmt(row.p90_ms), fmt(row.p99_ms), fmt(row.cov, ".1%"), fmt(row.iqr_ratio, ".1%"), fmt(row.throughput_ips, ".0f"),
        f"{fmt(row.peak_rss_mib, '.0f')} (+{fmt(row.peak_rss_delta_mib, '.1f')})", size_text(row.size_bytes),
        fmt(row.weight_sparsity, ".0%"), top1_text(row), agreement_text(row),
        fmt(row.top1_delta_pts, "+.2f"), fmt(row.speedup_p50, ".2f") + ("x" if row.speedup_p50 else ""),
    ]


HEADERS = ["model", "recipe", "backend", "prec", "batch", "p50 ms", "p90 ms", "p99 ms", "CoV", "IQR/med", "items/s",
           "peak RSS MiB (+load)", "size", "w. sparsity", "top-1", "agree w/ dense", "Δtop-1 pts", "speedup p50"]


def recommendations(report: RunReport, bootstrapper: Any = None) -> dict[str, list[Any]]:
    """The default-constraint recommendation per target (the HTML section's, and ``edgebench recommend``'s)."""
    return {t: recommend(report, t, Constraints(), bootstrapper=bootstrapper) for t in by_target(report.rows)}


def markdown(report: RunReport, recs: dict[str, list[Any]] | None = None, pareto_accuracy: str = "top1") -> str:
    run = report.run
    s = run.summary or {}
    out = [
        f"# edgebench run {run.id}",
        "",
        f"Suite **{run.suite_name}** ({run.suite_source}), {run.status}; started {run.created_at:%Y-%m-%d %H:%M:%S} UTC.",
        f"Cells: {s.get('cells_ok', 0)} ok, {s.get('cells_failed', 0)} failed, {s.get('cells_skipped', 0)} skipped. "
        f"Built this run: {s.get('trained', 0)} trained, {s.get('pruned', 0)} pruned, {s.get('exported', 0)} exported; "
        f"{s.get('cache_hits', 0)} from cache.",
        "",
        "Latency is per batch (ms); speedup and Δtop-1 are against the dense reference (ref) of the same "
        "model, backend and batch: the fp32 cell, so quantised rows show what quantising gained and lost. Peak RSS is the worker's; (+load) is the rise over its baseline after importing the runtime.",
    ]
    if report.samples_dropped:  # a summarised run: said once, here; the cells keep their stored p50/p90/p99
        out += ["", f"**Summarised run**: {report.samples_dropped}."]
    if recs:
        out += ["", "## Recommendation", "",
                "p90 latency, top-1 drop of at most 1 pt vs dense on the same backend (`edgebench recommend` for other constraints; "
                "report.html for the ranked candidates and exclusions). Tie rule: " + tie_rule(OBJECTIVES["p90"]) + ".", ""]
        for target, items in recs.items():
            for rec in items:
                margin = describe_margin(rec)
                out.append(f"- `{target}` / {rec.model}: **{rec.headline()}** ({rec.verdict}{'; ' + margin if margin else ''})")
    for target, rows in by_target(report.rows).items():
        out += ["", f"## Target `{target}`", "", f"Environment: {fingerprint_line(report.environments.get(target, {}))}", ""]
        out.append("| " + " | ".join(HEADERS) + " |")
        out.append("|" + "---|" * len(HEADERS))
        for row in rows:
            out.append("| " + " | ".join(table_cells(row)) + " |")
        # every measured cell: an artifact's dynamic dimensions (ONNX batch, a given file's H/W) take
        # the cell's batch and the dataset's size, and this is the one place that says which
        shapes = [r for r in rows if r.status == "ok" and r.input_shape]
        if shapes:
            out += ["", "Input shapes timed (batch first; a dynamic dimension takes the cell's batch and the dataset's size, `input_size`):", ""]
            out += [f"- `{r.cell_key}`: {'x'.join(map(str, r.input_shape))} {r.input_layout or ''}".rstrip()
                    + (f" ({r.given_file})" if r.given_file else "") for r in shapes]
        notes = [(r.cell_key, w) for r in rows for w in r.warnings]
        if notes:
            out += ["", "Warnings:", ""] + [f"- `{k}`: {w}" for k, w in notes]
        again = remeasure_notes(rows)
        if again:
            out += ["", "Quiet gate: cells measured again because other processes used the CPU, and cells still contended "
                        "(excluded from wins and regression verdicts):", ""] + [f"- `{k}`: {n}" for k, n in again]
        fidelity = [r for r in rows if r.status == "ok" and (r.fidelity_reference is not None or r.accuracy_error)]
        if fidelity:
            out += ["", "Fidelity to each cell's reference (evaluation split) and load times:", "",
                    "| cell | reference | top-5 | max abs logit diff | mean abs logit diff | export check max abs diff | load ms | first inference ms | other CPU load |",
                    "|---|---|---|---|---|---|---|---|---|"]
            for r in fidelity:
                out.append(f"| `{r.cell_key}` | {fidelity_reference_text(r)} | {fmt(r.top5, '.2%')} | {fmt(r.max_abs_diff, '.2e')} | {fmt(r.mean_abs_diff, '.2e')} | "
                           f"{fmt(r.export_max_abs_diff, '.2e')} | {fmt(r.load_ms, '.1f')} | {fmt(r.first_inference_ms, '.2f')} | {fmt(r.other_cpu_share, '.1%')} |")
        measured = [r for r in rows if r.status == "ok"]
        if measured:
            out += ["", "Device state per cell (temperature, throttling, other load, cool-down, energy):", ""]
            out += [f"- `{r.cell_key}`: {device_line(r)}" for r in measured]
    out += gpumod.markdown_lines(report.gpu)
    out += robmod.markdown_lines(report.robustness, pareto_note(report, pareto_accuracy))
    failures = [r for r in report.rows if r.status != "ok"]
    if failures:
        out += ["", "## Failed and skipped cells", ""] + [f"- `{r.cell_key}` ({r.status}): {r.error}" for r in failures]
    return "\n".join(out) + "\n"


def pareto_note(report: RunReport, pareto_accuracy: str) -> str | None:
    """What the Markdown report says about the HTML Pareto view's robust accuracy axis (None for top-1)."""
    if pareto_accuracy != "robust":
        return None
    left_out = robmod.left_out_note([r for r in report.rows if r.status == "ok"], report.robustness)
    return "Pareto view (report.html): the accuracy axis is robust top-1." + (f" {left_out}" if left_out else "")


def write(store: Store, run_id: str, reports_root: Path, samples_csv: bool = False, pareto_accuracy: str = "top1") -> Path:
    """Write every report file for ``run_id`` into ``reports_root/<run-id>/`` and return that folder:
    ``report.md``, ``report.json``, ``cells.csv``, ``samples.npz`` (layout in the module docstring), the
    self-contained ``report.html``, and with ``samples_csv`` every sample as ``samples.csv`` too. A run whose
    samples ``edgebench gc`` dropped gets neither samples file: its report says so.

    ``pareto_accuracy`` is the Pareto view's accuracy axis: ``top1`` (each cell's), or ``robust`` (the
    recipe's robust top-1, fp32 cells only): a run without robustness numbers then raises
    :class:`~edgebench.reports.robustness.NoRobustnessData` before any file is written."""
    if pareto_accuracy not in robmod.PARETO_ACCURACY:
        raise ValueError(f"pareto_accuracy must be one of {', '.join(robmod.PARETO_ACCURACY)}, not {pareto_accuracy!r}")
    report = load(store, run_id, with_samples=True)
    if pareto_accuracy == "robust":
        robmod.require_data(report.robustness, report.run.id)
    out = Path(reports_root) / report.run.id
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    boot = Bootstrapper()  # each cell's bootstrap replicates, computed once for all three files
    recs = recommendations(report, boot)
    # each file replaces the old one whole (temp file + rename): a full disk never leaves half a samples.csv
    atomic_write_text(out / "report.md", markdown(report, recs, pareto_accuracy))
    data = report.to_dict()
    data["pareto_accuracy"] = pareto_accuracy
    data["recommendations"] = {t: [r.to_dict() for r in items] for t, items in recs.items()}
    atomic_write_text(out / "report.json", json.dumps(data, indent=2, default=str))
    with atomic_open(out / "cells.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=Row.columns())
        writer.writeheader()
        for row in report.rows:
            d = row.to_dict()
            d["warnings"] = "; ".join(row.warnings)
            writer.writerow(d)
    has_samples = report.samples_dropped is None
    if has_samples:
        write_samples(report, out / "samples.npz")
    if samples_csv and has_samples:
        _write_samples_csv(report, out / "samples.csv")
    html.write(report, out, boot, histmod.for_run(store, report.run.id, report.rows), samples_csv=samples_csv and has_samples,
               pareto_accuracy=pareto_accuracy)
    return out


def samples_arrays(report: RunReport) -> dict[str, np.ndarray]:
    """The arrays of ``samples.npz`` (module docstring): every cell with samples, in the report's order."""
    keys = [r.cell_key for r in report.rows if report.samples.get(r.cell_key)]
    latencies = [np.asarray(report.samples[k], dtype=np.int64) for k in keys]
    counts = [np.asarray(report.process_samples.get(k) or [], dtype=np.int64) for k in keys]

    def offsets(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([p.size for p in parts], dtype=np.int64)]).astype(np.int64)

    def joined(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    return {"cell_keys": np.asarray(keys, dtype=np.str_), "offsets": offsets(latencies), "latency_ns": joined(latencies),
            "process_samples": joined(counts), "process_offsets": offsets(counts)}


def write_samples(report: RunReport, path: Path) -> None:
    """Write ``samples.npz`` atomically (a full disk leaves the old file whole and is one line)."""
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **samples_arrays(report))


def read_samples(path: Path) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """``samples.npz`` back as cell key -> (every sample in ns, the samples of each worker process); a cell
    whose process counts were not kept has its samples as one process. For notebooks and the tests."""
    with np.load(path, allow_pickle=False) as z:
        keys, off, lat = z["cell_keys"], z["offsets"], z["latency_ns"]
        counts, poff = z["process_samples"], z["process_offsets"]
        out = {}
        for i, key in enumerate(keys):
            x = lat[off[i]:off[i + 1]]
            per = counts[poff[i]:poff[i + 1]]
            whole = per.size and int(per.sum()) == x.size  # counts that do not add up say nothing about processes
            out[str(key)] = (x, np.split(x, np.cumsum(per)[:-1]) if whole else [x])
    return out


def _write_samples_csv(report: RunReport, path: Path) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell_key", "idx", "latency_ns"])
        for row in report.rows:
            for i, v in enumerate(report.samples.get(row.cell_key, [])):
                writer.writerow([row.cell_key, i, v])
