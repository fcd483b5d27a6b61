"""Nightly-regression commands of the ``edgebench`` command line: ``compare``, ``check``, ``baseline``,
``history`` and ``export``.

``bench/cli.py`` calls :func:`register` once. Runs are named as everywhere else (an id, a unique prefix,
``latest``), plus ``latest~N`` (N runs before the latest) and, in ``compare`` and ``check``, a baseline
name. Errors are one line and exit 2 (``cli.main`` turns an ``EdgebenchError`` into that).
"""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table

from edgebench.bench.cli_common import HomeOpt, StoreOpt, console, open_store
from edgebench.bench.cli_common import paths as _paths
from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.contracts.identity import CellId

if TYPE_CHECKING:
    from edgebench.reports.compare import Thresholds

MinEffectOpt = typer.Option(0.05, "--min-effect", min=0.0, help="Smallest relative latency change that counts (0.05 = 5%).")
AlphaOpt = typer.Option(0.01, "--alpha", min=0.0, max=1.0, help="Significance level of the Mann-Whitney U test on block medians.")
NoiseZOpt = typer.Option(3.0, "--noise-z", min=0.0, help="A latency change must exceed this many sd of the difference of two runs (run-to-run noise).")
PriorNoiseOpt = typer.Option(0.03, "--prior-noise", min=0.0, help="Run-to-run sd of log latency assumed until 4 earlier runs of the cell say otherwise.")
AccuracyOpt = typer.Option(0.5, "--accuracy-tolerance", min=0.0, help="Top-1 change, in percentage points, that counts.")
MemoryOpt = typer.Option(0.10, "--memory-threshold", min=0.0, help="Relative peak-RSS increase that counts (also needs +4 MiB).")
SizeOpt = typer.Option(0.02, "--size-threshold", min=0.0, help="Relative artifact-size increase that counts.")
AllowEnvOpt = typer.Option(False, "--allow-env-mismatch", help="Compare even when hardware, backend versions or power mode differ.")
ContendedOpt = typer.Option(False, "--include-contended", help="Judge contended/throttled cells too (they are inconclusive by default).")
NoHistoryOpt = typer.Option(False, "--no-history", help="Ignore earlier runs: run-to-run noise is then the prior alone.")
MarkdownOpt = typer.Option(None, "--markdown", help="Write the Markdown verdict here.")
JsonOpt = typer.Option(None, "--json", help="Write the JSON verdict here.")


class ExportFormat(str, Enum):
    pytest_benchmark = "pytest-benchmark"


class Metric(str, Enum):
    p50 = "p50"
    p90 = "p90"


def _thresholds(min_effect: float, alpha: float, noise_z: float, prior_noise: float, accuracy: float, memory: float, size: float,
                contended: bool) -> Thresholds:
    from edgebench.reports.compare import Thresholds

    return Thresholds(min_effect=min_effect, alpha=alpha, noise_z=noise_z, prior_noise=prior_noise, accuracy_tolerance_pts=accuracy,
                      memory_threshold=memory, size_threshold=size, include_disturbed=contended)


def _table(comp: Any) -> None:
    """The comparison as a terminal table, then its counts and notes."""
    from edgebench.reports import verdict

    style = {"regressed": "bold red", "improved": "green", "inconclusive": "yellow", "unchanged": ""}
    t = Table(title=f"{comp.head.label} ({comp.head.id}) vs {comp.base.label} ({comp.base.id})")
    for h in ("cell", "verdict", "latency", "change", "CI (ratio)", "p", "accuracy", "memory", "size", "why"):
        t.add_column(h, overflow="fold")
    for c in comp.cells:
        lat = c.metric("latency")
        others = [c.metric(n) for n in ("accuracy", "memory", "size")]
        t.add_row(c.cell_key, f"[{style.get(c.verdict, '')}]{c.verdict}[/]" if style.get(c.verdict) else c.verdict,
                  f"{verdict.value_text(lat, lat.base)} -> {verdict.value_text(lat, lat.head)}" if lat and lat.base else "-",
                  verdict.change_text(lat) if lat else "-",
                  f"{lat.ci_low:.3f}-{lat.ci_high:.3f}" if lat and lat.ci_low is not None else "-",
                  verdict.p_text(lat.p_value) if lat else "-",
                  *[(f"{o.verdict} {verdict.change_text(o)}" if o else "-") for o in others],
                  (lat.reason if lat else "") + ("; " if lat and c.notes else "") + "; ".join(c.notes))
    console.print(t)
    counts = comp.counts()
    console.print(f"{counts['regressed']} regressed, {counts['improved']} improved, {counts['unchanged']} unchanged, "
                  f"{counts['inconclusive']} inconclusive", markup=False)
    for note in comp.notes:
        console.print(f"warning: {note}", markup=False)


def register(app: typer.Typer) -> None:
    """Add compare, check, baseline, history and export to ``app``."""
    _register_compare(app)
    _register_check(app)
    _register_baseline(app)
    _register_history(app)
    _register_export(app)


def _register_compare(app: typer.Typer) -> None:
    @app.command()
    def compare(
        base: str = typer.Argument(..., metavar="BASE", help="Run id, unique prefix, latest, latest~N, or a baseline name."),
        head: str = typer.Argument("latest", metavar="HEAD", help="Run id, unique prefix, latest, latest~N, or a baseline name."),
        min_effect: float = MinEffectOpt, alpha: float = AlphaOpt, noise_z: float = NoiseZOpt, prior_noise: float = PriorNoiseOpt, accuracy_tolerance: float = AccuracyOpt,
        memory_threshold: float = MemoryOpt, size_threshold: float = SizeOpt, allow_env_mismatch: bool = AllowEnvOpt,
        include_contended: bool = ContendedOpt, no_history: bool = NoHistoryOpt,
        markdown: Optional[Path] = MarkdownOpt, json_out: Optional[Path] = JsonOpt,
        home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt,
    ) -> None:
        """Compare HEAD with BASE cell by cell (matched on model, recipe, backend, precision, batch, target): each metric
        improved, regressed, unchanged or inconclusive. Exit code 0 (also with regressions; `check` is the CI gate), 2 for an
        error or an environment mismatch."""
        from edgebench.reports import verdict

        th = _thresholds(min_effect, alpha, noise_z, prior_noise, accuracy_tolerance, memory_threshold, size_threshold, include_contended)
        comp = verdict.run(open_store(home, store), base, head, th, allow_env_mismatch=allow_env_mismatch, use_history=not no_history)
        _table(comp)
        for path in verdict.write(comp, markdown, json_out):
            console.print(f"wrote {path}", markup=False)


def _register_check(app: typer.Typer) -> None:
    @app.command()
    def check(
        head: str = typer.Argument("latest", metavar="HEAD", help="The run to check [default: latest]."),
        baseline: str = typer.Option(..., "--baseline", "-b", help="Baseline name (edgebench baseline set NAME RUN) or a run."),
        min_effect: float = MinEffectOpt, alpha: float = AlphaOpt, noise_z: float = NoiseZOpt, prior_noise: float = PriorNoiseOpt, accuracy_tolerance: float = AccuracyOpt,
        memory_threshold: float = MemoryOpt, size_threshold: float = SizeOpt, allow_env_mismatch: bool = AllowEnvOpt,
        include_contended: bool = ContendedOpt, no_history: bool = NoHistoryOpt,
        confirm: int = typer.Option(0, "--confirm", min=0, max=10, help="Re-measure each cell flagged for latency this many times (HEAD's suite, "
                                    "on its targets) and keep a verdict only if every re-measurement agrees; others become inconclusive."),
        markdown: Optional[Path] = typer.Option(None, "--markdown", help="Markdown verdict [default: HOME/reports/HEAD/verdict.md]."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="JSON verdict [default: HOME/reports/HEAD/verdict.json]."),
        home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt,
    ) -> None:
        """The CI gate: compare HEAD with a baseline and write a Markdown verdict (for a pull-request comment) and a JSON one.

        Exit code 0 when no cell regressed, 1 when one did (a latency, accuracy, memory or size regression, or a cell that now
        fails), 2 for an error (unknown run or baseline, environment mismatch, nothing in common).
        """
        from edgebench.reports import verdict

        paths = _paths(home, store)
        th = _thresholds(min_effect, alpha, noise_z, prior_noise, accuracy_tolerance, memory_threshold, size_threshold, include_contended)
        try:
            s = open_store(home, store)
            comp = verdict.run(s, baseline, head, th, allow_env_mismatch=allow_env_mismatch, use_history=not no_history)
            if confirm:
                runs = _remeasure(paths, verdict.confirmation_targets(s, comp, head), confirm)
                if runs:
                    comp = verdict.confirm(s, comp, baseline, head, runs, th, use_history=not no_history)
        except EdgebenchError as exc:
            _write_error(markdown, json_out, str(exc))
            raise
        code = 1 if comp.regressions() else 0
        out_dir = paths.reports / comp.head.id
        _table(comp)
        for path in verdict.write(comp, markdown or out_dir / "verdict.md", json_out or out_dir / "verdict.json", exit_code=code):
            console.print(f"wrote {path}", markup=False)
        for c in comp.regressions():
            console.print(f"regressed: {verdict.headline(c)}", markup=False)
        if code:
            raise typer.Exit(code)


def _remeasure(paths: Any, flagged: dict[str, set[str]], times: int) -> dict[str, list[str]]:
    """Run each head run's flagged cells ``times`` more times (runs stored with status confirmation)."""
    from edgebench.bench.resume import load_for_resume
    from edgebench.bench.runner import Runner

    out: dict[str, list[str]] = {}
    for head_run, keys in flagged.items():
        loaded = load_for_resume(paths, head_run)
        for i in range(times):
            console.print(f"confirming {len(keys)} flagged cell(s) of run {head_run}: re-measurement {i + 1} of {times}", markup=False)
            summary = Runner(paths, log=lambda m: None).run(loaded, only=keys, confirm_of=head_run)
            out.setdefault(head_run, []).append(summary.run_id)
    return out


def _register_baseline(app: typer.Typer) -> None:
    baseline_app = typer.Typer(no_args_is_help=True, help="Named baselines: set, list, delete.")
    app.add_typer(baseline_app, name="baseline")

    @baseline_app.command("set")
    def baseline_set(
        name: str = typer.Argument(..., help="Baseline name, e.g. nightly or main."),
        run_id: str = typer.Argument("latest", metavar="RUN", help="Run id, unique prefix, latest or latest~N."),
        target: Optional[list[str]] = typer.Option(None, "--target", "-t", help="Only this target of the run (repeatable) [default: every target]."),
        note: Optional[str] = typer.Option(None, "--note", help="Free text kept with the baseline."),
        home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt,
    ) -> None:
        """Point baseline NAME at RUN, per target, keeping each target's environment fingerprint."""
        s = open_store(home, store)
        rid = s.resolve(run_id)
        envs = s.environments(rid)
        measured = {c.target for c in s.cells(rid, with_samples=False)}
        targets = list(target or sorted(measured or envs))
        for t in targets:
            if t not in envs and t not in measured:
                raise EdgebenchError(f"run {rid} has no target {t!r} (it has {', '.join(sorted(measured | set(envs)))})")
            b = s.set_baseline(name, rid, t, envs.get(t, {}), note)
            console.print(f"baseline {b.name} [{b.target}] -> run {b.run_id}", markup=False)

    @baseline_app.command("list")
    def baseline_list(home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt) -> None:
        """Every baseline: name, target, run, when it was set."""
        for b in open_store(home, store).baselines():
            console.print(f"{b.name}  {b.target}  {b.run_id}  set {b.set_at:%Y-%m-%d %H:%M} UTC" + (f"  ({b.note})" if b.note else ""), markup=False)

    @baseline_app.command("delete")
    def baseline_delete(name: str = typer.Argument(...), target: Optional[str] = typer.Option(None, "--target", "-t"),
                        home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt) -> None:
        """Delete a baseline (one target of it with --target)."""
        if open_store(home, store).delete_baseline(name, target) == 0:
            raise EdgebenchError(f"no baseline {name!r}" + (f" for target {target!r}" if target else "") + "; `edgebench baseline list` shows them")
        console.print(f"deleted baseline {name}" + (f" [{target}]" if target else ""), markup=False)


def _register_history(app: typer.Typer) -> None:
    @app.command()
    def history(
        cell: Optional[str] = typer.Argument(None, metavar="[CELL]", help="A cell key model/recipe/backend/precision/bN/target, or use the options."),
        model: Optional[str] = typer.Option(None, "--model"), recipe: Optional[str] = typer.Option(None, "--recipe"),
        backend: Optional[str] = typer.Option(None, "--backend"), precision: Optional[str] = typer.Option(None, "--precision"),
        batch: Optional[int] = typer.Option(None, "--batch"), target: Optional[str] = typer.Option(None, "--target"),
        metric: Metric = typer.Option(Metric.p50, "--metric", help="Latency statistic per run."),
        last: int = typer.Option(60, "--last", min=2, help="How many of the latest runs to show."),
        min_effect: float = MinEffectOpt, include_contended: bool = ContendedOpt,
        as_json: bool = typer.Option(False, "--json", help="Print the history as JSON."),
        home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt,
    ) -> None:
        """One cell across runs: its latency per run, and the change points (ruptures PELT) dated to the run where each began."""
        from edgebench.reports import history as histmod

        s = open_store(home, store)
        where = dict(model=model, recipe=recipe, backend=backend, precision=precision, batch=batch, target=target)
        if cell:
            where.update(_parse_cell_key(cell))
        found = s.cell_coordinates(**where)
        if len(found) != 1:
            listing = ", ".join(CellId(**c).key for c in found[:8]) + (", ..." if len(found) > 8 else "")
            raise EdgebenchError(f"{len(found)} stored cells match" + (f" ({listing}); narrow it with --model/--recipe/--backend/--precision/--batch/--target or a cell key" if found else "; `edgebench show RUN` lists a run's cells"))
        h = histmod.load(s, **found[0], metric=metric.value, limit=last, min_effect=min_effect, include_disturbed=include_contended)
        if as_json:
            typer.echo(json.dumps(h.to_dict(), indent=2, default=str))
            return
        _history_table(h)


def _write_error(markdown: Optional[Path], json_out: Optional[Path], message: str) -> None:
    """A check that could not run still leaves a verdict for CI to post (exit code 2)."""
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(f"### edgebench regression check: ⚠️ could not run\n\n{message}\n", encoding="utf-8")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"error": message, "exit_code": 2}, indent=2), encoding="utf-8")


def _parse_cell_key(key: str) -> dict[str, Any]:
    """A cell key's six parts by name; the same one-line error as always for anything else."""
    try:
        cell = CellId.parse(key)
    except ValueError:
        raise EdgebenchError(f"{key!r}: a cell key is model/recipe/backend/precision/bBATCH/target, e.g. small_cnn/dense/onnxruntime/fp32/b1/local") from None
    return dataclasses.asdict(cell)


def _history_table(h: Any) -> None:
    starts = {cp.index: cp for cp in h.change_points}
    t = Table(title=f"history of {h.label} ({h.metric} per batch)")
    for col in ("run", "date", "commit", f"{h.metric} ms", "CoV", "n", "segment", "note"):
        t.add_column(col, overflow="fold")
    for i, p in enumerate(h.points):
        note = []
        if i in starts:
            note.append(f"[bold]change point: {starts[i].ratio - 1:+.1%}[/]")
        if p.disturbed:
            note.append(f"{p.disturbed}" + ("" if p.used else " (not in the fit)"))
        if p.status != "ok":
            note.append(p.status)
        t.add_row(p.run_id, p.created_at[:16].replace("T", " "), (p.git_commit or "-")[:12],
                  f"{p.value_ms:.4g}" if p.value_ms is not None else "-", f"{p.cov:.0%}" if p.cov is not None else "-",
                  str(p.n or "-"), "-" if p.segment is None else str(p.segment), "; ".join(note))
    console.print(t)
    if h.change_points:
        for cp in h.change_points:
            console.print(f"change point: {cp.describe()}", markup=False)
    else:
        console.print("no change point: every run is on one level (blips of one or two runs are not steps)", markup=False)
    for n in h.notes:
        console.print(n, markup=False)


def _register_export(app: typer.Typer) -> None:
    @app.command()
    def export(
        run_id: str = typer.Argument("latest", metavar="RUN", help="Run id, unique prefix, or latest."),
        fmt: ExportFormat = typer.Option(ExportFormat.pytest_benchmark, "--format", "-f", help="Output format."),
        out: Path = typer.Option(..., "--output", "-o", help="File to write."),
        with_data: bool = typer.Option(False, "--with-data", help="Include every sample (pytest-benchmark's stats.data)."),
        home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt,
    ) -> None:
        """Export a run for other tools: pytest-benchmark JSON (`pytest-benchmark compare a.json b.json` reads it)."""
        from edgebench.reports import pytest_benchmark

        path, n = pytest_benchmark.export(open_store(home, store), run_id, out, with_data)
        console.print(f"wrote {path}: {n} benchmarks ({fmt.value})", markup=False)
