"""The robustness part of a run's report: one row per (model, recipe) from its cells' ``facts["robustness"]``.

The numbers are the recipe's PyTorch fp32 model's on the host (bench/robustness.py), not any cell's runtime
or precision: the tables say so, and the Pareto view's ``robust`` accuracy axis plots them only for fp32
cells, whose fidelity to PyTorch is measured; int8 and fp16 cells are left out with a line saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.robustness import MEASURED_ON, RobustnessFacts
from edgebench.bench.store import CellRecord
from edgebench.reports.htmlkit import e, sortable_table
from edgebench.models.robustness import SEVERITIES

PARETO_ACCURACY = ("top1", "robust")  # the Pareto view's accuracy axis: clean top-1 of each cell, or robust top-1
ROBUST_PRECISIONS = ("fp32",)  # cells the robust axis plots: their outputs are checked against the PyTorch fp32 model
ROBUST_LABEL = f"robust top-1: mean over corruptions and severities (%), {MEASURED_ON}"


class NoRobustnessData(ConfigError):
    """The robust accuracy axis was asked for a run that has no robustness numbers (exit 2)."""


@dataclass
class RobustnessRow:
    """One (model, recipe): its robustness facts, or why there are none (``skipped``)."""

    model: str
    recipe: str
    facts: RobustnessFacts | None = None
    skipped: str | None = None

    @property
    def robust_top1(self) -> float | None:
        return self.facts.result.mean_corrupted_top1 if self.facts else None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "recipe": self.recipe, "measured_on": MEASURED_ON,
                **(self.facts.to_dict() if self.facts else {"skipped": self.skipped})}


def robustness_rows(cells: list[CellRecord]) -> list[RobustnessRow]:
    """One row per (model, recipe) whose cells carry robustness facts, in the run's order (dense first per model)."""
    rows: dict[tuple[str, str], RobustnessRow] = {}
    for c in cells:
        d = (c.facts or {}).get("robustness")
        if d is None or (c.model, c.recipe) in rows:
            continue
        facts = RobustnessFacts.from_dict(d)
        rows[(c.model, c.recipe)] = RobustnessRow(c.model, c.recipe, facts, None if facts else str(d.get("skipped") or "not evaluated"))
    return sorted(rows.values(), key=lambda r: (r.model, r.recipe != "dense"))


def by_pair(rows: list[RobustnessRow]) -> dict[tuple[str, str], RobustnessRow]:
    return {(r.model, r.recipe): r for r in rows}


def require_data(rows: list[RobustnessRow], run_id: str) -> None:
    """Refuse the robust axis for a run without robustness numbers: one line with the fix."""
    if not any(r.facts for r in rows):
        why = "its robustness evaluations were skipped" if rows else "its suite had no `robustness:` key"
        raise NoRobustnessData(f"run {run_id}: no robustness data for --pareto-accuracy robust ({why}); add `robustness: true` to the suite "
                               "and run it again, or use --pareto-accuracy top1")


def eps_columns(rows: list[RobustnessRow]) -> list[float]:
    return sorted({f.eps for r in rows if r.facts for f in r.facts.result.fgsm})


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _pts(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def eps_text(eps: float) -> str:
    return f"{eps * 255:g}/255"


def summary_cells(r: RobustnessRow, eps: list[float]) -> list[str]:
    """model, recipe, clean top-1, mean corrupted top-1 and its delta, FGSM top-1 and delta per eps (text)."""
    if r.facts is None:
        return [r.model, r.recipe, "-", "-", "-"] + ["-", "-"] * len(eps)
    f = r.facts
    fgsm = {x["eps"]: x for x in f.fgsm_rows()}
    out = [r.model, r.recipe, _pct(f.result.clean_top1), _pct(f.result.mean_corrupted_top1), _pts(f.mean_corrupted_delta_pts)]
    for x in eps:
        out += [_pct(fgsm[x]["top1"]), _pts(fgsm[x]["delta_pts"])] if x in fgsm else ["-", "-"]
    return out


def summary_headers(eps: list[float]) -> list[str]:
    return (["model", "recipe", "clean top-1", "mean corrupted top-1", "Δ vs dense pts"]
            + [h for x in eps for h in (f"FGSM {eps_text(x)} top-1", "Δ vs dense pts")])


def explanation(rows: list[RobustnessRow]) -> str:
    """What the numbers are: which corruptions, severities, FGSM, measured where."""
    settings = next((r.facts.settings for r in rows if r.facts), {})
    names = ", ".join(settings.get("corruptions", [])) or "-"
    sev = ", ".join(str(s) for s in settings.get("severities", SEVERITIES))
    return (f"Measured on each recipe's PyTorch model at fp32 on the host, once per model and recipe (not per runtime or precision): top-1 on the evaluation split, "
            f"clean, under seeded corruptions ({names}; severities {sev}: CIFAR-10-C levels 1, 3, 5) and under one-step FGSM "
            "(white-box against the model itself, eps in pixel units). Δ is in percentage points against the dense model's same number. "
            "Robust top-1 is the mean corrupted top-1.")


def markdown_lines(rows: list[RobustnessRow], pareto_note: str | None = None) -> list[str]:
    """The Markdown report's Robustness section (empty when the run has no robustness rows)."""
    if not rows:
        return []
    eps = eps_columns(rows)
    heads = summary_headers(eps)
    out = ["", f"## Robustness ({MEASURED_ON})", "", explanation(rows), "",
           "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    out += ["| " + " | ".join(summary_cells(r, eps)) + " |" for r in rows]
    skipped = [r for r in rows if r.facts is None]
    if skipped:
        out += [""] + [f"- {r.model}/{r.recipe}: {r.skipped}" for r in skipped]
    out += ["", "Per corruption and severity (top-1, Δ vs dense in points): report.json and report.html."]
    if pareto_note:
        out += ["", pareto_note]
    return out


def robust_accuracy(rows: list[RobustnessRow]) -> Any:
    """The Pareto view's robust axis: a cell's (model, recipe) robust top-1, for fp32 cells only; None otherwise."""
    pairs = by_pair(rows)

    def acc(row: Any) -> float | None:
        r = pairs.get((row.model, row.recipe))
        return r.robust_top1 if r is not None and row.precision in ROBUST_PRECISIONS else None
    return acc


def left_out_note(cells: list[Any], rows: list[RobustnessRow]) -> str | None:
    """The one line the robust Pareto view shows about the cells it leaves out, or None when it plots them all."""
    pairs = by_pair(rows)
    quantised = [c for c in cells if c.precision not in ROBUST_PRECISIONS]
    unmeasured = [c for c in cells if c.precision in ROBUST_PRECISIONS and (pairs.get((c.model, c.recipe)) is None or pairs[(c.model, c.recipe)].facts is None)]
    parts = []
    if quantised:
        precisions = "/".join(sorted({c.precision for c in quantised}))
        parts.append(f"{len(quantised)} {precisions} cell(s) are left out: their robustness was not measured "
                     f"(the robust top-1 is the recipe's {MEASURED_ON}; fp32 cells plot it, their fidelity to PyTorch is measured)")
    if unmeasured:
        parts.append(f"{len(unmeasured)} fp32 cell(s) are left out: their model and recipe have no robustness numbers")
    return ("Robust accuracy axis: " + "; ".join(parts) + ".") if parts else None


# -- HTML -------------------------------------------------------------------------------------------
def detail_table(rows: list[RobustnessRow]) -> str:
    """Every corruption x severity of each (model, recipe): top-1 (Δ vs dense, points)."""
    measured = [r for r in rows if r.facts]
    cols = list(dict.fromkeys((c["corruption"], c["severity"]) for r in measured for c in r.facts.corrupted_rows()))
    body = []
    for r in measured:
        got = {(c["corruption"], c["severity"]): c for c in r.facts.corrupted_rows()}
        body.append([r.model, r.recipe] + [f"{_pct(got[k]['top1'])} ({_pts(got[k]['delta_pts'])})" if k in got else "-" for k in cols])
    return sortable_table(["model", "recipe"] + [f"{n} s{s}" for n, s in cols], body)


def html_section(rows: list[RobustnessRow]) -> str:
    """The HTML report's Robustness section: the summary table, the per-corruption detail, skipped pairs."""
    eps = eps_columns(rows)
    out = [f'<section id="robustness"><h2>Robustness <span class="muted">({e(MEASURED_ON)})</span></h2>',
           f'<p class="muted">{e(explanation(rows))}</p>', sortable_table(summary_headers(eps), [summary_cells(r, eps) for r in rows]),
           "<h3>Per corruption and severity</h3><p class=\"muted\">Top-1 (Δ vs dense in points).</p>", detail_table(rows)]
    out += [f'<p class="muted">{e(r.model)}/{e(r.recipe)}: {e(r.skipped)}</p>' for r in rows if r.facts is None]
    out.append("</section>")
    return "\n".join(out)
