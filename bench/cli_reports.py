"""Report commands of the ``edgebench`` command line: ``edgebench recommend``, and the report options that
``run`` and ``report`` (bench/cli.py) share: ``--pareto-accuracy`` and :func:`write_report`.

``bench/cli.py`` calls :func:`register` once; the options ``--home``/``--store`` and the way a run is named
(an id, a unique prefix, or ``latest``) are the same as for ``show`` and ``report``.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from edgebench.bench.cli_common import HomeOpt, StoreOpt, console, open_store


class ParetoAccuracy(str, Enum):
    """The Pareto view's accuracy axis: each cell's top-1, or the recipe's robust top-1 (reports/robustness.py)."""

    top1 = "top1"
    robust = "robust"


ParetoAccuracyOpt = typer.Option(
    ParetoAccuracy.top1, "--pareto-accuracy",
    help="The Pareto view's accuracy axis: each cell's top-1, or robust top-1 (mean corrupted top-1 of the recipe's PyTorch fp32 model; "
         "fp32 cells only, as int8/fp16 robustness is not measured). Needs `robustness:` in the suite.")


def write_report(store: Any, run_id: str, reports_root: Path, samples_csv: bool = False, pareto_accuracy: ParetoAccuracy = ParetoAccuracy.top1,
                 note: Callable[[str], None] | None = None) -> Path:
    """Write a run's report files (reports/render.py). Asked for the robust axis, a run without robustness
    numbers is one line and exit 2 (raised: ``edgebench report``), or with ``note`` (``edgebench run``, whose
    cells are measured already) that line is said and the report is written on the top-1 axis."""
    from edgebench.reports import render
    from edgebench.reports.robustness import NoRobustnessData

    axis = ParetoAccuracy(pareto_accuracy).value
    try:
        return render.write(store, run_id, reports_root, samples_csv=samples_csv, pareto_accuracy=axis)
    except NoRobustnessData as exc:
        if note is None:
            raise
        note(f"note: run {run_id} has no robustness data, so its Pareto view uses top-1 instead of robust top-1; "
             "add `robustness: true` to the suite to measure it")
        return render.write(store, run_id, reports_root, samples_csv=samples_csv)


class ObjectiveChoice(str, Enum):
    p90 = "p90"
    throughput = "throughput"
    energy = "energy"
    size = "size"


def register(app: typer.Typer) -> None:
    """Add ``recommend`` to ``app``."""

    @app.command()
    def recommend(
        run_id: str = typer.Argument("latest", metavar="RUN", help="Run id, a unique prefix, or 'latest'."),
        target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Target to recommend for (repeatable) [default: every target of the run]."),
        max_accuracy_drop: float = typer.Option(1.0, "--max-accuracy-drop", help="Largest top-1 drop, in percentage points, vs the dense cell of the same backend (fp32)."),
        no_accuracy_limit: bool = typer.Option(False, "--no-accuracy-limit", help="Rank on the objective alone (e.g. latency-only models without labels)."),
        max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Largest peak RSS, e.g. 512MB, 512MiB, 1.5GiB, or a number of MiB."),
        objective: ObjectiveChoice = typer.Option(ObjectiveChoice.p90, "--objective", help="What to optimise: p90 latency per batch, throughput (items/s), energy per item, or artifact size."),
        batch: Optional[int] = typer.Option(None, "--batch", help="Only consider this batch size."),
        model: Optional[str] = typer.Option(None, "--model", help="Only this model [default: one answer per model]."),
        as_json: bool = typer.Option(False, "--json", help="Print the recommendation as JSON."),
        home: Optional[Path] = HomeOpt,
        store: Optional[str] = StoreOpt,
    ) -> None:
        """The best recipe / backend / precision / batch per target, its margin over the runner-up, and why
        every other cell was excluded. A win needs the 95% interval of every latency ratio compared (p90 and
        median; resampling worker processes, then samples) wholly above 1, with both cells measured in at least
        2 processes; otherwise it is reported as a tie. Contended cells and cells with nan-outputs are excluded.
        The HTML report's Recommendation section is the same computation with the default options.

        Exit code 0 with an answer (a win or a tie) for every target, 1 when a target has no candidate that meets the constraints, 2 for an unknown run or target or a malformed option.
        """
        from edgebench.reports import recommend as rec_mod
        from edgebench.reports import tables
        from edgebench.reports.stats import Bootstrapper

        constraints = rec_mod.Constraints(
            max_accuracy_drop_pts=None if no_accuracy_limit else max_accuracy_drop,
            max_memory_mib=rec_mod.parse_memory(max_memory) if max_memory is not None else None,
            objective=objective.value, batch=batch, max_memory_text=max_memory,
        )
        report = tables.load(open_store(home, store), run_id, with_samples=True)
        targets = list(target or dict.fromkeys(r.target for r in report.rows))
        boot = Bootstrapper()
        recs = [r for t in targets for r in rec_mod.recommend(report, t, constraints, model=model, bootstrapper=boot)]
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in recs], indent=2, default=str))
        else:
            console.print(rec_mod.format_text(recs), markup=False, end="")
        if any(r.verdict == "none" for r in recs):
            raise typer.Exit(1)
