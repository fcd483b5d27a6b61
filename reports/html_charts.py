"""The HTML report's plots, each an inline SVG (:mod:`edgebench.reports.svg`): Pareto fronts of accuracy
against a cost, latency distributions, sparsity sweeps and the history of each cell's median latency."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgebench.bench.config import Sweep, _expand_sweep
from edgebench.models import recipes
from edgebench.reports.htmlkit import Ids, figure, ms, series_key, tip
from edgebench.reports.pareto import pareto_front
from edgebench.reports.svg import PALETTE, Chart, fmt_num
from edgebench.reports.tables import Row, RunReport

Cost = Callable[[Row], "float | None"]


def _use_log(values: Iterable[float], ratio: float = 8.0) -> bool:
    vals = [v for v in values if v and v > 0]
    return bool(vals) and max(vals) / min(vals) > ratio


def _short(recipe: str) -> str:
    return recipe if len(recipe) <= 22 else recipe[:20] + "…"


# -- Pareto fronts --------------------------------------------------------------------------------
def clean_top1(row: Row) -> float | None:
    """The default accuracy axis: the cell's own top-1 on the evaluation split."""
    return row.top1


def pareto_chart(ids: Ids, target: str, rows: list[Row], cost: Cost, cost_label: str, title: str, colors: dict[str, str],
                 markers: dict[int, str] | None, xfmt: Callable[[float], str] = fmt_num, log_ok: bool = True,
                 accuracy: Cost = clean_top1, accuracy_label: str = "top-1 accuracy (%)") -> str | None:
    """``accuracy`` (a fraction; the cell's top-1 by default) against ``cost`` for the rows that have both;
    the front filled and joined, dominated cells hollow."""
    pts = [r for r in rows if cost(r) is not None and accuracy(r) is not None]
    if not pts:
        return None
    front = set(pareto_front([(cost(r), accuracy(r) * 100) for r in pts]))
    xlog = log_ok and _use_log(cost(r) for r in pts)
    chart = Chart(ids(f"chart-{target}-{title}"), title, cost_label + (" (log scale)" if xlog else ""), accuracy_label,
                  xlog=xlog, xfmt=xfmt, yfmt=lambda v: f"{v:.4g}", ybounds=(0.0, 100.0))
    _front_line(chart, pts, front, cost, accuracy)
    _front_points(chart, pts, front, cost, colors, markers, accuracy)
    if markers and len(markers) > 1:
        for b, m in markers.items():
            chart.legend(f"batch {b}", "#555", f"hollow:{m}")
    chart.legend("front (filled)", "#555", "circle")
    chart.legend("dominated (hollow)", "#555", "hollow")
    return chart.render()


def _front_line(chart: Chart, pts: list[Row], front: set[int], cost: Cost, accuracy: Cost = clean_top1) -> None:
    """The front as a staircase, drawn under the marks."""
    ordered = sorted((i for i in front), key=lambda i: (cost(pts[i]), accuracy(pts[i])))
    if len({(cost(pts[i]), accuracy(pts[i])) for i in ordered}) <= 1:  # a front of one position is just its marks
        return
    xs, ys = [], []
    for j, i in enumerate(ordered):
        x, y = cost(pts[i]), accuracy(pts[i]) * 100
        if j:
            xs.append(x)
            ys.append(ys[-1])
        xs.append(x)
        ys.append(y)
    chart.line(xs, ys, "#555", width=5, opacity=0.18, title="Pareto front: nothing else is both cheaper and more accurate")


def _front_points(chart: Chart, pts: list[Row], front: set[int], cost: Cost, colors: dict[str, str], markers: dict[int, str] | None,
                  accuracy: Cost = clean_top1) -> None:
    # Coincident front points (e.g. dense and its unstructured variants, same file size) share one label.
    names: dict[tuple[float, float], list[str]] = {}
    for i in front:
        names.setdefault((cost(pts[i]), accuracy(pts[i])), [])
        if pts[i].recipe not in names[(cost(pts[i]), accuracy(pts[i]))]:
            names[(cost(pts[i]), accuracy(pts[i]))].append(pts[i].recipe)
    for i, r in enumerate(pts):
        on = i in front
        names_here = names.pop((cost(r), accuracy(r)), None) if on else None
        shown = "" if accuracy is clean_top1 else f"\nplotted accuracy {accuracy(r):.2%}"
        chart.points([cost(r)], [accuracy(r) * 100], colors[series_key(r)], marker=(markers or {}).get(r.batch, "circle"), filled=on,
                     titles=[("on the Pareto front\n" if on else "dominated\n") + tip(r) + shown],
                     labels=[", ".join(_short(n) for n in names_here) if names_here else ""])


# -- latency distributions ------------------------------------------------------------------------
def cdf_charts(ids: Ids, target: str, rows: list[Row], samples: dict[str, list[int]], colors: dict[str, str]) -> list[str]:
    """One empirical CDF of every stored sample per batch size, with p50 and p90 marked."""
    out = []
    ok = [r for r in rows if r.status == "ok" and samples.get(r.cell_key)]
    for batch in sorted({r.batch for r in ok}):
        rs = [r for r in ok if r.batch == batch]
        data = {r.cell_key: np.asarray(samples[r.cell_key], dtype=np.float64) / 1e6 for r in rs}
        lo = min(float(v.min()) for v in data.values())
        hi = max(float(v.max()) for v in data.values())
        xlog = hi / lo > 8 if lo > 0 else False
        chart = Chart(ids(f"cdf-{target}-b{batch}"), f"Latency distribution · batch {batch} (every stored sample)",
                      "latency per batch (ms" + (", log scale)" if xlog else ")"), "share of runs at or below (%)",
                      xlog=xlog, ylim=(0, 100), yfmt=lambda v: f"{v:g}")
        q = np.linspace(0, 1, 257)
        for r in rs:
            v = data[r.cell_key]
            xs = np.quantile(v, q)
            color = colors[series_key(r)]
            chart.line(xs, q * 100, color, width=1.8, title=f"{r.cell_key}: {v.size} samples")
            p50, p90 = np.percentile(v, [50, 90])
            chart.points([p50, p90], [50, 90], color, marker="circle", size=3.2,
                         titles=[f"{r.cell_key}\np50 {ms(float(p50))} ms", f"{r.cell_key}\np90 {ms(float(p90))} ms"])
            chart.legend(f"{series_key(r)} (n={v.size})", color, "line")
        out.append(chart.render())
    return out


# -- sparsity sweeps ------------------------------------------------------------------------------
def recipe_methods(report: RunReport) -> dict[str, str]:
    """Recipe name -> pruning method: from each recipe's definition as the store recorded it with its cells;
    for a store written before it did, resolved from the run's suite (built-in names, paths and sweeps). A
    recipe that cannot be resolved is grouped by its name without a trailing number
    (``l1-unstructured-50`` and ``l1-unstructured-80`` -> ``l1-unstructured``; ``x@sparsity=0.3`` -> ``x``)."""
    methods = {"dense": "dense"}
    methods.update({name: d["method"] for name, d in report.recipes.items() if d.get("method")})
    names = {r.recipe for r in report.rows}
    if names - methods.keys():
        for name, method in _suite_methods(report).items():
            methods.setdefault(name, method)
    for name in names:
        methods.setdefault(name, re.sub(r"-\d+(\.\d+)?$", "", name.split("@", 1)[0]))
    return methods


def _suite_methods(report: RunReport) -> dict[str, str]:
    """Recipe name -> method from the run's suite text, for stores without recipe definitions."""
    methods: dict[str, str] = {}
    try:
        suite = yaml.safe_load(report.run.suite_yaml or "") or {}
        source = Path(report.run.suite_source) if report.run.suite_source else Path("suite.yaml")
        for ref in suite.get("recipes", []) or []:
            try:
                if isinstance(ref, dict) and "sweep" in ref:
                    for r in _expand_sweep(Sweep(**ref["sweep"]), source):
                        methods[r.name] = r.method
                else:
                    r = recipes.load(str(ref), base_dir=source.parent)
                    methods[r.name] = r.method
            except Exception:  # a recipe file that moved since the run: its name decides (recipe_methods)
                continue
    except Exception:  # a suite that no longer parses: the same
        pass
    return methods


def sparsity_charts(ids: Ids, target: str, rows: list[Row], methods: dict[str, str], colors: dict[str, str]) -> tuple[list[str], str]:
    """Accuracy and speedup against sparsity, one pair per pruning method that ran at two or more
    sparsities; and the note to show when there is none."""
    ok = [r for r in rows if r.status == "ok" and r.top1 is not None]
    dense = {r.id.measurement: r for r in ok if r.is_dense}
    by_method: dict[str, list[Row]] = {}
    for r in ok:
        if not r.is_dense:
            by_method.setdefault(methods.get(r.recipe, r.recipe), []).append(r)
    charts = []
    for method, rs in by_method.items():
        if len({r.recipe for r in rs}) >= 2:
            charts += _sweep_pair(ids, target, method, rs, dense, multi_model=len({r.model for r in rows}) > 1)
    note = "" if charts else ("No sparsity sweep in this run: accuracy-vs-sparsity curves need two or more recipes of one "
                              "pruning method at different sparsities (e.g. l1-unstructured-50 and l1-unstructured-80).")
    return charts, note


def _sweep_pair(ids: Ids, target: str, method: str, rs: list[Row], dense: dict[tuple[str, str, str, int], Row], multi_model: bool) -> list[str]:
    """The accuracy and the speedup chart of one method's rows (none when no curve has two sparsities)."""
    # x: weight sparsity; for methods that remove weights instead of zeroing them, the share removed.
    structured = all((r.weight_sparsity or 0) < 0.01 for r in rs)

    def x_of(r: Row) -> float | None:
        if not structured:
            return r.weight_sparsity
        ref = dense.get(r.id.measurement)
        if r.is_dense:
            return 0.0
        return 1 - r.params / ref.params if ref and ref.params and r.params is not None else None

    xlabel = "parameters removed vs dense (%)" if structured else "weight sparsity (%)"
    groups: dict[tuple[str, str, str, int], list[Row]] = {}
    measured = {r.id.measurement for r in rs}
    for r in rs + [d for key, d in dense.items() if key in measured]:
        groups.setdefault(r.id.measurement, []).append(r)
    acc, spd = _sweep_axes(ids, target, method, xlabel, [r.speedup_p50 for r in rs if r.speedup_p50])
    curves = []
    for key, grs in groups.items():
        pts = sorted(((x_of(r), r) for r in grs if x_of(r) is not None), key=lambda t: t[0])
        if sum(not r.is_dense for _, r in pts) >= 2:  # a curve needs two sparsities besides dense
            curves.append((key, pts))
    palette = iter(PALETTE * 4)
    for drawn, ((model, backend, precision, batch), pts) in enumerate(curves):
        # Series often coincide (accuracy rarely depends on backend or batch): draw earlier ones wider
        # and translucent so every overlapping line stays visible.
        width, opacity = [(6.0, 0.35), (3.5, 0.6), (2.0, 0.9), (1.4, 1.0)][min(drawn, 3)] if len(curves) > 1 else (2.0, 1.0)
        name = f"{backend} / {precision} / b{batch}" + (f" / {model}" if multi_model else "")
        _sweep_curve(acc, spd, name, next(palette), width, opacity, pts)
    return [acc.render(), spd.render()] if curves else []


def _sweep_axes(ids: Ids, target: str, method: str, xlabel: str, speedups: list[float]) -> tuple[Chart, Chart]:
    acc = Chart(ids(f"sweep-acc-{target}-{method}"), f"Accuracy vs sparsity · {method}", xlabel, "top-1 accuracy (%)",
                xfmt=lambda v: f"{v:g}", yfmt=lambda v: f"{v:.4g}", ybounds=(0.0, 100.0))
    # At least 0.8x-1.25x on the axis, so that noise around 1x looks like the flat line it is.
    slo, shi = min(speedups + [0.8]), max(speedups + [1.25])
    slog = _use_log(speedups + [1.0])
    spd = Chart(ids(f"sweep-speed-{target}-{method}"), f"Speedup vs sparsity · {method}", xlabel,
                "speedup over dense, p50 (x" + (", log)" if slog else ")"), ylog=slog,
                ylim=(slo / 1.08, shi * 1.08) if slog else (slo - (shi - slo) * 0.06, shi + (shi - slo) * 0.06),
                xfmt=lambda v: f"{v:g}", yfmt=lambda v: f"{v:.3g}")
    spd.hline(1.0, "dense = 1x")
    return acc, spd


def _sweep_curve(acc: Chart, spd: Chart, name: str, color: str, width: float, opacity: float, pts: list[tuple[float, Row]]) -> None:
    """One backend / precision / batch: its accuracy curve, and its speedup curve where two points have one."""
    xs = [p[0] * 100 for p in pts]
    acc.line(xs, [p[1].top1 * 100 for p in pts], color, width=width, opacity=opacity, title=name)
    acc.points(xs, [p[1].top1 * 100 for p in pts], color, titles=[tip(p[1]) for p in pts])
    sp = [(x, p[1]) for x, p in zip(xs, pts) if p[1].speedup_p50 is not None]
    if len(sp) >= 2:
        spd.line([x for x, _ in sp], [r.speedup_p50 for _, r in sp], color, width=width, opacity=opacity, title=name)
        spd.points([x for x, _ in sp], [r.speedup_p50 for _, r in sp], color, titles=[tip(r) for _, r in sp])
    acc.legend(name, color, "line")
    spd.legend(name, color, "line")


# -- history --------------------------------------------------------------------------------------
def history_charts(ids: Ids, rows: dict[str, Row], history: dict[str, Any], colors: dict[str, str]) -> tuple[list[str], list[tuple[str, Any]]]:
    """Median latency of each cell over the stored runs up to this one, one chart (as a figure) per target
    and batch, with the change points (reports/history.py) marked; and those change points by cell key."""
    groups: dict[tuple[str, int], list[str]] = {}
    for key in history:
        if key in rows:
            groups.setdefault((rows[key].target, rows[key].batch), []).append(key)
    figs, changes = [], []
    for (target, batch), keys in sorted(groups.items()):
        chart = Chart(ids(f"history-{target}-b{batch}"), f"History · {target} · batch {batch}", "run (oldest → this one)",
                      "median latency per batch (ms)", xfmt=lambda v: f"{v:.0f}" if float(v).is_integer() else "")
        for key in keys:
            h, r = history[key], rows[key]
            color = colors[series_key(r)]
            pts = [(i + 1, p) for i, p in enumerate(h.points) if p.value_ms is not None]
            chart.line([i for i, _ in pts], [p.value_ms for _, p in pts], color, width=1.6, title=key)
            chart.points([i for i, _ in pts], [p.value_ms for _, p in pts], color, size=3.2, filled=[p.used for _, p in pts],
                         titles=[f"{key}\nrun {p.run_id} ({p.created_at[:10]}, commit {(p.git_commit or '?')[:12]})\n"
                                 f"p50 {ms(p.value_ms)} ms" + (f"\n{p.disturbed} (left out of the fit)" if p.disturbed and not p.used else "")
                                 for _, p in pts])
            for cp in h.change_points:
                chart.points([cp.index + 1], [h.points[cp.index].value_ms], color, marker="diamond", size=7,
                             titles=[f"change point: {cp.describe()}"])
                changes.append((key, cp))
            chart.legend(series_key(r), color, "line")
        chart.legend("change point", "#555", "diamond")
        chart.legend("contended (hollow, not fitted)", "#555", "hollow")
        figs.append(figure(chart.render(), "One point per stored run of the cell; change points (ruptures PELT) mark the first run of a new level."))
    return figs, changes
