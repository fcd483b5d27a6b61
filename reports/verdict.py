"""Regression verdicts between stored runs: name resolution (run ids, ``latest``, ``latest~N``, named
baselines), the environment guard, run-to-run noise from history, and the Markdown / JSON verdicts that
``edgebench compare`` and ``edgebench check`` write.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.contracts.identity import CellId
from edgebench.bench.store import CellRecord, Store
from edgebench.reports import compare as cmp
from edgebench.reports import environment as envmod
from edgebench.reports import history as histmod
from edgebench.reports.htmlkit import size_text


@dataclass
class Side:
    """One side of a comparison: the run per target, and the fingerprint to hold the other side to."""

    label: str
    runs: dict[str | None, str]  # target -> run id; the None key means "every target"
    fingerprints: dict[str, dict[str, Any]] | None = None  # from the baseline record, when it is one

    def run_for(self, target: str) -> str | None:
        return self.runs.get(target, self.runs.get(None))


def resolve(store: Store, ref: str) -> Side:
    """A run id (or unique prefix), ``latest``, ``latest~N`` (N runs before the latest), or a baseline name."""
    named = store.baselines(ref)
    if named:
        return Side(f"baseline {ref}", {b.target: b.run_id for b in named}, {b.target: b.fingerprint for b in named})
    return Side(ref, {None: store.resolve(ref)})


def _targets(store: Store, head: Side) -> dict[str, str]:
    """Target -> head run id, for every target the head run(s) measured."""
    out: dict[str, str] = {}
    for target, run_id in head.runs.items():
        for c in store.cells(run_id, with_samples=False):
            if target is None or c.target == target:
                out.setdefault(c.target, run_id)
    return out


def _history_p50(store: Store, head_run: str, cell: CellRecord, th: cmp.Thresholds, strict_env: dict[str, Any],
                 env_cache: dict[str, dict[str, Any]]) -> list[float]:
    """Median latencies of this cell in earlier clean runs on the same environment (for the run-to-run bar)."""
    rows = store.cell_history(*CellId.of(cell).parts(), until=head_run, limit=th.history_runs + 1)
    out = []
    for run, c in rows:
        if run.id == head_run or c.status != "ok" or not (c.result and c.result.latency) or cmp.disturbance(c):
            continue
        if run.id not in env_cache:
            env_cache[run.id] = store.environments(run.id)
        if envmod.check(cell.target, strict_env, env_cache[run.id].get(cell.target, {}), {cell.backend}).strict:
            continue
        out.append(c.result.latency.p50_ms)
    return out[-th.history_runs:]


def _since(store: Store, head_run: str, cell: cmp.CellComparison) -> dict[str, Any] | None:
    """The run where the latest upward step in this cell's history began, when the history shows one."""
    h = histmod.load(store, *cell.id.parts(), until=head_run, limit=60)
    ups = [cp for cp in h.change_points if cp.ratio > 1]
    if not ups:
        return None
    cp = ups[-1]
    return {"run_id": cp.run_id, "created_at": cp.created_at, "git_commit": cp.git_commit, "ratio": cp.ratio, "describe": cp.describe()}


def run(store: Store, base_ref: str, head_ref: str, th: cmp.Thresholds | None = None, allow_env_mismatch: bool = False,
        use_history: bool = True) -> cmp.Comparison:
    """Compare ``head_ref`` with ``base_ref`` target by target; refuses a strict environment difference unless allowed."""
    th = th or cmp.Thresholds()
    base, head = resolve(store, base_ref), resolve(store, head_ref)
    per_target = _targets(store, head)
    if not per_target:
        raise EdgebenchError(f"{head_ref}: the run has no cells to compare")
    cells: list[cmp.CellComparison] = []
    env_checks, notes = [], []
    first_head = first_base = None
    env_cache: dict[str, dict[str, Any]] = {}
    for target, head_run in per_target.items():
        base_run = base.run_for(target)
        if base_run is None:
            raise EdgebenchError(f"{base.label} has no run for target {target!r} (it has {', '.join(sorted(t for t in base.runs if t))}); "
                                 f"set one with `edgebench baseline set {base_ref} RUN --target {target}`")
        first_head, first_base = first_head or head_run, first_base or base_run
        head_cells = [c for c in store.cells(head_run) if c.target == target]
        base_cells = [c for c in store.cells(base_run) if c.target == target]
        head_fp = store.environments(head_run).get(target, {})
        base_fp = (base.fingerprints or {}).get(target) or store.environments(base_run).get(target, {})
        backends = {c.backend for c in head_cells if c.status == "ok"} | {c.backend for c in base_cells if c.status == "ok"}
        check = envmod.check(target, base_fp, head_fp, backends)
        env_checks.append(check.to_dict())
        if not check.comparable:
            if not allow_env_mismatch:
                raise EdgebenchError(f"target {target!r}: {head_ref} ran on a different environment than {base.label} "
                                     f"({check.describe()}); set a baseline from this environment, or pass --allow-env-mismatch")
            notes.append(f"target {target}: environments differ ({check.describe()}); compared anyway (--allow-env-mismatch)")
        history = {}
        if use_history:
            history = {cmp.coordinates(c): _history_p50(store, head_run, c, th, head_fp, env_cache)
                       for c in head_cells if c.status == "ok"}
        notes += summarised_notes(store, base, base_run, head_ref, head_run, target)
        for comp in cmp.compare_cells(base_cells, head_cells, th, history, runs=(base_run, head_run)):
            if comp.verdict == cmp.REGRESSED and comp.status == "compared" and use_history:
                comp.since = _since(store, head_run, comp)
            cells.append(comp)
    if not any(c.status == "compared" for c in cells):
        raise EdgebenchError(f"no cell of {head_ref} matches a cell of {base.label} (model, recipe, backend, precision, batch, target)")
    _sort(cells)
    return cmp.Comparison(cmp.RunRef.of(store.run(first_base), base.label), cmp.RunRef.of(store.run(first_head), head_ref), th, cells,
                          env_checks, notes)


def summarised_notes(store: Store, base: Side, base_run: str, head_ref: str, head_run: str, target: str) -> list[str]:
    """A note for each side of a target whose run's samples ``edgebench gc`` dropped: its cells' latency
    is inconclusive (compare.summarised_latency), and a summarised baseline should be moved."""
    out = []
    for label, run_id, is_base in ((base.label, base_run, True), (head_ref, head_run, False)):
        when = store.run(run_id).samples_dropped_at
        if when is None:
            continue
        text = (f"target {target}: {label} is run {run_id}, whose samples were dropped by edgebench gc on {when:%Y-%m-%d}: "
                "its cells' latency is inconclusive (stored medians only, no test)")
        if is_base and base.fingerprints is not None:  # a named baseline: say how to get a judgeable one
            name = base.label.removeprefix("baseline ")
            text += f"; point the baseline at a run with samples (edgebench baseline set {name} RUN --target {target}), and keep it with edgebench gc --keep-baselines"
        out.append(text)
    return out


def _sort(cells: list[cmp.CellComparison]) -> None:
    """Regressions first, then improvements, inconclusive, unchanged; by coordinates within each."""
    order = {cmp.REGRESSED: 0, cmp.IMPROVED: 1, cmp.INCONCLUSIVE: 2, cmp.UNCHANGED: 3}
    cells.sort(key=lambda c: (order.get(c.verdict, 9), c.target, c.model, c.recipe, c.backend, c.precision, c.batch))


# -- confirmation: re-measure the flagged cells before calling them ----------------------------

def flagged_for_confirmation(comp: cmp.Comparison) -> list[cmp.CellComparison]:
    """Cells whose verdict rests on a latency change (regressed or improved): what a re-measurement can
    confirm. A cell that now fails, or whose accuracy, memory or size moved, needs no second look."""
    out = []
    for c in comp.cells:
        lat = c.metric("latency")
        others = [m.verdict for m in c.metrics if m.metric != "latency"]
        if c.status == "compared" and lat is not None and lat.verdict in (cmp.REGRESSED, cmp.IMPROVED) and cmp.REGRESSED not in others:
            out.append(c)
    return out


def confirm(store: Store, comp: cmp.Comparison, base_ref: str, head_ref: str, confirm_runs: dict[str, list[str]], th: cmp.Thresholds,
            use_history: bool = True) -> cmp.Comparison:
    """Keep a latency verdict only if every re-measurement of the cell (``confirm_runs``: head run id ->
    the runs that re-measured its flagged cells, made after it from its suite) gives the same verdict against the same base; otherwise it becomes
    inconclusive, "not reproduced". A run-to-run excursion (the machine was slow for a minute) then
    costs a re-measurement instead of a false alarm; a real change shows up every time."""
    base, head = resolve(store, base_ref), resolve(store, head_ref)
    per_target = _targets(store, head)
    loaded: dict[str, dict[CellId, CellRecord]] = {}

    def cells_of(run_id: str) -> dict[CellId, CellRecord]:
        if run_id not in loaded:
            loaded[run_id] = {cmp.coordinates(c): c for c in store.cells(run_id)}
        return loaded[run_id]

    env_cache: dict[str, dict[str, Any]] = {}
    flagged = flagged_for_confirmation(comp)
    kept = 0
    for c in flagged:
        key = c.id
        head_run, base_run = per_target[c.target], base.run_for(c.target)
        base_cells = {k: v for k, v in cells_of(base_run).items() if v.target == c.target}
        head_cells = {k: v for k, v in cells_of(head_run).items() if v.target == c.target}
        pooled = cmp.pooled_noise([(base_cells[k], h) for k, h in head_cells.items() if k in base_cells])
        history = None
        if use_history:
            head_fp = store.environments(head_run).get(c.target, {})
            history = _history_p50(store, head_run, head_cells[key], th, head_fp, env_cache)
        lat = c.metric("latency")
        assert lat is not None
        again: list[str] = []
        agree = 0
        runs = confirm_runs.get(head_run, [])
        for run_id in runs:
            cell = cells_of(run_id).get(key)
            if cell is None or cell.status != "ok":
                again.append(f"{run_id}: {cell.status if cell else 'not measured'}")
                continue
            m = cmp.compare_cell(base_cells[key], cell, th, history, pooled).metric("latency")
            ok = m is not None and reproduces(lat, m, th)
            agree += ok
            again.append(_again_text(m, ok))
        summary = f"{agree} of {len(runs)} re-measurements reproduce it ({', '.join(again)})"
        if runs and agree == len(runs):
            kept += 1
            lat.reason = f"{lat.reason}; confirmed: {summary}"
        else:
            first = f"; the first measurement said {lat.verdict} x{lat.ratio:.3f}" if lat.ratio else ""
            lat.reason = f"not reproduced: {summary}{first}"
            lat.verdict = cmp.INCONCLUSIVE
            c.verdict = cmp.overall([m.verdict for m in c.metrics])
            c.since = None
    all_runs = [r for rs in confirm_runs.values() for r in rs]
    k = max((len(rs) for rs in confirm_runs.values()), default=0)
    comp.notes.append(f"--confirm {k}: {len(flagged)} flagged cell(s) re-measured in run(s) {', '.join(all_runs) or '-'}; "
                      f"{kept} confirmed, {len(flagged) - kept} not reproduced (now inconclusive)")
    _sort(comp.cells)
    return comp


def reproduces(first: cmp.MetricVerdict, again: cmp.MetricVerdict, th: cmp.Thresholds) -> bool:
    """Does a re-measurement reproduce a flagged latency change? Yes when it reaches the same verdict, or
    when it is significant (p < alpha), its whole interval lies beyond the minimum effect on the same side,
    and it shows at least half the first change (log scale). The run-to-run bar is not applied again: the
    first measurement passed it, and the re-measurement is the independent evidence the bar stands in
    for; an excursion of the head does not repeat, a real change does."""
    if again.verdict == first.verdict:
        return True
    if None in (again.ratio, again.ci_low, again.ci_high, again.p_value, first.ratio) or again.p_value >= th.alpha:
        return False
    low, high = th.band()
    if first.verdict == cmp.REGRESSED:
        beyond = again.ci_low > high
    elif first.verdict == cmp.IMPROVED:
        beyond = again.ci_high < low
    else:
        return False
    return beyond and math.log(again.ratio) / math.log(first.ratio) >= 0.5


def _again_text(m: cmp.MetricVerdict | None, ok: bool) -> str:
    if m is None or m.ratio is None:
        return m.verdict if m else "-"
    if ok and m.verdict == cmp.INCONCLUSIVE:
        return f"x{m.ratio:.3f}, CI {m.ci_low:.3f}-{m.ci_high:.3f}, {p_text(m.p_value)}, inside the run-to-run bar"
    return f"{m.verdict} x{m.ratio:.3f}"


def confirmation_targets(store: Store, comp: cmp.Comparison, head_ref: str) -> dict[str, set[str]]:
    """Head run id -> the keys of its flagged cells (a baseline name as HEAD may span several runs)."""
    per_target = _targets(store, resolve(store, head_ref))
    out: dict[str, set[str]] = {}
    for c in flagged_for_confirmation(comp):
        out.setdefault(per_target[c.target], set()).add(c.cell_key)
    return out


# -- rendering ---------------------------------------------------------------------------------

def p_text(p: float | None) -> str:
    if p is None:
        return "-"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def change_text(m: cmp.MetricVerdict) -> str:
    if m.metric == "accuracy":
        return f"{m.delta:+.2f} pts" if m.delta is not None else "-"
    if m.ratio is None or not math.isfinite(m.ratio):
        return "-"
    return f"{m.ratio - 1:+.1%}"


def value_text(m: cmp.MetricVerdict, v: float | None) -> str:
    if v is None:
        return "-"
    if m.metric == "latency":
        return f"{v:.4g} ms"
    if m.metric == "accuracy":
        return f"{v:.2f}%"
    if m.metric == "memory":
        return f"{v:.1f} MiB"
    return size_text(v)


def headline(c: cmp.CellComparison) -> str:
    """One sentence per regressed or improved cell, e.g. "p50 of m/r/b/fp32/b8/pi5 is 7.9% slower (p < 0.001), since commit abc"."""
    if c.status == "failed-in-head":
        return f"{c.cell_key} now fails: {c.notes[-1] if c.notes else ''}"
    parts = []
    for m in c.metrics:
        if m.verdict not in (cmp.REGRESSED, cmp.IMPROVED):
            continue
        if m.metric == "latency":
            word = "slower" if m.ratio > 1 else "faster"
            parts.append(f"median latency {abs(m.ratio - 1):.1%} {word} ({p_text(m.p_value)}, {m.ratio:.3f}x, CI {m.ci_low:.3f}-{m.ci_high:.3f})")
        else:
            parts.append(f"{m.metric} {change_text(m)} ({value_text(m, m.base)} -> {value_text(m, m.head)})")
    text = f"{c.cell_key}: " + "; ".join(parts)
    if c.since:
        commit = c.since.get("git_commit")
        text += f", since run {c.since['run_id']}" + (f" (commit {commit[:12]})" if commit else "")
    if c.notes:
        text += f" [{'; '.join(c.notes)}]"
    return text


def _run_line(r: cmp.RunRef) -> str:
    commit = f", commit `{r.git_commit[:12]}`" if r.git_commit else ""
    label = f"{r.label} → " if r.label != r.id else ""
    return f"{label}`{r.id}` ({r.created_at[:16].replace('T', ' ')} UTC{commit})"


def markdown(comp: cmp.Comparison, title: str = "edgebench regression check") -> str:
    """A verdict fit for a pull-request comment: the answer first, then the evidence, details folded."""
    counts = comp.counts()
    regs = comp.regressions()
    th = comp.thresholds
    status = f"**{len(regs)} regression(s)**" if regs else "**no regression**"
    out = [f"### {title}: {'❌' if regs else '✅'} {status}", "",
           f"Head {_run_line(comp.head)} vs base {_run_line(comp.base)}.",
           f"{len(comp.cells)} cells: {counts['regressed']} regressed, {counts['improved']} improved, "
           f"{counts['unchanged']} unchanged, {counts['inconclusive']} inconclusive.", ""]
    if regs:
        out += ["**Regressed**", ""] + [f"- {headline(c)}" for c in regs] + [""]
    improved = [c for c in comp.cells if c.verdict == cmp.IMPROVED]
    if improved:
        out += ["**Improved**", ""] + [f"- {headline(c)}" for c in improved] + [""]
    for note in comp.notes:
        out.append(f"> ⚠️ {note}")
    info = [d for e in comp.environment for d in e["differences"] if not d["strict"]]
    if info:
        out.append("Environment changes (not blocking): " + "; ".join(f"{d['field']}: {d['base']} → {d['head']}" for d in info) + ".")
        out.append("")
    out += ["<details><summary>Every cell</summary>", "",
            "| cell | verdict | metric | base | head | change | 95% CI (ratio) | p | why |", "|---|---|---|---|---|---|---|---|---|"]
    for c in comp.cells:
        if not c.metrics:
            out.append(f"| `{c.cell_key}` | {c.verdict} | - | - | - | - | - | - | {c.status}: {'; '.join(c.notes)} |")
            continue
        for i, m in enumerate(c.metrics):
            ci = f"{m.ci_low:.3f}-{m.ci_high:.3f}" if m.ci_low is not None else "-"
            why = m.reason + (f" ({'; '.join(c.notes)})" if i == 0 and c.notes else "")
            out.append(f"| {'`' + c.cell_key + '`' if i == 0 else ''} | {c.verdict if i == 0 else ''} | {m.metric}: {m.verdict} | "
                       f"{value_text(m, m.base)} | {value_text(m, m.head)} | {change_text(m)} | {ci} | {p_text(m.p_value)} | {why.replace('|', '/')} |")
    out += ["", "</details>", "",
            f"<sub>Latency: median per batch; Mann-Whitney U and a {th.level:.0%} bootstrap interval of the median ratio on block medians "
            f"(samples in measurement order, blocks of ≥{cmp.MIN_BLOCK}); a regression needs p < {th.alpha:g}, the whole interval above "
            f"+{th.min_effect:.0%}, and a change beyond {th.noise_z:g} sd of the cell's run-to-run noise (from its earlier runs in the store, "
            f"at least {th.prior_noise:.0%} until it has {th.min_history}). "
            f"Contended or throttled cells are inconclusive. Accuracy tolerance {th.accuracy_tolerance_pts:g} pts; memory "
            f"+{th.memory_threshold:.0%} and {th.memory_floor_mib:g} MiB; size +{th.size_threshold:.0%}.</sub>", ""]
    return "\n".join(out)


def to_json(comp: cmp.Comparison, exit_code: int | None = None) -> str:
    data = comp.to_dict()
    data["headlines"] = [headline(c) for c in comp.cells if c.verdict in (cmp.REGRESSED, cmp.IMPROVED)]
    if exit_code is not None:
        data["exit_code"] = exit_code
    return json.dumps(data, indent=2, default=str)


def write(comp: cmp.Comparison, markdown_path: Path | None, json_path: Path | None, exit_code: int | None = None) -> list[Path]:
    written = []
    for path, text in ((markdown_path, lambda: markdown(comp)), (json_path, lambda: to_json(comp, exit_code))):
        if path is None:
            continue
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text(), encoding="utf-8")
        written.append(path)
    return written
