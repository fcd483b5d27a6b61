"""The history of one cell across runs, and the change points in it.

A nightly series of a cell's median latency is split into segments with ruptures' PELT on the log of the
values, with the L1 (least absolute deviation) cost: a segment's level is its median, so one wild night
barely moves it. Segments have at least ``min_size`` runs (default 3), so a one-night blip can never be
a segment of its own; a short segment (up to ``transient`` runs) between two segments at the same level is
a blip too and is merged away, as is a change point whose segments differ by less than ``min_effect``. The penalty scales with the series' own noise (a robust standard deviation from
night-to-night differences) and the log of its length, so the same settings fit a quiet board and a
noisy one. What is left is a real step, dated to the first run of the new level.

Contended or throttled runs are shown but left out of the fit by default: their numbers say more about
the neighbours than about the change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgebench.bench.contracts.identity import CellId
from edgebench.bench.store import CellRecord, RunRecord, Store
from edgebench.reports.compare import disturbance

METRICS = ("p50", "p90")


@dataclass
class HistoryPoint:
    run_id: str
    created_at: str
    git_commit: str | None
    status: str
    value_ms: float | None  # the metric (p50 or p90 per batch)
    cov: float | None = None
    n: int | None = None
    disturbed: str | None = None
    used: bool = False  # part of the change-point fit
    segment: int | None = None


@dataclass
class ChangePoint:
    index: int  # into History.points: the first run of the new level
    run_id: str
    created_at: str
    git_commit: str | None
    before_ms: float
    after_ms: float

    @property
    def ratio(self) -> float:
        return self.after_ms / self.before_ms

    def describe(self) -> str:
        commit = f" (commit {self.git_commit[:12]})" if self.git_commit else ""
        return f"{self.ratio - 1:+.1%} from run {self.run_id}{commit}, {self.created_at[:10]}: {self.before_ms:.4g} -> {self.after_ms:.4g} ms"


@dataclass
class History:
    cell: dict[str, Any]  # the cell's identity as data (CellId's fields)
    metric: str
    points: list[HistoryPoint] = field(default_factory=list)
    change_points: list[ChangePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> CellId:
        return CellId(**self.cell)

    @property
    def label(self) -> str:
        return self.id.key

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for cp, d in zip(self.change_points, data["change_points"]):
            d["ratio"] = cp.ratio
        return data


def robust_sigma(y: np.ndarray) -> float:
    """Noise of a series from its first differences (MAD / 0.6745 / sqrt 2): steps barely move it."""
    if y.size < 3:
        return 0.0
    d = np.diff(y)
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / math.sqrt(2))


def _segment_medians(y: np.ndarray, starts: list[int]) -> list[float]:
    edges = [0, *starts, y.size]
    return [float(np.median(y[a:b])) for a, b in zip(edges, edges[1:])]


def change_points(values: list[float] | np.ndarray, min_effect: float = 0.05, min_size: int = 3, beta: float = 3.0,
                  transient: int = 3) -> list[int]:
    """Indices where a new level starts in a positive series (e.g. nightly median latencies).

    PELT (ruptures, L1 cost) on log values with penalty ``beta * sigma * log(n)``; then change points whose
    neighbouring segment medians differ by less than ``min_effect`` are removed, smallest first, and so are
    excursions of at most ``transient`` runs that come back to the level before them.
    """
    import ruptures as rpt

    y = np.log(np.asarray(values, dtype=np.float64))
    n = y.size
    if n < 2 * min_size:
        return []
    sigma = max(robust_sigma(y), 1e-3)  # a perfectly flat series still needs a positive penalty
    algo = rpt.Pelt(model="l1", min_size=min_size, jump=1).fit(y.reshape(-1, 1))
    starts = [b for b in algo.predict(pen=beta * sigma * math.log(n)) if b < n]
    while starts:
        meds = _segment_medians(y, starts)
        steps = [abs(meds[i + 1] - meds[i]) for i in range(len(starts))]
        i = int(np.argmin(steps))
        if steps[i] >= math.log1p(min_effect):
            break
        del starts[i]
    return _without_transients(y, starts, min_effect, transient)


def _without_transients(y: np.ndarray, starts: list[int], min_effect: float, transient: int) -> list[int]:
    """Drop both ends of a short inner segment whose neighbours are at one level (up and back down is a blip)."""
    changed = True
    while changed:
        changed = False
        edges = [0, *starts, y.size]
        meds = _segment_medians(y, starts)
        for k in range(1, len(meds) - 1):
            if edges[k + 1] - edges[k] <= transient and abs(meds[k + 1] - meds[k - 1]) < math.log1p(min_effect):
                del starts[k - 1:k + 1]
                changed = True
                break
    return starts


def _point(run: RunRecord, cell: CellRecord, metric: str) -> HistoryPoint:
    lat = cell.result.latency if cell.result and cell.status == "ok" else None
    value = getattr(lat, f"{metric}_ms") if lat else None
    return HistoryPoint(run.id, run.created_at.isoformat(), run.git_commit, cell.status, value,
                        cov=lat.cov if lat else None, n=lat.n if lat else None, disturbed=disturbance(cell))


def build(cell: dict[str, Any], rows: list[tuple[RunRecord, CellRecord]], metric: str = "p50", min_effect: float = 0.05,
          include_disturbed: bool = False, min_size: int = 3, beta: float = 3.0) -> History:
    """A History from stored (run, cell) pairs, oldest first, with its change points."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    hist = History(cell, metric, [_point(r, c, metric) for r, c in rows])
    used = [i for i, p in enumerate(hist.points) if p.value_ms is not None and (include_disturbed or not p.disturbed)]
    for i in used:
        hist.points[i].used = True
    left_out = sum(1 for p in hist.points if p.value_ms is not None and not p.used)
    if left_out:
        hist.notes.append(f"{left_out} contended/throttled run(s) shown but left out of the change-point fit")
    values = [hist.points[i].value_ms for i in used]
    if len(values) < 2 * min_size:
        hist.notes.append(f"{len(values)} usable run(s): change points need at least {2 * min_size}")
        return hist
    try:
        starts = change_points(values, min_effect=min_effect, min_size=min_size, beta=beta)
    except ImportError:  # reports are written after every run; a device-side install may lack the regress extra
        hist.notes.append("change points need ruptures: pip install 'edgebench[regress]'")
        return hist
    meds = [math.exp(m) for m in _segment_medians(np.log(np.asarray(values)), starts)]
    segment = 0
    for j, i in enumerate(used):
        if segment < len(starts) and j >= starts[segment]:
            segment += 1
        hist.points[i].segment = segment
    for s, j in enumerate(starts):
        p = hist.points[used[j]]
        hist.change_points.append(ChangePoint(used[j], p.run_id, p.created_at, p.git_commit, meds[s], meds[s + 1]))
    return hist


def load(store: Store, model: str, recipe: str, backend: str, precision: str, batch: int, target: str, metric: str = "p50",
         until: str | None = None, limit: int = 200, **kwargs: Any) -> History:
    """The stored history of one cell (up to run ``until``), with change points."""
    cell = CellId(model, recipe, backend, precision, batch, target)
    return build(asdict(cell), store.cell_history(*cell.parts(), until=until, limit=limit), metric, **kwargs)


def for_run(store: Store, run_id: str, cells: list[Any], metric: str = "p50", limit: int = 60) -> dict[str, History]:
    """History up to ``run_id`` of each measured cell of that run (CellRecords or report Rows) that ran in at least one earlier run."""
    out = {}
    for c in cells:
        if c.status != "ok":
            continue
        h = load(store, *CellId.of(c).parts(), metric, until=run_id, limit=limit)
        if len(h.points) >= 2:
            out[c.cell_key] = h
    return out
