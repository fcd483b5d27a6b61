"""Several processes report into one store at once (boards finishing cells at the same moment): nothing is lost.

Every writer opens the not-yet-created store itself, so the schema creation races too. SQLite and PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
import time

import sqlalchemy as sa

from edgebench.bench.store import HEAD, Store

WRITERS, CELLS, SAMPLES = 5, 8, 300

WRITER = r"""
import datetime as dt, sys, time
start_at, url, writer = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
from edgebench.bench.contracts.results import CellResult
from edgebench.bench.store import CellRecord, RunRecord, Store
time.sleep(max(0.0, start_at - time.time()))  # every writer starts at the same moment
store = Store(url)
run_id = f"board-{writer}"
store.create_run(RunRecord(run_id, "s", "src", "y", "running", dt.datetime.now(dt.timezone.utc)))
store.add_environment(run_id, f"board{writer}", {"writer": writer})
for i in range(int(sys.argv[4])):
    samples = [writer * 1_000_000 + i * 1000 + j for j in range(int(sys.argv[5]))]
    store.add_cell(run_id, CellRecord(f"m/r{i}/onnxruntime/fp32/b1/board{writer}", "m", f"r{i}", "onnxruntime", "fp32", 1,
                                      f"board{writer}", "ok", result=CellResult("ok", samples_ns=samples)))
store.finish_run(run_id, "finished", {"cells_ok": int(sys.argv[4])})
print("done", writer)
"""


def test_parallel_writers_lose_nothing(store_url):
    start_at = time.time() + 4.0
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(start_at), store_url, str(w), str(CELLS), str(SAMPLES)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(WRITERS)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    store = Store(store_url)
    assert store.revision() == HEAD
    with store.engine.connect() as conn:
        count = lambda t: conn.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar()  # noqa: E731
        assert count("runs") == WRITERS
        assert count("environments") == WRITERS
        assert count("cells") == WRITERS * CELLS
        assert count("cell_samples") == WRITERS * CELLS  # one blob per cell
        assert conn.execute(sa.text("SELECT sum(count) FROM cell_samples")).scalar() == WRITERS * CELLS * SAMPLES
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    for w in range(WRITERS):
        run = store.run(f"board-{w}")
        assert run.status == "finished"
        cells = store.cells(run.id)
        assert [c.cell_key for c in cells] == [f"m/r{i}/onnxruntime/fp32/b1/board{w}" for i in range(CELLS)]
        for i, c in enumerate(cells):  # every sample is the one that writer wrote, in order
            assert c.result.samples_ns == [w * 1_000_000 + i * 1000 + j for j in range(SAMPLES)]
