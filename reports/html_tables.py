"""The HTML report's tables: the cell table with its warning tags, the warnings and device state per
target, the same cells across targets, failures, and every environment fingerprint."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edgebench.bench.contracts.flags import CODES, Flag, has
from edgebench.reports.htmlkit import e, ms, na, size_text, slug, td
from edgebench.reports.svg import fmt_num
from edgebench.reports.tables import Row, RunReport, agreement_text, by_target, device_line, remeasure_notes, top1_text

# The flag codes the report groups under their own tag, in this order; every other flag is "other".
REPORTED = ("contended", "high-variance", "sparse-not-used", "sparse-path", "ops-not-delegated", "measurement-capped",
            "throttled", "cooldown-not-reached", "nan-outputs", "launch-bound", "int8-not-used")
# The cell table's narrow column shows these instead of the codes' tags.
SHORT_TAGS = {"contended": "contended", "high-variance": "CoV", "sparse-not-used": "sparse unused", "sparse-path": "sparse path",
              "ops-not-delegated": "undelegated", "measurement-capped": "capped", "throttled": "throttled", "cooldown-not-reached": "hot",
              "nan-outputs": "NaN", "launch-bound": "launch-bound", "int8-not-used": "int8 partial"}


def _others(flags: list[Flag]) -> list[Flag]:
    return [f for f in flags if f.code not in REPORTED]


# -- cells ----------------------------------------------------------------------------------------
def flag_tags(r: Row) -> str:
    """One tag per kind of warning on the row, the warnings' texts as its tooltip."""
    tags = []
    for code in REPORTED:
        hits = [f.text for f in r.flags if f.code == code]
        if hits:
            tag = CODES[code].tag
            tags.append(f'<span class="tag tag-{slug(tag)}" title="{e("; ".join(hits))}">{e(SHORT_TAGS.get(code, tag))}</span>')
    others = _others(r.flags)
    if others:
        tags.append(f'<span class="tag" title="{e("; ".join(f.text for f in others))}">other</span>')
    return " ".join(tags)


CELL_COLUMNS = ["recipe", "backend (threads)", "prec.", "batch", "p50 ms", "p90 ms", "p99 ms", "CoV", "IQR/med", "outliers", "n", "items/s",
                "peak RSS MiB (+load)", "size", "w. sparsity", "MACs", "top-1", "agree w/ dense", "Δtop-1 pts", "speedup p50", "input timed", "flags"]


def cell_table(rows: list[Row], multi_model: bool) -> str:
    """Every cell of a target, sortable by any column; a failed or skipped cell spans the row with its reason."""
    head = (["model"] if multi_model else []) + CELL_COLUMNS
    out = ['<table class="cells sortable"><thead><tr>' + "".join(f'<th title="click to sort">{e(h)}</th>' for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        lead = ([td(e(r.model), r.model)] if multi_model else []) + [
            td(e(r.recipe) + (' <span class="ref">ref</span>' if r.is_reference else ""), r.recipe),
            td(e(r.backend) + (f' <span class="muted">×{r.threads}</span>' if r.threads else ""), r.backend),
            td(e(r.precision), r.precision), td(str(r.batch), r.batch)]
        if r.status != "ok":
            out.append(f'<tr class="status-{e(r.status)}" id="cell-{slug(r.cell_key)}">' + "".join(lead)
                       + f'<td colspan="{len(head) - len(lead)}" class="failed"><b>{e(r.status.upper())}</b>: {e(r.error or "no reason recorded")}</td></tr>')
            continue
        out.append(f'<tr id="cell-{slug(r.cell_key)}">' + "".join(lead + _measured_cells(r)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _measured_cells(r: Row) -> list[str]:
    spd = r.speedup_p50
    spd_cls = "good" if spd and spd > 1.05 else ("bad" if spd and spd < 0.95 else "")
    dlt = r.top1_delta_pts
    dlt_cls = "bad" if dlt is not None and dlt < -1 else ""
    shape = "x".join(map(str, r.input_shape)) + (f" {r.input_layout}" if r.input_layout else "") if r.input_shape else "-"
    return [
        td(ms(r.p50_ms), r.p50_ms, "num"), td(ms(r.p90_ms), r.p90_ms, "num"), td(ms(r.p99_ms), r.p99_ms, "num"),
        td(na(r.cov, ".1%"), r.cov, "num"),
        td(na(r.iqr_ratio, ".1%"), r.iqr_ratio, "num" + (" warn" if has(r.flags, "high-variance") else "")),
        td(e(r.outliers or "-"), r.outliers or "", "num"),
        td(na(r.n), r.n, "num"), td(na(r.throughput_ips, ",.0f"), r.throughput_ips, "num"),
        td(f"{na(r.peak_rss_mib, '.0f')} (+{na(r.peak_rss_delta_mib, '.1f')})", r.peak_rss_mib, "num"),
        td(size_text(r.size_bytes), r.size_bytes, "num"), td(na(r.weight_sparsity, ".0%"), r.weight_sparsity, "num"),
        td(f"{r.macs / 1e6:.2f} M" if r.macs is not None else "-", r.macs, "num"),
        td(e(top1_text(r)), r.top1, "num" + (" bad" if r.accuracy_error else "")),
        td(e(agreement_text(r)), r.agreement, "num" + (" bad" if r.accuracy_error else "")),
        td(na(dlt, "+.2f"), dlt, "num " + dlt_cls), td(na(spd, ".2f", "x"), spd, "num " + spd_cls),
        td(e(shape), shape, "mono"),  # what ran: a dynamic dimension took the cell's batch and the dataset's size
        td(flag_tags(r), len(r.flags)),
    ]


def warnings_block(rows: list[Row]) -> str:
    """The target's warnings grouped by kind, each kind with what it means."""
    parts = []
    for code in REPORTED:
        hits = [(r, f.text) for r in rows for f in r.flags if f.code == code]
        if hits:
            info = CODES[code]
            items = "".join(f"<li><code>{e(r.cell_key)}</code>: {e(w)}</li>" for r, w in hits)
            parts.append(f'<details class="warning-kind"><summary><span class="tag tag-{slug(info.tag)}">{e(info.tag)}</span> '
                         f"{len({r.cell_key for r, _ in hits})} cell(s) — {e(info.explanation)}</summary><ul>{items}</ul></details>")
    others = [(r, f.text) for r in rows for f in _others(r.flags)]
    if others:
        items = "".join(f"<li><code>{e(r.cell_key)}</code>: {e(w)}</li>" for r, w in others)
        parts.append(f'<details class="warning-kind"><summary><span class="tag">other</span> {len(others)} warning(s)</summary><ul>{items}</ul></details>')
    again = remeasure_notes(rows)
    if again:
        items = "".join(f"<li><code>{e(k)}</code>: {e(n)}</li>" for k, n in again)
        parts.append(f'<details class="warning-kind" open><summary><span class="tag">quiet gate</span> {len(again)} cell(s) — '
                     "measured again because other processes used the CPU; a cell still contended is excluded from wins and "
                     f"regression verdicts</summary><ul>{items}</ul></details>")
    if not parts:
        return '<p class="muted">No warnings: every measured cell was uncontended, stable and fully delegated.</p>'
    return "\n".join(parts)


def device_block(rows: list[Row]) -> str:
    """One line per measured cell: temperature, throttling, other load, cool-down wait, energy."""
    if not rows:
        return ""
    items = "".join(f'<li class="device-line{" bad" if r.throttled or r.contended else ""}"><code>{e(r.cell_key)}</code>: {e(device_line(r))}</li>' for r in rows)
    return ('<h3>Device state</h3><p class="muted">Sampled on the device while each cell ran (targets/samplers.py); '
            'what a target does not expose says "not available".</p><ul class="device">' + items + "</ul>")


# -- across targets -------------------------------------------------------------------------------
def cross_target(report: RunReport) -> str:
    """The same model, recipe, backend, precision and batch side by side on every target."""
    targets = list(by_target(report.rows))
    cells = {r.id: r for r in report.rows}
    keys = list(dict.fromkeys(replace(r.id, target="") for r in report.rows))  # a cell on any target
    head = ["model", "recipe", "backend", "prec.", "batch"]
    sub = []
    for i, t in enumerate(targets):
        sub += [f"{t}: p50 ms", f"{t}: p90 ms", f"{t}: top-1", f"{t}: speedup"] + ([f"{t}: p50 vs {targets[0]}"] if i else [])
    out = []
    if len(targets) == 1:
        out.append(f'<p class="muted">This run has one target ({e(targets[0])}); a suite with several <code>targets</code> puts them side by side here.</p>')
    out.append('<table class="cross sortable"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head + sub) + "</tr></thead><tbody>")
    for k in keys:
        tds = [td(e(k.model), k.model), td(e(k.recipe), k.recipe), td(e(k.backend), k.backend), td(e(k.precision), k.precision),
               td(str(k.batch), k.batch)]
        first = cells.get(replace(k, target=targets[0]))
        for i, t in enumerate(targets):
            tds += _target_cells(cells.get(replace(k, target=t)), first, i)
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _target_cells(r: Row | None, first: Row | None, i: int) -> list[str]:
    """One target's columns of the cross-target table (the first target's without the ratio to itself)."""
    if r is None or r.status != "ok":
        status = "not in this target" if r is None else r.status
        return [f'<td colspan="{4 + (1 if i else 0)}" class="muted">{e(status)}</td>']
    out = [td(ms(r.p50_ms), r.p50_ms, "num"), td(ms(r.p90_ms), r.p90_ms, "num"), td(e(top1_text(r)), r.top1, "num"),
           td(na(r.speedup_p50, ".2f", "x"), r.speedup_p50, "num")]
    if i:
        ratio = r.p50_ms / first.p50_ms if first and first.status == "ok" and first.p50_ms and r.p50_ms else None
        out.append(td(na(ratio, ".2f", "x"), ratio, "num"))
    return out


# -- failures -------------------------------------------------------------------------------------
def failures_table(failed: list[Row], tracebacks: dict[str, str]) -> list[str]:
    """The failed and skipped cells with their reasons, then each worker traceback folded."""
    out = ['<table class="failures"><thead><tr><th>cell</th><th>target</th><th>status</th><th>reason</th></tr></thead><tbody>']
    for r in failed:
        out.append(f'<tr class="status-{e(r.status)}"><td><code>{e(r.cell_key)}</code></td><td>{e(r.target)}</td><td>{e(r.status)}</td>'
                   f'<td class="failed">{e(r.error or "no reason recorded")}</td></tr>')
    out.append("</tbody></table>")
    for r in failed:
        if r.cell_key in tracebacks:
            out.append(f"<details><summary>traceback of <code>{e(r.cell_key)}</code></summary><pre>{e(tracebacks[r.cell_key])}</pre></details>")
    return out


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


def _dict_html(v: dict[str, Any]) -> str:
    if v and all(isinstance(x, dict) for x in v.values()):  # a table, one row per entry
        keys = list(dict.fromkeys(k for x in v.values() for k in x))
        return ('<table class="inner"><thead><tr><th></th>' + "".join(f"<th>{e(k)}</th>" for k in keys) + "</tr></thead><tbody>"
                + "".join(f"<tr><th>{e(name)}</th>" + "".join(f"<td>{value_html(x.get(k))}</td>" for k in keys) + "</tr>" for name, x in v.items())
                + "</tbody></table>")
    if not v:
        return '<span class="muted">none</span>'
    return '<table class="kv inner">' + "".join(f"<tr><th>{e(k)}</th><td>{value_html(x)}</td></tr>" for k, x in v.items()) + "</table>"


def _list_html(v: list[Any]) -> str:
    if v and all(isinstance(x, dict) for x in v):
        keys = list(dict.fromkeys(k for x in v for k in x))
        return ('<table class="inner"><thead><tr>' + "".join(f"<th>{e(k)}</th>" for k in keys) + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{value_html(x.get(k))}</td>" for k in keys) + "</tr>" for x in v) + "</tbody></table>")
    return e(", ".join(fmt_num(x) if isinstance(x, float) else str(x) for x in v)) if v else '<span class="muted">none</span>'


def value_html(v: Any) -> str:
    """A fingerprint value: nested dicts and lists of dicts as tables, "not available" muted."""
    if isinstance(v, dict):
        return _dict_html(v)
    if isinstance(v, list):
        return _list_html(v)
    if v is None or v == "not available":
        return '<span class="muted">not available</span>'
    if v == "":
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return e(f"{v:g}")
    return e(v)


def fingerprint_table(fp: dict[str, Any]) -> str:
    """Everything the probe read on a target, one row per field."""
    if not fp:
        return '<p class="muted">No fingerprint was recorded for this target.</p>'
    rows = [f"<tr><th>{e(FINGERPRINT_LABELS.get(k, k))}</th><td>{value_html(v)}</td></tr>" for k, v in fp.items()]
    return '<table class="kv">' + "".join(rows) + "</table>"
