"""The report of one ``edgebench fit``: Markdown, a self-contained HTML page and the result as JSON.

Both documents are rendered from one list of sections (title, paragraphs, tables, a code block), so the
Markdown and the HTML say the same thing; the HTML adds one inline SVG chart per group (latency vs width,
the dense width marked): no script, no network. The verdict's wording follows issue 18's acceptance: a
fit is "within budget" only when its p50 is at most the budget and its 95% interval's upper end is at most
5% over it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from edgebench.bench.contracts.fit import UPPER_SLACK, FitResult, LatencyTable, Measured, to_data
from edgebench.reports.htmlkit import Ids, e, ms, na, static_page, write_static_report
from edgebench.reports.svg import PALETTE, Chart

ERROR_GOAL = 0.10   # median |predicted - measured| / measured over the committed steps (issue 18's goal)


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class _Code:
    text: str
    lang: str = ""


@dataclass
class _Charts:
    """Where the HTML puts the per-group latency charts (the Markdown has the table only)."""


Block = str | _Table | _Code | _Charts
Section = tuple[str, list[Block]]


# -- public API ---------------------------------------------------------------------------------------
def fit_markdown(result: FitResult) -> str:
    """The fit's report as Markdown."""
    out = [f"# {title(result)}", ""]
    for heading, blocks in _sections(result):
        if heading:
            out += [f"## {heading}", ""]
        for b in blocks:
            lines = _md_block(b)
            out += lines + [""] if lines else []
    return "\n".join(out).rstrip() + "\n"


def fit_html(result: FitResult) -> str:
    """The fit's report as one self-contained HTML page (everything escaped, inline SVG, no script)."""
    ids = Ids()
    body = [f"<h1>{e(title(result))}</h1>"]
    for heading, blocks in _sections(result):
        inner = [f"<h2>{e(heading)}</h2>"] if heading else []
        inner += [_html_block(b, result, ids) for b in blocks]
        body.append(f'<section id="{ids(heading or "verdict")}">' + "\n".join(inner) + "</section>")
    return static_page(title(result), body)


def write_fit_report(result: FitResult, out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``fit.json`` (:func:`to_data`) into ``out_dir``, each
    atomically; returns their paths by kind ("markdown", "html", "json"). A full disk is CannotWrite."""
    return write_static_report(out_dir, {"json": ("fit.json", json.dumps(to_data(result), indent=2, default=str) + "\n"),
                                         "markdown": ("report.md", fit_markdown(result)), "html": ("report.html", fit_html(result))})


def title(r: FitResult) -> str:
    return f"fit: {r.model} on {r.target} ({r.backend}/{r.precision}/b{r.batch}), budget {r.budget_text} = {ms(r.budget_ms)} ms"


def verdict_lines(r: FitResult) -> list[str]:
    """Status and latency vs the budget; top-1 vs dense; the fit's own message when it has one."""
    lines = [_latency_verdict(r)]
    acc = _accuracy_verdict(r)
    if acc:
        lines.append(acc)
    if r.message:
        lines.append(r.message)
    return lines


def median_error(r: FitResult) -> float | None:
    """The median |predicted - measured| / measured over the committed steps (None without steps)."""
    errors = [x for x in r.prediction_errors() if np.isfinite(x)]
    return float(np.median(errors)) if errors else None


# -- verdict ----------------------------------------------------------------------------------------
def _interval(m: Measured) -> str:
    if m.p50_low_ms is None or m.p50_high_ms is None:
        return "[no interval]"
    return f"[{ms(m.p50_low_ms)}, {ms(m.p50_high_ms)}]"


def _latency_verdict(r: FitResult) -> str:
    head, b, f = f"status: {r.status}", r.budget_ms, r.fitted
    if f is None and r.status == "fitted":
        return f"{head}: nothing to prune, the dense model ({ms(r.table.dense_ms if r.table else None)} ms) meets the budget {ms(b)} ms"
    if f is None:
        best = _best_reachable(r.table)
        reach = f"; the best reachable latency is {ms(best)} ms (every group at its narrowest measured width)" if best is not None else ""
        return f"{head}: no fitted model, the budget {ms(b)} ms cannot be met{reach}"
    high = f.p50_high_ms
    if f.p50_ms <= b and high is not None and high <= UPPER_SLACK * b:
        judgement = "within budget"
    elif f.p50_ms > b:
        judgement = f"{f.p50_ms / b - 1:.1%} over budget" + (f" (the interval's upper end {high / b - 1:.1%} over)" if high is not None else "")
    elif high is None:
        judgement = "p50 under the budget, but no 95% interval to confirm it"
    else:
        judgement = f"p50 under the budget, but the interval's upper end is {high / b - 1:.1%} over it (more than the 5% allowed)"
    return f"{head}: fitted p50 {ms(f.p50_ms)} ms {_interval(f)} vs budget {ms(b)} ms: {judgement}"


def _best_reachable(t: LatencyTable | None) -> float | None:
    if t is None:
        return None
    if t.narrowest_ms is not None:
        return t.narrowest_ms
    return min((p.p50_ms for p in t.points), default=None)


def _accuracy_verdict(r: FitResult) -> str:
    f, d = r.fitted, r.dense
    if f is None or d is None or f.top1 is None or d.top1 is None:
        return "" if f is None else "top-1: not measured for both the fitted and the dense model"
    drop = (d.top1 - f.top1) * 100
    text = f"top-1 {f.top1:.2%} (fitted) vs {d.top1:.2%} (dense): drop {drop:.2f} pp"
    limit = r.max_accuracy_drop_pp
    if limit is None:
        return text + " (no maximum accuracy drop set)"
    if drop <= limit:
        return text + f", within the allowed {limit:.2f} pp"
    return text + f", {drop - limit:.2f} pp more than the allowed {limit:.2f} pp"


# -- sections ---------------------------------------------------------------------------------------
def _sections(r: FitResult) -> list[Section]:
    return [("", list(verdict_lines(r))), ("Same latency", _same_latency(r)), ("Committed steps", _steps(r)),
            ("Plans", _plans(r)), ("Latency lookup table", _lookup(r)), ("Sensitivity", _sensitivity(r)),
            ("Widths", _widths(r)), ("Time", _time(r)), ("Reuse", _reuse(r))]


def _detail(m: Measured) -> str:
    parts = [f"{k} {_compact(v)}" for k, v in m.detail.items() if k != "process_samples"]
    parts.append(f"{m.processes} process{'es' if m.processes != 1 else ''}")
    if m.flags:
        parts.append("flags: " + ", ".join(m.flags))
    return "; ".join(parts)


def _compact(v: object) -> str:
    """A detail value in one short phrase (nested mappings as ``key: value`` pairs, floats to 4 digits)."""
    if isinstance(v, dict):
        return "(" + ", ".join(f"{k}: {_compact(x)}" for k, x in v.items()) + ")"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _same_latency(r: FitResult) -> list[Block]:
    rows = []
    for label, m in (("dense", r.dense), ("fitted", r.fitted), ("uniform channel pruning", r.uniform), ("best built-in", r.builtin)):
        if m is None:
            rows.append([label, "-", "not measured", "-", "-", "-", "-"])
        else:
            rows.append([label, m.name, f"{ms(m.p50_ms)} {_interval(m)}", ms(m.p90_ms), na(m.top1, ".2%"), _detail(m), m.cell_key])
    blocks: list[Block] = [_Table(["model", "recipe", "p50 ms [95% interval]", "p90 ms", "top-1", "detail", "cell"], rows)]
    if r.builtin is None and r.builtin_note:
        blocks.append(f"best built-in: {r.builtin_note}")
    return blocks


def _steps(r: FitResult) -> list[Block]:
    if not r.steps:
        return ["no committed steps"]
    rows = [[str(s.index), ms(s.target_ms), ms(s.predicted_ms), ms(s.measured_p50_ms), f"{s.error * 100:+.1f}%",
             ms(s.raw_p50_ms) if s.raw_p50_ms is not None else "-", ms(s.run_dense_ms) if s.run_dense_ms is not None else "-", f"{s.correction:.3f}"]
            for s in r.steps]
    med = median_error(r)
    if med is None:
        summary = "median |error|: not computable (no measured step)"
    else:
        met = "meets" if med < ERROR_GOAL else "misses"
        summary = f"median |error| over {len(r.steps)} committed step(s): {med:.1%}; {met} the goal of under {ERROR_GOAL:.0%}"
    note = ("measured p50 is drift-normalised: the step's p50 in its own run x the table's dense p50 / the dense p50 measured in that run; "
            "predicted: the latency model fitted to the table, scaled by the anchor (the previous step's measured p50 / the model's p50 for it)")
    return [_Table(["step", "target ms", "predicted ms", "measured p50 ms", "error", "raw p50 ms", "dense in run ms", "anchor"], rows), summary, note]


def _plans(r: FitResult) -> list[Block]:
    if not r.plans:
        return ["no plans"]
    rows = [[p.method, ms(p.predicted_ms), f"{p.predicted_cost:.4f}", "yes" if p.feasible else "no",
             ", ".join(f"{g} {w}" for g, w in p.widths.items())] for p in r.plans]
    return [_Table(["method", "predicted ms", "predicted cost (loss increase)", "feasible", "widths"], rows)]


def _group_names(r: FitResult) -> list[str]:
    """Groups in the fit's order, then any the table or the sensitivity has besides."""
    names = [g.name for g in r.groups]
    more = [p.group for p in r.table.points] if r.table else []
    more += [s.group for s in r.sensitivity]
    return list(dict.fromkeys(names + [g for g in more if g is not None and g != "*"]))


def _dense_width(r: FitResult, group: str) -> int | None:
    return next((g.width for g in r.groups if g.name == group), None)


def group_curve(r: FitResult, group: str) -> list[tuple[int, float]]:
    """(width, measured p50 ms) of ``group``, ascending, with the dense model at the dense width."""
    t = r.table
    if t is None:
        return []
    curve = {p.width: p.p50_ms for p in t.points if p.group == group}
    dense_w = _dense_width(r, group)
    if dense_w is not None and dense_w not in curve and t.dense_ms:
        curve[dense_w] = t.dense_ms
    return sorted(curve.items())


def _lookup(r: FitResult) -> list[Block]:
    t = r.table
    if t is None:
        return ["no latency table"]
    groups = _group_names(r)
    curves = {g: dict(group_curve(r, g)) for g in groups}
    widths = sorted({w for c in curves.values() for w in c}, reverse=True)
    rows = []
    for g in groups:
        cells = []
        for w in widths:
            v = curves[g].get(w)
            cells.append("-" if v is None else f"{ms(v)} ({(v / t.dense_ms - 1) * 100:+.1f}%)" if t.dense_ms else ms(v))
        rows.append([g] + cells)
    probe = t.granularity_probe
    probe_widths = ", ".join(f"{w}: {ms(v)} ms" for w, v in (probe.get("p50_ms") or {}).items())
    uniform = ", ".join(f"ratio {k}: {ms(v)} ms" for k, v in t.uniform.items())
    flagged = [f"{p.group or 'dense'}@{p.width} ({', '.join(p.flags)})" for p in t.points if p.flags]
    return [
        f"dense model: {ms(t.dense_ms)} ms; narrowest model (every group at its narrowest width): {ms(t.narrowest_ms)} ms",
        _Table(["group \\ width"] + [str(w) for w in widths], rows),
        _Charts(),
        f"granularity: widths are multiples of {t.granularity}; probe on {probe.get('group', '-')}: {probe_widths or '-'}; "
        f"reason: {probe.get('reason', '-')}",
        f"table {'reused from the store' if r.table_reused else 'built for this fit'} (key {t.key}); {len(t.points)} measured cells, "
        f"build time {t.build_s:.1f} s, store run {t.run_id or '-'}; {t.backend} {t.backend_version}, {t.threads or 'default'} threads",
        "measurements that carried flags: " + ("; ".join(flagged) if flagged else "none"),
    ] + ([f"uniform channel pruning (every group at one ratio): {uniform}"] if uniform else []) + _model_line(r)


def _model_line(r: FitResult) -> list[Block]:
    """The latency model fitted to the table (bench/fit.py Predictor): its costs and its residuals on the table's points."""
    m = r.settings.get("latency_model")
    if not m:
        return []
    costs = ", ".join(f"{k} {v * 1000:.2f} us/MMAC" for k, v in m["ms_per_mmac"].items())
    res = m.get("median_abs_residual")
    fit = f"; on the table's {m['points']} measured plans its median |residual| is {res:.1%} (max {m['max_abs_residual']:.1%})" if res is not None else ""
    return [f"latency model fitted to the table: p50 = {m['intercept_ms']:.4g} ms + MACs x ({costs}){fit}"]


def _sensitivity(r: FitResult) -> list[Block]:
    if not r.sensitivity:
        return ["no sensitivity measured"]
    by = {(s.group, s.width): s for s in r.sensitivity}
    groups = [g for g in _group_names(r) if any(k[0] == g for k in by)]
    widths = sorted({s.width for s in r.sensitivity}, reverse=True)
    rows = []
    for g in groups:
        cells = []
        for w in widths:
            s = by.get((g, w))
            cells.append("-" if s is None else f"loss {s.loss_increase:+.4f}, top-1 {-s.top1_drop_pp:+.2f} pp")
        rows.append([g] + cells)
    return [_Table(["group \\ width"] + [str(w) for w in widths], rows),
            f"sensitivity {'reused from the cache' if r.sensitivity_reused else 'measured for this fit'} "
            "(each group pruned alone in the dense model, held-out slice of the training split)"]


def fitted_widths(r: FitResult) -> dict[str, int]:
    """The fitted model's per-group widths: those of the last committed step (the final fine-tune keeps them)."""
    return dict(r.steps[-1].widths) if r.steps else {}


def _widths(r: FitResult) -> list[Block]:
    fitted = fitted_widths(r)
    rows = []
    for g in _group_names(r):
        dense, w = _dense_width(r, g), fitted.get(g)
        kept = f"{w / dense:.0%}" if dense and w is not None else "-"
        rows.append([g, na(dense), na(w), kept])
    return [_Table(["group", "dense width", "fitted width", "kept"], rows)] if rows else ["no groups"]


def _time(r: FitResult) -> list[Block]:
    rows = [[phase, f"{s:.1f}"] for phase, s in r.phases_s.items()]
    rows.append(["total", f"{sum(r.phases_s.values()):.1f}"])
    return [_Table(["phase", "seconds"], rows)]


def _reuse(r: FitResult) -> list[Block]:
    if not r.recipe_path:
        return ["no recipe written (no fitted model)"]
    suite = {"name": f"fit-{r.model}", "models": [r.model], "recipes": ["dense", r.recipe_path], "backends": [r.backend],
             "precisions": [r.precision], "batch_sizes": [r.batch], "targets": [r.target]}
    return [f"the fitted model is the recipe {r.recipe_name or r.recipe_path}; `edgebench run` reuses and caches it like any "
            "recipe, e.g. with this suite:", _Code(yaml.safe_dump(suite, sort_keys=False), "yaml")]


# -- rendering ----------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_block(b: Block) -> list[str]:
    if isinstance(b, str):
        return [b]
    if isinstance(b, _Table):
        return (["| " + " | ".join(map(_md_cell, b.headers)) + " |", "|" + "---|" * len(b.headers)]
                + ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows])
    if isinstance(b, _Code):
        return [f"```{b.lang}", b.text.rstrip("\n"), "```"]
    return []  # charts: HTML only


def _html_block(b: Block, r: FitResult, ids: Ids) -> str:
    if isinstance(b, str):
        return f"<p>{e(b)}</p>"
    if isinstance(b, _Table):
        head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(b, _Code):
        return f"<pre><code>{e(b.text)}</code></pre>"
    figs = [_group_chart(r, g, ids) for g in _group_names(r)]
    return '<div class="charts">' + "".join(f for f in figs if f) + "</div>"


def _group_chart(r: FitResult, group: str, ids: Ids) -> str:
    """Latency (y) vs width (x) of one group; the dense width drawn as a hollow diamond."""
    curve = group_curve(r, group)
    if not curve:
        return ""
    xs, ys = [w for w, _ in curve], [v for _, v in curve]
    chart = Chart(ids(f"chart-{group}"), f"{group}: latency vs width", "width (channels)", "p50 ms", width=440, height=280)
    chart.ylim = (0.0, None)  # from zero: one-group changes are a few percent, and a zoomed axis would make noise look like a trend
    if r.budget_ms:
        chart.hline(r.budget_ms, "budget")
    chart.line(xs, ys, PALETTE[0], title=f"{group}: measured p50")
    chart.points(xs, ys, PALETTE[0], titles=[f"{group} at {w}: {ms(v)} ms" for w, v in curve])
    chart.legend("measured p50", PALETTE[0])
    dense_w = _dense_width(r, group)
    if dense_w is not None and dense_w in xs:
        v = ys[xs.index(dense_w)]
        chart.points([dense_w], [v], PALETTE[3], marker="diamond", filled=False, titles=[f"dense ({dense_w}): {ms(v)} ms"],
                     labels=["dense"], size=6)
        chart.legend("dense width", PALETTE[3], "hollow:diamond")
    return f"<figure>{chart.render()}<figcaption>{e(group)}</figcaption></figure>"
