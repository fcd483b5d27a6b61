"""Which recipe, backend, precision and batch to deploy on a target: one implementation, used by both
``edgebench recommend`` and the HTML report.

Every cell of the target is either a candidate or excluded with its reason (failed or skipped, accuracy
drop over the limit, peak memory over the limit, objective not measured). Candidates are ranked by the
objective; the best is compared with each other candidate by a bootstrap interval of the latency ratio
(:mod:`edgebench.reports.stats`: processes resampled, then samples) under the one tie rule of
:mod:`edgebench.reports.ties` (every interval wholly above 1, both cells in >= 2 processes, else a tie); a
candidate running the same computation as the best always ties. Cells flagged ``nan-outputs`` or
``contended`` (still so after the quiet gate) are excluded with the reason, never ranked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import numpy as np

from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.contracts.flags import has
from edgebench.reports import ties
from edgebench.reports.stats import MIN_PROCESSES, Bootstrapper, RatioCI
from edgebench.reports.ties import disagreement, tie_reason
from edgebench.reports.tables import Row, RunReport, accuracy_reference

SMALL_MARGIN = 0.05  # below this, say that one repeat run on a shared machine can move it
# Flags that make a close result on the recommended cell(s) worth re-measuring on an idle machine
# (contended cells are not candidates at all: see EXCLUDING_FLAGS).
MEASUREMENT_NOISE = ("high-variance", "measurement-capped", "processes-disagree")
# Flags that keep a cell out of the ranking: (code, applies to the size objective too, why).
EXCLUDING_FLAGS = (("nan-outputs", True, "its outputs are not valid (nan-outputs)"),
                   ("contended", False, "measured while other processes used the CPU (contended, after the quiet gate)"))


@dataclass(frozen=True)
class Objective:
    name: str
    label: str
    unit: str
    lower_is_better: bool
    value: Callable[[Row], float | None]
    missing: str  # why a cell has no value, for the exclusion list
    # The bootstrap statistics a win must clear, on per-batch (False) or per-item (True) samples.
    statistics: tuple[str, ...] = ()
    per_item: bool = False


OBJECTIVES: dict[str, Objective] = {
    "p90": Objective("p90", "p90 latency per batch", "ms", True, lambda r: r.p90_ms, "no latency measured",
                     statistics=("p90", "median")),
    "throughput": Objective("throughput", "throughput", "items/s", False, lambda r: r.throughput_ips, "no latency measured",
                            statistics=("mean", "median"), per_item=True),
    "energy": Objective("energy", "energy per item", "mJ", True, lambda r: r.energy_mj_per_item,
                        "no energy measurement: target {target} has no energy sampler"),
    "size": Objective("size", "artifact size", "bytes", True, lambda r: float(r.size_bytes) if r.size_bytes is not None else None,
                      "artifact size not recorded"),
}

_UNITS = {"": 2**20, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_memory(text: str) -> float:
    """A memory limit in MiB from ``512MB``, ``512MiB``, ``0.5GiB``, ``300000KB`` or a bare number (MiB).

    MB/GB are decimal (10^6, 10^9 bytes) and MiB/GiB binary, as in the rest of edgebench's output.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise EdgebenchError(f"--max-memory: {text!r} is not a size; use e.g. 512MB, 512MiB, 1.5GiB or a number of MiB")
    return float(m.group(1)) * _UNITS[unit] / 2**20


@dataclass
class Constraints:
    max_accuracy_drop_pts: float | None = 1.0
    max_memory_mib: float | None = None
    objective: str = "p90"
    batch: int | None = None
    max_memory_text: str | None = None  # the limit as the user wrote it, e.g. "512MB"

    def describe(self) -> str:
        drop = "no limit" if self.max_accuracy_drop_pts is None else f"at most {self.max_accuracy_drop_pts:g} pts"
        mem = "no limit" if self.max_memory_mib is None else f"at most {_mib(self.max_memory_mib)}"
        if self.max_memory_mib is not None and self.max_memory_text and self.max_memory_text.strip() != _mib(self.max_memory_mib):
            mem = f"at most {self.max_memory_text.strip()} ({_mib(self.max_memory_mib)})"
        parts = [f"top-1 drop vs dense on the same backend: {drop}", f"peak memory (RSS): {mem}"]
        if self.batch is not None:
            parts.append(f"batch {self.batch} only")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"max_accuracy_drop_pts": self.max_accuracy_drop_pts, "max_memory_mib": self.max_memory_mib,
                "objective": self.objective, "batch": self.batch}


SAME_COMPUTE = "same computation as the best (zeros run dense)"  # a tie's reason, said the same everywhere
EQUAL_VALUE = "equal value"  # the tie of an objective without a statistic (size): the same value as the best


@dataclass
class Candidate:
    row: Row
    value: float
    drop_pts: float | None  # top-1 points lost against ``reference`` (None: no accuracy or no dense cell)
    reference: str  # how the accuracy reference was chosen, in words
    vs_best: list[RatioCI] = field(default_factory=list)  # empty for the best, and without samples
    tied: bool = False  # statistically indistinguishable from the best (the best itself: True)
    tie_reason: str = ""  # why a tied candidate ties (:func:`tie_reason`)
    same_compute: bool = False  # runs exactly the computation the best runs (zeros stored and run dense)
    rank: int = 0
    reference_row: Row | None = None  # the dense row ``drop_pts`` is measured against

    @property
    def reference_elsewhere(self) -> bool:
        """The accuracy reference ran on another backend (no dense cell of this one ran)."""
        return self.reference_row is not None and self.reference_row.backend != self.row.backend

    @property
    def ratio(self) -> float | None:
        """This candidate's objective over the best's, oriented so that > 1 means the best is better."""
        return self.vs_best[0].ratio if self.vs_best else None


class Why(Enum):
    """Why a cell is not a candidate."""

    NOT_MEASURED = "not measured"           # failed or skipped
    OTHER_BATCH = "other batch"             # --batch asked for another one
    NO_ACCURACY = "no accuracy"             # the accuracy-drop limit cannot be checked
    NO_REFERENCE = "no reference"           # no dense cell to measure the drop against
    ACCURACY_DROP = "accuracy drop"         # over the limit
    NO_MEMORY = "no memory"                 # the memory limit cannot be checked
    MEMORY = "memory"                       # over the limit
    NO_OBJECTIVE = "no objective value"     # the objective itself was not measured (e.g. no energy sampler)
    INVALID = "invalid"                     # a flag says its numbers are not valid (nan-outputs)
    CONTENDED = "contended"                 # measured while other processes used the CPU


@dataclass
class Exclusion:
    row: Row
    reason: str
    why: Why


@dataclass
class Recommendation:
    run_id: str
    target: str
    model: str
    objective: Objective
    constraints: Constraints
    candidates: list[Candidate]
    excluded: list[Exclusion]
    verdict: str  # win | tie | sole | none
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def runner_up(self) -> Candidate | None:
        return self.candidates[1] if len(self.candidates) > 1 else None

    @property
    def tied(self) -> list[Candidate]:
        return [c for c in self.candidates if c.tied] if self.verdict == "tie" else []

    def margin_over(self) -> Candidate | None:
        """Whom the margin is measured against: the runner-up after a win; after a tie, the first
        candidate outside the tie (None when every candidate ties)."""
        if self.verdict == "win":
            return self.runner_up
        if self.verdict == "tie":
            return next((c for c in self.candidates if not c.tied), None)
        return None

    def margin(self) -> tuple[float, RatioCI | None] | None:
        """(factor by which the best beats :meth:`margin_over`, its interval for the objective's statistic)."""
        best, other = self.best, self.margin_over()
        if best is None or other is None:
            return None
        ci = other.vs_best[0] if other.vs_best else None
        if ci is not None:
            return ci.ratio, ci
        if not best.value or not other.value:
            return None
        return (other.value / best.value if self.objective.lower_is_better else best.value / other.value), None

    def headline(self) -> str:
        """The one-line answer (the same words in the terminal and in the HTML)."""
        if self.best is None:
            return f"no recommendation: no cell of {self.model} on {self.target} meets the constraints with a measured {self.objective.label}"
        if self.verdict == "tie":
            return f"tie between {len(self.tied)}: " + " | ".join(label(c.row) for c in self.tied)
        return f"best: {label(self.best.row)}"

    def to_dict(self) -> dict[str, Any]:
        def cand(c: Candidate) -> dict[str, Any]:
            return {"rank": c.rank, "cell": c.row.cell_key, "label": label(c.row), "value": c.value, "top1": c.row.top1,
                    "drop_pts": c.drop_pts, "reference": c.reference, "peak_rss_mib": c.row.peak_rss_mib, "tied": c.tied,
                    "tie_reason": c.tie_reason,
                    "vs_best": [{"statistic": r.statistic, "ratio": r.ratio, "low": r.low, "high": r.high, "level": r.level,
                                 "processes": list(r.processes), "separated": r.separated, "decisive": r.decisive} for r in c.vs_best]}
        margin = self.margin()
        return {
            "run": self.run_id, "target": self.target, "model": self.model,
            "objective": self.objective.name, "constraints": self.constraints.to_dict(),
            "tie_rule": tie_rule(self.objective), "verdict": self.verdict, "headline": self.headline(),
            "best": self.best.row.cell_key if self.best else None,
            "runner_up": self.runner_up.row.cell_key if self.runner_up else None,
            "margin_over": self.margin_over().row.cell_key if self.margin_over() else None,
            "tied": [c.row.cell_key for c in self.tied],
            "margin": None if margin is None else {"factor": margin[0], "low": margin[1].low if margin[1] else None,
                                                   "high": margin[1].high if margin[1] else None},
            "candidates": [cand(c) for c in self.candidates],
            "excluded": [{"cell": e.row.cell_key, "label": label(e.row), "reason": e.reason} for e in self.excluded],
            "notes": list(self.notes),
        }


def label(row: Row) -> str:
    return f"{row.recipe} / {row.backend} / {row.precision} / batch {row.batch}"


def delta_text(drop_pts: float | None) -> str:
    """A drop as a signed change in points (``-0.56``, ``+0.00``)."""
    return "n/a" if drop_pts is None else f"{(-drop_pts or 0.0):+.2f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _mib(v: float) -> str:
    return f"{v:.0f} MiB" if v >= 10 else f"{v:.2f} MiB"


def format_value(objective: Objective, value: float | None) -> str:
    if value is None:
        return "-"
    if objective.name == "p90":
        return f"{value:.3f} ms" if value < 100 else f"{value:.1f} ms"
    if objective.name == "throughput":
        return f"{value:,.0f} items/s"
    if objective.name == "size":
        return f"{value / 1024:.1f} KiB" if value < 2**20 else f"{value / 2**20:.2f} MiB"
    return f"{value:.3g} {objective.unit}"


def describe_margin(rec: Recommendation) -> str | None:
    m = rec.margin()
    if m is None:
        return None
    factor, ci = m
    word = {"p90": "lower p90", "throughput": "higher throughput", "size": "smaller", "energy": "less energy per item"}[rec.objective.name]
    whom = "the runner-up" if rec.verdict == "win" else "the next candidate outside the tie"
    text = f"{factor:.2f}x {word} than {whom} ({label(rec.margin_over().row)})"
    if ci is not None:
        text += f", {ci.level:.0%} CI {ci.low:.2f}-{ci.high:.2f}x"
    return text


def _runs_dense(row: Row) -> bool:
    return row.is_dense or has(row.flags, "sparse-not-used")


def same_computation(a: Row, b: Row) -> bool:
    """Two cells that execute the very same work: same model, backend, precision and batch, the same
    parameter count and MACs, and any zeros stored and run dense (``sparse-not-used``). Whatever latency
    difference they show is measurement noise, however narrow its interval."""
    return (a.id.measurement == b.id.measurement
            and a.params is not None and a.params == b.params and a.macs is not None and a.macs == b.macs
            and _runs_dense(a) and _runs_dense(b))


def tie_rule(objective: Objective | None = None) -> str:
    """The tie rule in words for ``objective``'s statistics (:func:`edgebench.reports.ties.rule`)."""
    return ties.rule(objective.statistics if objective is not None and objective.statistics else ("p90", "median"))


def _samples_ms(report: RunReport, row: Row, per_item: bool) -> np.ndarray | None:
    s = report.samples.get(row.cell_key)
    if not s:
        return None
    ms = np.asarray(s, dtype=np.float64) / 1e6
    return ms / row.batch if per_item else ms


def recommend(report: RunReport, target: str, constraints: Constraints | None = None, model: str | None = None,
              bootstrapper: Bootstrapper | None = None) -> list[Recommendation]:
    """One recommendation per model on ``target`` (a run usually has one model). Needs the samples loaded
    (``tables.load(..., with_samples=True)``) for the statistical comparison: a latency candidate without
    samples (not loaded, or dropped by ``edgebench gc``) has no interval, so it ties with the best, with
    the reason, and the notes say so; no win is called on point estimates."""
    constraints = constraints or Constraints()
    if constraints.objective not in OBJECTIVES:
        raise EdgebenchError(f"--objective: {constraints.objective!r} is not one of {', '.join(OBJECTIVES)}")
    targets = list(dict.fromkeys(r.target for r in report.rows))
    if target not in targets:
        known = ", ".join(targets) or "none"
        raise EdgebenchError(f"run {report.run.id} has no target {target!r}; its targets: {known}")
    rows = [r for r in report.rows if r.target == target]
    models = list(dict.fromkeys(r.model for r in rows))
    if model is not None:
        if model not in models:
            raise EdgebenchError(f"run {report.run.id} has no model {model!r} on target {target!r}; its models: {', '.join(models)}")
        models = [model]
    boot = bootstrapper or Bootstrapper()
    return [_recommend_model(report, target, m, [r for r in rows if r.model == m], constraints, boot) for m in models]


def _excluding_flag(row: Row, obj: Objective) -> Exclusion | None:
    """A cell whose flags keep it out of the ranking (EXCLUDING_FLAGS), with the reason; else None."""
    for code, always, why in EXCLUDING_FLAGS:
        if (always or obj.name != "size") and (has(row.flags, code) or (code == "contended" and row.contended)):
            return Exclusion(row, f"{why}: never ranked", Why.INVALID if code == "nan-outputs" else Why.CONTENDED)
    return None


def _recommend_model(report: RunReport, target: str, model: str, rows: list[Row], c: Constraints, boot: Bootstrapper) -> Recommendation:
    obj = OBJECTIVES[c.objective]
    candidates: list[Candidate] = []
    excluded: list[Exclusion] = []
    notes: list[str] = []
    latency_only = all(r.top1 is None for r in rows if r.status == "ok") and any(r.status == "ok" for r in rows)
    if latency_only and c.max_accuracy_drop_pts is not None:
        notes.append(f"{model} has no accuracy measurement (latency-only: no labelled evaluation split), so the accuracy-drop "
                     "limit does not apply; ranked on the objective alone - check agreement with dense in the cell table")
    for row in rows:
        if row.status != "ok":
            excluded.append(Exclusion(row, f"{row.status}: {row.error or 'no reason recorded'}", Why.NOT_MEASURED))
            continue
        flagged = _excluding_flag(row, obj)
        if flagged is not None:
            excluded.append(flagged)
            continue
        if c.batch is not None and row.batch != c.batch:
            excluded.append(Exclusion(row, f"batch {row.batch}; only batch {c.batch} was asked for", Why.OTHER_BATCH))
            continue
        drop: float | None = None
        how = "no accuracy measured"
        ref: Row | None = None
        if row.top1 is None:
            if c.max_accuracy_drop_pts is not None and not latency_only:
                excluded.append(Exclusion(row, "no accuracy measured (no labelled evaluation split), so the accuracy-drop limit cannot be "
                                               "checked; --no-accuracy-limit ranks it on the objective alone", Why.NO_ACCURACY))
                continue
        else:
            ref, how = accuracy_reference(row, report.rows)
            if ref is None:
                if c.max_accuracy_drop_pts is not None:
                    excluded.append(Exclusion(row, f"accuracy drop unknown: {how}", Why.NO_REFERENCE))
                    continue
            else:
                drop = (ref.top1 - row.top1) * 100
                if c.max_accuracy_drop_pts is not None and drop > c.max_accuracy_drop_pts + 1e-9:
                    excluded.append(Exclusion(row, f"top-1 {row.top1:.2%} is {drop:.2f} pts below {how} ({ref.top1:.2%}); "
                                                   f"limit {c.max_accuracy_drop_pts:g} pts", Why.ACCURACY_DROP))
                    continue
        if c.max_memory_mib is not None:
            if row.peak_rss_mib is None:
                excluded.append(Exclusion(row, "no peak memory measured to check the memory limit against", Why.NO_MEMORY))
                continue
            if row.peak_rss_mib > c.max_memory_mib:
                excluded.append(Exclusion(row, f"peak RSS {_mib(row.peak_rss_mib)} over the limit of {_mib(c.max_memory_mib)}", Why.MEMORY))
                continue
        value = obj.value(row)
        if value is None:
            excluded.append(Exclusion(row, obj.missing.format(target=target), Why.NO_OBJECTIVE))
            continue
        candidates.append(Candidate(row, float(value), drop, how, reference_row=ref))

    sign = 1 if obj.lower_is_better else -1
    candidates.sort(key=lambda k: (sign * k.value, -(k.row.top1 or 0), k.row.size_bytes or 0, k.row.cell_key))
    for i, cand in enumerate(candidates, 1):
        cand.rank = i
    if obj.name == "energy" and not candidates and any(e.why is Why.NO_OBJECTIVE for e in excluded):
        notes.append(f"no cell on {target} has an energy measurement: this target has no energy sampler, so the energy objective cannot be ranked")

    busy = sum(e.why is Why.CONTENDED for e in excluded)
    if not candidates and busy:
        notes.append(f"{busy} cell(s) were measured while other processes used the CPU (contended) and are never ranked: "
                     "re-run them on an idle machine")
    if not candidates:
        return Recommendation(report.run.id, target, model, obj, c, [], excluded, "none", notes)
    best = candidates[0]
    best.tied = True
    untested = []
    for cand in candidates[1:]:
        if obj.name != "size" and same_computation(best.row, cand.row):
            cand.same_compute = cand.tied = True
        if obj.statistics:
            a, b = _samples_ms(report, best.row, obj.per_item), _samples_ms(report, cand.row, obj.per_item)
            if a is not None and b is not None and len(a) > 1 and len(b) > 1:
                scale = (best.row.batch if obj.per_item else 1, cand.row.batch if obj.per_item else 1)
                procs = (report.process_samples.get(best.row.cell_key), report.process_samples.get(cand.row.cell_key))
                cand.vs_best = [boot.compare(best.row.cell_key, a, cand.row.cell_key, b, s, scale, procs) for s in obj.statistics]
                reason = tie_reason(cand.vs_best)
                cand.tied = cand.same_compute or reason is not None
                cand.tie_reason = SAME_COMPUTE if cand.same_compute else (reason or "")
                continue
            untested.append(cand.row.cell_key)
            cand.tied = True  # no interval: nothing can show the best beats it
            cand.tie_reason = SAME_COMPUTE if cand.same_compute else _no_interval(report)
            continue
        cand.tied = cand.same_compute or cand.value == best.value
        cand.tie_reason = SAME_COMPUTE if cand.same_compute else (EQUAL_VALUE if cand.tied else "")
    if untested:
        notes.append(f"no interval for {len(untested)} candidate(s) ({_no_interval(report)}): they tie with the best, never a win on point estimates")

    tied = [k for k in candidates if k.tied]
    verdict = "sole" if len(candidates) == 1 else ("tie" if len(tied) > 1 else "win")
    rec = Recommendation(report.run.id, target, model, obj, c, candidates, excluded, verdict, notes)
    _explain(rec)
    return rec


def _no_interval(report: RunReport) -> str:
    """Why a candidate's latency has no interval: its run's samples were dropped by gc, or none are loaded."""
    if report.samples_dropped:
        return f"samples of run {report.run.id} were dropped by edgebench gc"
    return "no stored samples to resample"


def _explain(rec: Recommendation) -> None:
    best, notes = rec.best, rec.notes
    if rec.verdict == "tie":
        same = [k for k in rec.tied if k.same_compute]
        if same:
            notes.append(f"{len(same)} tied candidate(s) run the same computation as the best ({', '.join(label(k.row) for k in same)}): "
                         "their zeros are stored and run dense, with the same parameters and MACs, so any latency difference between them is measurement noise")
        thin = [k for k in rec.tied if not k.same_compute and ties.too_few_processes(k.vs_best)]
        if thin:
            notes.append(f"{len(thin)} candidate(s) tie only because a cell was measured in fewer than {MIN_PROCESSES} worker processes: not enough "
                         f"processes to call a win closer than {ties.ONE_PROCESS_MARGIN:g}x (one process's samples cannot show the variance "
                         f"between processes); re-run with measure.processes >= {MIN_PROCESSES}")
        # candidates without an interval (no samples) are explained by their own note, not as indistinguishable
        blind = [k for k in rec.tied[1:] if not k.same_compute and not k.vs_best and rec.objective.statistics]
        rest = len(rec.tied) - 1 - len(same) - len(thin) - len(blind)
        if rest > 0:
            what = (f"the interval of the {' or '.join(rec.objective.statistics)} ratio is not wholly above 1" if rec.objective.statistics
                    else f"their {rec.objective.label} is equal")
            notes.append(f"the best and {rest} other(s) are statistically indistinguishable ({what}): a tie, not a win")
        if rec.objective.statistics:
            notes.append(f"tie rule: {tie_rule(rec.objective)}")
        by_acc = max(rec.tied, key=lambda k: (k.row.top1 or 0, k.row.is_reference, -(k.row.peak_rss_mib or 0)))
        by_mem = min(rec.tied, key=lambda k: (k.row.peak_rss_mib if k.row.peak_rss_mib is not None else float("inf")))
        notes.append(f"to break the tie: highest top-1 is {label(by_acc.row)} ({_pct(by_acc.row.top1)}); "
                     f"lowest peak memory is {label(by_mem.row)} ({_mib(by_mem.row.peak_rss_mib) if by_mem.row.peak_rss_mib is not None else '-'})")
    m = rec.margin()
    if m is not None and rec.verdict == "win" and m[0] - 1 < SMALL_MARGIN and rec.objective.statistics:
        notes.append(f"the margin is under {SMALL_MARGIN:.0%}: clear across this run's worker processes, but a repeat run on a shared machine can move it")
    _disagreements(rec)
    group = rec.tied if rec.verdict == "tie" else [best]
    # named by each warning's own words before its details (what the cell table's tooltip shows)
    flagged = sorted({f.text.split(":")[0] for k in group for f in k.row.flags if f.code in MEASUREMENT_NOISE})
    if flagged and rec.objective.statistics:
        notes.append(f"measurement warnings on the recommended cell(s): {', '.join(flagged)}; re-run on an idle machine before trusting a close result")
    if best is not None and best.drop_pts is not None and best.reference_elsewhere:
        notes.append(f"accuracy drop of the best measured against {best.reference}")


def _disagreements(rec: Recommendation) -> None:
    """A note for the candidates that matter (the tie, the one the margin is over) whose statistics point
    different ways, e.g. a lower p90 but a higher median."""
    other = rec.margin_over()
    shown = [k for k in rec.candidates[1:] if k.tied or k is other]
    found = [(k, d) for k in shown if (d := disagreement(k.vs_best))]
    for k, d in found[:3]:
        rec.notes.append(f"{' and '.join(ci.statistic for ci in k.vs_best)} point different ways for {label(k.row)} against the best "
                         f"(ratios {d}): the answer depends on the statistic")
    if len(found) > 3:
        rec.notes.append(f"{len(found) - 3} more candidate(s) whose statistics point different ways (see each one's intervals)")


def comparison_text(k: Candidate) -> str:
    """How a ranked candidate compares with the best (terminal and HTML)."""
    if k.rank == 1:
        return "best"
    cis = "; ".join(ci.describe() for ci in k.vs_best)
    if k.same_compute:
        return f"tie: {SAME_COMPUTE}" + (f"; {cis}" if cis else "")
    if k.vs_best:
        return (f"tie ({k.tie_reason}): " if k.tied else "worse: ") + cis
    if k.tied and k.tie_reason != EQUAL_VALUE:  # a statistic without samples to resample (tie_reason says why)
        return f"tie ({k.tie_reason}): no interval"
    return f"tie: {EQUAL_VALUE}" if k.tied else "worse (point estimate, no interval)"


def format_text(recs: list[Recommendation]) -> str:
    """What ``edgebench recommend`` prints."""
    out: list[str] = []
    for rec in recs:
        obj = rec.objective
        better = "lower" if obj.lower_is_better else "higher"
        out.append(f"target {rec.target} · model {rec.model} · run {rec.run_id}")
        out.append(f"objective: {obj.label} ({better} is better); constraints: {rec.constraints.describe()}")
        out.append(rec.headline())
        if rec.best is not None:
            b = rec.best.row
            if rec.verdict == "tie":
                out.append(f"  ranked first: {label(b)}")
            out.append(f"  {obj.label} {format_value(obj, rec.best.value)}; top-1 {_pct(b.top1)} ({delta_text(rec.best.drop_pts)} pts vs {rec.best.reference}); "
                       f"peak RSS {_mib(b.peak_rss_mib) if b.peak_rss_mib is not None else '-'}; size {format_value(OBJECTIVES['size'], b.size_bytes)}")
            verdict = {"win": "WIN", "tie": "TIE", "sole": "only candidate"}[rec.verdict]
            margin = describe_margin(rec)
            out.append(f"verdict: {verdict}" + (f"; {margin}" if margin else ("; every candidate ties" if rec.verdict == "tie" else "")))
        for n in rec.notes:
            out.append(f"note: {n}")
        if rec.candidates:
            out.append("candidates (ranked):")
            for k in rec.candidates:
                cmp = comparison_text(k)
                out.append(f"  {k.rank:>2}. {label(k.row)}: {format_value(obj, k.value)}, top-1 {_pct(k.row.top1)} ({delta_text(k.drop_pts)} pts) - {cmp}")
        if rec.excluded:
            out.append("excluded:")
            for e in rec.excluded:
                out.append(f"  - {label(e.row)}: {e.reason}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
