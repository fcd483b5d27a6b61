"""The ``edgebench`` command line: ``run``, ``runs``, ``show``, ``report``, ``worker`` and ``list``; the
report, regression and target commands are registered from cli_reports, cli_regress and cli_targets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgebench.bench import cli_list, cli_regress, cli_reports, cli_targets
from edgebench.bench.cli_common import HomeOpt, StoreOpt, TargetsFileOpt, console, err, open_store
from edgebench.bench.cli_common import paths as _paths
from edgebench.bench.contracts.errors import EdgebenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Which pruning recipe, on which runtime, is best on this device?")


@app.command()
def run(
    suite: Optional[Path] = typer.Argument(None, help="Suite YAML [default: the built-in default suite]."),
    target: Optional[list[str]] = typer.Option(None, "--target", "-t", help="Run on this target instead of the suite's (repeatable; `edgebench target list`)."),
    targets_file: Optional[Path] = TargetsFileOpt,
    resume: Optional[str] = typer.Option(None, "--resume", help="Finish a stored run: re-run only its cells that did not finish ok or skipped."),
    home: Optional[Path] = HomeOpt,
    store: Optional[str] = StoreOpt,
) -> None:
    """Run a suite: build (or reuse) the models on this host, measure every cell on its target, write the report.

    Exit code 0 when every cell ran or was skipped (backend not installed), 1 when a cell failed,
    2 for a configuration error.
    """
    from edgebench.bench.config import load_suite
    from edgebench.bench.resume import load_for_resume
    from edgebench.bench.runner import Runner
    from edgebench.reports import render

    paths = _paths(home, store)
    if resume is not None:
        if suite is not None or target:
            raise typer.BadParameter("--resume takes the suite and targets the run was started with; give neither", param_hint="--resume")
        loaded = load_for_resume(paths, resume, targets_file)
    else:
        loaded = load_suite(suite, targets=target or None, targets_file=targets_file)
    runner = None
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as progress:
            runner = Runner(paths, log=lambda m: progress.console.print(m, markup=False, soft_wrap=True), progress=progress)
            summary = runner.run(loaded, resume=resume)
    finally:
        # Even an interrupted run gets a report of the cells it finished.
        if runner is not None and runner.run_id is not None:
            report_dir = render.write(runner.store, runner.run_id, paths.reports)
            console.print(f"report: {report_dir / 'report.md'}", markup=False)
            console.print(f"html:   {report_dir / 'report.html'}", markup=False)
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


@app.command()
def runs(home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt) -> None:
    """Stored runs, newest first."""
    for r in open_store(home, store).runs():
        s = r.summary or {}
        of = f" (re-measures run {s['confirm_of']})" if s.get("confirm_of") else ""
        console.print(f"{r.id}  {r.status:12} {r.suite_name}: {s.get('cells_ok', 0)} ok, {s.get('cells_failed', 0)} failed, {s.get('cells_skipped', 0)} skipped{of}", markup=False)


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
        console.print(t)
        for row in rows:
            if row.status != "ok":
                console.print(f"{row.cell_key} {row.status}: {row.error}", markup=False)
            for w in row.warnings:
                console.print(f"{row.cell_key}: {w}", markup=False)


@app.command()
def report(run_id: str = typer.Argument("latest"), home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt) -> None:
    """(Re)write a stored run's report files."""
    from edgebench.reports import render

    paths = _paths(home, store)
    out = render.write(open_store(home, store), run_id, paths.reports)
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


def main() -> None:
    try:
        app()
    except EdgebenchError as exc:
        err.print(f"edgebench: {exc}", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("edgebench: interrupted; finished cells are in the store", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
