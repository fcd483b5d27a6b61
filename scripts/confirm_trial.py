"""The nightly acceptance trial, live, with and without `check --confirm` (not part of the test suite: it
times real cells on this machine for several minutes).

Nights: the ONNX Runtime part of the default suite is run NIGHTS times in a row. Each night is checked
against the night before (nothing changed: every flag is a false positive), once plainly and once with
its flagged cells re-measured (``--confirm``'s logic, the same functions the CLI calls).

Detection: after each night, the `l1-unstructured-50` b8 cell is measured again with threads 2 -> 1 (a
real, reproducible slowdown) and spliced into that night's run; the spliced run is checked against the
night before. A confirmation re-measures the slowed cell with threads 1 (the change is still there) and
any other flagged cell with the night's own suite.

    python scripts/confirm_trial.py --nights 10 --confirm 1 [--processes 3]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import dataclasses
import shutil
import tempfile
from pathlib import Path

import yaml

from edgebench.bench.config import load_suite
from edgebench.bench.runner import Paths, Runner
from edgebench.bench.store import CONFIRMATION, Store
from edgebench.reports import compare as cmp
from edgebench.reports import verdict

SUITE = {"name": "trial-ort", "models": ["small_cnn"], "recipes": ["dense", "l1-unstructured-50", "channel-l2-50"],
         "backends": [{"name": "onnxruntime", "threads": 2}], "precisions": ["fp32"], "batch_sizes": [1, 8], "targets": ["local"],
         "measure": {"warmup_runs": 10, "warmup_seconds": 0.5, "min_runs": 100, "min_seconds": 2.0}}
SLOWED_KEY = "small_cnn/l1-unstructured-50/onnxruntime/fp32/b8/local"


def slowed_suite() -> dict:
    s = copy.deepcopy(SUITE)
    s.update(name="trial-ort-slowed", recipes=["l1-unstructured-50"], batch_sizes=[8], backends=[{"name": "onnxruntime", "threads": 1}])
    return s


def flags(comp: cmp.Comparison) -> list[str]:
    return [f"{c.cell_key} {c.verdict} x{c.metric('latency').ratio:.3f}" for c in comp.cells
            if c.verdict in (cmp.REGRESSED, cmp.IMPROVED) and c.metric("latency")]


def remeasure(runner: Runner, store: Store, suites: dict[str, Path], keys: set[str], head: str, times: int) -> list[str]:
    """``times`` confirmation runs of ``keys``; a key is measured from ``suites[key]`` (default: suites['*'])."""
    out = []
    for _ in range(times):
        ids = []
        for path in {suites.get(k, suites["*"]) for k in keys}:
            mine = {k for k in keys if suites.get(k, suites["*"]) == path}
            ids.append(runner.run(load_suite(path), only=mine, confirm_of=head).run_id)
        first = ids[0]
        for other in ids[1:]:  # one confirmation run per round, as `check --confirm` makes
            for cell in store.cells(other):
                cell.row_id = None
                store.add_cell(first, cell)
        out.append(first)
    return out


def splice(store: Store, night: str, slowed_run: str) -> str:
    """A copy of run ``night`` with the slowed cell in place of its own."""
    run = store.run(night)
    new_id = f"{night}-spliced"
    # Just before the night it copies, so the night itself is not in the spliced run's history.
    store.create_run(dataclasses.replace(run, id=new_id, created_at=run.created_at - dt.timedelta(milliseconds=1), status="running"))
    for target, env in store.environments(night).items():
        store.add_environment(new_id, target, env)
    slowed = {c.cell_key: c for c in store.cells(slowed_run)}
    for cell in store.cells(night):
        cell = slowed.get(cell.cell_key, cell)
        cell.row_id = None
        store.add_cell(new_id, cell)
    store.finish_run(new_id, CONFIRMATION, run.summary or {})  # kept out of latest and of the history
    return new_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nights", type=int, default=8)
    ap.add_argument("--confirm", type=int, default=1)
    ap.add_argument("--processes", type=int, default=1, help="measure.processes of every cell")
    ap.add_argument("--home", type=Path, default=None, help="[default: a temporary folder]")
    args = ap.parse_args()
    SUITE["measure"]["processes"] = args.processes
    home = args.home or Path(tempfile.mkdtemp(prefix="confirm-trial-"))
    home.mkdir(parents=True, exist_ok=True)
    suite, slow = home / "trial-ort.yaml", home / "trial-ort-slowed.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    slow.write_text(yaml.safe_dump(slowed_suite(), sort_keys=False))
    paths = Paths(home=home)
    runner = Runner(paths, log=lambda m: None)
    store = runner.store
    th = cmp.Thresholds()

    nights, slowed = [], []
    for i in range(args.nights):
        nights.append(runner.run(load_suite(suite)).run_id)
        slowed.append(runner.run(load_suite(slow), confirm_of=nights[-1]).run_id)  # a confirmation: stays out of history
        print(f"night {i + 1}/{args.nights}: run {nights[-1]}, slowed cell in {slowed[-1]}", flush=True)

    fp = {"plain": 0, "confirmed": 0, "judged": 0}
    print("\n== false positives: each night against the night before ==")
    for prev, night in zip(nights, nights[1:]):
        comp = verdict.run(store, prev, night, th)
        plain = flags(comp)
        fp["judged"] += sum(1 for c in comp.cells if c.metric("latency") and "not judged" not in c.metric("latency").reason)
        fp["plain"] += len(plain)
        kept = plain
        if plain:
            keys = verdict.confirmation_targets(store, comp, night).get(night, set())
            runs = remeasure(runner, store, {"*": suite}, keys, night, args.confirm)
            comp = verdict.confirm(store, comp, prev, night, {night: runs}, th)
            kept = flags(comp)
        fp["confirmed"] += len(kept)
        print(f"{night} vs {prev}: plain {len(plain)} flagged, with --confirm {args.confirm}: {len(kept)}"
              + "".join(f"\n    plain: {f}" for f in plain) + "".join(f"\n    kept:  {f}" for f in kept), flush=True)

    det = {"plain": 0, "confirmed": 0, "others_plain": 0, "others_confirmed": 0, "checks": 0}
    print("\n== detection: the slowed cell spliced into its night, against the night before ==")
    for prev, night, slowed_run in zip(nights, nights[1:], slowed[1:]):
        head = splice(store, night, slowed_run)
        comp = verdict.run(store, prev, head, th)
        plain = flags(comp)
        hit = any(f.startswith(SLOWED_KEY + " regressed") for f in plain)
        others = [f for f in plain if not f.startswith(SLOWED_KEY)]
        keys = verdict.confirmation_targets(store, comp, head).get(head, set())
        if keys:
            runs = remeasure(runner, store, {"*": suite, SLOWED_KEY: slow}, keys, head, args.confirm)
            comp = verdict.confirm(store, comp, prev, head, {head: runs}, th)
        kept = flags(comp)
        hit_c = any(f.startswith(SLOWED_KEY + " regressed") for f in kept)
        others_c = [f for f in kept if not f.startswith(SLOWED_KEY)]
        det["checks"] += 1
        det["plain"] += hit
        det["confirmed"] += hit_c
        det["others_plain"] += len(others)
        det["others_confirmed"] += len(others_c)
        lat = next(c for c in comp.cells if c.cell_key == SLOWED_KEY).metric("latency")
        print(f"{head} vs {prev}: slowed cell plain {'flagged' if hit else 'missed'}, confirmed {'flagged' if hit_c else 'missed'} "
              f"(x{lat.ratio:.3f}: {lat.reason}); other cells flagged: plain {len(others)}, confirmed {len(others_c)}", flush=True)

    print(f"\nTOTAL false positives: plain {fp['plain']}, with --confirm {args.confirm} {fp['confirmed']}, in {fp['judged']} judged cell comparisons")
    print(f"TOTAL detection: slowed cell flagged plain {det['plain']}/{det['checks']}, with --confirm {det['confirmed']}/{det['checks']}; "
          f"other cells flagged plain {det['others_plain']}, with --confirm {det['others_confirmed']}")
    print(f"(store: {paths.store_location})")
    if args.home is None:
        shutil.rmtree(home / "cells", ignore_errors=True)


if __name__ == "__main__":
    main()
