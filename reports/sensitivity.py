"""The report of one ``edgebench sensitivity`` scan: sensitivity.json (the typed data), sensitivity.md
(tables: unit x ratio -> top-1 drop, loss increase, evaluation-split top-1; the most and least sensitive
units named) and sensitivity.html (the same tables and inline SVG plots of top-1 vs ratio, one line per
unit: no script, no network).

The ranking and the main table use the held-out slice of the TRAINING split only; the evaluation split's
top-1 is its own table, labelled as reported-only, so nobody chooses ratios on the evaluation split.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgebench.bench.sensitivity import ScanResult, scan_to_data
from edgebench.reports.htmlkit import Ids, e, figure, na, static_page, write_static_report
from edgebench.reports.svg import PALETTE, Chart

NAMED = 3  # units named as most / least sensitive in the summary
_DASHES = (None, "5 3", "2 2", "8 3 2 3")  # more units than colours: the next dash pattern


def title(r: ScanResult) -> str:
    what = "channel groups" if r.kind == "channel" else "layers (unstructured, L1 magnitude)"
    return f"sensitivity: {r.model}, {what} pruned alone, no fine-tune"


def summary_lines(r: ScanResult) -> list[str]:
    """The dense model's top-1, the most and least sensitive units, how the scan was made and its time."""
    rank = r.ranking()
    evals = f", {r.dense_eval_top1:.2%} on the evaluation split ({r.eval_images} images)" if r.dense_eval_top1 is not None else ""
    lines = [f"dense model: top-1 {r.dense_holdout_top1:.2%} on the held-out training slice ({r.holdout_images} images){evals}"]
    most, least = extremes(rank)
    if most:
        lines.append("most sensitive: " + _named(most))
    if least:
        lines.append("least sensitive: " + _named(least))
    how = (f"each channel group pruned alone ({r.importance} group magnitude, torch-pruning dependency groups)" if r.kind == "channel"
           else "each Conv2d/Linear layer's smallest-magnitude weights zeroed alone")
    bn = "BatchNorm statistics re-estimated on other training images" if r.recalibrate_bn else "BatchNorm statistics left as trained"
    lines.append(f"how: {how} at ratios {', '.join(f'{x:g}' for x in r.ratios)}; {bn}; no fine-tune; ranked by the mean top-1 drop over "
                 "the ratios (then the loss increase) on a held-out 20% of the TRAINING split, never the evaluation split")
    took = f"computed in {r.compute_s:.1f} s" if r.compute_s is not None else "computed"
    lines.append(f"{'reused from the cache (' + took + ')' if r.reused else took}; cache entry {r.key[:12]}, dense model {r.dense_key[:12]}, "
                 f"executor {r.executor}")
    return lines


def extremes(rank: list[tuple[str, float, float]]) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    """The most sensitive units (first) and the least (least first): up to ``NAMED`` each, never the same
    unit in both (a model with few units names half of them each way)."""
    k = min(NAMED, len(rank) // 2) or len(rank)
    return rank[:k], (list(reversed(rank[-k:])) if len(rank) > 1 else [])


def _named(items: list[tuple[str, float, float]]) -> str:
    return ", ".join(f"{u} ({drop:.2f} pp, loss {loss:+.3f})" for u, drop, loss in items)


def tables(r: ScanResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, headers, rows) of each table, in report order (Markdown and HTML render the same)."""
    ratios = [f"{x:g}" for x in r.ratios]
    unit = "group" if r.kind == "channel" else "layer"
    size = "channels" if r.kind == "channel" else "weights"
    pos = {name: i + 1 for i, (name, _, _) in enumerate(r.ranking())}

    def grid(cell: object) -> list[list[str]]:
        rows = []
        for u in r.units:
            row = [f"{u.name} ({u.total} {size})"]
            for x in r.ratios:
                p = r.point(u.name, x)
                row.append("-" if p is None else cell(p))  # type: ignore[operator]
            rows.append(row)
        return rows

    head = [f"{unit} \\ ratio"] + ratios
    return [
        ("Top-1 drop (held-out training slice, percentage points)", head, grid(lambda p: f"{p.top1_drop_pp:.2f} (kept {p.kept})")),
        ("Loss increase (held-out training slice, cross-entropy)", head, grid(lambda p: f"{p.loss_increase:+.4f}")),
        (f"Evaluation-split top-1 (reported only: not used to rank; dense {na(r.dense_eval_top1, '.2%')})", head,
         grid(lambda p: na(p.eval_top1, ".2%"))),
        ("Units, most sensitive first", ["rank", unit, size, "mean top-1 drop pp", "mean loss increase", "layers"],
         [[str(pos[name]), name, str(_total(r, name)), f"{drop:.2f}", f"{loss:+.4f}", ", ".join(_layers(r, name))]
          for name, drop, loss in r.ranking()]),
    ]


def _total(r: ScanResult, name: str) -> int:
    return next(u.total for u in r.units if u.name == name)


def _layers(r: ScanResult, name: str) -> list[str]:
    return next(u.layers for u in r.units if u.name == name)


# -- Markdown ------------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def sensitivity_markdown(r: ScanResult) -> str:
    """The scan as Markdown: the summary, then each table."""
    out = [f"# {title(r)}", ""]
    out += [f"- {line}" for line in summary_lines(r)] + [""]
    for heading, headers, rows in tables(r):
        out += [f"## {heading}", "", "| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows] + [""]
    return "\n".join(out).rstrip() + "\n"


# -- HTML ----------------------------------------------------------------------------------------------
def accuracy_chart(r: ScanResult, ids: Ids, split: str = "holdout") -> str:
    """Top-1 (%) vs ratio, one line per unit starting from the dense model at ratio 0: on the held-out
    training slice (``split`` "holdout") or the evaluation split ("eval")."""
    dense = r.dense_holdout_top1 if split == "holdout" else r.dense_eval_top1
    label = "held-out training slice" if split == "holdout" else "evaluation split (reported only)"
    chart = Chart(ids(f"chart-{split}"), f"top-1 vs ratio: {label}", "ratio removed from one unit", "top-1 %",
                  width=640, height=380, ybounds=(0.0, 102.0))  # a little over 100: marks at 99-100% stay whole
    chart.xlim = (-0.02, None)  # the dense model at 0 whole; padded past the largest ratio so its marks are not cut
    if dense is not None:
        chart.hline(dense * 100, f"dense {dense:.2%}")
    for i, u in enumerate(r.units):
        pts = [p for p in sorted(r.points, key=lambda p: p.ratio) if p.unit == u.name]
        ys = [p.holdout_top1 if split == "holdout" else p.eval_top1 for p in pts]
        xy = [(p.ratio, y * 100) for p, y in zip(pts, ys) if y is not None]
        if dense is not None and (not xy or xy[0][0] > 0):
            xy.insert(0, (0.0, dense * 100))
        if not xy:
            continue
        color, dash = PALETTE[i % len(PALETTE)], _DASHES[(i // len(PALETTE)) % len(_DASHES)]
        xs, vs = [x for x, _ in xy], [v for _, v in xy]
        chart.line(xs, vs, color, dash=dash, title=u.name)
        chart.points(xs, vs, color, titles=[f"{u.name} at ratio {x:g}: top-1 {v:.2f}%" for x, v in xy], size=3.5)
        chart.legend(u.name, color, "dash" if dash else "line", dash=dash)
    return figure(chart.render(), f"top-1 on the {label} with one unit pruned at each ratio (the others dense)")


def sensitivity_html(r: ScanResult) -> str:
    """The scan as one self-contained HTML page (everything escaped, inline SVG, no script)."""
    ids = Ids()
    body = [f"<h1>{e(title(r))}</h1>", "<ul>" + "".join(f"<li>{e(line)}</li>" for line in summary_lines(r)) + "</ul>",
            '<section id="plots"><h2>Plots</h2><div class="charts">' + accuracy_chart(r, ids, "holdout")
            + (accuracy_chart(r, ids, "eval") if r.dense_eval_top1 is not None else "") + "</div></section>"]
    for heading, headers, rows in tables(r):
        head = "".join(f"<th>{e(h)}</th>" for h in headers)
        trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
        body.append(f'<section id="{ids(heading)}"><h2>{e(heading)}</h2><table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></section>')
    return static_page(title(r), body)


def write_sensitivity_report(r: ScanResult, out_dir: Path) -> dict[str, Path]:
    """Write sensitivity.json, sensitivity.md and sensitivity.html into ``out_dir``, each atomically; returns
    their paths by kind ("json", "markdown", "html"). A full disk is CannotWrite."""
    return write_static_report(out_dir, {"json": ("sensitivity.json", json.dumps(scan_to_data(r), indent=2, default=str) + "\n"),
                                         "markdown": ("sensitivity.md", sensitivity_markdown(r)),
                                         "html": ("sensitivity.html", sensitivity_html(r))})
