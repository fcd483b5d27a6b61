"""Store maintenance commands of the ``edgebench`` command line: ``edgebench gc``.

``bench/cli.py`` calls :func:`register` once. ``gc`` drops the raw latency samples of old runs and keeps
everything else: each cell's stored summary (p50/p90/p99, the result JSON), so ``history``, ``show``,
``report`` and the run-to-run noise of ``check`` keep working on a summarised run; baselines (by
default) keep their samples so ``check`` can still test against them. The plan and the deletion are
:mod:`edgebench.bench.store_gc`'s; this module only says what they keep, drop and free.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from edgebench.bench.cli_common import HomeOpt, StoreOpt, echo, open_store

if TYPE_CHECKING:
    from edgebench.bench.store import RunRecord


def register(app: typer.Typer) -> None:
    """Add ``gc`` to ``app``."""

    @app.command()
    def gc(
        keep_last: int = typer.Option(..., "--keep-last", min=1, help="Keep the raw samples of the last N runs of each suite (N >= 1)."),
        keep_baselines: bool = typer.Option(True, "--keep-baselines/--no-keep-baselines", help="Keep the samples of every run a baseline points at [default: keep]."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be kept and dropped; change nothing."),
        home: Optional[Path] = HomeOpt,
        store: Optional[str] = StoreOpt,
    ) -> None:
        """Drop the raw latency samples of old runs; keep their summaries (p50/p90/p99, accuracy, memory), so
        history and regression checks keep working, and the samples of the last N runs of each suite and of
        baselines. On SQLite the file is then compacted (VACUUM) and its size before and after is printed.

        Exit code 0 (also when there is nothing to drop), 2 for an error (no store, --keep-last below 1).
        """
        from edgebench.bench import store_gc

        db = open_store(home, store)
        runs = {r.id: r for r in db.runs(limit=1_000_000)}
        if not runs:
            echo(f"store {db.path or db.display_url} has no runs: nothing to do")
            return
        plan = store_gc.plan_gc(db, keep_last, keep_baselines=keep_baselines)
        _print_plan(plan, runs)
        if not plan.drop:
            echo(f"gc: nothing to drop; the samples of {len(plan.keep)} run(s) are kept")
            return
        if dry_run:
            echo(f"gc --dry-run: nothing changed; without --dry-run this drops the samples of {len(plan.drop)} run(s) "
                 f"({plan.samples} samples, {mb(plan.blob_bytes)})")
            return
        result = store_gc.apply_gc(db, plan)
        if result.file_bytes_before is not None and result.file_bytes_after is not None:
            echo(f"store file {db.path}: {mb(result.file_bytes_before)} -> {mb(result.file_bytes_after)} (VACUUM)")
        echo(f"gc: dropped the samples of {result.runs} run(s) ({result.samples} samples, {mb(result.blob_bytes)}); "
             "their summaries stay, so history and check still read them")


def mb(n: int | None) -> str:
    """Bytes as decimal megabytes (what `ls -l --si` and `du --si` say)."""
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _print_plan(plan: Any, runs: dict[str, RunRecord]) -> None:
    """What gc keeps and why, then what it drops: one line per run, oldest first."""
    for run_id, why in sorted(plan.keep.items(), key=lambda kv: _when(runs, kv[0])):
        echo(f"keep  {_describe(runs, run_id)}: {why}")
    for run_id in plan.drop:
        echo(f"drop  {_describe(runs, run_id)}")
    summarised = [r for r in runs.values() if r.samples_dropped_at is not None and r.id not in plan.keep]
    if summarised:
        echo(f"already summarised: {len(summarised)} run(s) (samples dropped by an earlier gc)")
    if plan.drop:
        echo(f"to drop: the samples of {len(plan.drop)} run(s): {plan.samples} samples, {mb(plan.blob_bytes)} of sample data")


def _when(runs: dict[str, RunRecord], run_id: str) -> tuple[str, str]:
    run = runs.get(run_id)
    return (run.created_at.isoformat() if run else "", run_id)


def _describe(runs: dict[str, RunRecord], run_id: str) -> str:
    run = runs.get(run_id)
    if run is None:
        return f"run {run_id}"
    return f"run {run_id} ({run.suite_name}, {run.status}, {run.created_at:%Y-%m-%d %H:%M} UTC)"
