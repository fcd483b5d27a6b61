"""The A/A trial: how often does edgebench call a "win" between a cell and itself? (Not part of the test
suite: live mode times real cells on this machine.)

An A/A pair is the same computation measured twice; any "win" between its two halves is noise. Two kinds:

- **same computation within a run**: ``l1-unstructured-50`` and ``dense`` on the same backend, precision
  and batch (the 50% zeros are stored and run dense: ``reports.recommend.same_computation``);
- **the same cell in two runs** (live mode): the same artifact, measured again in a new run.

For each pair, the cell with the lower p90 is the "best" and the pair is a *win* when the recommendation's
rule would call one (before its same-computation shortcut, which would hide the interval):

- OLD rule (edgebench 0.2): pooled i.i.d. bootstrap of each cell's samples, every interval (p90, median)
  wholly above 1 (``stats.pooled_compare``);
- NEW rule: processes resampled, then samples (``stats.compare``), and ``ties.tie_reason`` says no tie
  (every interval wholly above 1, both cells measured in >= 2 processes), and neither cell is flagged
  contended (the recommendation excludes those; their count and the wins of the interval alone on them
  are printed too: on a busy machine they are most pairs).

Cross-run pairs are also judged the way ``edgebench check`` judges a cell (``compare.latency_verdict``;
a false regression/improvement is a "win" for the check).

    python scripts/aa_trial.py --trials 10 [--processes 3] [--floors default|small] [--home DIR]
    python scripts/aa_trial.py --from-run RUN_ID --home DIR

Live mode measures the suite ``T`` times with ``processes: 1`` (judged by the old rule) and ``T`` times with
``processes: P`` (the new rule; the old rule is shown on those runs too). ``--floors small`` (warm-up 5
runs / 0.1 s, measurement 100 runs / 0.5 s) keeps a trial to seconds; the number that matters is the one
with the suite's default floors (``--floors default``: 10 runs / 0.5 s, 100 runs / 2 s), on an idle machine.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from edgebench.bench.config import load_suite
from edgebench.bench.contracts.flags import has
from edgebench.bench.runner import Paths, Runner
from edgebench.bench.store import Store
from edgebench.reports import compare as cmp
from edgebench.reports import stats
from edgebench.reports.recommend import same_computation
from edgebench.reports.ties import tie_reason
from edgebench.reports.tables import Row, RunReport, load

STATISTICS = ("p90", "median")
FLOORS = {"default": {"warmup_runs": 10, "warmup_seconds": 0.5, "min_runs": 100, "min_seconds": 2.0},
          "small": {"warmup_runs": 5, "warmup_seconds": 0.1, "min_runs": 100, "min_seconds": 0.5}}


def suite(processes: int, floors: str, backends: list[str]) -> dict:
    return {"name": f"aa-trial-p{processes}", "models": ["small_cnn"], "recipes": ["dense", "l1-unstructured-50"],
            "backends": backends, "precisions": ["fp32"], "batch_sizes": [1], "targets": ["local"],
            "measure": {**FLOORS[floors], "processes": processes}}


@dataclass
class Tally:
    """Pairs judged and wins called, per rule."""

    pairs: int = 0
    wins: dict[str, int] = field(default_factory=lambda: {"old": 0, "new": 0})
    excluding_one: dict[str, int] = field(default_factory=lambda: {"old": 0, "new": 0})  # single intervals excluding 1
    contended: int = 0  # pairs with a contended cell (never a win under the new rule)
    contended_interval_wins: int = 0  # of those, how many the new interval alone would have called

    def line(self, what: str) -> str:
        n = max(self.pairs, 1)
        return (f"{what}: {self.pairs} pairs; wins OLD {self.wins['old']} ({self.wins['old'] / n:.1%}), NEW {self.wins['new']} "
                f"({self.wins['new'] / n:.1%}); single intervals excluding 1: OLD {self.excluding_one['old']}/{2 * self.pairs}, "
                f"NEW {self.excluding_one['new']}/{2 * self.pairs}; pairs with a contended cell {self.contended} "
                f"(NEW interval alone would call {self.contended_interval_wins} of them)")


def judge(a: tuple[str, np.ndarray, list[int]], b: tuple[str, np.ndarray, list[int]], tally: Tally, contended: bool = False) -> str:
    """Both rules on one A/A pair (key, samples, samples per process); the lower p90 is the best;
    ``contended``: a cell of the pair is flagged contended (the new rule never ranks it)."""
    if stats.point(b[1], "p90") < stats.point(a[1], "p90"):
        a, b = b, a
    old = [stats.pooled_compare(a[1], b[1], s, a[0], b[0]) for s in STATISTICS]
    new = [stats.compare(a[1], b[1], s, a[0], b[0], a[2] or None, b[2] or None) for s in STATISTICS]
    interval_win = tie_reason(new) is None
    won = {"old": all(ci.separated for ci in old), "new": interval_win and not contended}
    tally.pairs += 1
    tally.contended += contended
    tally.contended_interval_wins += contended and interval_win
    for rule, cis in (("old", old), ("new", new)):
        tally.wins[rule] += won[rule]
        tally.excluding_one[rule] += sum(not ci.includes_one for ci in cis)
    def text(cis: list[stats.RatioCI]) -> str:
        return "; ".join(f"{ci.statistic} {ci.ratio:.3f} [{ci.low:.3f}-{ci.high:.3f}]" for ci in cis)
    new_word = "WIN" if won["new"] else ("excluded: contended" if contended else "tie")
    return f"OLD {'WIN' if won['old'] else 'tie'} ({text(old)}), NEW {new_word} ({text(new)}; processes {len(a[2]) or 1}/{len(b[2]) or 1})"


def busy(row: Row) -> bool:
    return bool(row.contended) or has(row.flags, "contended")


def side(report: RunReport, row: Row) -> tuple[str, np.ndarray, list[int]] | None:
    s = report.samples.get(row.cell_key)
    return None if not s else (f"{report.run.id}/{row.cell_key}", np.asarray(s, dtype=np.float64), report.process_samples.get(row.cell_key, []))


def same_compute_pairs(report: RunReport, tally: Tally, verbose: bool = True) -> None:
    """Every pair of ok cells of one run that run the same computation."""
    rows = [r for r in report.rows if r.status == "ok"]
    for x, y in itertools.combinations(rows, 2):
        if not same_computation(x, y):
            continue
        a, b = side(report, x), side(report, y)
        if a is None or b is None:
            continue
        text = judge(a, b, tally, contended=busy(x) or busy(y))
        if verbose:
            print(f"  {x.cell_key} vs {y.recipe}: {text}", flush=True)


def cross_run(prev: RunReport, cur: RunReport, tally: Tally, checks: dict[str, int], use_processes: bool) -> None:
    """The same cell in two runs: the recommendation's rules and `check`'s latency verdict."""
    before = {r.cell_key: r for r in prev.rows if r.status == "ok"}
    for row in cur.rows:
        old_row = before.get(row.cell_key)
        a, b = (side(prev, old_row) if old_row else None), side(cur, row)
        if a is None or b is None:
            continue
        contended = busy(old_row) or busy(row)
        judge(a, b, tally, contended=contended)
        procs = (a[2], b[2]) if use_processes else (None, None)
        samples = list(a[1].astype(np.int64)), list(b[1].astype(np.int64))
        mv = cmp.latency_verdict(*samples, cmp.Thresholds(), key=row.cell_key, processes=procs)
        checks["judged"] += 1
        checks["flagged"] += mv.verdict in (cmp.REGRESSED, cmp.IMPROVED) and not contended  # check: contended is inconclusive
        checks["contended"] += contended


def from_run(home: Path, run_id: str) -> None:
    store = Store(home / "edgebench.sqlite")
    report = load(store, run_id, with_samples=True)
    procs = sorted({len(v) for v in report.process_samples.values()}) or [1]
    print(f"run {report.run.id} ({report.run.suite_name}): worker processes per cell {procs}")
    tally = Tally()
    same_compute_pairs(report, tally)
    print(tally.line("same computation within the run"))


def live(args: argparse.Namespace) -> None:
    home = args.home or Path(tempfile.mkdtemp(prefix="aa-trial-"))
    home.mkdir(parents=True, exist_ok=True)
    runner = Runner(Paths(home=home), log=lambda m: None)
    print(f"A/A trial: {args.trials} trials per rule, floors {args.floors} {FLOORS[args.floors]}, backends {args.backends}, home {home}")
    results = {}
    for label, processes in (("processes=1", 1), (f"processes={args.processes}", args.processes)):
        path = home / f"aa-p{processes}.yaml"
        path.write_text(yaml.safe_dump(suite(processes, args.floors, args.backends), sort_keys=False))
        within, across, checks = Tally(), Tally(), {"judged": 0, "flagged": 0, "contended": 0}
        previous = None
        for t in range(args.trials):
            run_id = runner.run(load_suite(path)).run_id
            report = load(runner.store, run_id, with_samples=True)
            print(f"[{label}] trial {t + 1}/{args.trials}: run {run_id}", flush=True)
            same_compute_pairs(report, within)
            if previous is not None:
                cross_run(previous, report, across, checks, use_processes=processes > 1)
            previous = report
        results[label] = (within, across, checks)
    print("\n== A/A: a win between a computation and itself ==")
    for label, (within, across, checks) in results.items():
        print(f"[{label}] " + within.line("same computation within a run (dense vs l1-unstructured-50)"))
        print(f"[{label}] " + across.line("the same cell in consecutive runs"))
        print(f"[{label}] edgebench check's latency verdict on the same cell in consecutive runs: "
              f"{checks['flagged']} of {checks['judged']} regressed/improved ({checks['contended']} pairs with a contended cell: inconclusive)")
    one, many = results["processes=1"][0], results[f"processes={args.processes}"][0]
    pairs_before = one.pairs + results["processes=1"][1].pairs
    pairs_after = many.pairs + results[f"processes={args.processes}"][1].pairs
    wins_before = one.wins["old"] + results["processes=1"][1].wins["old"]
    wins_after = many.wins["new"] + results[f"processes={args.processes}"][1].wins["new"]
    print(f"\nBEFORE (old rule, processes=1): {wins_before} wins in {pairs_before} A/A pairs ({wins_before / max(pairs_before, 1):.1%})")
    print(f"AFTER  (new rule, processes={args.processes}): {wins_after} wins in {pairs_after} A/A pairs ({wins_after / max(pairs_after, 1):.1%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10, help="runs per rule")
    ap.add_argument("--processes", type=int, default=3, help="measure.processes of the new rule's runs")
    ap.add_argument("--floors", choices=sorted(FLOORS), default="small")
    ap.add_argument("--backends", nargs="+", default=["onnxruntime"], help="backends of the trial suite")
    ap.add_argument("--home", type=Path, default=None, help="[default: a temporary folder]")
    ap.add_argument("--from-run", default=None, metavar="RUN_ID", help="judge the same-computation pairs of a stored run instead")
    args = ap.parse_args()
    if args.from_run:
        if args.home is None:
            ap.error("--from-run needs --home (the folder holding edgebench.sqlite)")
        from_run(args.home, args.from_run)
    else:
        live(args)


if __name__ == "__main__":
    main()
