"""``edgebench sensitivity MODEL``: the layer-wise sensitivity scan (bench/sensitivity.py), then its
report (reports/sensitivity.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgebench.bench.cli_common import HomeOpt, console, echo
from edgebench.bench.cli_common import paths as _paths

if TYPE_CHECKING:
    from edgebench.bench.sensitivity import ScanResult


def sensitivity(
    model: str = typer.Argument(..., help="A zoo model (`edgebench list models`), or a model of the suite given with --suite."),
    ratios: str = typer.Option("0.25,0.5,0.75,0.9", "--ratios", help="Comma-separated shares of one layer's channels (or weights) removed, each in [0, 1)."),
    kind: str = typer.Option("channel", "--kind", help="channel: torch-pruning channel groups (as edgebench fit); unstructured: each Conv2d/Linear layer, L1 magnitude."),
    importance: str = typer.Option("l2", "--importance", help="Channel ranking within a group: l2 or l1 (group magnitude)."),
    recalibrate_bn: bool = typer.Option(True, "--recalibrate-bn/--no-recalibrate-bn", help="Re-estimate BatchNorm statistics after pruning (as edgebench fit does)."),
    suite: Optional[Path] = typer.Option(None, "--suite", help="A suite YAML whose models: names MODEL (a model of your own)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default: HOME/reports/sensitivity-MODEL-KIND-KEY)."),
    executor: str = typer.Option("inprocess", "--executor", help="inprocess, or ray (one task per group or layer; pip install 'edgebench\\[fleet]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --executor ray: an existing Ray cluster; a local one is started otherwise."),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Prune each channel group (or layer) of MODEL alone at each ratio, no fine-tune, and score top-1 and
    loss on a held-out slice of the training split (the evaluation split's top-1 is reported beside, never
    ranked on); trains or reuses the cached dense model; results cached. Writes sensitivity.md, .html
    (top-1 vs ratio plots) and .json.

    Exit code 0 when the report is written, 2 for an unknown model, a bad ratio, or a model without labels
    (latency-only models cannot be scanned), 130 when interrupted."""
    from edgebench.bench.config import load_suite
    from edgebench.bench.prepare import Preparer
    from edgebench.bench.sensitivity import ScanOptions, parse_ratios, report_name, scan
    from edgebench.models.cache import Cache
    from edgebench.reports.sensitivity import write_sensitivity_report

    opts = ScanOptions(parse_ratios(ratios), kind, importance, recalibrate_bn, executor, ray_address)
    user_models = dict(load_suite(suite).user_models) if suite is not None else {}
    paths = _paths(home, None)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"sensitivity {model}: dense model", total=None)

        def log(line: str) -> None:
            progress.console.print(line, markup=False, soft_wrap=True)

        def on_start(n: int) -> None:
            progress.update(task, description=f"sensitivity {model}: {kind} scan", total=n, completed=0)

        preparer = Preparer(Cache(paths.cache), log=log, models=user_models)
        result = scan(preparer, model, opts, log=log, on_start=on_start, on_row=lambda row: progress.advance(task))
    written = write_sensitivity_report(result, out or paths.reports / report_name(result))
    _summary(result, written)


def _summary(r: ScanResult, written: dict[str, Path]) -> None:
    """What the scan found, in a few lines, and where the report is."""
    from edgebench.reports.sensitivity import extremes

    most, least = extremes(r.ranking())
    units = "channel groups" if r.kind == "channel" else "layers"
    took = "reused from the cache" if r.reused else f"computed in {r.compute_s:.1f} s"
    echo(f"sensitivity {r.model}: {len(r.units)} {units} x {len(r.ratios)} ratio{'s' if len(r.ratios) != 1 else ''}, {took}; dense top-1 "
         f"{r.dense_holdout_top1:.2%} on {r.holdout_images} held-out training images")
    for label, named in (("most", most), ("least", least)):
        if named:
            echo(f"{label} sensitive: " + ", ".join(f"{u} ({d:.2f} pp top-1, loss {loss:+.3f})" for u, d, loss in named))
    echo(f"table: {written['markdown']}")
    echo(f"html:  {written['html']}")
    echo(f"json:  {written['json']}")


def register(app: typer.Typer) -> None:
    app.command("sensitivity")(sensitivity)
