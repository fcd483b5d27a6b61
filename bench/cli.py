"""The ``edgebench`` command line: ``run``, ``runs``, ``show``, ``report``, ``worker`` and ``list``; the
report, regression and target commands are registered from cli_reports, cli_regress and cli_targets."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgebench.bench import cli_fit, cli_list, cli_regress, cli_reports, cli_sensitivity, cli_store, cli_targets
from edgebench.bench.cli_common import HomeOpt, StoreOpt, TargetsFileOpt, console, err, global_options, open_store, require_store
from edgebench.bench.cli_common import paths as _paths
from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.contracts.files import CannotWrite

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Which pruning recipe, on which runtime, is best on this device?")
app.callback()(global_options)  # --home / --store before the command too


@app.command()
def run(
    suite: Optional[Path] = typer.Argument(None, help="Suite YAML [default: the built-in default suite]."),
    target: Optional[list[str]] = typer.Option(None, "--target", "-t", help="Run on this target instead of the suite's (repeatable; `edgebench target list`)."),
    targets_file: Optional[Path] = TargetsFileOpt,
    resume: Optional[str] = typer.Option(None, "--resume", help="Finish a stored run: re-run only its cells that did not finish ok or skipped."),
    executor: str = typer.Option("inprocess", "--executor", help="Where the host-side steps (train, prune, fine-tune, export) run: inprocess, or ray (pip install 'edgebench\\[fleet]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --executor ray: an existing Ray cluster (e.g. auto); a local one is started otherwise."),
    lease_timeout: Optional[float] = typer.Option(None, "--lease-timeout", min=0, help="Seconds a target waits for its lease while another run measures on it (default: as long as it takes)."),
    samples_csv: bool = typer.Option(False, "--samples-csv", help="Also write every raw sample as samples.csv (samples.npz is always written)."),
    pareto_accuracy: cli_reports.ParetoAccuracy = cli_reports.ParetoAccuracyOpt,
    home: Optional[Path] = HomeOpt,
    store: Optional[str] = StoreOpt,
) -> None:
    """Run a suite: build (or reuse) the models on this host, measure every cell on its target, write the report.

    Exit code 0 when every cell ran or was skipped (backend not installed), 1 when a cell failed,
    2 for a configuration error or a disk that cannot take the results (the run is then marked
    interrupted: free space and --resume it), 130 when interrupted (Ctrl-C); finished cells are kept.
    """
    from edgebench.bench.config import load_suite
    from edgebench.bench.executor import check_executor
    from edgebench.bench.resume import load_for_resume
    from edgebench.bench.runner import RunOptions, Runner

    check_executor(executor)  # before a run is opened: a mistyped executor leaves no empty failed run behind
    paths = _paths(home, store)
    if resume is not None:
        if suite is not None or target:
            raise typer.BadParameter("--resume takes the suite and targets the run was started with; give neither", param_hint="--resume")
        require_store(paths.store_location)
        loaded = load_for_resume(paths, resume, targets_file)
    else:
        loaded = load_suite(suite, targets=target or None, targets_file=targets_file)
    runner = None
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as progress:
            def log(m: str) -> None:
                progress.console.print(m, markup=False, soft_wrap=True)

            if loaded.suite.fits and resume is None:  # the suite's fitted recipes join its recipes (edgebench fit)
                cli_fit.fit_suite_entries(loaded, paths, targets_file, progress, log)
            options = RunOptions(executor=executor, ray_address=ray_address, lease_timeout_s=lease_timeout)
            runner = Runner(paths, log=log, progress=progress, options=options)
            summary = runner.run(loaded, resume=resume)
    except KeyboardInterrupt:
        # typer would turn this into a silent exit 130 before main() saw it: say what was kept, here
        _final_report(runner, paths, samples_csv, pareto_accuracy)
        _stopped(runner, "interrupted")
        raise typer.Exit(130) from None
    except CannotWrite as exc:
        _final_report(runner, paths, samples_csv, pareto_accuracy)
        _stopped(runner, str(exc))
        raise typer.Exit(2) from None
    except BaseException:
        _final_report(runner, paths, samples_csv, pareto_accuracy)  # whatever stopped the run, the cells it finished get their report
        raise
    _final_report(runner, paths, samples_csv, pareto_accuracy)
    built = summary.trained + summary.pruned + summary.exported
    console.print(
        f"run {summary.run_id}: {summary.cells_ok} ok, {summary.cells_failed} failed, {summary.cells_skipped} skipped in {summary.wall_s:.0f}s; "
        f"built {summary.trained} trained, {summary.pruned} pruned, {summary.exported} exported, {summary.cache_hits} from cache"
        + (" (nothing rebuilt: all from cache)" if built == 0 else "")
        + (f"; copied {summary.copied_files} files ({summary.copied_bytes / 2**20:.1f} MiB) to targets" if summary.copied_files else ""),
        markup=False,
    )
    for failure in summary.failures:
        console.print(f"failed: {failure}", markup=False)
    if summary.cells_failed:
        raise typer.Exit(1)


def _final_report(runner: Any, paths: Any, samples_csv: bool = False, pareto_accuracy: Any = "top1") -> None:
    """Write the run's report (an interrupted run's too, of the cells it finished) and say where; a full
    disk here is one line, not a second error hiding the first."""
    if runner is None or runner.run_id is None:
        return
    try:
        report_dir = cli_reports.write_report(runner.store, runner.run_id, paths.reports, samples_csv, pareto_accuracy,
                                              note=lambda m: console.print(m, markup=False))
    except CannotWrite as exc:
        err.print(f"edgebench: report not written: {exc}", markup=False)
        return
    console.print(f"report: {report_dir / 'report.md'}", markup=False)
    console.print(f"html:   {report_dir / 'report.html'}", markup=False)


def _stopped(runner: Any, why: str) -> None:
    """The one line for a run that stopped early: why, how many cells the store keeps, how to finish it."""
    if runner is None or runner.run_id is None:
        err.print(f"edgebench: {why}; nothing was stored", markup=False)
        return
    try:
        kept = sum(runner.store.cell_counts(runner.run_id).values())
    except Exception:  # the store itself may be what failed; the resume hint is still right
        kept = "its finished"
    err.print(f"edgebench: {why}; {kept} cells kept; resume with edgebench run --resume {runner.run_id}", markup=False)


@app.command()
def runs(home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt) -> None:
    """Stored runs, newest first."""
    db = open_store(home, store)
    for r in db.runs():
        s = r.summary or {}
        n = db.cell_counts(r.id)  # the stored cells, every attempt of a resumed run (a summary may predate the last one)
        of = f" (re-measures run {s['confirm_of']})" if s.get("confirm_of") else ""
        if r.samples_dropped_at is not None:  # edgebench gc kept its summaries only
            of += f"; raw samples dropped {r.samples_dropped_at:%Y-%m-%d}"
        console.print(f"{r.id}  {r.status:12} {r.suite_name}: {n.get('ok', 0)} ok, {n.get('failed', 0)} failed, {n.get('skipped', 0)} skipped{of}", markup=False)


@app.command()
def show(run_id: str = typer.Argument("latest", help="Run id, a unique prefix, or 'latest'."), home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt) -> None:
    """A run's table in the terminal, one table per target."""
    from edgebench.reports import render, tables

    report = tables.load(open_store(home, store), run_id)
    console.print(f"run {report.run.id} ({report.run.suite_name}, {report.run.status})", markup=False)
    for target, rows in tables.by_target(report.rows).items():
        t = Table(title=f"target {target}", show_lines=False)
        for h in render.HEADERS:
            t.add_column(h, overflow="fold")
        for row in rows:
            t.add_row(*render.table_cells(row))
        _print_table(t)
        for row in rows:
            if row.status != "ok":
                console.print(f"{row.cell_key} {row.status}: {row.error}", markup=False)
            for w in row.warnings:
                console.print(f"{row.cell_key}: {w}", markup=False)


def _print_table(table: Table) -> None:
    """A terminal folds a wide table into its width; a pipe or file (no terminal, no COLUMNS) gets the
    table at its natural width instead of rich's default 80 columns, where 17 columns fold into slivers."""
    if console.is_terminal:
        console.print(table)
        return
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():  # asked for: fold to it
        width = int(columns)
    else:
        width = max(80, console.measure(table, options=console.options.update_width(1000)).maximum)  # measured unbounded, not at 80
    Console(file=console.file, width=width, highlight=False, soft_wrap=True).print(table)


@app.command()
def report(run_id: str = typer.Argument("latest"),
           samples_csv: bool = typer.Option(False, "--samples-csv", help="Also write every raw sample as samples.csv (samples.npz is always written)."),
           pareto_accuracy: cli_reports.ParetoAccuracy = cli_reports.ParetoAccuracyOpt,
           home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt) -> None:
    """(Re)write a stored run's report files."""
    paths = _paths(home, store)
    out = cli_reports.write_report(open_store(home, store), run_id, paths.reports, samples_csv, pareto_accuracy)
    console.print(f"report: {out / 'report.md'}", markup=False)
    console.print(f"html:   {out / 'report.html'}", markup=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """The device-side cell worker (same as python -m edgebench.bench.worker)."""
    from edgebench.bench.worker import main as worker_main

    raise typer.Exit(worker_main(list(ctx.args)))


cli_list.register(app)  # edgebench list backends/models/recipes/methods/datasets/samplers/transports/suites/targets
cli_reports.register(app)  # edgebench recommend
cli_regress.register(app)  # compare, check, baseline, history, export
cli_targets.register(app)  # target list/show/probe/setup
cli_fit.register(app)  # fit: prune to a latency budget measured on the target
cli_sensitivity.register(app)  # sensitivity: each layer/group pruned alone at each ratio, accuracy vs ratio
cli_store.register(app)  # gc: drop old runs' raw samples, keep their summaries and baselines


def main() -> None:
    try:
        app()
    except EdgebenchError as exc:
        err.print(f"edgebench: {exc}", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("edgebench: interrupted; finished cells are in the store", markup=False)
        _exit_now(130)
    except SystemExit as exc:
        if exc.code == 130:  # typer's exit for Ctrl-C (cli.run has said what was kept)
            _exit_now(130)
        raise


def _exit_now(code: int) -> None:
    """Exit at once after Ctrl-C. Every finished cell is committed and the worker killed; tearing down the
    interpreter (torch, onnxruntime, ...) would take another 1-3 s on a busy board, and the user asked to stop."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
