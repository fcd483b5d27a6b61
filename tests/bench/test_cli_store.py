"""`edgebench gc` through its real entry point (in process), on stores of synthetic runs written through
Store: what it keeps and why, what it drops, --dry-run, the file size, and its errors."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from pathlib import Path

import pytest

from edgebench.bench.cli import main
from edgebench.bench.store import RunRecord, Store
from edgebench.reports import history as histmod

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reports"))
from tests_support import ar1_samples, cell_with  # noqa: E402

SAMPLES = 2000  # per cell; 2 cells per run


def add_run(store: Store, rid: str, suite: str, day: int) -> None:
    store.create_run(RunRecord(rid, suite, f"{suite}.yaml", "", "running", dt.datetime(2026, 11, day, 2, 0, tzinfo=dt.timezone.utc)))
    store.add_environment(rid, "local", {"hostname": "h"})
    for batch in (1, 8):
        store.add_cell(rid, cell_with(ar1_samples(0.3 * batch, SAMPLES, seed=day * 10 + batch), batch=batch))
    store.finish_run(rid, "finished", {"cells_ok": 2})


@pytest.fixture
def home(tmp_path) -> Path:
    """Suite `default`: d1 (baseline nightly), d2, d3; suite `other`: o1, o2 (oldest first)."""
    h = tmp_path / "home"
    store = Store(h / "edgebench.sqlite")
    for rid, suite, day in (("d1", "default", 1), ("o1", "other", 2), ("d2", "default", 3), ("o2", "other", 4), ("d3", "default", 5)):
        add_run(store, rid, suite, day)
    store.set_baseline("nightly", "d1", "local", {"hostname": "h"})
    return h


@pytest.fixture
def invoke(monkeypatch, capsys):
    """invoke(*args): ``edgebench ARGS`` through main (its one-line error handler included): (exit code, output)."""

    def run(*args: str) -> tuple[int, str]:
        with monkeypatch.context() as m:
            for name in ("COLUMNS", "EDGEBENCH_HOME", "EDGEBENCH_STORE"):
                m.delenv(name, raising=False)
            m.setattr(sys, "argv", ["edgebench", *args])
            capsys.readouterr()
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            out = capsys.readouterr()
        return code, out.out + out.err

    return run


def dropped(home: Path) -> set[str]:
    return {r.id for r in Store(home / "edgebench.sqlite").runs() if r.samples_dropped_at is not None}


def line(text: str, start: str) -> str:
    found = [ln for ln in text.splitlines() if ln.startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def content(path: Path) -> list[str]:
    """The database's every row and schema statement. Not the file's size: closing the last connection may
    checkpoint the WAL into the main file, which changes its size without changing a row (a flaky check)."""
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def test_dry_run_says_what_it_keeps_and_drops_and_changes_nothing(invoke, home):
    before = content(home / "edgebench.sqlite")
    code, out = invoke("gc", "--keep-last", "1", "--dry-run", "--home", str(home))
    assert code == 0, out
    def why(run: str) -> str:  # the reason after the run's description
        return line(out, f"keep  run {run} ").split(" UTC): ", 1)[1]

    line(out, "keep  run d1 (default, finished, 2026-11-01 02:00 UTC): ")
    assert "baseline 'nightly'" in why("d1") and "suite 'default'" in why("d3") and "suite 'other'" in why("o2")
    line(out, "drop  run o1 (other, finished")
    line(out, "drop  run d2 (default, finished")
    assert line(out, "to drop: ").startswith(f"to drop: the samples of 2 run(s): {4 * SAMPLES} samples, ")
    assert line(out, "gc --dry-run: ").startswith("gc --dry-run: nothing changed; without --dry-run this drops the samples of 2 run(s)")
    assert dropped(home) == set() and content(home / "edgebench.sqlite") == before
    assert out.index("keep  run d1") < out.index("keep  run o2") < out.index("keep  run d3")  # oldest first


def test_gc_drops_the_samples_keeps_the_summaries_and_says_the_file_size(invoke, home):
    code, out = invoke("gc", "--keep-last", "1", "--home", str(home))
    assert code == 0, out
    assert dropped(home) == {"o1", "d2"}
    size = line(out, f"store file {home / 'edgebench.sqlite'}: ")
    assert size.endswith(" MB (VACUUM)") and " MB -> " in size
    before, after = (float(part.split()[0]) for part in size.split(": ", 1)[1].removesuffix(" (VACUUM)").split(" -> "))
    assert after < before
    assert line(out, "gc: ").startswith(f"gc: dropped the samples of 2 run(s) ({4 * SAMPLES} samples, ")
    # summaries stay: the history of a cell still has every run
    store = Store(home / "edgebench.sqlite")
    h = histmod.load(store, "small_cnn", "dense", "onnxruntime", "fp32", 1, "local")
    assert [p.run_id for p in h.points] == ["d1", "o1", "d2", "o2", "d3"] and all(p.value_ms for p in h.points)
    assert store.cells("d2")[0].result.samples_ns == [] and store.cells("d3")[0].result.samples_ns
    # again: nothing left to drop, and it says which runs were summarised before
    code, again = invoke("gc", "--keep-last", "1", "--home", str(home))
    assert code == 0 and "already summarised: 2 run(s)" in again
    assert line(again, "gc: ").startswith("gc: nothing to drop")
    # `edgebench runs` says which runs keep only their summaries
    code, listed = invoke("runs", "--home", str(home))
    marked = {ln.split()[0] for ln in listed.splitlines() if "raw samples dropped" in ln}
    assert code == 0 and marked == {"o1", "d2"}, listed


def test_no_keep_baselines_drops_the_baseline_too(invoke, home):
    code, out = invoke("gc", "--keep-last", "1", "--no-keep-baselines", "--home", str(home))
    assert code == 0, out
    assert dropped(home) == {"d1", "o1", "d2"}
    line(out, "drop  run d1 ")


def test_keep_last_is_required_and_at_least_one(invoke, home):
    code, out = invoke("gc", "--keep-last", "0", "--home", str(home))
    assert code == 2 and "--keep-last" in out
    code, out = invoke("gc", "--home", str(home))
    assert code == 2 and "--keep-last" in out
    assert dropped(home) == set()


def test_an_empty_store_says_so(invoke, tmp_path):
    Store(tmp_path / "empty" / "edgebench.sqlite")
    code, out = invoke("gc", "--keep-last", "3", "--home", str(tmp_path / "empty"))
    assert code == 0
    assert out.strip() == f"store {tmp_path / 'empty' / 'edgebench.sqlite'} has no runs: nothing to do"


def test_no_store_is_one_line_and_creates_nothing(invoke, tmp_path):
    code, out = invoke("gc", "--keep-last", "3", "--home", str(tmp_path / "typo"))
    assert code == 2
    assert out.strip() == f"edgebench: no edgebench store at {tmp_path / 'typo' / 'edgebench.sqlite'}; run `edgebench run` first or pass --home"
    assert not (tmp_path / "typo").exists()


def test_gc_on_postgresql_drops_the_same_and_has_no_file_to_measure(invoke, postgres, tmp_path):
    url = postgres.new_database()
    store = Store(url)
    for rid, day in (("p1", 1), ("p2", 2), ("p3", 3)):
        add_run(store, rid, "default", day)
    code, out = invoke("gc", "--keep-last", "1", "--store", url, "--home", str(tmp_path / "home"))
    assert code == 0, out
    assert {r.id for r in Store(url).runs() if r.samples_dropped_at is not None} == {"p1", "p2"}
    assert "store file" not in out  # a server has no file: no sizes to say
    assert line(out, "gc: ").startswith(f"gc: dropped the samples of 2 run(s) ({4 * SAMPLES} samples, ")
