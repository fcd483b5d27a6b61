"""``edgebench fit``: prune a model to a latency budget measured on the target.

The phases (each timed; the CLI shows a progress bar per phase):

1. **dense** - the trained dense model (the prepare cache) and its channel groups (torch-pruning's
   dependency groups: a residual stage's convs and shortcut shrink together).
2. **granularity** - one group (the widest) measured at every multiple of 4 from half its width up:
   the candidate widths are multiples of the largest granularity (16, 8, 4) at which no width in between
   measured faster than the next multiple up (within ``granularity_tolerance``); latency is not monotonic
   in width on CPU kernels.
3. **table** - the latency lookup table: the dense model with ONE group at each candidate width, the
   narrowest plan (every group at its smallest width) and uniform channel pruning at several ratios, each
   measured by the normal worker on the target (:mod:`edgebench.bench.fit_measure`). Stored in the
   store's ``latency_tables``, keyed by the target's fingerprint, the runtime's version, the dense model
   and the settings; a later fit with the same key measures none of it again.
4. **sensitivity** - per group and width, the loss of pruning that group alone, on a held-out slice of
   the training split (never the evaluation split), with BatchNorm statistics re-estimated and no
   fine-tune (a fine-tune per candidate would cost tens of epochs; re-estimating BN is what makes the
   no-fine-tune proxy rank groups usefully). Cached by content hash; the computation is bench/sensitivity.py's,
   shared with ``edgebench sensitivity``.
5. **steps** - ``steps`` commits towards the budget. Each plans per-group widths with a knapsack over
   the table (least summed loss under the step's latency target; the greedy NetAdapt-style plan is
   computed beside it for the report), predicts the plan's latency and measures the plan on the target.
   Channel cost is a product of input and output widths, so one-group deltas do not add up when several
   groups shrink; each step's prediction therefore starts from the previous step's *measurement* and
   scales the table's deltas by the ratio measured/predicted saving seen so far.
6. **fine-tune + verdict** - the fitted recipe (``channel_widths``: every step's widths, fine-tuning with
   distillation between steps and after the last) is written as YAML and built through the normal prepare
   cache, so ``edgebench run`` with that recipe reuses it. Dense, fitted and uniform channel pruning at the
   same measured latency (same schedule and epochs) are measured together for the verdict; the best
   built-in recipe within the fitted latency comes from the latest stored run of the same cells.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.bench import sensitivity as sensitivity_lib
from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.contracts.fit import UPPER_SLACK, Budget, FitResult, FitStep, Group, LatencyPoint, LatencyTable, Measured, Plan, Sensitivity
from edgebench.bench.contracts.flags import CODES, VALIDITY
from edgebench.bench.fit_measure import Measurer, Where, safe_name, widths_recipe, write_recipe
from edgebench.bench.prepare import Preparer
from edgebench.bench.runner import Paths, new_run_id
from edgebench.bench.store import CellRecord, Store, now
from edgebench.models import recipes as recipe_lib
from edgebench.models.cache import Cache, content_key

TABLE_VERSION = 3  # bump when what a table point means changes (its key then changes); 2: per-group granularity; 3: points keep their plan


def _measure(min_seconds: float, processes: int) -> dict[str, Any]:
    return {"warmup_runs": 10, "warmup_seconds": 0.2, "min_runs": 100, "min_seconds": min_seconds, "processes": processes}


@dataclass
class FitOptions:
    """How a fit runs (defaults: the issue's acceptance setting on a 2-core board)."""

    backend: str = "onnxruntime"
    precision: str = "fp32"
    batch: int = 1
    targets_file: Path | None = None
    threads: int | None = None
    max_accuracy_drop_pp: float | None = 1.0
    steps: int = 3
    epochs_per_step: int = 1
    finetune_epochs: int = 3
    lr: float = 0.01
    distill: bool = True
    fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    uniform_ratios: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75)
    granularities: tuple[int, ...] = (16, 8, 4)
    granularity_tolerance: float = 0.03
    margin: float = 0.95          # the last step aims this far under the budget (room for the interval)
    extra_steps: int = 2          # more steps when the last one measured over the budget
    table_measure: dict[str, Any] = field(default_factory=lambda: _measure(1.0, 2))
    # a committed step is the prediction's check: 6 processes (one process's mode moved a step's p50 by 30% here)
    step_measure: dict[str, Any] = field(default_factory=lambda: _measure(3.0, 6))
    # 6 processes: the verdict's p50 interval (Student, P - 1 df) is about +-6% here where 3 give +-15%
    verdict_measure: dict[str, Any] = field(default_factory=lambda: _measure(3.0, 6))
    executor: str = "inprocess"   # "ray": the sensitivity of each group as a Ray task (bench/executor.py); same rows
    ray_address: str | None = None  # with executor ray: an existing cluster; a local one is started otherwise

    def make_quick(self) -> FitOptions:
        """Short measurements (0.2 s per point): for trying a fit or testing it, not for decisions."""
        self.table_measure = self.step_measure = self.verdict_measure = {"warmup_runs": 5, "warmup_seconds": 0.05, "min_runs": 30,
                                                                         "min_seconds": 0.2, "processes": 2, "quiet_wait_s": 0.5}
        return self

    def finetune(self) -> dict[str, Any]:
        ft: dict[str, Any] = {"epochs": self.finetune_epochs, "lr": self.lr}
        if self.distill:
            ft["distill"] = {"temperature": 4.0, "alpha": 0.5}
        return ft


class Fitter:
    """Runs fits into a home: the store (tables, fits, the measuring runs), the cache, the fit folders."""

    def __init__(self, paths: Paths, log: Callable[[str], None] = print, progress: Any = None,
                 on_phase: Callable[[str], None] | None = None) -> None:
        self.paths = paths
        self.log = log
        self.progress = progress
        self.on_phase = on_phase or (lambda name: None)
        self.store = Store(paths.store_location)
        self.preparer = Preparer(Cache(paths.cache), log=log)
        self._phases: dict[str, float] = {}
        self._mac_cache: dict[tuple[tuple[str, int], ...], dict[str, float]] = {}
        self._predictor_of: tuple[LatencyTable, Predictor] | None = None
        self._dense_module: Any = None
        self._example: Any = None

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        self.on_phase(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._phases[name] = self._phases.get(name, 0.0) + time.perf_counter() - t0

    # -- the whole fit ---------------------------------------------------------------------
    def fit(self, model: str, target: str, budget: Budget, opts: FitOptions | None = None) -> FitResult:
        """Fit ``model`` to ``budget`` on ``target``; the result is stored and returned (status
        ``fitted``, ``over-budget``, ``accuracy-drop`` or ``unreachable``)."""
        opts = opts or FitOptions()
        self._phases = {}
        fit_id = "fit-" + new_run_id()
        folder = self.paths.home / "fits" / fit_id
        where = Where(model, target, opts.backend, opts.precision, opts.batch, opts.targets_file, opts.threads)
        measurer = Measurer(self.paths, where, folder, self.log, self.progress)
        with self._phase("dense"):
            dense_entry, module, data, groups = self._dense(model)
        self._dense_module, self._example, self._mac_cache = module, data.x_test[:1], {}
        result = FitResult(fit_id, model, target, opts.backend, opts.precision, opts.batch, budget.text, 0.0, "fitted",
                           groups=groups, max_accuracy_drop_pp=opts.max_accuracy_drop_pp, created_at=now().isoformat(),
                           settings=_settings(opts))
        table, result.table_reused = self._table(where, dense_entry.key, module, groups, measurer, opts)
        result.table = table
        if spread := process_spread(table):
            result.message = spread
            self.log(f"fit: {spread}")
        result.budget_ms = budget.resolve(table.dense_ms)
        candidates = {g.name: [w for w in table.widths(g.name) if w < g.width and w % group_granularity(g.width, table.granularity, opts.granularities) == 0]
                      for g in groups}
        with self._phase("sensitivity"):
            result.sensitivity, result.sensitivity_reused = self._sensitivity(dense_entry, module, groups, candidates, data, opts)
        costs = {(s.group, s.width): s.loss_increase for s in result.sensitivity}
        result.plans = self._plans(table, groups, candidates, costs, result.budget_ms, opts)
        result.settings["latency_model"] = self._predictor(table, {g.name: g.width for g in groups}).summary()
        if table.narrowest_ms is not None and table.narrowest_ms > result.budget_ms:
            result.status = "unreachable"
            result.message = "; ".join(filter(None, [f"budget {budget.text} = {result.budget_ms:.4g} ms cannot be met on {target}: the narrowest plan (every group at its "
                              f"smallest candidate width) measures {table.narrowest_ms:.4g} ms; the best reachable latency is about "
                              f"{table.narrowest_ms:.4g} ms (dense {table.dense_ms:.4g} ms)", result.message]))
            return self._finish(result)
        with self._phase("steps"):
            result.steps = self._steps(table, groups, candidates, costs, result.budget_ms, measurer, opts)
        if not result.steps:  # nothing to commit: the dense model is within the budget already
            result.message = "; ".join(filter(None, [f"the dense model ({table.dense_ms:.4g} ms) already meets the budget {budget.text} = "
                                                     f"{result.budget_ms:.4g} ms on {target}: nothing to prune", result.message]))
            return self._finish(result)
        with self._phase("fine-tune + verdict"):
            self._verdict(result, budget, where, measurer, opts)
        return self._finish(result)

    def _finish(self, result: FitResult) -> FitResult:
        result.phases_s = dict(self._phases)
        self.store.save_fit(result)
        return result

    # -- 1. dense model and groups ---------------------------------------------------------
    def _dense(self, model: str) -> tuple[Any, Any, Any, list[Group]]:
        import torch

        from edgebench.models import fit as fitlib

        spec = self.preparer.spec(model)
        if spec.given() is not None or spec.torchscript:
            raise ConfigError(f"fit {model}: needs a PyTorch model to prune (a zoo model or a factory), not a given file")
        data = self.preparer.dataset(spec.dataset, spec.input_size)
        if not data.has_labels:
            raise ConfigError(f"fit {model}: its dataset {spec.dataset!r} has no labels; sensitivity needs labelled training data")
        entry = self.preparer.dense(model)
        module = self.preparer.module_of(entry)
        groups = fitlib.channel_groups(module, torch.from_numpy(data.x_test[:1]))
        if not groups:
            raise ConfigError(f"fit {model}: no prunable channel group (every layer is the classifier or fixed)")
        return entry, module, data, groups

    # -- 2-3. the latency table -------------------------------------------------------------
    def _table(self, where: Where, model_key: str, module: Any, groups: list[Group], measurer: Measurer,
               opts: FitOptions) -> tuple[LatencyTable, bool]:
        """The stored table for this key, or a new one measured on the target (and stored)."""
        fingerprint = self._fingerprint(where)
        key = table_key(where, model_key, fingerprint, opts)
        found = self.store.latency_table(key)
        if found is not None:
            self.log(f"fit: latency table {key[:12]} reused (measured {found.created_at} in run {found.run_id})")
            return found, True
        t0 = time.perf_counter()
        with self._phase("granularity"):
            gran, probe, probe_points = self._granularity(groups, measurer, opts)
        with self._phase("table"):
            table = self._measure_table(where, key, model_key, fingerprint, groups, gran, probe, probe_points, measurer, opts)
        table.build_s = time.perf_counter() - t0
        self.store.save_latency_table(table)
        return table, False

    def _fingerprint(self, where: Where) -> dict[str, Any]:
        """What identifies the target for the table's key: its probe's machine facts and the runtime's version."""
        import asyncio

        from edgebench.targets.profiles import load_profiles
        from edgebench.targets.transport import make_transport

        profile = load_profiles(where.targets_file).get(where.target)
        transport = make_transport(profile, "fit-probe", self.paths.home / "fits" / "probe")

        async def probe() -> dict[str, Any]:
            await transport.open()
            try:
                return await transport.probe()
            finally:
                await transport.close()

        fp = asyncio.run(probe())
        backend = (fp.get("backends") or {}).get(where.backend) or {}
        if not backend.get("available"):
            raise ConfigError(f"fit: {where.backend} is not available on target {where.target}: {backend.get('reason', 'not probed')}")
        keep = ("hostname", "board_model", "cpu_model", "machine", "logical_cpus", "memory_total_mib", "os", "kernel")
        return {"target": where.target, **{k: fp.get(k) for k in keep}, "backend_version": backend.get("version")}

    def _granularity(self, groups: list[Group], measurer: Measurer, opts: FitOptions) -> tuple[int, dict[str, Any], list[LatencyPoint]]:
        widest = max(groups, key=lambda g: g.width)
        widths = [w for w in range(max(4, widest.width // 2), widest.width, 4)]
        if not widths:
            return min(opts.granularities), {"group": widest.name, "reason": f"group {widest.name} is too narrow ({widest.width}) to probe"}, []
        recipes = [widths_recipe(point_name(widest.name, w), [{widest.name: w}]) for w in widths] + [recipe_lib.load("dense")]
        recs = measurer.measure("granularity", recipes, opts.table_measure)
        lat = {w: _p50(recs[point_name(widest.name, w)]) for w in widths}
        lat[widest.width] = _p50(recs["dense"])
        gran, reason = choose_granularity(lat, widest.width, opts.granularities, opts.granularity_tolerance)
        points = [_point(widest.name, w, recs[point_name(widest.name, w)]) for w in widths]
        probe = {"group": widest.name, "p50_ms": {str(w): v for w, v in sorted(lat.items())}, "reason": reason, "run_id": measurer.runs[-1]}
        self.log(f"fit: granularity {gran} ({reason})")
        return gran, probe, points

    def _measure_table(self, where: Where, key: str, model_key: str, fingerprint: dict[str, Any], groups: list[Group], gran: int,
                       probe: dict[str, Any], probe_points: list[LatencyPoint], measurer: Measurer, opts: FitOptions) -> LatencyTable:
        from edgebench.models import fit as fitlib

        probed = {(p.group, p.width) for p in probe_points}
        cands = {g.name: fitlib.candidate_widths(g.width, group_granularity(g.width, gran, opts.granularities), opts.fractions) for g in groups}
        recipes = [recipe_lib.load("dense")]
        recipes += [widths_recipe(point_name(g, w), [{g: w}]) for g, ws in cands.items() for w in ws if (g, w) not in probed]
        narrowest = {g: min(ws) for g, ws in cands.items() if ws}
        recipes.append(widths_recipe("lut-narrowest", [narrowest]))
        uniform_plans = {r: uniform_widths(groups, r, gran, opts.granularities) for r in opts.uniform_ratios}
        uniform = {r: widths_recipe(f"lut-uniform-{round(r * 100)}", [w]) for r, w in uniform_plans.items()}
        recipes += list(uniform.values())
        recs = measurer.measure("table", recipes, opts.table_measure)
        points = [_point(None, 0, recs["dense"])] + probe_points
        points += [_point(g, w, recs[point_name(g, w)]) for g, ws in cands.items() for w in ws if (g, w) not in probed]
        points.append(_point("*", 0, recs["lut-narrowest"], narrowest))
        table = LatencyTable(key=key, target=where.target, fingerprint=fingerprint, model=where.model, model_key=model_key,
                             backend=where.backend, backend_version=str(fingerprint.get("backend_version")), precision=where.precision,
                             batch=where.batch, threads=where.threads, granularity=gran, granularity_probe=probe,
                             dense_ms=_p50(recs["dense"]), narrowest_ms=_p50(recs["lut-narrowest"]), points=points,
                             run_id=measurer.runs[-1], created_at=now().isoformat())
        table.uniform = {f"{r:g}": _p50(recs[u.name]) for r, u in uniform.items()}
        table.uniform_widths = {f"{r:g}": w for r, w in uniform_plans.items()}
        table.narrowest_widths = narrowest
        table.dense_process_p50_ms = list(recs["dense"].result.process_p50_ms or [])
        return table

    # -- 4. sensitivity ---------------------------------------------------------------------
    def _sensitivity(self, dense_entry: Any, module: Any, groups: list[Group], candidates: dict[str, list[int]],
                     data: Any, opts: FitOptions | None = None) -> tuple[list[Sensitivity], bool]:
        """Each group pruned alone at each candidate width: the computation ``edgebench sensitivity``
        shares (bench/sensitivity.py), cached under the same key as before it was shared."""
        import torch

        executor, address = (opts.executor, opts.ray_address) if opts is not None else ("inprocess", None)
        got = sensitivity_lib.compute(Cache(self.paths.cache), dense_entry.key, module, torch.from_numpy(data.x_test[:1]), groups, candidates,
                                      data, executor=executor, ray_address=address, log=self.log)
        self.log(f"fit: sensitivity {'cached' if got.hit else 'computed'} ({got.key[:8]}) on {got.holdout_images} held-out training images")
        return [s.sensitivity() for s in got.rows], got.hit

    # -- 5. steps -----------------------------------------------------------------------------
    def _plans(self, table: LatencyTable, groups: list[Group], candidates: dict[str, list[int]], costs: dict[tuple[str, int], float],
               budget_ms: float, opts: FitOptions) -> list[Plan]:
        """Knapsack and greedy on the dense-based table for the final budget (the report compares them)."""
        from edgebench.models import fit as fitlib

        full = {g.name: g.width for g in groups}
        options = self._predictor(table, full).options(full, candidates, costs)
        target = budget_ms * opts.margin
        return [fitlib.plan_knapsack(table.dense_ms, options, target), fitlib.plan_greedy(table.dense_ms, options, target)]

    def _steps(self, table: LatencyTable, groups: list[Group], candidates: dict[str, list[int]], costs: dict[tuple[str, int], float],
               budget_ms: float, measurer: Measurer, opts: FitOptions) -> list[FitStep]:
        """Commit ``opts.steps`` plans towards the budget (more, up to ``extra_steps``, while the last one
        measures over it); each is measured on the target beside the dense model (drift-normalised)."""
        full = {g.name: g.width for g in groups}
        predictor = self._predictor(table, full)
        current, anchor = dict(full), table.dense_ms
        goal = budget_ms * opts.margin
        steps: list[FitStep] = []
        for k in range(1, opts.steps + opts.extra_steps + 1):
            if k <= opts.steps:
                target = table.dense_ms - (table.dense_ms - goal) * k / opts.steps
            else:  # the last planned step measured over the budget: aim lower by what it missed
                target = goal * (goal / steps[-1].measured_p50_ms)
            plan, predicted = self._plan_step(predictor, table, full, current, anchor, candidates, costs, target)
            if plan.widths == current:
                break  # nothing narrower to commit
            step = self._commit(k, target, plan.widths, predicted, predictor.anchor(current, anchor), table, measurer, opts)
            steps.append(step)
            self.log(f"fit step {k}: target {target:.4g} ms, predicted {step.predicted_ms:.4g} ms, measured {step.measured_p50_ms:.4g} ms "
                     f"({step.error:+.1%}; raw {step.raw_p50_ms:.4g} ms beside dense {step.run_dense_ms:.4g} ms)")
            current, anchor = plan.widths, step.measured_p50_ms
            if k >= opts.steps and (anchor <= budget_ms or not plan.feasible):
                break
        return steps

    def _plan_step(self, predictor: Predictor, table: LatencyTable, full: dict[str, int], current: dict[str, int], anchor: float,
                   candidates: dict[str, list[int]], costs: dict[tuple[str, int], float], target: float) -> tuple[Plan, float]:
        """The knapsack plan whose *predicted* latency meets ``target``: the knapsack works on one-group
        deltas (which overstate a joint saving), so its target is tightened by the predicted shortfall
        until the predictor says the plan meets the step's target (at most 8 rounds; else the fastest)."""
        from edgebench.models import fit as fitlib

        options = predictor.options(current, candidates, costs)
        asked, best = target, None
        for _ in range(8):
            plan = fitlib.plan_knapsack(anchor, options, asked)
            predicted = predictor.anchored(plan.widths, current, anchor)
            if best is None or (predicted <= target * 1.01) or predicted < best[1]:
                best = (plan, predicted)
            if predicted <= target * 1.01 or not plan.feasible:
                break
            asked -= predicted - target
        return best

    def _commit(self, k: int, target: float, widths: dict[str, int], predicted: float, anchor: float, table: LatencyTable,
                measurer: Measurer, opts: FitOptions) -> FitStep:
        """Measure a step's plan in one run with the dense model: run-to-run drift on a shared machine (10-15%
        here) is larger than a step's saving, so the step's p50 is expressed in the table's dense units."""
        name = step_name(k, widths)
        recs = measurer.measure(f"step{k}", [recipe_lib.load("dense"), widths_recipe(name, [widths])], opts.step_measure)
        raw, run_dense = _p50(recs[name]), _p50(recs["dense"])
        scale = table.dense_ms / run_dense if run_dense > 0 else 1.0
        return FitStep(k, target, widths, predicted, raw * scale, _p90(recs[name]) * scale, recs[name].cell_key, anchor,
                       raw_p50_ms=raw, run_dense_ms=run_dense)

    def _predictor(self, table: LatencyTable, full: dict[str, int]) -> Predictor:
        if self._predictor_of is None or self._predictor_of[0] is not table:
            self._predictor_of = (table, Predictor(table, full, self._features))
        return self._predictor_of[1]

    def _features(self, widths: dict[str, int]) -> dict[str, float]:
        """MACs per output resolution of the dense model with ``widths`` (cached: plans recur)."""
        import torch

        from edgebench.models import fit as fitlib

        key = tuple(sorted(widths.items()))
        if key not in self._mac_cache:
            self._mac_cache[key] = fitlib.stage_macs(self._dense_module, torch.from_numpy(self._example), widths)
        return self._mac_cache[key]

    # -- 6. fine-tune and the verdict -------------------------------------------------------
    def _verdict(self, result: FitResult, budget: Budget, where: Where, measurer: Measurer, opts: FitOptions) -> None:
        table = result.table
        name = safe_name(f"fit-{where.model}-{where.backend}-{where.precision}-b{where.batch}-{where.target}-{result.budget_text}")
        widths = [s.widths for s in result.steps]
        description = (f"fitted by edgebench fit {result.id}: {where.model} to {result.budget_text} ({result.budget_ms:.4g} ms) on {where.target}, "
                       f"{where.backend}/{where.precision}/b{where.batch}; per-group kept channels "
                       + ", ".join(f"{g.name} {widths[-1].get(g.name, g.width)}/{g.width}" for g in result.groups))
        fitted = widths_recipe(name, widths, description, opts.epochs_per_step, opts.finetune())
        # fits/recipes/NAME.yaml is the one `edgebench run` suites name (a re-fit replaces it); the fit's folder keeps its own
        write_recipe(fitted, self.paths.home / "fits" / result.id / "recipe.yaml")
        path = write_recipe(fitted, self.paths.home / "fits" / "recipes" / f"{name}.yaml")
        result.recipe_name, result.recipe_path = name, str(path)
        ratios = uniform_ratios_near(table.uniform, result.steps[-1].measured_p50_ms)
        uniforms = {r: widths_recipe(f"uniform-{round(r * 100)}-{len(widths)}x{opts.epochs_per_step}+{opts.finetune_epochs}",
                                     [uniform_widths(result.groups, r * k / len(widths), table.granularity, opts.granularities)
                                      for k in range(1, len(widths) + 1)],
                                     f"uniform channel pruning: every group keeps {1 - r:.0%} of its channels, in {len(widths)} steps",
                                     opts.epochs_per_step, opts.finetune()) for r in ratios}
        recs = measurer.measure("verdict", [recipe_lib.load("dense"), fitted, *uniforms.values()], opts.verdict_measure)
        # the same epochs for both: (steps - 1) x epochs_per_step between the steps, finetune_epochs after the last
        detail = {"fine_tune_epochs": (len(widths) - 1) * opts.epochs_per_step + opts.finetune_epochs, "distill": opts.distill, "steps": len(widths)}
        run_id = measurer.runs[-1]
        result.dense = _measured("dense", recs["dense"], run_id, {})
        result.fitted = _measured(name, recs[name], run_id, detail)
        if budget.factor is not None:  # a share of the dense p50: the dense measured in the same run as the fitted model
            result.settings["planning_budget_ms"] = result.budget_ms
            result.budget_ms = budget.factor * result.dense.p50_ms
        # uniform pruning at the same measured latency: of the ratios measured in this run, the closest to the fitted p50
        ratio = min(ratios, key=lambda r: abs(_p50(recs[uniforms[r].name]) - result.fitted.p50_ms))
        tried = {f"{r:g}": {"p50_ms": round(_p50(recs[u.name]), 5), "top1": _top1(recs[u.name])} for r, u in uniforms.items()}
        result.uniform = _measured(uniforms[ratio].name, recs[uniforms[ratio].name], run_id, {**detail, "ratio": ratio, "ratios_measured": tried})
        result.builtin, result.builtin_note = self._best_builtin(where, result.fitted.p50_ms)
        result.status = status_of(result)

    def _best_builtin(self, where: Where, fitted_ms: float) -> tuple[Measured | None, str]:
        """The most accurate recipe of the latest stored run of these cells (not a fit's) within the fitted latency."""
        for run in self.store.runs(limit=50):
            if run.status != "finished":
                continue
            cells = [c for c in self.store.cells(run.id, with_samples=False)
                     if (c.model, c.backend, c.precision, c.batch, c.target) == (where.model, where.backend, where.precision, where.batch, where.target)
                     and c.status == "ok" and c.result is not None and c.result.latency is not None and not c.recipe.startswith("fit-")]
            if not cells:
                continue
            within = [c for c in cells if c.result.latency.p50_ms <= fitted_ms * 1.05 and c.recipe != "dense"]
            if not within:
                fastest = min(cells, key=lambda c: c.result.latency.p50_ms)
                return None, (f"no built-in recipe of run {run.id} is within the fitted latency {fitted_ms:.4g} ms (+5%): the fastest, "
                              f"{fastest.recipe}, measured {fastest.result.latency.p50_ms:.4g} ms")
            best = max(within, key=lambda c: (_top1(c) or 0.0, -c.result.latency.p50_ms))
            return _measured(best.recipe, best, run.id, {}), ""
        return None, (f"no stored run measured {where.model} on {where.target} with {where.backend}/{where.precision}/b{where.batch}; "
                      "run a suite with those cells (e.g. `edgebench run` with the resnet20 suite) to compare with the built-in recipes")


# -- pure helpers (tested on their own) -------------------------------------------------------

def point_name(group: str, width: int) -> str:
    return safe_name(f"lut-{group}-{width}")


def step_name(k: int, widths: dict[str, int]) -> str:
    digest = hashlib.sha256(json.dumps(widths, sort_keys=True).encode()).hexdigest()[:8]
    return f"fit-step{k}-{digest}"


def table_key(where: Where, model_key: str, fingerprint: dict[str, Any], opts: FitOptions) -> str:
    """The table's identity: target fingerprint + runtime version + dense model + what was measured and how."""
    return content_key({"version": TABLE_VERSION, "fingerprint": fingerprint, "model": where.model, "model_key": model_key,
                        "backend": where.backend, "precision": where.precision, "batch": where.batch, "threads": where.threads,
                        "fractions": list(opts.fractions), "granularities": list(opts.granularities), "uniform": list(opts.uniform_ratios),
                        "measure": opts.table_measure})


def choose_granularity(lat: dict[int, float], full: int, granularities: tuple[int, ...], tolerance: float) -> tuple[int, str]:
    """The largest granularity at which most probed widths between two multiples did not measure faster
    than the next multiple up (by more than ``tolerance``): rounding up to it then costs no latency."""
    for g in sorted(granularities, reverse=True):
        ups = {w: (w + g - 1) // g * g for w in lat if w % g}
        ups = {w: u for w, u in ups.items() if u in lat}
        if not ups or g >= full:
            continue
        faster = [(w, u) for w, u in ups.items() if lat[w] < lat[u] * (1 - tolerance)]
        # one point is a draw (a process mode moves it 5-10% here): a granularity fails on most widths, not one
        if len(faster) * 2 <= len(ups):
            return g, (f"multiples of {g}: {len(faster)} of {len(ups)} widths between them measured faster than the next multiple up "
                       f"(by more than {tolerance:.0%}; a granularity is refused when most do)")
    w, u = min(((w, (w + 7) // 8 * 8) for w in lat if w % 8 and (w + 7) // 8 * 8 in lat), key=lambda wu: lat[wu[0]] / lat[wu[1]], default=(0, 0))
    smallest = min(granularities)
    if w:
        return smallest, f"multiples of {smallest}: width {w} measured {lat[w]:.4g} ms, faster than {u} at {lat[u]:.4g} ms"
    return smallest, f"multiples of {smallest}: the probe could not tell coarser granularities apart"


def group_granularity(width: int, granularity: int, granularities: tuple[int, ...]) -> int:
    """The granularity a group of ``width`` channels is pruned at: the measured one, or the largest finer
    one that still leaves the group a width to try (at most half its channels), so a 16-channel group
    can go to 8 where the runtime likes multiples of 16."""
    finer = [g for g in granularities if g <= granularity and g <= width // 2]
    return max(finer) if finer else min(granularities)


MODES_WARN = 1.2  # per-process medians of the dense model further apart than this: the table is noise


def process_spread(table: LatencyTable) -> str:
    """A warning when the dense model's worker processes measured medians far apart (process modes:
    a one-group delta of a few percent is then below what the table can resolve); "" otherwise."""
    p = [v for v in table.dense_process_p50_ms if v > 0]
    if len(p) < 2 or max(p) / min(p) <= MODES_WARN:
        return ""
    return (f"the dense model's worker processes measured p50 {min(p):.4g}-{max(p):.4g} ms ({max(p) / min(p):.2f}x) on {table.target}: "
            f"timing there has per-process modes wider than most one-group savings, so the table's predictions are rough; "
            f"fewer runtime threads often remove them (--threads 1)")


def uniform_widths(groups: list[Group], ratio: float, granularity: int, granularities: tuple[int, ...]) -> dict[str, int]:
    """Uniform channel pruning as widths: every group keeps ``1 - ratio`` of its channels, snapped to its
    granularity (:func:`group_granularity`), at least one multiple of it."""
    out = {}
    for g in groups:
        step = group_granularity(g.width, granularity, granularities)
        keep = max(step, int(round(g.width * (1 - ratio) / step)) * step)
        if keep < g.width:
            out[g.name] = keep
    return out


def uniform_ratio(grid: dict[str, float], fitted_ms: float) -> float:
    """The least pruning uniform ratio whose table latency is within 3% of ``fitted_ms`` (else the fastest)."""
    ratios = sorted((float(r), ms) for r, ms in grid.items())
    within = [r for r, ms in ratios if ms <= fitted_ms * 1.03]
    return within[0] if within else min(ratios, key=lambda rm: rm[1])[0]


def uniform_ratios_near(grid: dict[str, float], fitted_ms: float) -> list[float]:
    """The uniform ratios the verdict measures beside the fitted model: :func:`uniform_ratio`'s match and
    the grid's ratios on either side of it (latency on this grid is noisy and not monotonic)."""
    ratios = sorted(float(r) for r in grid)
    i = ratios.index(uniform_ratio(grid, fitted_ms))
    return ratios[max(0, i - 1):i + 2]


class Predictor:
    """A plan's latency from the table, through a latency model fitted to it.

    The table's one-group savings are a few percent each, near the run-to-run noise of a shared CPU, and
    they do not add up: channel cost is a product of a layer's input and output widths, and small widths
    fall onto other kernels (on the 2-core VM, every group at its narrowest measured 0.24 ms where the
    one-group savings summed to almost nothing). So every measured plan of the table (the one-group points,
    the narrowest plan, the uniform plans) calibrates one model, ``p50 = c + sum_r k_r x MACs_r`` with one
    non-negative cost per MAC at each output resolution ``r`` (non-negative least squares): a plan's MACs
    come from pruning a copy (:func:`edgebench.models.fit.stage_macs`), interactions included. A step's
    prediction is that model scaled to the last measurement (:meth:`anchored`)."""

    def __init__(self, table: LatencyTable, full: dict[str, int], features: Callable[[dict[str, int]], dict[str, float]]) -> None:
        from scipy.optimize import nnls

        self.table, self.full, self.features = table, full, features
        plans = [(p.widths, p.p50_ms) for p in table.points if p.group is None or p.widths]
        plans += [(table.uniform_widths[r], ms) for r, ms in table.uniform.items() if r in table.uniform_widths]
        feats = [features(w) for w, _ in plans]
        self.keys = sorted({k for f in feats for k in f})
        x = np.array([[1.0] + [f.get(k, 0.0) for k in self.keys] for f in feats])
        y = np.array([ms for _, ms in plans])
        self.coef, _ = nnls(x, y)
        fitted = x @ self.coef
        self.residuals = [float(v) for v in (fitted - y) / y]

    def summary(self) -> dict[str, Any]:
        """The fitted model and how well it reproduces the table's own points."""
        res = sorted(abs(r) for r in self.residuals)
        return {"intercept_ms": float(self.coef[0]), "ms_per_mmac": {k: float(c) for k, c in zip(self.keys, self.coef[1:])},
                "points": len(self.residuals), "median_abs_residual": float(np.median(res)) if res else None,
                "max_abs_residual": float(res[-1]) if res else None}

    def model_ms(self, widths: dict[str, int]) -> float:
        f = self.features({g: w for g, w in widths.items() if w < self.full[g]})
        return float(self.coef[0] + sum(c * f.get(k, 0.0) for k, c in zip(self.keys, self.coef[1:])))

    def anchored(self, widths: dict[str, int], current: dict[str, int], measured_current: float) -> float:
        """The plan's predicted p50 given that ``current`` measured ``measured_current``."""
        return self.model_ms(widths) * self.anchor(current, measured_current)

    def anchor(self, current: dict[str, int], measured_current: float) -> float:
        base = self.model_ms(current)
        return measured_current / base if base > 0 else 1.0

    def options(self, current: dict[str, int], candidates: dict[str, list[int]], costs: dict[tuple[str, int], float]) -> dict[str, list[Any]]:
        """Per group, each narrower width: the model's latency change with that group alone moved from the
        current plan, and the change in loss (what the knapsack adds up)."""
        from edgebench.models.fit import Option

        base = self.model_ms(current)
        out = {}
        for g, now_w in current.items():
            opts = [Option(now_w, 0.0, 0.0)]
            for w in candidates.get(g, []):
                if w < now_w:
                    opts.append(Option(w, self.model_ms({**current, g: w}) - base, costs.get((g, w), 0.0) - costs.get((g, now_w), 0.0)))
            out[g] = opts
        return out


def _point(group: str | None, width: int, rec: CellRecord, widths: dict[str, int] | None = None) -> LatencyPoint:
    lat = rec.result.latency
    plan = widths if widths is not None else ({group: width} if group not in (None, "*") else {})
    return LatencyPoint(group, width, lat.p50_ms, lat.p90_ms, lat.n, rec.result.processes, rec.cell_key, [f.code for f in rec.result.flags], plan)


def _p50(rec: CellRecord) -> float:
    return rec.result.latency.p50_ms


def _p90(rec: CellRecord) -> float:
    return rec.result.latency.p90_ms


def _top1(rec: CellRecord) -> float | None:
    acc = rec.result.accuracy if rec.result is not None else None
    return acc.top1 if acc is not None else None


def _measured(name: str, rec: CellRecord, run_id: str, detail: dict[str, Any]) -> Measured:
    """The cell as the verdict shows it; the interval is filled by the CLI (reports.stats)."""
    r = rec.result
    return Measured(name, r.latency.p50_ms, None, None, r.latency.p90_ms, _top1(rec), rec.cell_key, run_id, r.processes,
                    [f.code for f in r.flags], {**detail, "samples": len(r.samples_ns), "process_samples": list(r.process_samples or [])})


def status_of(result: FitResult) -> str:
    """``fitted``, ``invalid-outputs`` (the fitted model's numbers are not valid: NaN/Inf outputs, a
    validity flag), ``over-budget`` (p50 over, or the p50 interval's upper end more than 5% over, once the
    interval is known) or ``accuracy-drop`` (top-1 fell more than the allowed points)."""
    f, d = result.fitted, result.dense
    if f is None:
        return result.status
    if any(CODES[c].kind == VALIDITY for c in f.flags if c in CODES):
        return "invalid-outputs"  # never a fit: its top-1 is not a number to compare
    if f.p50_ms > result.budget_ms or (f.p50_high_ms is not None and f.p50_high_ms > UPPER_SLACK * result.budget_ms):
        return "over-budget"
    if result.max_accuracy_drop_pp is not None and f.top1 is not None and d.top1 is not None and (d.top1 - f.top1) * 100 > result.max_accuracy_drop_pp:
        return "accuracy-drop"
    return "fitted"


def _settings(opts: FitOptions) -> dict[str, Any]:
    return {"steps": opts.steps, "epochs_per_step": opts.epochs_per_step, "finetune_epochs": opts.finetune_epochs, "lr": opts.lr,
            "distill": opts.distill, "fractions": list(opts.fractions), "uniform_ratios": list(opts.uniform_ratios),
            "margin": opts.margin, "table_measure": opts.table_measure, "step_measure": opts.step_measure,
            "verdict_measure": opts.verdict_measure, "threads": opts.threads}
