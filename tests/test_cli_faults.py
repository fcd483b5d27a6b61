"""The command line on bad input, in process (typer's CliRunner; nothing is measured): read-only commands on a
mistyped ``--home`` create nothing, a store file that is not a store is one line, ``--home`` goes before
or after the command, and ``edgebench show`` into a pipe prints the table at its natural width."""

from __future__ import annotations

import csv
import datetime as dt
import errno
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgebench.bench.cli import main
from edgebench.bench.store import RunRecord, Store
from edgebench.reports import render

sys.path.insert(0, str(Path(__file__).parent / "reports"))
from tests_support import ar1_samples, cell_with  # noqa: E402


@dataclass
class Result:
    exit_code: int
    output: str  # stdout and stderr


@pytest.fixture
def invoke(monkeypatch, capsys):
    """invoke(*args, **env): ``edgebench ARGS`` through its real entry point (main: the one-line error
    handler included), in process. No COLUMNS and no EDGEBENCH_HOME unless given: what a cron job sees."""

    def run(*args: str, **env: str) -> Result:
        with monkeypatch.context() as m:
            for name in ("COLUMNS", "EDGEBENCH_HOME", "EDGEBENCH_STORE"):
                m.delenv(name, raising=False)
            for name, value in env.items():
                m.setenv(name, value)
            m.setattr(sys, "argv", ["edgebench", *args])
            capsys.readouterr()
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            out = capsys.readouterr()
        return Result(code, out.out + out.err)

    return run


@pytest.fixture
def home(tmp_path) -> Path:
    """A home whose store holds one finished run of two cells."""
    home = tmp_path / "home"
    store = Store(home / "edgebench.sqlite")
    store.create_run(RunRecord(id="20260101-000000-aaaa0000", suite_name="tiny", suite_source="/x/tiny.yaml", suite_yaml="models: [small_cnn]\n",
                               status="running", created_at=dt.datetime.now(dt.timezone.utc)))
    for batch in (1, 8):
        store.add_cell("20260101-000000-aaaa0000", cell_with(ar1_samples(0.3 * batch, 200, batch), batch=batch))
    store.finish_run("20260101-000000-aaaa0000", "finished", {"cells_ok": 2})
    return home


@pytest.mark.parametrize("command", [["runs"], ["show"], ["show", "latest"], ["report", "latest"], ["recommend", "latest", "--target", "local"],
                                     ["compare", "latest", "latest"], ["history", "small_cnn/dense/onnxruntime/fp32/b1/local"]])
def test_read_only_commands_on_a_mistyped_home_create_nothing(invoke, tmp_path, command):
    typo = tmp_path / "edgebench-resluts"
    result = invoke(*command, "--home", str(typo))
    assert result.exit_code == 2, result.output
    assert f"no edgebench store at {typo / 'edgebench.sqlite'}; run `edgebench run` first or pass --home" in result.output
    assert not typo.exists()


def test_resume_on_a_mistyped_home_creates_nothing(invoke, tmp_path):
    typo = tmp_path / "nope"
    result = invoke("run", "--resume", "latest", "--home", str(typo))
    assert result.exit_code == 2 and "no edgebench store at" in result.output
    assert not typo.exists()


def test_a_store_file_that_is_not_sqlite_is_one_line_and_untouched(invoke, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    path = home / "edgebench.sqlite"
    path.write_bytes(b"\x00garbage" * 700)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = invoke("runs", "--home", str(home))
    assert result.exit_code == 2
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    assert f"{path}: not an edgebench store (not a SQLite file)" in result.output
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before and [p.name for p in home.iterdir()] == ["edgebench.sqlite"]


def test_home_before_or_after_the_command(invoke, home, tmp_path):
    env = (os.environ.get("EDGEBENCH_HOME"), os.environ.get("EDGEBENCH_STORE"))
    after = invoke("runs", "--home", str(home))
    before = invoke("--home", str(home), "runs")
    assert after.exit_code == before.exit_code == 0, before.output
    assert "20260101-000000-aaaa0000  finished" in before.output and before.output == after.output
    # the option after the command wins, as it is the nearer one
    both = invoke("--home", str(tmp_path / "elsewhere"), "runs", "--home", str(home))
    assert both.exit_code == 0 and "aaaa0000" in both.output
    store = invoke("--store", str(home / "edgebench.sqlite"), "show", "latest")
    assert store.exit_code == 0 and "run 20260101-000000-aaaa0000" in store.output
    # the command's home does not outlive it in this process (later commands, children, tests)
    assert (os.environ.get("EDGEBENCH_HOME"), os.environ.get("EDGEBENCH_STORE")) == env


def test_show_into_a_pipe_prints_one_line_per_row(invoke, home):
    result = invoke("show", "--home", str(home))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "p50 ms" in line)
    assert all(h in header for h in ("model", "recipe", "backend", "p90 ms", "speedup p50"))  # no header folded over lines
    rows = [line for line in lines if line.startswith("│ small_cnn")]
    assert len(rows) == 2 and len(rows[0]) > 80
    assert "onnxruntime" in rows[0] and "fp32" in rows[0]


def test_show_keeps_the_terminal_width_when_columns_is_set(invoke, home):
    result = invoke("show", "--home", str(home), COLUMNS="100")
    assert result.exit_code == 0
    assert max(len(line) for line in result.output.splitlines() if line.startswith(("┏", "│", "└"))) <= 100


def test_runs_counts_the_stored_cells(invoke, home):
    store = Store(home / "edgebench.sqlite")
    # a summary written before the last attempt (a resumed run's old bug) does not decide the counts
    store.finish_run("20260101-000000-aaaa0000", "finished", {"cells_ok": 0, "cells_failed": 5})
    result = invoke("runs", "--home", str(home))
    assert "tiny: 2 ok, 0 failed, 0 skipped" in result.output


def test_report_on_a_full_disk_is_one_line_and_keeps_the_old_files_whole(invoke, home, monkeypatch):
    assert invoke("report", "--samples-csv", "--home", str(home)).exit_code == 0
    folder = home / "reports" / "20260101-000000-aaaa0000"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {"report.md", "report.json", "cells.csv", "samples.csv", "report.html"} <= set(before)
    real_writer = csv.writer

    class FillsUp:
        """A csv writer on a disk that fills up after a few rows."""

        def __init__(self, f, *args, **kwargs):
            self.inner, self.rows = real_writer(f, *args, **kwargs), 0

        def writerow(self, row):
            self.rows += 1
            if self.rows > 5:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.inner.writerow(row)

    monkeypatch.setattr(render.csv, "writer", FillsUp)
    result = invoke("report", "--samples-csv", "--home", str(home))
    assert result.exit_code == 2
    assert result.output.strip() == (f"edgebench: cannot write {folder / 'samples.csv'}: No space left on device; "
                                     "free some space there (or make it writable)")
    assert before["samples.csv"] == (folder / "samples.csv").read_bytes()  # the old file, whole: never half a samples.csv
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)  # no temporary file left behind
