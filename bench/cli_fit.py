"""``edgebench fit``: prune a model to a latency budget measured on the target (bench/fit.py), then
write its report (reports/fit.py)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgebench.bench.cli_common import HomeOpt, StoreOpt, TargetsFileOpt, console, echo, err
from edgebench.bench.cli_common import paths as _paths
from edgebench.bench.contracts.files import CannotWrite
from edgebench.bench.contracts.fit import parse_budget

PHASES = ("dense", "granularity", "table", "sensitivity", "steps", "fine-tune + verdict")


def fit(
    model: str = typer.Argument(..., help="A zoo model to prune (`edgebench list models`)."),
    target: str = typer.Option("local", "--target", "-t", help="Where latency is measured (`edgebench target list`)."),
    budget: str = typer.Option(..., "--budget", help="Latency budget: 4ms, 400us, or a share of the dense p50 such as 0.5x."),
    backend: str = typer.Option("onnxruntime", "--backend", help="The runtime the budget is for."),
    precision: str = typer.Option("fp32", "--precision"),
    batch: int = typer.Option(1, "--batch", min=1),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Runtime threads [default: the target's]."),
    max_accuracy_drop: Optional[float] = typer.Option(1.0, "--max-accuracy-drop", help="Top-1 drop (percentage points) the fitted model may lose; over it the fit exits 1."),
    steps: int = typer.Option(3, "--steps", min=1, max=10, help="Committed pruning steps towards the budget."),
    epochs_per_step: int = typer.Option(1, "--epochs-per-step", min=0, help="Fine-tune epochs between steps (distilled from the dense model)."),
    finetune_epochs: int = typer.Option(3, "--finetune-epochs", min=0, help="Fine-tune epochs after the last step."),
    quick: bool = typer.Option(False, "--quick", help="Short measurements (0.2 s per table point): for trying the command, not for decisions."),
    executor: str = typer.Option("inprocess", "--executor", help="Where the host-side sensitivity runs: inprocess, or ray (one task per channel group)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --executor ray: an existing Ray cluster; a local one is started otherwise."),
    targets_file: Optional[Path] = TargetsFileOpt,
    home: Optional[Path] = HomeOpt,
    store: Optional[str] = StoreOpt,
) -> None:
    """Prune MODEL to a latency budget measured on the target: lookup table, sensitivity, allocation,
    progressive pruning with distillation; writes the fitted recipe and its report.

    Exit code 0 when the fitted model meets the budget (and the accuracy limit), 1 when it does not (or its outputs are NaN/Inf),
    2 when the budget cannot be met at all (the narrowest plan is slower: the best reachable latency is
    named) or for a configuration error, 130 when interrupted (measured table points are kept)."""
    from edgebench.bench.executor import check_executor
    from edgebench.bench.fit import FitOptions, Fitter, status_of
    from edgebench.bench.store import Store
    from edgebench.reports.fit import write_fit_report

    check_executor(executor)
    paths = _paths(home, store)
    opts = FitOptions(backend=backend, precision=precision, batch=batch, targets_file=targets_file, threads=threads,
                      max_accuracy_drop_pp=max_accuracy_drop, steps=steps, epochs_per_step=epochs_per_step, finetune_epochs=finetune_epochs,
                      executor=executor, ray_address=ray_address)
    if quick:
        opts.make_quick()
    parsed = parse_budget(budget)
    log_path = paths.home / "fits" / "fit.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log_file, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                                   console=console, transient=True) as progress:
        phase_task = progress.add_task("fit", total=len(PHASES))

        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            if line.startswith("fit"):  # the fit's own lines; every cell's line is in the log file
                progress.console.print(line, markup=False, soft_wrap=True)

        def on_phase(name: str) -> None:
            done = PHASES.index(name) if name in PHASES else 0
            progress.update(phase_task, description=f"fit: {name}", completed=done)

        try:
            result = Fitter(paths, log=log, progress=progress, on_phase=on_phase).fit(model, target, parsed, opts)
        except CannotWrite as exc:
            err.print(f"edgebench: {exc}; the measured table points are in the store", markup=False)
            raise typer.Exit(2) from None
    _fill_intervals(result, paths)
    result.status = status_of(result)  # with the interval known: its upper end may be more than 5% over
    Store(paths.store_location).save_fit(result)
    out = write_fit_report(result, paths.reports / result.id)
    _summary(result, out)
    raise typer.Exit(exit_code(result))


def fit_suite_entries(loaded: Any, paths: Any, targets_file: Optional[Path], progress: Any, log: Any) -> None:
    """A suite's ``fits:``: each entry fitted on each of the suite's targets (a stored table is reused),
    its report written, and the fitted recipe added to the suite's recipes so the run measures it. A budget
    no plan can meet is said and leaves the suite's other cells to run."""
    from edgebench.bench.fit import FitOptions, Fitter, status_of
    from edgebench.bench.store import Store
    from edgebench.models import recipes as recipe_lib
    from edgebench.reports.fit import write_fit_report

    for entry in loaded.suite.fits:
        for target in loaded.suite.targets:
            opts = FitOptions(backend=entry.backend, precision=entry.precision, batch=entry.batch, targets_file=targets_file, threads=entry.threads,
                              max_accuracy_drop_pp=entry.max_accuracy_drop, steps=entry.steps, epochs_per_step=entry.epochs_per_step,
                              finetune_epochs=entry.finetune_epochs)
            if entry.quick:
                opts.make_quick()
            result = Fitter(paths, log=log, progress=progress).fit(entry.model, target, parse_budget(entry.budget), opts)
            _fill_intervals(result, paths)
            result.status = status_of(result)
            Store(paths.store_location).save_fit(result)
            out = write_fit_report(result, paths.reports / result.id)
            log(f"fit {entry.model} to {entry.budget} on {target}: {result.status}; report {out['markdown']}"
                + (f" - {result.message}" if result.status == "unreachable" else ""))
            if result.recipe_path:
                loaded.recipes.append(recipe_lib.load(result.recipe_path))


def exit_code(result: Any) -> int:
    """0 fitted; 1 over budget or over the accuracy limit; 2 a budget no plan can meet."""
    return {"fitted": 0, "unreachable": 2}.get(result.status, 1)


def _fill_intervals(result: Any, paths: Any) -> None:
    """Each measured model's p50 interval, from its stored samples (the recommendation's interval)."""
    from edgebench.bench.store import Store
    from edgebench.reports.stats import statistic_interval

    store = Store(paths.store_location)
    by_run: dict[str, dict[str, Any]] = {}
    for m in (result.dense, result.fitted, result.uniform, result.builtin):
        if m is None or not m.run_id:
            continue
        cells = by_run.setdefault(m.run_id, {c.cell_key: c for c in store.cells(m.run_id)})
        cell = cells.get(m.cell_key)
        if cell is None or cell.result is None or not cell.result.samples_ns:
            continue
        samples = [s / 1e6 for s in cell.result.samples_ns]
        _, m.p50_low_ms, m.p50_high_ms = statistic_interval(samples, "median", cell.result.process_samples or None, key=m.cell_key)


def _summary(result: Any, out: dict[str, Path]) -> None:
    if result.status == "unreachable":
        err.print(f"edgebench: {result.message}", markup=False)
    elif result.fitted is None and result.message:
        echo(f"fit {result.id}: {result.message}")
    f = result.fitted
    if f is not None:
        interval = f" [{f.p50_low_ms:.4g}-{f.p50_high_ms:.4g}]" if f.p50_low_ms is not None else ""
        top1 = f", top-1 {f.top1:.2%} (dense {result.dense.top1:.2%})" if f.top1 is not None and result.dense and result.dense.top1 is not None else ""
        echo(f"fit {result.id}: {result.status}: p50 {f.p50_ms:.4g} ms{interval} vs budget {result.budget_text} = {result.budget_ms:.4g} ms{top1}")
        if result.uniform is not None and result.uniform.top1 is not None:
            echo(f"uniform channel pruning at the same latency: p50 {result.uniform.p50_ms:.4g} ms, top-1 {result.uniform.top1:.2%}")
        echo(f"recipe: {result.recipe_path}")
    errors = result.prediction_errors()
    if errors:
        echo(f"prediction vs measurement over {len(errors)} committed steps: median |error| {statistics.median(errors):.1%}")
    echo("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.phases_s.items()) + f"; total {sum(result.phases_s.values()):.0f}s")
    for name, path in out.items():
        echo(f"{name}: {path}")


def fits(home: Optional[Path] = HomeOpt, store: Optional[str] = StoreOpt) -> None:
    """Stored fits, newest first: status, budget, fitted p50 and top-1, the recipe."""
    from edgebench.bench.cli_common import open_store

    for r in open_store(home, store).fits():
        f = r.fitted
        got = f"p50 {f.p50_ms:.4g} ms, top-1 {f.top1:.2%}" if f is not None and f.top1 is not None else (f"p50 {f.p50_ms:.4g} ms" if f else "no fitted model")
        echo(f"{r.id}  {r.status:13} {r.model} on {r.target} ({r.backend}/{r.precision}/b{r.batch}) to {r.budget_text} = {r.budget_ms:.4g} ms: "
             f"{got}" + (f"; {r.recipe_path}" if r.recipe_path else ""))


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)
    app.command("fits")(fits)
