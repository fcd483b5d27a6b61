"""The self-contained HTML report of a run: ``reports/<run-id>/report.html``.

One file, no network: styles inline, every plot an inline SVG (:mod:`edgebench.reports.svg`), and a few
lines of inline script that only sort tables (both kept as package data in ``reports/assets/``). Sections,
each a function here: the recommendation per target (:mod:`edgebench.reports.html_recommend`, the same
function as ``edgebench recommend``), then per target the cell table, warnings, Pareto fronts, latency
distributions and sparsity sweeps (:mod:`~edgebench.reports.html_tables`, :mod:`~edgebench.reports.html_charts`);
the same recipes across targets; the history of each cell; failed and skipped cells with their reasons;
every target's environment fingerprint; and how the numbers were measured, with the suite that produced them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgebench.bench.contracts.files import atomic_write_text
from edgebench.bench.contracts.flags import has
from edgebench.bench.store import RunRecord
from edgebench.reports import html_charts as charts
from edgebench.reports import gpu as gpumod
from edgebench.reports import robustness as robmod
from edgebench.reports import html_tables as tables
from edgebench.reports.environment import fingerprint_line
from edgebench.reports.html_recommend import DEFAULT_CONSTRAINTS, recommendation_block
from edgebench.reports.htmlkit import Ids, asset, batch_markers, colors as series_colors, e, figure, series_key, slug
from edgebench.reports.recommend import tie_rule
from edgebench.reports.stats import Bootstrapper
from edgebench.reports.tables import Row, RunReport, by_target


def render(report: RunReport, bootstrapper: Bootstrapper | None = None, history: dict[str, Any] | None = None,
           samples_csv: bool = False, pareto_accuracy: str = "top1") -> str:
    """The whole page as a string. ``report`` should be loaded with samples (``tables.load(..., with_samples=True)``).
    ``history`` (cell key -> reports.history.History) adds the History section when a cell has earlier runs;
    ``samples_csv``: a samples.csv was written beside the page (linked from the navigation). ``pareto_accuracy``:
    the Pareto fronts' accuracy axis, each cell's ``top1`` or the recipe's ``robust`` top-1 (fp32 cells only)."""
    targets = by_target(report.rows)
    ids = Ids()
    colors = series_colors(report.rows)
    methods = charts.recipe_methods(report)
    multi_model = len({r.model for r in report.rows}) > 1
    body = [_header(report, targets, bool(history), samples_csv),
            _recommendation_section(report, targets, bootstrapper or Bootstrapper())]
    body += [_target_section(ids, report, t, rows, colors, methods, multi_model, pareto_accuracy) for t, rows in targets.items()]
    if report.gpu:
        body.append(gpumod.html_section(report.gpu))
    if report.robustness:
        body.append(robmod.html_section(report.robustness))
    body.append(_cross_target_section(report))
    if history:
        body.append(_history_section(ids, report, history, colors))
    body += [_failures_section(report), _environments_section(report, targets), _method_section(report.run)]
    return _page(report.run, body)


def write(report: RunReport, out_dir: Path, bootstrapper: Bootstrapper | None = None, history: dict[str, Any] | None = None,
          samples_csv: bool = False, pareto_accuracy: str = "top1") -> Path:
    """Write ``report.html`` into ``out_dir`` and return its path."""
    path = Path(out_dir) / "report.html"
    atomic_write_text(path, render(report, bootstrapper, history, samples_csv, pareto_accuracy))  # temp file + rename: never half a page
    return path


def _page(run: RunRecord, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>edgebench run {e(run.id)} · {e(run.suite_name)}</title><style>\n{asset('report.css')}</style></head>\n"
            f"<body><main>\n{chr(10).join(body)}\n</main><script>\n{asset('report.js')}</script></body></html>\n")


# -- header ---------------------------------------------------------------------------------------
def _header(report: RunReport, targets: dict[str, list[Row]], with_history: bool, samples_csv: bool = False) -> str:
    """The run, its counts, banners for what needs attention, and the navigation."""
    run = report.run
    s = run.summary or {}
    ok = [r for r in report.rows if r.status == "ok"]
    failed = [r for r in report.rows if r.status != "ok"]
    contended = [r for r in ok if has(r.flags, "contended")]
    dur = (run.finished_at - run.created_at).total_seconds() if run.finished_at else None
    out = [f"<header><h1>edgebench run <code>{e(run.id)}</code></h1>",
           f'<p class="muted">Suite <b>{e(run.suite_name)}</b> ({e(run.suite_source)}) · {e(run.status)} · started '
           f"{run.created_at:%Y-%m-%d %H:%M:%S} UTC" + (f" · {dur:.0f} s" if dur is not None else "")
           + f" · edgebench {e(run.edgebench_version or '?')} @ {e(run.git_commit or '?')}</p>",
           '<div class="summary">'
           + "".join(f'<div class="stat"><b>{v}</b><span>{e(k)}</span></div>' for k, v in [
               ("targets", len(targets)), ("cells ok", len(ok)), ("failed", sum(r.status == "failed" for r in report.rows)),
               ("skipped", sum(r.status == "skipped" for r in report.rows)),
               ("built this run", s.get("trained", 0) + s.get("pruned", 0) + s.get("exported", 0)), ("from cache", s.get("cache_hits", 0))])
           + "</div>"]
    if run.status not in ("finished",):
        out.append(f'<p class="banner bad">This run is <b>{e(run.status)}</b>: the report shows the cells it finished.</p>')
    if failed:
        out.append(f'<p class="banner bad">{len(failed)} cell(s) failed or were skipped: see <a href="#failures">Failed and skipped cells</a> for the reasons.</p>')
    if report.samples_dropped:  # a summarised run, said once: its cells keep the stored p50/p90/p99
        out.append(f'<p class="banner">Summarised run: {e(report.samples_dropped)}.</p>')
    if contended:
        out.append(f'<p class="banner">{len(contended)} of {len(ok)} measured cells were <b>contended</b> (other processes used the CPU while measuring): '
                   "their latencies are inflated and noisy. Re-run on an idle machine before trusting close comparisons.</p>")
    nav = [("recommendation", "Recommendation")] + [(f"target-{slug(t)}", f"Target {t}") for t in targets] + (
        [("gpu", "GPU")] if report.gpu else []) + ([("robustness", "Robustness")] if report.robustness else []) + [("cross-target", "Across targets")] + ([("history", "History")] if with_history else []) + [
        ("failures", "Failures"), ("environments", "Environments"), ("method", "Method & suite")]
    out.append("<nav>" + "".join(f'<a href="#{i}">{e(n)}</a>' for i, n in nav)
               + ' · data: <a href="report.md">report.md</a> <a href="report.json">report.json</a> <a href="cells.csv">cells.csv</a>'
               + ('' if report.samples_dropped else ' <a href="samples.npz">samples.npz</a>')
               + (' <a href="samples.csv">samples.csv</a>' if samples_csv else '') + '</nav></header>')
    return "\n".join(out)


# -- sections -------------------------------------------------------------------------------------
def _recommendation_section(report: RunReport, targets: dict[str, list[Row]], boot: Bootstrapper) -> str:
    out = ['<section id="recommendation"><h2>Recommendation</h2>'
           f'<p class="muted">Among the cells that ran: the best recipe, backend, precision and batch per target and model, with default constraints '
           f"({e(DEFAULT_CONSTRAINTS.describe())}). Tie rule: {e(tie_rule())}.</p>"]
    for t in targets:
        out.append(f'<h3>Target {e(t)}</h3><div class="rec-target" id="rec-{slug(t)}">{recommendation_block(report, t, boot)}</div>')
    out.append("</section>")
    return "\n".join(out)


def _target_section(ids: Ids, report: RunReport, t: str, rows: list[Row], colors: dict[str, str], methods: dict[str, str],
                    multi_model: bool, pareto_accuracy: str = "top1") -> str:
    """One target: its cells, warnings, device state and plots."""
    tid = slug(t)
    t_failed = [r for r in rows if r.status != "ok"]
    sec = [f'<section id="target-{tid}" class="target" data-target="{e(t)}"><h2>Target <code>{e(t)}</code></h2>',
           f'<p class="muted">Environment: {e(fingerprint_line(report.environments.get(t, {}), short=True))} (<a href="#env-{tid}">full fingerprint</a>)</p>',
           '<h3>Cells</h3><p class="muted">Latency per batch in ms. Speedup (p50) and Δtop-1 are against the dense reference (ref) of the same model, '
           "backend and batch: the fp32 cell, so quantised rows show what quantising gained and lost (the same precision where no fp32 dense cell ran). Peak RSS is the worker process's high-water mark; (+load) its rise over the baseline after importing the runtime. "
           "Click a column to sort.</p>",
           f'<div class="table-wrap">{tables.cell_table(rows, multi_model)}</div>']
    if t_failed:
        sec.append(f'<p class="banner bad">{len(t_failed)} cell(s) on this target failed or were skipped; reasons in the table above and under '
                   '<a href="#failures">Failures</a>.</p>')
    sec.append(f"<h3>Warnings</h3>{tables.warnings_block(rows)}")
    ok_rows = [r for r in rows if r.status == "ok"]
    sec.append(tables.device_block(ok_rows))
    figs, note = _target_plots(ids, report, t, rows, colors, methods, pareto_accuracy)
    sec += _plots_part(ok_rows, colors, figs, note, _axis_note(report, ok_rows, pareto_accuracy))
    sec.append("</section>")
    return "\n".join(sec)


def _accuracy_axis(report: RunReport, pareto_accuracy: str) -> dict[str, Any]:
    """The Pareto charts' accuracy keyword arguments: the cell's top-1, or the recipe's robust top-1 (fp32 cells)."""
    if pareto_accuracy != "robust":
        return {}
    return {"accuracy": robmod.robust_accuracy(report.robustness), "accuracy_label": robmod.ROBUST_LABEL}


def _axis_note(report: RunReport, ok_rows: list[Row], pareto_accuracy: str) -> str | None:
    """The visible line on what the robust axis leaves out (None on the top-1 axis, or when it leaves nothing out)."""
    return robmod.left_out_note(ok_rows, report.robustness) if pareto_accuracy == "robust" else None


def _target_plots(ids: Ids, report: RunReport, t: str, rows: list[Row], colors: dict[str, str], methods: dict[str, str],
                  pareto_accuracy: str = "top1") -> tuple[list[str], str]:
    """The target's figures: accuracy against p90 per batch, memory and size; latency CDFs; sparsity sweeps."""
    ok_rows = [r for r in rows if r.status == "ok"]
    axis = _accuracy_axis(report, pareto_accuracy)
    figs = []
    for b in sorted({r.batch for r in ok_rows}):
        svg = charts.pareto_chart(ids, t, [r for r in ok_rows if r.batch == b], lambda r: r.p90_ms, "p90 latency per batch (ms)",
                                  f"Accuracy vs p90 latency · batch {b}", colors, None, **axis)
        if svg:
            figs.append(figure(svg, f"Pareto front (filled, joined): no other cell at batch {b} is both faster at p90 and more accurate."))
    svg = charts.pareto_chart(ids, t, ok_rows, lambda r: r.peak_rss_mib, "peak RSS of the worker (MiB)", "Accuracy vs peak memory", colors,
                              batch_markers(ok_rows), log_ok=False, **axis)
    if svg:
        figs.append(figure(svg, "Peak RSS includes the Python interpreter and the runtime; marker shape is the batch size."))
    per_artifact: dict[tuple, Row] = {}
    for r in ok_rows:
        per_artifact.setdefault((r.model, r.recipe, r.backend, r.precision), r)
    svg = charts.pareto_chart(ids, t, list(per_artifact.values()), lambda r: (r.size_bytes / 1024) if r.size_bytes is not None else None,
                              "artifact size on disk (KiB)", "Accuracy vs model size", colors, None, log_ok=False, **axis)
    if svg:
        figs.append(figure(svg, "One point per artifact (all batch sizes share it). Unstructured zeros are stored, so they do not shrink the file."))
    figs += [figure(c, "Empirical CDF of every stored latency sample; dots mark p50 and p90. Further right is slower; a long right tail is jitter.")
             for c in charts.cdf_charts(ids, t, rows, report.samples, colors)]
    sweeps, note = charts.sparsity_charts(ids, t, rows, methods, colors)
    figs += [figure(c, "One line per backend / precision / batch; dense is the 0% point.") for c in sweeps]
    return figs, note


def _plots_part(ok_rows: list[Row], colors: dict[str, str], figs: list[str], note: str, axis_note: str | None = None) -> list[str]:
    """The Plots heading, what the plots leave out, the colour legend, the figures and the sweep note."""
    out = ["<h3>Plots</h3>"]
    if axis_note:
        out.append(f'<p class="banner axis-note">{e(axis_note)}</p>')
    no_acc = [r for r in ok_rows if r.top1 is None]
    if no_acc:
        out.append(f'<p class="muted">{len(no_acc)} cell(s) have no accuracy (latency-only models, no labelled evaluation split): '
                   "they appear in the latency distributions but not on the accuracy plots.</p>")
    if ok_rows:
        keys = list(dict.fromkeys(series_key(r) for r in ok_rows))
        out.append('<p class="legend">' + "".join(f'<span><i style="background:{colors[k]}"></i>{e(k)}</span>' for k in keys)
                   + '<span class="muted">— colour = recipe / backend / precision in every plot; hover a mark for its numbers</span></p>')
    else:
        out.append('<p class="muted">No cell on this target produced measurements, so there is nothing to plot.</p>')
    if figs:
        out.append(f'<div class="charts">{"".join(figs)}</div>')
    if note:
        out.append(f'<p class="muted">{e(note)}</p>')
    return out


def _cross_target_section(report: RunReport) -> str:
    return (f'<section id="cross-target"><h2>Across targets</h2><p class="muted">The same recipe, backend, precision and batch on every target of the run.</p>'
            f'<div class="table-wrap">{tables.cross_target(report)}</div></section>')


def _history_section(ids: Ids, report: RunReport, history: dict[str, Any], colors: dict[str, str]) -> str:
    """Median latency of each cell over the stored runs up to this one, one chart per target and batch, with
    change points (reports/history.py) marked and listed."""
    figs, changes = charts.history_charts(ids, {r.cell_key: r for r in report.rows}, history, colors)
    out = ['<section id="history"><h2>History</h2><p class="muted">This run\'s cells in earlier runs of the same store '
           "(<code>edgebench history CELL</code> for the table). A change point needs a step that lasts; a one- or two-night blip is not one.</p>"]
    if changes:
        out.append('<table class="changes"><thead><tr><th>cell</th><th>change</th></tr></thead><tbody>'
                   + "".join(f"<tr><td><code>{e(k)}</code></td><td>{e(cp.describe())}</td></tr>" for k, cp in changes) + "</tbody></table>")
    else:
        out.append('<p class="muted">No change point in any cell\'s history.</p>')
    notes = sorted({n for h in history.values() for n in h.notes if "ruptures" in n})
    out += [f'<p class="muted">{e(n)}</p>' for n in notes]
    out.append(f'<div class="charts">{"".join(figs)}</div></section>')
    return "\n".join(out)


def _failures_section(report: RunReport) -> str:
    failed = [r for r in report.rows if r.status != "ok"]
    out = ['<section id="failures"><h2>Failed and skipped cells</h2>']
    out += tables.failures_table(failed, report.tracebacks) if failed else ['<p class="muted">None: every cell ran.</p>']
    out.append("</section>")
    return "\n".join(out)


def _environments_section(report: RunReport, targets: dict[str, list[Row]]) -> str:
    """Every target's fingerprint, then those of targets the run recorded but ran no cell on."""
    out = ['<section id="environments"><h2>Environments</h2><p class="muted">Everything the probe read on each target at the start of the run. '
           '"not available" means the machine does not expose it.</p>']
    for t in targets:
        out.append(f'<h3 id="env-{slug(t)}">{e(t)}</h3>{tables.fingerprint_table(report.environments.get(t, {}))}')
    for t in [t for t in report.environments if t not in targets]:
        out.append(f'<h3 id="env-{slug(t)}">{e(t)} (no cells)</h3>{tables.fingerprint_table(report.environments[t])}')
    out.append("</section>")
    return "\n".join(out)


def _method_section(run: RunRecord) -> str:
    return f"""<section id="method"><h2>Method &amp; suite</h2>
<ul>
<li>Each cell runs in its own worker process. Warm-up and measurement both continue until a run count and a time floor are reached; every per-batch latency sample is stored (samples.npz; samples.csv with <code>--samples-csv</code>) and summarised as p50/p90/p99, CoV (std/mean) and throughput (items/s over the measured time).</li>
<li>Peak memory is the worker's RSS high-water mark (VmHWM), including the interpreter and runtime; (+load) is its rise over the RSS right after importing the runtime.</li>
<li>Top-1 is measured on the evaluation split at the cell's batch size; agreement is top-1 agreement with each cell's reference, named in report.md: the dense PyTorch model, or for a model given as a file that file's own outputs at fp32 (its fp32 cell on the same runtime has no independent reference, and shows none). A cell whose outputs were NaN/Inf shows its accuracy as FAILED.</li>
<li>CPU contention is the share of the CPU used by other processes while measuring; above the suite's threshold a cell is flagged <i>contended</i>. Each cell also carries the device's state while it ran (temperatures, CPU clocks, throttle bits, power where a rail exists), sampled by the worker on the device; a cell during which the device throttled is flagged <i>throttled</i>. The probe's state at the start and end of the run is in each target's fingerprint.</li>
<li>Recommendation: candidates must meet the accuracy-drop limit (vs the dense cell of the same backend at fp32, same batch when it ran) and the memory limit. The best by the objective is compared with every other candidate by a bootstrap (95%, fixed seeds, each cell resampled on its own: its worker processes with replacement, then samples within them, with a Student interval for the few processes) of the ratio of the objective's statistic and of the median. Tie rule: {e(tie_rule())}. Cells that run the same computation (zeros stored and run dense, same parameters and MACs) tie by construction; cells flagged contended or nan-outputs are excluded, never ranked.</li>
</ul>
<p>Reproduce: <code>edgebench run {e(run.suite_source)}</code> on the same environment; suite as run:</p>
<pre>{e(run.suite_yaml or "")}</pre></section>"""
