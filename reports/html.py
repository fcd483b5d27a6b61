"""The self-contained HTML report of a run: ``reports/<run-id>/report.html``.

One file, no network: styles inline, every plot an inline SVG (:mod:`edgebench.reports.svg`), and a few
lines of inline script that only sort tables. Sections: the recommendation per target (computed by
:func:`edgebench.reports.recommend.recommend`, the same function as ``edgebench recommend``), then per
target the cell table, warnings, Pareto fronts, latency distributions and sparsity sweeps; the same
recipes across targets; failed and skipped cells with their reasons; every target's environment
fingerprint; and how the numbers were measured, with the suite that produced them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgebench.reports import recommend as rec_mod
from edgebench.reports.pareto import pareto_front
from edgebench.reports.stats import Bootstrapper
from edgebench.reports.svg import MARKERS, PALETTE, Chart, fmt_num
from edgebench.reports.tables import Row, RunReport, by_target

# The section's constraints: the CLI's defaults, so `edgebench recommend RUN --target T` gives the same.
DEFAULT_CONSTRAINTS = rec_mod.Constraints()
OTHER_OBJECTIVES = ("throughput", "size", "energy")

# (prefix of the warning text, tag name, short tag in the cell table, what it means)
WARNING_KINDS = [
    ("contended", "contended", "Other processes used the CPU while this cell was measured: its latencies are inflated and noisy. Re-run on an idle machine."),
    ("high variance", "high variance", "The standard deviation is above the suite's cov_warn share of the mean: a wide distribution. Compare with the intervals in the recommendation, not the point values."),
    ("sparse-not-used", "sparse-not-used", "Zero weights are stored and executed dense by this backend: expect no speedup and no smaller file from unstructured sparsity."),
    ("sparse-path", "sparse-path", "Weights are stored sparse (DENSIFY) for XNNPACK's sparse kernels, which run on ARM CPUs only; on other CPUs XNNPACK densifies them at load and runs dense."),
    ("ops not delegated", "ops not delegated", "Some operators run outside the backend's delegate/accelerator, usually on a slower path."),
    ("measurement", "measurement capped", "A max_runs or max_seconds cap stopped the measurement before its floors were reached."),
    ("throttled", "throttled", "The device throttled while this cell ran (Pi throttle bits, a CPU frequency cap, or a temperature above the profile's threshold): its latencies are not the device's normal speed."),
    ("cool-down", "cool-down", "The device was still above the profile's temperature limit when the cool-down wait ran out."),
]


def _e(v: Any) -> str:
    return escape(str(v), quote=True)


def _na(v: Any, spec: str = "", suffix: str = "") -> str:
    return "-" if v is None else f"{format(v, spec)}{suffix}"


def ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else (f"{v:.2f}" if v < 100 else f"{v:.1f}")


def size_text(n: int | float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def series_key(r: Row) -> str:
    return f"{r.recipe} / {r.backend} / {r.precision}"


class _Ids:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, base: str) -> str:
        cid, i = _slug(base), 2
        out = cid
        while out in self.used:
            out, i = f"{cid}-{i}", i + 1
        self.used.add(out)
        return out


def _colors(rows: list[Row]) -> dict[str, str]:
    keys = list(dict.fromkeys(series_key(r) for r in rows))
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def _batch_markers(rows: list[Row]) -> dict[int, str]:
    return {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(sorted({r.batch for r in rows}))}


def _tip(r: Row) -> str:
    return (f"{r.cell_key}\np50 {ms(r.p50_ms)} ms, p90 {ms(r.p90_ms)} ms, p99 {ms(r.p99_ms)} ms\n"
            f"top-1 {_na(r.top1, '.2%')}, peak RSS {_na(r.peak_rss_mib, '.0f', ' MiB')}, size {size_text(r.size_bytes)}")


def _short(recipe: str) -> str:
    return recipe if len(recipe) <= 22 else recipe[:20] + "…"


# -- charts ---------------------------------------------------------------------------------------
def _use_log(values: Iterable[float], ratio: float = 8.0) -> bool:
    vals = [v for v in values if v and v > 0]
    return bool(vals) and max(vals) / min(vals) > ratio


def _pareto_chart(ids: _Ids, target: str, rows: list[Row], cost, cost_label: str, title: str, colors: dict[str, str],
                  markers: dict[int, str] | None, xfmt=fmt_num, log_ok: bool = True) -> str | None:
    pts = [r for r in rows if cost(r) is not None and r.top1 is not None]
    if not pts:
        return None
    front = set(pareto_front([(cost(r), r.top1 * 100) for r in pts]))
    xlog = log_ok and _use_log(cost(r) for r in pts)
    chart = Chart(ids(f"chart-{target}-{title}"), title, cost_label + (" (log scale)" if xlog else ""), "top-1 accuracy (%)",
                  xlog=xlog, xfmt=xfmt, yfmt=lambda v: f"{v:.4g}", ybounds=(0.0, 100.0))
    ordered = sorted((i for i in front), key=lambda i: (cost(pts[i]), pts[i].top1))
    if len({(cost(pts[i]), pts[i].top1) for i in ordered}) > 1:  # a front of one position is just its marks
        xs, ys = [], []
        for j, i in enumerate(ordered):
            x, y = cost(pts[i]), pts[i].top1 * 100
            if j:
                xs.append(x)
                ys.append(ys[-1])
            xs.append(x)
            ys.append(y)
        chart.line(xs, ys, "#555", width=5, opacity=0.18, title="Pareto front: nothing else is both cheaper and more accurate")
    # Coincident front points (e.g. dense and its unstructured variants, same file size) share one label.
    names: dict[tuple[float, float], list[str]] = {}
    for i in front:
        names.setdefault((cost(pts[i]), pts[i].top1), [])
        if pts[i].recipe not in names[(cost(pts[i]), pts[i].top1)]:
            names[(cost(pts[i]), pts[i].top1)].append(pts[i].recipe)
    for i, r in enumerate(pts):
        on = i in front
        names_here = names.pop((cost(r), r.top1), None) if on else None
        chart.points([cost(r)], [r.top1 * 100], colors[series_key(r)], marker=(markers or {}).get(r.batch, "circle"), filled=on,
                     titles=[("on the Pareto front\n" if on else "dominated\n") + _tip(r)],
                     labels=[", ".join(_short(n) for n in names_here) if names_here else ""])
    if markers and len(markers) > 1:
        for b, m in markers.items():
            chart.legend(f"batch {b}", "#555", f"hollow:{m}")
    chart.legend("front (filled)", "#555", "circle")
    chart.legend("dominated (hollow)", "#555", "hollow")
    return chart.render()


def _cdf_charts(ids: _Ids, target: str, rows: list[Row], samples: dict[str, list[int]], colors: dict[str, str]) -> list[str]:
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


def _recipe_methods(report: RunReport) -> dict[str, str]:
    """Recipe name -> pruning method, resolved from the run's suite (built-in names, paths and sweeps);
    a recipe that cannot be resolved any more is grouped by its name without a trailing number
    (``l1-unstructured-50`` and ``l1-unstructured-80`` -> ``l1-unstructured``; ``x@sparsity=0.3`` -> ``x``)."""
    methods = {"dense": "dense"}
    try:
        from edgebench.models import recipes

        suite = yaml.safe_load(report.run.suite_yaml or "") or {}
        source = Path(report.run.suite_source) if report.run.suite_source else Path("suite.yaml")
        for ref in suite.get("recipes", []) or []:
            try:
                if isinstance(ref, dict) and "sweep" in ref:
                    from edgebench.bench.config import Sweep, _expand_sweep

                    for r in _expand_sweep(Sweep(**ref["sweep"]), source):
                        methods[r.name] = r.method
                else:
                    r = recipes.load(str(ref), base_dir=source.parent)
                    methods[r.name] = r.method
            except Exception:  # a recipe file that moved since the run: fall back on its name below
                continue
    except Exception:
        pass
    for name in {r.recipe for r in report.rows}:
        methods.setdefault(name, re.sub(r"-\d+(\.\d+)?$", "", name.split("@", 1)[0]))
    return methods


def _sparsity_charts(ids: _Ids, target: str, rows: list[Row], methods: dict[str, str], colors: dict[str, str]) -> tuple[list[str], str]:
    ok = [r for r in rows if r.status == "ok" and r.top1 is not None]
    dense = {(r.model, r.backend, r.precision, r.batch): r for r in ok if r.is_dense}
    by_method: dict[str, list[Row]] = {}
    for r in ok:
        if not r.is_dense:
            by_method.setdefault(methods.get(r.recipe, r.recipe), []).append(r)
    charts = []
    for method, rs in by_method.items():
        if len({r.recipe for r in rs}) < 2:
            continue
        # x: weight sparsity; for methods that remove weights instead of zeroing them, the share removed.
        structured = all((r.weight_sparsity or 0) < 0.01 for r in rs)

        def x_of(r: Row) -> float | None:
            if not structured:
                return r.weight_sparsity
            ref = dense.get((r.model, r.backend, r.precision, r.batch))
            if r.is_dense:
                return 0.0
            return 1 - r.params / ref.params if ref and ref.params and r.params is not None else None

        xlabel = "parameters removed vs dense (%)" if structured else "weight sparsity (%)"
        groups: dict[tuple, list[Row]] = {}
        for r in rs + [d for d in dense.values() if any((d.model, d.backend, d.precision, d.batch) == (r.model, r.backend, r.precision, r.batch) for r in rs)]:
            groups.setdefault((r.model, r.backend, r.precision, r.batch), []).append(r)
        acc = Chart(ids(f"sweep-acc-{target}-{method}"), f"Accuracy vs sparsity · {method}", xlabel, "top-1 accuracy (%)",
                    xfmt=lambda v: f"{v:g}", yfmt=lambda v: f"{v:.4g}", ybounds=(0.0, 100.0))
        speedups = [r.speedup_p50 for r in rs if r.speedup_p50]
        # At least 0.8x-1.25x on the axis, so that noise around 1x looks like the flat line it is.
        slo, shi = min(speedups + [0.8]), max(speedups + [1.25])
        slog = _use_log(speedups + [1.0])
        spd = Chart(ids(f"sweep-speed-{target}-{method}"), f"Speedup vs sparsity · {method}", xlabel,
                    "speedup over dense, p50 (x" + (", log)" if slog else ")"), ylog=slog,
                    ylim=(slo / 1.08, shi * 1.08) if slog else (slo - (shi - slo) * 0.06, shi + (shi - slo) * 0.06),
                    xfmt=lambda v: f"{v:g}", yfmt=lambda v: f"{v:.3g}")
        spd.hline(1.0, "dense = 1x")
        palette = iter(PALETTE * 4)
        drawn = 0
        curves = []
        for key, grs in groups.items():
            pts = sorted(((x_of(r), r) for r in grs if x_of(r) is not None), key=lambda t: t[0])
            if sum(not r.is_dense for _, r in pts) >= 2:  # a curve needs two sparsities besides dense
                curves.append((key, pts))
        for (model, backend, precision, batch), pts in curves:
            color = next(palette)
            # Series often coincide (accuracy rarely depends on backend or batch): draw earlier ones wider
            # and translucent so every overlapping line stays visible.
            width, opacity = [(6.0, 0.35), (3.5, 0.6), (2.0, 0.9), (1.4, 1.0)][min(drawn, 3)] if len(curves) > 1 else (2.0, 1.0)
            name = f"{backend} / {precision} / b{batch}" + (f" / {model}" if len({r.model for r in rows}) > 1 else "")
            xs = [p[0] * 100 for p in pts]
            acc.line(xs, [p[1].top1 * 100 for p in pts], color, width=width, opacity=opacity, title=name)
            acc.points(xs, [p[1].top1 * 100 for p in pts], color, titles=[_tip(p[1]) for p in pts])
            sp = [(x, p[1]) for x, p in zip(xs, pts) if p[1].speedup_p50 is not None]
            if len(sp) >= 2:
                spd.line([x for x, _ in sp], [r.speedup_p50 for _, r in sp], color, width=width, opacity=opacity, title=name)
                spd.points([x for x, _ in sp], [r.speedup_p50 for _, r in sp], color, titles=[_tip(r) for _, r in sp])
            acc.legend(name, color, "line")
            spd.legend(name, color, "line")
            drawn += 1
        if drawn:
            charts += [acc.render(), spd.render()]
    note = "" if charts else ("No sparsity sweep in this run: accuracy-vs-sparsity curves need two or more recipes of one "
                              "pruning method at different sparsities (e.g. l1-unstructured-50 and l1-unstructured-80).")
    return charts, note


# -- tables ---------------------------------------------------------------------------------------
SHORT_TAGS = {"contended": "contended", "high variance": "CoV", "sparse-not-used": "sparse unused", "sparse-path": "sparse path",
              "ops not delegated": "undelegated", "measurement capped": "capped", "throttled": "throttled", "cool-down": "hot"}


def _flags(r: Row) -> str:
    tags = []
    for prefix, name, _ in WARNING_KINDS:
        hits = [w for w in r.warnings if w.startswith(prefix)]
        if hits:
            tags.append(f'<span class="tag tag-{_slug(name)}" title="{_e("; ".join(hits))}">{_e(SHORT_TAGS.get(name, name))}</span>')
    others = [w for w in r.warnings if not any(w.startswith(p) for p, _, _ in WARNING_KINDS)]
    if others:
        tags.append(f'<span class="tag" title="{_e("; ".join(others))}">other</span>')
    return " ".join(tags)


def _td(text: str, sort: Any = None, cls: str = "") -> str:
    s = "" if sort is None else f' data-sort="{_e(sort)}"'
    c = f' class="{cls}"' if cls else ""
    return f"<td{s}{c}>{text}</td>"


def _cell_table(rows: list[Row], multi_model: bool) -> str:
    head = (["model"] if multi_model else []) + [
        "recipe", "backend (threads)", "prec.", "batch", "p50 ms", "p90 ms", "p99 ms", "CoV", "n", "items/s",
        "peak RSS MiB (+load)", "size", "w. sparsity", "MACs", "top-1", "agree w/ dense", "Δtop-1 pts", "speedup p50", "flags"]
    out = ['<table class="cells sortable"><thead><tr>' + "".join(f'<th title="click to sort">{_e(h)}</th>' for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        lead = ([_td(_e(r.model), r.model)] if multi_model else []) + [
            _td(_e(r.recipe) + (' <span class="ref">ref</span>' if r.is_reference else ""), r.recipe),
            _td(_e(r.backend) + (f' <span class="muted">×{r.threads}</span>' if r.threads else ""), r.backend),
            _td(_e(r.precision), r.precision), _td(str(r.batch), r.batch)]
        if r.status != "ok":
            out.append(f'<tr class="status-{_e(r.status)}" id="cell-{_slug(r.cell_key)}">' + "".join(lead)
                       + f'<td colspan="{len(head) - len(lead)}" class="failed"><b>{_e(r.status.upper())}</b>: {_e(r.error or "no reason recorded")}</td></tr>')
            continue
        spd = r.speedup_p50
        spd_cls = "good" if spd and spd > 1.05 else ("bad" if spd and spd < 0.95 else "")
        dlt = r.top1_delta_pts
        dlt_cls = "bad" if dlt is not None and dlt < -1 else ""
        out.append(f'<tr id="cell-{_slug(r.cell_key)}">' + "".join(lead + [
            _td(ms(r.p50_ms), r.p50_ms, "num"), _td(ms(r.p90_ms), r.p90_ms, "num"), _td(ms(r.p99_ms), r.p99_ms, "num"),
            _td(_na(r.cov, ".1%"), r.cov, "num" + (" warn" if r.cov is not None and r.cov > 0.05 else "")),
            _td(_na(r.n), r.n, "num"), _td(_na(r.throughput_ips, ",.0f"), r.throughput_ips, "num"),
            _td(f"{_na(r.peak_rss_mib, '.0f')} (+{_na(r.peak_rss_delta_mib, '.1f')})", r.peak_rss_mib, "num"),
            _td(size_text(r.size_bytes), r.size_bytes, "num"), _td(_na(r.weight_sparsity, ".0%"), r.weight_sparsity, "num"),
            _td(f"{r.macs / 1e6:.2f} M" if r.macs is not None else "-", r.macs, "num"),
            _td(_na(r.top1, ".2%"), r.top1, "num"), _td(_na(r.agreement, ".2%"), r.agreement, "num"),
            _td(_na(dlt, "+.2f"), dlt, "num " + dlt_cls), _td(_na(spd, ".2f", "x"), spd, "num " + spd_cls),
            _td(_flags(r), len(r.warnings)),
        ]) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _warnings_block(rows: list[Row]) -> str:
    parts = []
    for prefix, name, why in WARNING_KINDS:
        hits = [(r, w) for r in rows for w in r.warnings if w.startswith(prefix)]
        if hits:
            items = "".join(f"<li><code>{_e(r.cell_key)}</code>: {_e(w)}</li>" for r, w in hits)
            parts.append(f'<details class="warning-kind"><summary><span class="tag tag-{_slug(name)}">{_e(name)}</span> '
                         f"{len({r.cell_key for r, _ in hits})} cell(s) — {_e(why)}</summary><ul>{items}</ul></details>")
    others = [(r, w) for r in rows for w in r.warnings if not any(w.startswith(p) for p, _, _ in WARNING_KINDS)]
    if others:
        items = "".join(f"<li><code>{_e(r.cell_key)}</code>: {_e(w)}</li>" for r, w in others)
        parts.append(f'<details class="warning-kind"><summary><span class="tag">other</span> {len(others)} warning(s)</summary><ul>{items}</ul></details>')
    if not parts:
        return '<p class="muted">No warnings: every measured cell was uncontended, stable and fully delegated.</p>'
    return "\n".join(parts)


# -- recommendation -------------------------------------------------------------------------------
def _json_script(data: Any, cls: str) -> str:
    text = json.dumps(data, default=str).replace("</", "<\\/")
    return f'<script type="application/json" class="{cls}">{text}</script>'


def _recommendation_block(report: RunReport, target: str, boot: Bootstrapper) -> str:
    out = []
    for rec in rec_mod.recommend(report, target, DEFAULT_CONSTRAINTS, bootstrapper=boot):
        obj = rec.objective
        best = rec.best
        attrs = (f'data-target="{_e(rec.target)}" data-model="{_e(rec.model)}" data-objective="{_e(obj.name)}" '
                 f'data-verdict="{_e(rec.verdict)}" data-best="{_e(best.row.cell_key if best else "")}" '
                 f'data-tied="{_e(" ".join(c.row.cell_key for c in rec.tied))}"')
        card = [f'<div class="recommendation verdict-{_e(rec.verdict)}" {attrs}>',
                f'<p class="constraints">Model <b>{_e(rec.model)}</b> · objective: <b>{_e(obj.label)}</b> '
                f'({"lower" if obj.lower_is_better else "higher"} is better) · {_e(rec.constraints.describe())}</p>',
                f'<p class="headline">{_e(rec.headline())}</p>']
        if best is not None:
            b = best.row
            card.append(f'<p class="best-detail">{"ranked first: " + _e(rec_mod.label(b)) + " — " if rec.verdict == "tie" else ""}'
                        f"{_e(obj.label)} <b>{_e(rec_mod.format_value(obj, best.value))}</b>; top-1 {_na(b.top1, '.2%')} "
                        f"({_e(rec_mod.delta_text(best.drop_pts))} pts vs {_e(best.reference)}); peak RSS {_na(b.peak_rss_mib, '.0f', ' MiB')}; "
                        f"size {size_text(b.size_bytes)}</p>")
            margin = rec_mod.describe_margin(rec)
            verdict = {"win": "WIN", "tie": "TIE", "sole": "only candidate"}[rec.verdict]
            card.append(f'<p class="verdict"><span class="badge badge-{_e(rec.verdict)}">{verdict}</span> '
                        + _e(margin or ("every candidate ties" if rec.verdict == "tie" else "")) + "</p>")
        if rec.notes:
            card.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in rec.notes) + "</ul>")
        if rec.candidates:
            card.append(f'<details open><summary>{len(rec.candidates)} candidate(s), ranked, with the interval against the best</summary>'
                        '<table class="ranked"><thead><tr><th>#</th><th>candidate</th><th>' + _e(obj.label) + '</th><th>top-1 (Δ pts)</th>'
                        "<th>peak RSS</th><th>vs best</th></tr></thead><tbody>"
                        + "".join(f'<tr class="{"tied" if k.tied else ""}"><td>{k.rank}</td><td>{_e(rec_mod.label(k.row))}</td>'
                                  f'<td class="num">{_e(rec_mod.format_value(obj, k.value))}</td>'
                                  f'<td class="num">{_na(k.row.top1, ".2%")} ({_e(rec_mod.delta_text(k.drop_pts))})</td>'
                                  f'<td class="num">{_na(k.row.peak_rss_mib, ".0f", " MiB")}</td><td>{_e(rec_mod.comparison_text(k))}</td></tr>'
                                  for k in rec.candidates)
                        + "</tbody></table></details>")
        if rec.excluded:
            card.append(f'<details><summary>{len(rec.excluded)} excluded, with why</summary><ul class="excluded">'
                        + "".join(f"<li><b>{_e(rec_mod.label(e.row))}</b>: {_e(e.reason)}</li>" for e in rec.excluded) + "</ul></details>")
        card.append(f'<p class="muted">Same answer in a terminal: <code>edgebench recommend {_e(report.run.id)} --target {_e(target)}</code> '
                    "(add --max-accuracy-drop, --max-memory, --objective, --batch to change the question).</p>")
        card.append(_json_script(rec.to_dict(), "recommendation-data"))
        card.append("</div>")
        out.append("\n".join(card))
    # Other objectives, same constraints otherwise.
    rows_html = []
    for name in OTHER_OBJECTIVES:
        c = rec_mod.Constraints(DEFAULT_CONSTRAINTS.max_accuracy_drop_pts, DEFAULT_CONSTRAINTS.max_memory_mib, name)
        for rec in rec_mod.recommend(report, target, c, bootstrapper=boot):
            margin = rec_mod.describe_margin(rec) or ""
            if rec.best:
                detail = margin or ("every candidate ties" if rec.verdict == "tie" else "the only candidate")
            else:
                detail = "; ".join(rec.notes) or "no candidate meets the constraints"
            rows_html.append(f'<tr data-objective="{_e(name)}" data-verdict="{_e(rec.verdict)}" data-best="{_e(rec.best.row.cell_key if rec.best else "")}">'
                             f"<td>{_e(rec.objective.label)}</td><td>{_e(rec.model)}</td><td>{_e(rec.verdict)}</td><td>{_e(rec.headline())}"
                             + (f" ({_e(rec_mod.format_value(rec.objective, rec.best.value))})" if rec.best else "")
                             + f"</td><td>{_e(detail)}</td></tr>")
    out.append('<h3>Other objectives</h3><table class="objectives"><thead><tr><th>objective</th><th>model</th><th>verdict</th>'
               "<th>answer</th><th>margin / why not</th></tr></thead><tbody>" + "".join(rows_html) + "</tbody></table>")
    return "\n".join(out)


def _device_block(rows: list[Row]) -> str:
    """One line per measured cell: temperature, throttling, other load, cool-down wait, energy."""
    from edgebench.reports.tables import device_line

    if not rows:
        return ""
    items = "".join(f'<li class="device-line{" bad" if r.throttled or r.contended else ""}"><code>{_e(r.cell_key)}</code>: {_e(device_line(r))}</li>' for r in rows)
    return ('<h3>Device state</h3><p class="muted">Sampled on the device while each cell ran (targets/samplers.py); '
            'what a target does not expose says "not available".</p><ul class="device">' + items + "</ul>")


# -- environment ----------------------------------------------------------------------------------
FINGERPRINT_LABELS = {
    "hostname": "host name", "board_model": "board", "cpu_model": "CPU", "machine": "architecture",
    "logical_cpus": "logical CPUs", "physical_cores": "physical cores", "cpu_affinity": "CPUs this process may use",
    "cpufreq": "cpufreq policies (governor, MHz)", "cpu_freq_mhz": "CPU frequency (MHz)", "memory_total_mib": "memory (MiB)",
    "os": "OS", "kernel": "kernel", "python": "Python", "python_implementation": "Python implementation", "numpy": "NumPy",
    "backends": "backends", "edgebench_version": "edgebench version", "edgebench_commit": "edgebench commit",
    "load_average": "load average (1, 5, 15 min) at start", "error": "probe error",
    "state_start": "device state at run start", "state_end": "device state at run end", "target_profile": "target profile",
    "edgebench_source": "edgebench source digest", "nvpmodel": "nvpmodel power mode", "l4t_release": "L4T release",
}


def _value_html(v: Any) -> str:
    if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
        keys = list(dict.fromkeys(k for x in v.values() for k in x))
        return ('<table class="inner"><thead><tr><th></th>' + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr></thead><tbody>"
                + "".join(f"<tr><th>{_e(name)}</th>" + "".join(f"<td>{_value_html(x.get(k))}</td>" for k in keys) + "</tr>" for name, x in v.items())
                + "</tbody></table>")
    if isinstance(v, dict):
        if not v:
            return '<span class="muted">none</span>'
        return '<table class="kv inner">' + "".join(f"<tr><th>{_e(k)}</th><td>{_value_html(x)}</td></tr>" for k, x in v.items()) + "</table>"
    if isinstance(v, list):
        if v and all(isinstance(x, dict) for x in v):
            keys = list(dict.fromkeys(k for x in v for k in x))
            return ('<table class="inner"><thead><tr>' + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr></thead><tbody>"
                    + "".join("<tr>" + "".join(f"<td>{_value_html(x.get(k))}</td>" for k in keys) + "</tr>" for x in v) + "</tbody></table>")
        return _e(", ".join(fmt_num(x) if isinstance(x, float) else str(x) for x in v)) if v else '<span class="muted">none</span>'
    if v is None or v == "not available":
        return '<span class="muted">not available</span>'
    if v == "":
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return _e(f"{v:g}")
    return _e(v)


def _fingerprint_table(fp: dict[str, Any]) -> str:
    if not fp:
        return '<p class="muted">No fingerprint was recorded for this target.</p>'
    rows = [f"<tr><th>{_e(FINGERPRINT_LABELS.get(k, k))}</th><td>{_value_html(v)}</td></tr>" for k, v in fp.items()]
    return '<table class="kv">' + "".join(rows) + "</table>"


def _fingerprint_line(fp: dict[str, Any]) -> str:
    if not fp:
        return "not recorded"
    if "error" in fp:
        return str(fp["error"])
    backends = ", ".join(f"{k} {v.get('version')}" for k, v in (fp.get("backends") or {}).items() if isinstance(v, dict) and v.get("available"))
    return (f"{fp.get('cpu_model')} · {fp.get('logical_cpus')} logical CPUs · {fp.get('memory_total_mib')} MiB · {fp.get('os')} · "
            f"kernel {fp.get('kernel')} · Python {fp.get('python')} · {backends}")


# -- cross-target ---------------------------------------------------------------------------------
def _cross_target(report: RunReport) -> str:
    targets = list(by_target(report.rows))
    keys = list(dict.fromkeys((r.model, r.recipe, r.backend, r.precision, r.batch) for r in report.rows))
    idx = {(r.model, r.recipe, r.backend, r.precision, r.batch, r.target): r for r in report.rows}
    head = ["model", "recipe", "backend", "prec.", "batch"]
    sub = []
    for i, t in enumerate(targets):
        sub += [f"{t}: p50 ms", f"{t}: p90 ms", f"{t}: top-1", f"{t}: speedup"] + ([f"{t}: p50 vs {targets[0]}"] if i else [])
    out = []
    if len(targets) == 1:
        out.append(f'<p class="muted">This run has one target ({_e(targets[0])}); a suite with several <code>targets</code> puts them side by side here.</p>')
    out.append('<table class="cross sortable"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head + sub) + "</tr></thead><tbody>")
    for k in keys:
        cells = [_td(_e(k[0]), k[0]), _td(_e(k[1]), k[1]), _td(_e(k[2]), k[2]), _td(_e(k[3]), k[3]), _td(str(k[4]), k[4])]
        first = idx.get(k + (targets[0],))
        for i, t in enumerate(targets):
            r = idx.get(k + (t,))
            if r is None or r.status != "ok":
                status = "not in this target" if r is None else r.status
                cells.append(f'<td colspan="{4 + (1 if i else 0)}" class="muted">{_e(status)}</td>')
                continue
            cells += [_td(ms(r.p50_ms), r.p50_ms, "num"), _td(ms(r.p90_ms), r.p90_ms, "num"), _td(_na(r.top1, ".2%"), r.top1, "num"),
                      _td(_na(r.speedup_p50, ".2f", "x"), r.speedup_p50, "num")]
            if i:
                ratio = r.p50_ms / first.p50_ms if first and first.status == "ok" and first.p50_ms and r.p50_ms else None
                cells.append(_td(_na(ratio, ".2f", "x"), ratio, "num"))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


# -- page -----------------------------------------------------------------------------------------
CSS = """
:root { --fg:#1d1d1f; --muted:#6b6b70; --line:#e3e3e8; --bg:#fafafa; --accent:#0072B2; --good:#1a7f37; --bad:#c62828; --warn:#9a6700; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); margin: 0; }
main { max-width: 1440px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 34px 0 10px; padding-top: 10px; border-top: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 8px; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12.5px; }
pre { background: #f2f2f5; padding: 10px; overflow-x: auto; border-radius: 6px; }
.muted { color: var(--muted); } .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.good { color: var(--good); font-weight: 600; } .bad { color: var(--bad); font-weight: 600; } .warn { color: var(--warn); }
nav { font-size: 13px; margin: 10px 0 6px; } nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
.summary { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.stat { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 120px; }
.stat b { display: block; font-size: 20px; } .stat span { color: var(--muted); font-size: 12px; }
.banner { border-left: 4px solid var(--warn); background: #fff8e6; padding: 8px 12px; margin: 8px 0; border-radius: 4px; }
.banner.bad { border-color: var(--bad); background: #fdecea; }
table { border-collapse: collapse; background: #fff; margin: 6px 0 12px; font-size: 12.5px; }
th, td { border: 1px solid var(--line); padding: 3px 6px; vertical-align: top; }
table.cells td, table.cross td { white-space: nowrap; } table.cells td.failed { white-space: normal; }
th { background: #f3f3f6; text-align: left; font-weight: 600; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th:hover { background: #e9e9ee; }
.table-wrap { overflow-x: auto; }
td.failed { color: var(--bad); } tr.status-skipped td.failed { color: var(--muted); }
.ref { font-size: 10px; background: #eef; color: #335; padding: 0 4px; border-radius: 3px; }
.tag { display: inline-block; font-size: 10.5px; padding: 0 5px; border-radius: 3px; background: #eee; color: #333; margin: 1px 2px 1px 0; white-space: nowrap; }
.tag-contended, .tag-throttled, .tag-cool-down { background: #fde2e1; color: #8a1c1c; } li.device-line.bad { color: #8a1c1c; } .tag-high-variance { background: #fff1cc; color: #6b4d00; }
.tag-sparse-not-used, .tag-sparse-path { background: #e3efff; color: #16406e; } .tag-ops-not-delegated { background: #f1e3ff; color: #4b1e73; }
.tag-measurement-capped { background: #e9e9e9; }
.recommendation { background: #fff; border: 1px solid var(--line); border-left: 5px solid var(--accent); border-radius: 8px; padding: 10px 16px; margin: 10px 0; }
.recommendation.verdict-tie { border-left-color: var(--warn); } .recommendation.verdict-none { border-left-color: var(--bad); }
.recommendation .headline { font-size: 17px; font-weight: 650; margin: 6px 0; }
.recommendation p { margin: 4px 0; } .constraints { color: var(--muted); font-size: 12.5px; }
.badge { display: inline-block; font-weight: 700; font-size: 11px; padding: 1px 7px; border-radius: 10px; color: #fff; background: var(--accent); }
.badge-tie { background: var(--warn); } .badge-sole { background: #555; }
ul.notes { margin: 6px 0; padding-left: 20px; color: #333; } ul.notes li { margin: 2px 0; }
tr.tied td { background: #fffbea; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
.charts figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px; }
.charts figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
svg.chart { display: block; width: 100%; max-width: 680px; height: auto; font-family: inherit; }
.legend span { display: inline-block; margin: 0 14px 4px 0; font-size: 12.5px; }
.legend i { display: inline-block; width: 11px; height: 11px; border-radius: 50%; margin-right: 5px; vertical-align: -1px; }
details { margin: 4px 0; } summary { cursor: pointer; }
table.kv th { width: 220px; } table.inner { margin: 0; font-size: 12px; }
.warning-kind ul { margin: 4px 0 8px; }
@media print { nav { display: none; } details { display: block; } .charts { display: block; } .charts figure { break-inside: avoid; margin-bottom: 10px; } }
"""

SORT_JS = """
(function () {
  function key(td) {
    if (!td) return null;
    var s = td.getAttribute('data-sort');
    if (s === null) s = td.textContent.trim();
    if (s === '' || s === 'None' || s === '-') return null;
    var n = Number(s);
    return isNaN(n) ? s.toLowerCase() : n;
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, col) {
      th.addEventListener('click', function () {
        var body = table.tBodies[0];
        var asc = th.getAttribute('data-dir') !== 'asc';
        table.querySelectorAll('thead th').forEach(function (h) { h.removeAttribute('data-dir'); });
        th.setAttribute('data-dir', asc ? 'asc' : 'desc');
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === null && y === null) return 0;
          if (x === null) return 1;
          if (y === null) return -1;
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


def _history_section(ids: _Ids, report: RunReport, history: dict[str, Any], colors: dict[str, str]) -> str:
    """Median latency of each cell over the stored runs up to this one, one chart per target and batch, with
    change points (reports/history.py) marked and listed."""
    rows = {r.cell_key: r for r in report.rows}
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
        figs.append(_figure(chart.render(), "One point per stored run of the cell; change points (ruptures PELT) mark the first run of a new level."))
    out = ['<section id="history"><h2>History</h2><p class="muted">This run\'s cells in earlier runs of the same store '
           "(<code>edgebench history CELL</code> for the table). A change point needs a step that lasts; a one- or two-night blip is not one.</p>"]
    if changes:
        out.append('<table class="changes"><thead><tr><th>cell</th><th>change</th></tr></thead><tbody>'
                   + "".join(f"<tr><td><code>{_e(k)}</code></td><td>{_e(cp.describe())}</td></tr>" for k, cp in changes) + "</tbody></table>")
    else:
        out.append('<p class="muted">No change point in any cell\'s history.</p>')
    notes = sorted({n for h in history.values() for n in h.notes if "ruptures" in n})
    out += [f'<p class="muted">{_e(n)}</p>' for n in notes]
    out.append(f'<div class="charts">{"".join(figs)}</div></section>')
    return "\n".join(out)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def render(report: RunReport, bootstrapper: Bootstrapper | None = None, history: dict[str, Any] | None = None) -> str:
    """The whole page as a string. ``report`` should be loaded with samples (``tables.load(..., with_samples=True)``).
    ``history`` (cell key -> reports.history.History) adds the History section when a cell has earlier runs."""
    run = report.run
    s = run.summary or {}
    targets = by_target(report.rows)
    ids = _Ids()
    boot = bootstrapper or Bootstrapper()
    colors = _colors(report.rows)
    methods = _recipe_methods(report)
    ok = [r for r in report.rows if r.status == "ok"]
    failed = [r for r in report.rows if r.status != "ok"]
    contended = [r for r in ok if any(w.startswith("contended") for w in r.warnings)]
    dur = (run.finished_at - run.created_at).total_seconds() if run.finished_at else None
    multi_model = len({r.model for r in report.rows}) > 1

    body = [f"<header><h1>edgebench run <code>{_e(run.id)}</code></h1>",
            f'<p class="muted">Suite <b>{_e(run.suite_name)}</b> ({_e(run.suite_source)}) · {_e(run.status)} · started '
            f"{run.created_at:%Y-%m-%d %H:%M:%S} UTC" + (f" · {dur:.0f} s" if dur is not None else "")
            + f" · edgebench {_e(run.edgebench_version or '?')} @ {_e(run.git_commit or '?')}</p>",
            '<div class="summary">'
            + "".join(f'<div class="stat"><b>{v}</b><span>{_e(k)}</span></div>' for k, v in [
                ("targets", len(targets)), ("cells ok", len(ok)), ("failed", sum(r.status == "failed" for r in report.rows)),
                ("skipped", sum(r.status == "skipped" for r in report.rows)),
                ("built this run", s.get("trained", 0) + s.get("pruned", 0) + s.get("exported", 0)), ("from cache", s.get("cache_hits", 0))])
            + "</div>"]
    if run.status not in ("finished",):
        body.append(f'<p class="banner bad">This run is <b>{_e(run.status)}</b>: the report shows the cells it finished.</p>')
    if failed:
        body.append(f'<p class="banner bad">{len(failed)} cell(s) failed or were skipped: see <a href="#failures">Failed and skipped cells</a> for the reasons.</p>')
    if contended:
        body.append(f'<p class="banner">{len(contended)} of {len(ok)} measured cells were <b>contended</b> (other processes used the CPU while measuring): '
                    "their latencies are inflated and noisy. Re-run on an idle machine before trusting close comparisons.</p>")
    nav = [("recommendation", "Recommendation")] + [(f"target-{_slug(t)}", f"Target {t}") for t in targets] + [
        ("cross-target", "Across targets")] + ([("history", "History")] if history else []) + [
        ("failures", "Failures"), ("environments", "Environments"), ("method", "Method & suite")]
    body.append("<nav>" + "".join(f'<a href="#{i}">{_e(n)}</a>' for i, n in nav)
                + ' · data: <a href="report.md">report.md</a> <a href="report.json">report.json</a> <a href="cells.csv">cells.csv</a> '
                  '<a href="samples.csv">samples.csv</a></nav></header>')

    body.append('<section id="recommendation"><h2>Recommendation</h2>'
                f'<p class="muted">Among the cells that ran: the best recipe, backend, precision and batch per target and model, with default constraints '
                f"({_e(DEFAULT_CONSTRAINTS.describe())}). A win needs the 95% bootstrap interval of the latency ratio to exclude 1; otherwise it is a tie.</p>")
    for t in targets:
        body.append(f'<h3>Target {_e(t)}</h3><div class="rec-target" id="rec-{_slug(t)}">{_recommendation_block(report, t, boot)}</div>')
    body.append("</section>")

    for t, rows in targets.items():
        tid = _slug(t)
        t_failed = [r for r in rows if r.status != "ok"]
        sec = [f'<section id="target-{tid}" class="target" data-target="{_e(t)}"><h2>Target <code>{_e(t)}</code></h2>',
               f'<p class="muted">Environment: {_e(_fingerprint_line(report.environments.get(t, {})))} (<a href="#env-{tid}">full fingerprint</a>)</p>',
               '<h3>Cells</h3><p class="muted">Latency per batch in ms. Speedup (p50) and Δtop-1 are against the dense reference (ref) of the same model, '
               "backend and batch: the fp32 cell, so quantised rows show what quantising gained and lost (the same precision where no fp32 dense cell ran). Peak RSS is the worker process's high-water mark; (+load) its rise over the baseline after importing the runtime. "
               "Click a column to sort.</p>",
               f'<div class="table-wrap">{_cell_table(rows, multi_model)}</div>']
        if t_failed:
            sec.append(f'<p class="banner bad">{len(t_failed)} cell(s) on this target failed or were skipped; reasons in the table above and under '
                       '<a href="#failures">Failures</a>.</p>')
        sec.append(f"<h3>Warnings</h3>{_warnings_block(rows)}")
        ok_rows = [r for r in rows if r.status == "ok"]
        sec.append(_device_block(ok_rows))
        markers = _batch_markers(ok_rows)
        figs = []
        for b in sorted({r.batch for r in ok_rows}):
            svg = _pareto_chart(ids, t, [r for r in ok_rows if r.batch == b], lambda r: r.p90_ms, "p90 latency per batch (ms)",
                                f"Accuracy vs p90 latency · batch {b}", colors, None)
            if svg:
                figs.append(_figure(svg, f"Pareto front (filled, joined): no other cell at batch {b} is both faster at p90 and more accurate."))
        svg = _pareto_chart(ids, t, ok_rows, lambda r: r.peak_rss_mib, "peak RSS of the worker (MiB)", "Accuracy vs peak memory", colors, markers, log_ok=False)
        if svg:
            figs.append(_figure(svg, "Peak RSS includes the Python interpreter and the runtime; marker shape is the batch size."))
        seen: dict[tuple, Row] = {}
        for r in ok_rows:
            seen.setdefault((r.model, r.recipe, r.backend, r.precision), r)
        svg = _pareto_chart(ids, t, list(seen.values()), lambda r: (r.size_bytes / 1024) if r.size_bytes is not None else None,
                            "artifact size on disk (KiB)", "Accuracy vs model size", colors, None, log_ok=False)
        if svg:
            figs.append(_figure(svg, "One point per artifact (all batch sizes share it). Unstructured zeros are stored, so they do not shrink the file."))
        figs += [_figure(c, "Empirical CDF of every stored latency sample; dots mark p50 and p90. Further right is slower; a long right tail is jitter.")
                 for c in _cdf_charts(ids, t, rows, report.samples, colors)]
        sweeps, note = _sparsity_charts(ids, t, rows, methods, colors)
        figs += [_figure(c, "One line per backend / precision / batch; dense is the 0% point.") for c in sweeps]
        sec.append("<h3>Plots</h3>")
        no_acc = [r for r in ok_rows if r.top1 is None]
        if no_acc:
            sec.append(f'<p class="muted">{len(no_acc)} cell(s) have no accuracy (latency-only models, no labelled evaluation split): '
                       "they appear in the latency distributions but not on the accuracy plots.</p>")
        if ok_rows:
            keys = list(dict.fromkeys(series_key(r) for r in ok_rows))
            sec.append('<p class="legend">' + "".join(f'<span><i style="background:{colors[k]}"></i>{_e(k)}</span>' for k in keys)
                       + '<span class="muted">— colour = recipe / backend / precision in every plot; hover a mark for its numbers</span></p>')
        if not ok_rows:
            sec.append('<p class="muted">No cell on this target produced measurements, so there is nothing to plot.</p>')
        if figs:
            sec.append(f'<div class="charts">{"".join(figs)}</div>')
        if note:
            sec.append(f'<p class="muted">{_e(note)}</p>')
        sec.append("</section>")
        body.append("\n".join(sec))

    body.append(f'<section id="cross-target"><h2>Across targets</h2><p class="muted">The same recipe, backend, precision and batch on every target of the run.</p>'
                f'<div class="table-wrap">{_cross_target(report)}</div></section>')
    if history:
        body.append(_history_section(ids, report, history, colors))

    fail_html = ['<section id="failures"><h2>Failed and skipped cells</h2>']
    if failed:
        fail_html.append('<table class="failures"><thead><tr><th>cell</th><th>target</th><th>status</th><th>reason</th></tr></thead><tbody>')
        for r in failed:
            fail_html.append(f'<tr class="status-{_e(r.status)}"><td><code>{_e(r.cell_key)}</code></td><td>{_e(r.target)}</td><td>{_e(r.status)}</td>'
                             f'<td class="failed">{_e(r.error or "no reason recorded")}</td></tr>')
        fail_html.append("</tbody></table>")
        for r, tb in [(r, report.tracebacks[r.cell_key]) for r in failed if r.cell_key in report.tracebacks]:
            fail_html.append(f"<details><summary>traceback of <code>{_e(r.cell_key)}</code></summary><pre>{_e(tb)}</pre></details>")
    else:
        fail_html.append('<p class="muted">None: every cell ran.</p>')
    fail_html.append("</section>")
    body.append("\n".join(fail_html))

    env = ['<section id="environments"><h2>Environments</h2><p class="muted">Everything the probe read on each target at the start of the run. '
           '"not available" means the machine does not expose it.</p>']
    for t in targets:
        env.append(f'<h3 id="env-{_slug(t)}">{_e(t)}</h3>{_fingerprint_table(report.environments.get(t, {}))}')
    extra = [t for t in report.environments if t not in targets]
    for t in extra:
        env.append(f'<h3 id="env-{_slug(t)}">{_e(t)} (no cells)</h3>{_fingerprint_table(report.environments[t])}')
    env.append("</section>")
    body.append("\n".join(env))

    body.append(f"""<section id="method"><h2>Method &amp; suite</h2>
<ul>
<li>Each cell runs in its own worker process. Warm-up and measurement both continue until a run count and a time floor are reached; every per-batch latency sample is stored (samples.csv) and summarised as p50/p90/p99, CoV (std/mean) and throughput (items/s over the measured time).</li>
<li>Peak memory is the worker's RSS high-water mark (VmHWM), including the interpreter and runtime; (+load) is its rise over the RSS right after importing the runtime.</li>
<li>Top-1 is measured on the evaluation split at the cell's batch size; agreement is top-1 agreement with the dense PyTorch model's predictions.</li>
<li>CPU contention is the share of the CPU used by other processes while measuring; above the suite's threshold a cell is flagged <i>contended</i>. Each cell also carries the device's state while it ran (temperatures, CPU clocks, throttle bits, power where a rail exists), sampled by the worker on the device; a cell during which the device throttled is flagged <i>throttled</i>. The probe's state at the start and end of the run is in each target's fingerprint.</li>
<li>Recommendation: candidates must meet the accuracy-drop limit (vs the dense cell of the same backend at fp32, same batch when it ran) and the memory limit. The best by the objective is compared with every other candidate by a percentile bootstrap (95%, fixed seeds, each cell resampled on its own) of the ratio of the objective's statistic and of the median; if either interval includes 1 they tie. Cells that run the same computation (zeros stored and run dense, same parameters and MACs) tie by construction. Samples are treated as independent, so on a busy machine the intervals are too narrow, not too wide.</li>
</ul>
<p>Reproduce: <code>edgebench run {_e(run.suite_source)}</code> on the same environment; suite as run:</p>
<pre>{_e(run.suite_yaml or "")}</pre></section>""")

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>edgebench run {_e(run.id)} · {_e(run.suite_name)}</title><style>{CSS}</style></head>\n"
            f"<body><main>\n{chr(10).join(body)}\n</main><script>{SORT_JS}</script></body></html>\n")


def write(report: RunReport, out_dir: Path, bootstrapper: Bootstrapper | None = None, history: dict[str, Any] | None = None) -> Path:
    path = Path(out_dir) / "report.html"
    path.write_text(render(report, bootstrapper, history), encoding="utf-8")
    return path
