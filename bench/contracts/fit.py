"""What ``edgebench fit`` works with and produces: channel groups, the latency lookup table measured on
the target, per-group sensitivity, plans, the committed steps and the fit's result.

Plain dataclasses (JSON through :func:`to_data` / ``from_data``) shared by the host algorithms
(``models/fit.py``), the orchestrator (``bench/fit.py``), the store (``latency_tables``) and the
report (``reports/fit.py``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from edgebench.bench.contracts.errors import ConfigError

# A fit is within its budget when its p50 is at most the budget and the p50's 95% interval ends at most
# 5% over it (issue 18's acceptance); the fit's status and the report's verdict both read this.
UPPER_SLACK = 1.05


@dataclass
class Group:
    """A prunable channel group (one torch-pruning dependency group): the layers whose output channels
    must shrink together (a residual stage's convs and shortcut, or one block's inner conv)."""

    name: str                  # the group's root layer (stable across pruning: layer names do not change)
    width: int                 # channels in the dense model
    layers: list[str] = field(default_factory=list)


@dataclass
class LatencyPoint:
    """One measured model of the table: the dense model with ``group`` at ``width`` channels (``group``
    None: the dense model itself; ``"*"``: every group at its narrowest candidate)."""

    group: str | None
    width: int
    p50_ms: float
    p90_ms: float
    n: int                     # samples
    processes: int
    cell_key: str              # the cell in the store run that measured it
    flags: list[str] = field(default_factory=list)  # flag codes the measurement carried
    widths: dict[str, int] = field(default_factory=dict)  # the plan measured: every pruned group's width


@dataclass
class LatencyTable:
    """Latency vs width per group, measured on one target with one backend/precision/batch/threads.

    Keyed by :attr:`key` (target fingerprint + runtime version + model + settings), stored in the store's
    ``latency_tables`` and reused by later fits with the same key."""

    key: str
    target: str
    fingerprint: dict[str, Any]   # what identifies the device: machine, CPU, cores, the runtime's version
    model: str
    model_key: str                # the dense model's content hash
    backend: str
    backend_version: str
    precision: str
    batch: int
    threads: int | None
    granularity: int              # candidate widths are multiples of this (measured: see granularity_probe)
    granularity_probe: dict[str, Any] = field(default_factory=dict)  # group, widths -> p50, the choice's reason
    dense_ms: float = 0.0
    narrowest_ms: float | None = None
    points: list[LatencyPoint] = field(default_factory=list)
    uniform: dict[str, float] = field(default_factory=dict)  # uniform channel pruning ratio -> p50 (the same-latency comparison)
    dense_process_p50_ms: list[float] = field(default_factory=list)  # the dense model's per-process medians: the table's noise floor
    uniform_widths: dict[str, dict[str, int]] = field(default_factory=dict)  # ratio -> the uniform plan's widths
    narrowest_widths: dict[str, int] = field(default_factory=dict)
    run_id: str = ""              # the store run whose cells measured it
    created_at: str = ""
    build_s: float = 0.0

    def latency(self, group: str, width: int) -> float | None:
        """The measured p50 with ``group`` at ``width`` (the dense p50 at its full width; None: not measured)."""
        for p in self.points:
            if p.group == group and p.width == width:
                return p.p50_ms
        return None

    def widths(self, group: str) -> list[int]:
        """The widths measured for ``group``, ascending."""
        return sorted(p.width for p in self.points if p.group == group)


@dataclass
class Sensitivity:
    """The loss of pruning ``group`` alone to ``width`` (dense model, no fine-tune), on a held-out slice
    of the training split: cross-entropy increase (what the allocation minimises: smooth where top-1
    saturates) and top-1 drop in percentage points."""

    group: str
    width: int
    loss_increase: float
    top1_drop_pp: float


@dataclass
class Plan:
    """Per-group widths chosen by an allocation method, with its prediction."""

    method: str                   # "knapsack" | "greedy" | "uniform"
    widths: dict[str, int]
    predicted_ms: float
    predicted_cost: float         # summed loss increase of the chosen widths
    feasible: bool = True


@dataclass
class FitStep:
    """One committed step towards the budget: the plan, its predicted latency and the measurement."""

    index: int
    target_ms: float
    widths: dict[str, int]
    predicted_ms: float
    measured_p50_ms: float        # drift-normalised: raw_p50_ms x the table's dense p50 / the dense p50 of the step's run
    measured_p90_ms: float
    cell_key: str
    correction: float = 1.0       # the anchor: the previous plan's measured p50 / the latency model's p50 for it
    raw_p50_ms: float | None = None   # the step's own p50 in its run (measured_p50_ms is it x table dense / run_dense_ms)
    run_dense_ms: float | None = None  # the dense model's p50 in the same run (drift normalisation)

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted_ms - self.measured_p50_ms) / self.measured_p50_ms if self.measured_p50_ms else float("nan")


@dataclass
class Measured:
    """A model measured for the fit's verdict: its p50 with a 95% interval, p90 and top-1."""

    name: str                     # recipe name
    p50_ms: float
    p50_low_ms: float | None
    p50_high_ms: float | None
    p90_ms: float
    top1: float | None
    cell_key: str
    run_id: str
    processes: int = 1
    flags: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. uniform ratio, fine-tune epochs


@dataclass
class FitResult:
    """Everything ``edgebench fit`` decided and measured (the report renders this)."""

    id: str
    model: str
    target: str
    backend: str
    precision: str
    batch: int
    budget_text: str              # as given: "4ms" or "0.5x"
    budget_ms: float
    status: str                   # "fitted" | "over-budget" | "unreachable" | "accuracy-drop"
    message: str = ""
    groups: list[Group] = field(default_factory=list)
    table: LatencyTable | None = None
    table_reused: bool = False
    sensitivity: list[Sensitivity] = field(default_factory=list)
    sensitivity_reused: bool = False
    plans: list[Plan] = field(default_factory=list)
    steps: list[FitStep] = field(default_factory=list)
    recipe_name: str = ""
    recipe_path: str = ""
    dense: Measured | None = None
    fitted: Measured | None = None
    uniform: Measured | None = None
    builtin: Measured | None = None
    builtin_note: str = ""
    max_accuracy_drop_pp: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # steps, epochs, distillation, fractions
    phases_s: dict[str, float] = field(default_factory=dict)
    created_at: str = ""

    def prediction_errors(self) -> list[float]:
        """|predicted - measured| / measured of every committed step."""
        return [abs(s.error) for s in self.steps]


@dataclass
class Budget:
    """A latency budget: absolute (``ms``) or a share of the dense model's measured p50 (``factor``)."""

    text: str
    ms: float | None = None
    factor: float | None = None

    def resolve(self, dense_ms: float) -> float:
        return self.ms if self.ms is not None else dense_ms * (self.factor or 1.0)


def parse_budget(text: str) -> Budget:
    """``4ms``, ``400us`` or ``0.5x``; a one-line error otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(ms|us|µs|x)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--budget {text!r}: give a latency (e.g. 4ms, 400us) or a share of the dense model's p50 (e.g. 0.5x)")
    value, unit = float(m.group(1)), m.group(2)
    if unit == "x":
        if value >= 1:
            raise ConfigError(f"--budget {text!r}: a share of the dense latency must be below 1x (e.g. 0.5x)")
        return Budget(text.strip(), factor=value)
    return Budget(text.strip(), ms=value if unit == "ms" else value / 1000)


def to_data(obj: Any) -> Any:
    """A fit dataclass as JSON-able data (nested dataclasses become dicts)."""
    return dataclasses.asdict(obj)


def _build(cls: type, data: dict[str, Any], nested: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in data.items() if k in names}
    for k, make in nested.items():
        if kw.get(k) is not None:
            kw[k] = make(kw[k])
    return cls(**kw)


def table_from_data(data: dict[str, Any]) -> LatencyTable:
    return _build(LatencyTable, data, {"points": lambda ps: [_build(LatencyPoint, p, {}) for p in ps]})


def measured_from_data(data: dict[str, Any]) -> Measured:
    return _build(Measured, data, {})


def fit_from_data(data: dict[str, Any]) -> FitResult:
    """A :class:`FitResult` back from :func:`to_data` output (fields added later default)."""
    lists = {"groups": Group, "sensitivity": Sensitivity, "plans": Plan}
    nested: dict[str, Any] = {k: (lambda cls: lambda xs: [_build(cls, x, {}) for x in xs])(c) for k, c in lists.items()}
    nested["steps"] = lambda xs: [_build(FitStep, x, {}) for x in xs]
    nested["table"] = table_from_data
    for k in ("dense", "fitted", "uniform", "builtin"):
        nested[k] = measured_from_data
    return _build(FitResult, data, nested)
