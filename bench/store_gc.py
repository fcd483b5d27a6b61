"""Retention: drop old runs' raw latency samples, keep everything else (``edgebench gc``, bench/cli_store.py).

A run whose samples are dropped keeps its cells with p50/p90/p99, top-1 and the whole result (LatencyStats,
memory, accuracy, flags...), so `history`, `show` and regression checks keep working on it; only the
``cell_samples`` blobs go, and ``runs.samples_dropped_at`` says when (``CellRecord.samples_dropped`` then).

Which runs keep their samples: the ``keep_last`` newest runs of each suite name (fit and confirmation
runs counted apart from the suite's nights, so a fit's many small runs never push a night out), every
run a baseline points at (``keep_baselines``), and runs still running. Each dropped run is one
transaction (its blobs deleted, its ``samples_dropped_at`` set), so an interrupted gc loses nothing but
what it was told to drop; on SQLite a VACUUM then gives the space back to the file system.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa

from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.store import CONFIRMATION, FIT, Store, baselines, cell_samples, cells, now, runs
from edgebench.bench.store_faults import refused_writes

_KINDS = {FIT: "fit runs", CONFIRMATION: "confirmation runs"}  # counted apart from a suite's nights


@dataclass
class GcPlan:
    """What :func:`apply_gc` would do: the runs whose samples go and why every other one stays."""

    drop: list[str] = field(default_factory=list)  # run ids whose samples go (oldest first)
    keep: dict[str, str] = field(default_factory=dict)  # run id -> why its samples stay
    samples: int = 0  # samples dropping removes
    blob_bytes: int = 0  # bytes of sample blobs dropping removes


@dataclass
class GcResult:
    """What :func:`apply_gc` did; file sizes are the SQLite file with its WAL (None on PostgreSQL)."""

    runs: int
    samples: int
    blob_bytes: int
    file_bytes_before: int | None
    file_bytes_after: int | None


def plan_gc(store: Store, keep_last: int, keep_baselines: bool = True) -> GcPlan:
    """Which runs' samples to drop: all but the ``keep_last`` newest of each suite, baselines (if kept) and running runs.

    Runs whose samples are already dropped appear in neither ``drop`` nor ``keep``.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last must be 0 or more, not {keep_last}")
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(runs.c.id, runs.c.suite_name, runs.c.status, runs.c.samples_dropped_at)
                            .order_by(runs.c.created_at.desc(), runs.c.id.desc())).all()
        pinned = _baseline_reasons(conn) if keep_baselines else {}
    plan = GcPlan()
    seen: dict[str, int] = defaultdict(int)
    for run_id, suite, status, dropped_at in rows:  # newest first
        if status == "running":
            plan.keep[run_id] = "still running"
            continue
        group = f"{_KINDS[status]} of suite {suite!r}" if status in _KINDS else f"runs of suite {suite!r}"
        seen[group] += 1
        if dropped_at is not None:
            continue
        if seen[group] <= keep_last:
            plan.keep[run_id] = f"one of the last {keep_last} {group}"
        elif run_id in pinned:
            plan.keep[run_id] = pinned[run_id]
        else:
            plan.drop.append(run_id)
    plan.drop.reverse()  # oldest first
    plan.samples, plan.blob_bytes = _blob_totals(store, plan.drop)
    return plan


def apply_gc(store: Store, plan: GcPlan, vacuum: bool = True) -> GcResult:
    """Drop the samples of ``plan.drop``, one transaction per run, then VACUUM a SQLite store (``vacuum``).

    A run that started running again since the plan was made (``edgebench run --resume``) is left alone.
    """
    before = _file_bytes(store)
    done = samples = blob_bytes = 0
    for run_id in plan.drop:
        dropped = _drop_run(store, run_id)
        if dropped is not None:
            done, samples, blob_bytes = done + 1, samples + dropped[0], blob_bytes + dropped[1]
    if vacuum and store.path is not None:
        _vacuum(store)
    return GcResult(done, samples, blob_bytes, before, _file_bytes(store))


def _drop_run(store: Store, run_id: str) -> tuple[int, int] | None:
    """Delete one run's blobs and mark it; (samples, bytes) removed, or None when the run is running or gone."""
    run_cells = sa.select(cells.c.id).where(cells.c.run_id == run_id)
    with refused_writes(store.path or store.display_url), store.engine.begin() as conn:
        # the update first: it takes SQLite's write lock at once, and it is what decides whether to go on
        marked = conn.execute(runs.update().where(runs.c.id == run_id, runs.c.status != "running", runs.c.samples_dropped_at.is_(None))
                              .values(samples_dropped_at=now())).rowcount
        if not marked:
            return None
        count, size = conn.execute(_totals().where(cell_samples.c.cell_id.in_(run_cells))).one()
        conn.execute(cell_samples.delete().where(cell_samples.c.cell_id.in_(run_cells)))
    return int(count), int(size)


def _totals() -> sa.Select:
    """Samples and blob bytes of the ``cell_samples`` rows a ``where`` picks (0, 0 for none)."""
    return sa.select(sa.func.coalesce(sa.func.sum(cell_samples.c.count), 0),
                     sa.func.coalesce(sa.func.sum(sa.func.length(cell_samples.c.data)), 0))


def _baseline_reasons(conn: sa.Connection) -> dict[str, str]:
    """Run id -> "baseline 'nightly' for target 'pi4'" (several joined by "; ")."""
    found: dict[str, list[str]] = defaultdict(list)
    for name, target, run_id in conn.execute(sa.select(baselines.c.name, baselines.c.target, baselines.c.run_id)
                                             .order_by(baselines.c.name, baselines.c.target)):
        found[run_id].append(f"baseline {name!r} for target {target!r}")
    return {run_id: "; ".join(reasons) for run_id, reasons in found.items()}


def _blob_totals(store: Store, run_ids: list[str]) -> tuple[int, int]:
    """Samples and blob bytes stored for these runs."""
    if not run_ids:
        return 0, 0
    total_samples = total_bytes = 0
    with store.engine.connect() as conn:
        for start in range(0, len(run_ids), 500):  # bounded IN lists (SQLite's parameter limit)
            chunk = run_ids[start:start + 500]
            n, size = conn.execute(_totals().select_from(cell_samples.join(cells, cells.c.id == cell_samples.c.cell_id))
                                   .where(cells.c.run_id.in_(chunk))).one()
            total_samples, total_bytes = total_samples + int(n), total_bytes + int(size)
    return total_samples, total_bytes


def _vacuum(store: Store) -> None:
    """VACUUM the SQLite file and fold the WAL back in, so the freed pages leave the file system's count."""
    try:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    except sa.exc.OperationalError as exc:
        raise EdgebenchError(f"{store.path}: the samples were dropped, but VACUUM could not run ({exc.orig}); "
                             "run `edgebench gc` again when no other process uses the store to give the space back") from None


def _file_bytes(store: Store) -> int | None:
    """The SQLite file's size with its write-ahead log (None for a server store)."""
    if store.path is None:
        return None
    return sum(os.path.getsize(p) for p in (store.path, f"{store.path}-wal") if os.path.exists(p))
