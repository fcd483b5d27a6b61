"""The nightly-regression acceptance trial on real runs (not part of the test suite: it reads real timings).

Input: a store with repeated runs of one suite (``--suite``, e.g. the default suite restricted to ONNX
Runtime) and runs of a one-cell suite measuring that cell deliberately slowed (``--slowed-suite``, e.g.
threads 2 -> 1), each slowed run taken right after a suite run. Everything happens on a temporary copy.

1. False positives: each suite run is checked against the run before it (nothing changed between them),
   once judged from the two runs alone (run-to-run noise = the prior) and once with the store's history.
2. Detection: the slowed cell's measurement replaces that cell in a suite run (the run it followed), which
   is then checked against the suite run before it: the slowed cell should be flagged, and nothing else.

    python scripts/nightly_trial.py --store edgebench-results/edgebench.sqlite --suite default-ort --slowed-suite default-ort-slowed-cell
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import sqlalchemy as sa

from edgebench.bench.store import Store, cells as cells_table, runs as runs_table
from edgebench.reports import compare as cmp
from edgebench.reports import verdict


def flagged(comp: cmp.Comparison) -> list[str]:
    return [f"{c.cell_key} {c.verdict} ({(c.metric('latency').reason if c.metric('latency') else c.status)})"
            for c in comp.cells if c.verdict in (cmp.REGRESSED, cmp.IMPROVED)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--slowed-suite", required=True)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nightly-trial-"))
    db = tmp / "trial.sqlite"
    src = Store(args.store)
    src.engine.dispose()
    shutil.copy(args.store, db)
    for suffix in ("-wal", "-shm"):
        if Path(args.store + suffix).exists():
            shutil.copy(args.store + suffix, str(db) + suffix)
    store = Store(db)
    all_runs = sorted(store.runs(limit=1000), key=lambda r: r.created_at)
    suite = [r for r in all_runs if r.suite_name == args.suite and r.status == "finished"]
    slowed = [r for r in all_runs if r.suite_name == args.slowed_suite and r.status == "finished"]
    slowed_cells = {r.id: store.cells(r.id)[0] for r in slowed}
    with store.engine.begin() as conn:  # the slowed runs must not count as history of their cell
        for r in slowed:
            conn.execute(cells_table.delete().where(cells_table.c.run_id == r.id))
            conn.execute(runs_table.delete().where(runs_table.c.id == r.id))
    print(f"{len(suite)} runs of {args.suite}, {len(slowed)} slowed runs of {args.slowed_suite}\n")

    print("== false positives: each run checked against the one before it (no change) ==")
    totals = {"prior only": [0, 0, 0], "with history": [0, 0, 0]}  # flagged, judged cells, contended-inconclusive
    for prev, run in zip(suite, suite[1:]):
        for mode, use_history in (("prior only", False), ("with history", True)):
            comp = verdict.run(store, prev.id, run.id, use_history=use_history)
            flags = flagged(comp)
            disturbed = sum(1 for c in comp.cells if c.metric("latency") and "not judged" in c.metric("latency").reason)
            totals[mode][0] += len(flags)
            totals[mode][1] += len(comp.cells) - disturbed
            totals[mode][2] += disturbed
            print(f"{run.id} vs {prev.id} [{mode}]: {len(flags)} flagged of {len(comp.cells)} "
                  f"({disturbed} contended: not judged)" + "".join(f"\n    {f}" for f in flags))
    for mode, (n, judged, disturbed) in totals.items():
        print(f"TOTAL [{mode}]: {n} false positive(s) in {judged} judged cell comparisons ({disturbed} contended, not judged)")

    print("\n== detection: the slowed cell spliced into the suite run it followed, checked against the run before ==")
    for s in slowed:
        cell = slowed_cells[s.id]
        host = max((r for r in suite if r.created_at < s.created_at), key=lambda r: r.created_at, default=None)
        if host is None or suite.index(host) == 0:
            continue
        base = suite[suite.index(host) - 1]
        trial = tmp / f"splice-{s.id}.sqlite"
        store.engine.dispose()
        shutil.copy(db, trial)
        t = Store(trial)
        with t.engine.begin() as conn:
            conn.execute(cells_table.delete().where(cells_table.c.run_id == host.id, cells_table.c.cell_key == cell.cell_key))
        cell.row_id = None
        t.add_cell(host.id, cell)
        for mode, use_history in (("prior only", False), ("with history", True)):
            comp = verdict.run(t, base.id, host.id, use_history=use_history)
            lat = next(c for c in comp.cells if c.cell_key == cell.cell_key).metric("latency")
            others = [f for f in flagged(comp) if not f.startswith(cell.cell_key)]
            print(f"{host.id} (+ slowed {s.id}) vs {base.id} [{mode}]: slowed cell {lat.verdict}: {lat.reason}; "
                  f"other cells flagged: {len(others)}" + "".join(f"\n    {f}" for f in others))
        t.engine.dispose()
    print(f"\n(temporary copies in {tmp})")


if __name__ == "__main__":
    main()
