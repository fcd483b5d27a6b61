"""Dispersion of every cell of a stored run: the numbers the high-variance threshold was chosen from.

For each measured cell: CoV, IQR/median (what ``measure.dispersion_warn`` is compared with), MAD/median,
pytest-benchmark's outliers, other processes' CPU share; then how many cells the old rule (CoV > 5%) and
the robust rule at several thresholds would warn, over all cells and over the uncontended ones. Run the
default suite on an idle machine first (say so if it is not: the ``contended`` column):

    edgebench run default --home /tmp/disp && python scripts/dispersion_check.py /tmp/disp [RUN] [--thresholds 0.1,0.2,0.3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgebench.bench.stats import summarize
from edgebench.bench.store import Store


def rows(store: Store, run_id: str) -> list[dict]:
    out = []
    for c in store.cells(run_id):
        if c.status != "ok" or not c.result or not c.result.samples_ns:
            continue
        s = summarize(c.result.samples_ns, c.batch)  # recomputed: stores from before the robust fields have none
        con = c.result.contention
        out.append({"cell": c.cell_key, "n": s.n, "p50_ms": s.p50_ms, "cov": s.cov, "iqr_ratio": s.iqr_ratio,
                    "mad_ratio": s.mad_ms / s.p50_ms if s.p50_ms else 0.0, "outliers": s.outliers,
                    "other": con.other_cpu_share if con else None, "contended": bool(con and con.contended)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path)
    parser.add_argument("run", nargs="?", default="latest")
    parser.add_argument("--thresholds", default="0.05,0.1,0.2,0.3,0.5")
    args = parser.parse_args()
    store = Store(args.home / "edgebench.sqlite")
    run = store.run(args.run)
    table = rows(store, run.id)
    print(f"run {run.id}: {len(table)} measured cells")
    print(f"{'cell':58s} {'n':>6s} {'p50 ms':>8s} {'CoV':>7s} {'IQR/med':>8s} {'MAD/med':>8s} {'outliers':>10s} {'other':>6s} contended")
    for r in table:
        other = "-" if r["other"] is None else f"{r['other']:.0%}"
        print(f"{r['cell']:58s} {r['n']:6d} {r['p50_ms']:8.4f} {r['cov']:7.1%} {r['iqr_ratio']:8.1%} {r['mad_ratio']:8.1%} "
              f"{r['outliers']:>10s} {other:>6s} {'yes' if r['contended'] else '-'}")
    quiet = [r for r in table if not r["contended"]]
    print(f"contended: {len(table) - len(quiet)}/{len(table)}")
    print(f"old rule, CoV > 5%: {sum(r['cov'] > 0.05 for r in table)}/{len(table)} (uncontended {sum(r['cov'] > 0.05 for r in quiet)}/{len(quiet)})")
    for t in (float(v) for v in args.thresholds.split(",")):
        print(f"IQR/median > {t:.0%}: {sum(r['iqr_ratio'] > t for r in table)}/{len(table)} "
              f"(uncontended {sum(r['iqr_ratio'] > t for r in quiet)}/{len(quiet)})")


if __name__ == "__main__":
    main()
