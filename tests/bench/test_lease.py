"""Board leases (bench/lease.py): one run at a time on a board, across processes and hosts, on SQLite and PostgreSQL.

The holder is a real second process (the lease must exclude another process, not another coroutine); the
waiter is this test. A holder killed with SIGKILL must not keep the board: the kernel drops its file lock,
PostgreSQL ends its session. The slow tests at the end drive the real CLI: exit 1 with the holder named
after ``--lease-timeout``, exit 130 on Ctrl-C while waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebench.bench import board as board_mod
from edgebench.bench import lease as lease_mod
from edgebench.bench.contracts.results import CellResult
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench.lease import Holder, LeaseTimeout, board_lease, lease_key, lease_number
from edgebench.bench.runner import RunOptions
from edgebench.bench.store import RunRecord, Store, now
from edgebench.targets.profiles import TargetProfile
from edgebench.targets.transport import WorkerOutcome

PI = {"name": "pi", "transport": "ssh", "ssh": {"host": "pi.local", "user": "bench", "port": 22}}

HOLDER = r"""
import asyncio, json, sys
from edgebench.bench.lease import board_lease
from edgebench.bench.store import Store
from edgebench.targets.profiles import TargetProfile
url, run_id, hold_s, profile = sys.argv[1], sys.argv[2], float(sys.argv[3]), TargetProfile.model_validate(json.loads(sys.argv[4]))

async def main():
    async with board_lease(Store(url), profile, run_id, None, lambda line: print(line, flush=True)) as lease:
        print("held", lease.key, flush=True)
        await asyncio.sleep(hold_s)
    print("released", flush=True)

asyncio.run(main())
"""


class HolderProcess:
    """A second process holding ``profile``'s lease in ``url`` for ``hold_s`` seconds."""

    def __init__(self, url: str, run_id: str, hold_s: float, profile: dict = PI) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, run_id, str(hold_s), json.dumps(profile)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_line(self, start: str, timeout_s: float = 60) -> str:
        """The first line this process printed that starts with ``start``, waiting for it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [line for line in self.lines if line.startswith(start)]
            if found:
                return found[0]
            if self.proc.poll() is not None and not found:
                time.sleep(0.2)  # the reader may still be catching up with the last lines
                if not [line for line in self.lines if line.startswith(start)]:
                    break
            time.sleep(0.05)
        self.proc.kill()
        pytest.fail(f"no line starting {start!r} came: {self.lines} {self.proc.stderr.read()[-2000:]}")

    def wait_held(self, timeout_s: float = 60) -> None:
        self.wait_line("held ", timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def holders():
    started: list[HolderProcess] = []

    def start(*args: Any, **kwargs: Any) -> HolderProcess:
        h = HolderProcess(*args, **kwargs)
        started.append(h)
        return h

    yield start
    for h in started:
        h.kill()


def take(url: str, run_id: str, timeout_s: float | None, profile: dict = PI) -> tuple[float, list[str]]:
    """Take and release the lease here; the seconds waited and what it logged."""
    logged: list[str] = []

    async def main() -> float:
        async with board_lease(Store(url), TargetProfile.model_validate(profile), run_id, timeout_s, logged.append) as lease:
            return lease.waited_s

    return asyncio.run(main()), logged


# -- what names a board ----------------------------------------------------------------------------

def test_the_key_names_the_physical_board_not_the_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/config
    a = TargetProfile.model_validate(PI)
    b = TargetProfile.model_validate({**PI, "name": "lab-pi", "ssh": {"host": "PI.local", "user": "bench"}})  # port 22 by default
    assert lease_key(a) == lease_key(b) == "pi.local:22"
    assert lease_key(TargetProfile.model_validate({**PI, "ssh": {"host": "pi.local", "user": "bench", "port": 2222}})) == "pi.local:2222"
    # another account on the same board shares its CPU, so its lease too
    assert lease_key(TargetProfile.model_validate({**PI, "ssh": {"host": "pi.local", "user": "other", "port": 22}})) == "pi.local:22"
    assert lease_key(TargetProfile(name="local")) == lease_key(TargetProfile(name="mine", transport="local")) == f"local:{socket.gethostname()}"


def test_the_key_follows_ssh_config_as_the_connection_does(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host bench-pi\n  HostName 10.0.0.7\n  User pi\n  Port 2200\n")
    alias = TargetProfile.model_validate({"name": "a", "ssh": {"host": "bench-pi"}})
    spelled = TargetProfile.model_validate({"name": "b", "ssh": {"host": "10.0.0.7", "user": "pi", "port": 2200}})
    assert lease_key(alias) == lease_key(spelled) == "10.0.0.7:2200"
    # the profile's own user and port win over the config, as they do when connecting
    assert lease_key(TargetProfile.model_validate({"name": "c", "ssh": {"host": "bench-pi", "user": "root", "port": 22}})) == "10.0.0.7:22"


def test_the_number_is_a_stable_non_negative_63_bit_int():
    n = lease_number("bench@pi.local:22")
    assert n == lease_number("bench@pi.local:22") and 0 <= n < 2**63
    assert lease_number("bench@pi.local:2222") != n


def test_the_session_name_fits_postgresql_and_parses_back():
    run_id = "20261201-174812-0a1b2c3d"
    long = Holder(run_id, "runner-0123456789.build.example.internal", 4194304)
    name = long.application_name()
    assert len(name.encode()) <= 63 and lease_mod._APP_NAME.match(name)["run"] == run_id and name.endswith("pid 4194304")
    assert Holder(run_id, "ci1", 7).application_name() == f"edgebench run {run_id} on ci1 pid 7"


# -- exclusion, the holder named, release on SIGKILL ------------------------------------------------

def test_a_second_process_is_refused_with_the_holder_named_and_gets_it_when_the_holder_is_killed(store_url, holders, tmp_path):
    Store(store_url)  # created before the two processes race to migrate it
    holder = holders(store_url, "run-A", 600)
    holder.wait_held()
    with pytest.raises(LeaseTimeout) as refused:
        take(store_url, "run-B", 1.0)
    message = str(refused.value)
    assert f"held by run run-A on {socket.gethostname()} pid {holder.proc.pid} since 20" in message
    assert message.startswith("target pi: not measured") and "--lease-timeout" in message and "within 1 s" in message
    if "://" not in store_url:  # SQLite: the holder is written into the lock file, for any reader
        (lock,) = Path(f"{store_url}.leases").glob("*.lock")
        data = json.loads(lock.read_text())
        assert data["run_id"] == "run-A" and data["pid"] == holder.proc.pid and data["key"] == "pi.local:22"
    os.kill(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait(30)
    waited, _ = take(store_url, "run-B", 15.0)  # the kernel / PostgreSQL let go of a killed holder's lease
    assert waited < 10


def test_a_waiter_says_once_whom_it_waits_for_and_takes_the_lease_when_it_is_released(store_url, holders):
    Store(store_url)
    holder = holders(store_url, "run-A", 4.0)
    holder.wait_held()
    waited, logged = take(store_url, "run-B", None)
    assert 0.3 < waited < 30
    assert len(logged) == 2, logged
    assert re.fullmatch(rf"target pi: waiting for its lease: held by run run-A on \S+ pid {holder.proc.pid} since [-0-9]+ [:0-9]+ UTC", logged[0]), logged
    assert logged[1].startswith("target pi: lease taken after waiting")
    assert holder.proc.wait(30) == 0 and "released" in holder.lines


def test_other_boards_do_not_wait_and_a_board_is_free_again_after_use(store_url, holders):
    Store(store_url)
    holder = holders(store_url, "run-A", 600)
    holder.wait_held()
    other = {**PI, "name": "pi2", "ssh": {"host": "pi2.local", "user": "bench"}}
    assert take(store_url, "run-B", 0, other)[0] < 1  # another board's lease is free at once
    assert take(store_url, "run-B", 0, other)[0] < 1  # and free again once released


def test_ctrl_c_while_waiting_lets_go_of_everything(tmp_path, holders):
    url = str(tmp_path / "edgebench.sqlite")
    Store(url)
    holder = holders(url, "run-A", 600)
    holder.wait_held()
    waiter = holders(url, "run-B", 600)
    assert "held by run run-A" in waiter.wait_line("target pi: waiting for its lease")
    waiter.proc.send_signal(signal.SIGINT)
    assert waiter.proc.wait(20) != 0
    assert "KeyboardInterrupt" in waiter.proc.stderr.read()  # the cancelled wait ends as Ctrl-C does, for the CLI to report
    assert not [line for line in waiter.lines if line.startswith("held ")]
    holder.kill()
    assert take(url, "run-C", 5.0)[0] < 4  # the waiter left no lock behind


# -- the board: the lease around its share, and stored times that are measurement times --------

@dataclass
class Record:
    cell_key: str
    facts: dict = field(default_factory=dict)
    result: Any = None
    status: str = ""
    error: str | None = None
    started_at: Any = None
    finished_at: Any = None


@dataclass
class Job:
    index: int
    cell: Any
    spec: CellSpec
    record: Record


class Transport:
    """Each cell takes ``cell_s`` seconds; ``opened`` counts connections."""

    def __init__(self, cell_s: float = 0.0) -> None:
        self.cell_s, self.opened, self.connected = cell_s, 0, False

    async def open(self) -> None:
        self.opened += 1
        self.connected = True

    async def close(self) -> None:
        self.connected = False

    async def probe(self, state_only: bool = False) -> dict:
        from edgebench.bench.contracts.version import __version__
        from edgebench.targets.version import source_digest

        return {} if state_only else {"edgebench_version": __version__, "edgebench_source": source_digest(), "backends": {"onnxruntime": {"available": True}}}

    async def place(self, bundle: Any) -> str:
        return "/device/files"

    def build_cache_dir(self) -> str:
        return "/device/builds"

    async def run_cell(self, spec_json: str, name: str, timeout_s: float) -> WorkerOutcome:
        await asyncio.sleep(self.cell_s)
        return WorkerOutcome(CellResult(status="ok"))

    async def discard_run_files(self) -> None:
        pass


class Runner:
    progress = None
    _pythonpath: list[str] = []
    previous_errors: dict[str, str] = {}

    def __init__(self, tmp: Path, store: Store, run_id: str, lease_timeout_s: float | None) -> None:
        self.store, self.run_id, self.options = store, run_id, RunOptions(lease_timeout_s=lease_timeout_s)
        store.create_run(RunRecord(run_id, "s", "src", "y", "running", now()))
        self.saved: list[Record] = []
        self.logged: list[str] = []
        self.paths = type("P", (), {"cells_dir": lambda _self, run_id: tmp, "cache": tmp / "cache", "device_builds": tmp / "cache" / "builds"})()

    def save(self, record: Record, summary: Any, replace: bool) -> None:
        self.saved.append(dataclasses.replace(record))

    def log_cell(self, record: Record) -> None:
        pass

    def log(self, message: str) -> None:
        self.logged.append(message)


def board_jobs(n: int, tmp: Path, prepared_at: Any) -> list[Job]:
    (tmp / "model.onnx").write_bytes(b"onnx")
    (tmp / "eval.npz").write_bytes(b"npz")
    out = []
    for i in range(n):
        key = f"m/dense/onnxruntime/fp32/b{i + 1}/pi"
        spec = CellSpec(cell_key=key, backend="onnxruntime", precision="fp32", artifact=str(tmp / "model.onnx"), batch=1, eval_data=str(tmp / "eval.npz"))
        out.append(Job(i, type("Cell", (), {"key": key, "backend": "onnxruntime"})(), spec, Record(key, started_at=prepared_at)))
    return out


def run_board(tmp: Path, monkeypatch, url: str, run_id: str, lease_timeout_s: float | None, n: int = 3, cell_s: float = 0.0):
    transport = Transport(cell_s)
    monkeypatch.setattr(board_mod, "make_transport", lambda *a, **k: transport)
    runner = Runner(tmp, Store(url), run_id, lease_timeout_s)
    prepared_at = now()
    time.sleep(0.05)
    asyncio.run(board_mod.Board(runner, TargetProfile.model_validate(PI), board_jobs(n, tmp, prepared_at), 60, summary=None, replace=False).run())
    return runner, transport, prepared_at


def test_lease_timeout_fails_the_boards_cells_naming_the_holder_without_connecting(store_url, holders, tmp_path, monkeypatch):
    Store(store_url)
    holder = holders(store_url, "run-A", 600)
    holder.wait_held()
    runner, transport, _ = run_board(tmp_path, monkeypatch, store_url, "run-B", 0.5)
    assert transport.opened == 0  # the board was never touched
    assert [r.status for r in runner.saved] == ["failed"] * 3
    error = runner.saved[0].error
    assert f"held by run run-A on {socket.gethostname()} pid {holder.proc.pid}" in error and "--lease-timeout" in error, error
    assert "`edgebench run --resume run-B` runs it later" in error
    (line,) = [m for m in runner.logged if "not measured" in m]  # said once for the board, not once per cell
    assert "3 cells not run" in line and "\n" not in line


def test_a_cells_stored_start_is_when_its_measurement_began(tmp_path, monkeypatch):
    runner, transport, prepared_at = run_board(tmp_path, monkeypatch, str(tmp_path / "edgebench.sqlite"), "run-1", None, n=3, cell_s=0.2)
    assert [r.status for r in runner.saved] == ["ok"] * 3 and transport.opened == 1
    spans = [(r.started_at, r.finished_at) for r in runner.saved]
    assert all(start > prepared_at for start, _ in spans)  # not the preparation time
    assert all((end - start).total_seconds() >= 0.2 for start, end in spans)  # it covers the measurement
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))  # one cell at a time


# -- the real CLI (slow: each run imports torch and reads the prepared cache) -------------------------

LOCAL = {"name": "local"}


def cli_suite(tmp: Path, built) -> tuple[Path, Path]:
    """A one-cell local suite and a home whose cache holds its artifact already."""
    home = tmp / "home"
    shutil.copytree(built.cache_root, home / "cache")
    suite = tmp / "one.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "one", "models": ["small_cnn"], "recipes": ["dense"], "backends": [{"name": "onnxruntime", "threads": 1}],
        "precisions": ["fp32"], "batch_sizes": [1], "cell_timeout_s": 120,
        "measure": {"warmup_runs": 2, "warmup_seconds": 0.05, "min_runs": 20, "min_seconds": 0.2, "quiet_wait_s": 0, "remeasure_contended": 0},
    }))
    return suite, home


def edgebench(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgebench.bench.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env={**os.environ, "COLUMNS": "250"}, start_new_session=True)


@pytest.mark.slow
def test_cli_lease_timeout_fails_the_cells_with_exit_1_naming_the_holder(built, tmp_path, holders):
    suite, home = cli_suite(tmp_path, built)
    store = str(home / "edgebench.sqlite")
    Store(store)
    holder = holders(store, "run-A", 600, LOCAL)
    holder.wait_held()
    out, err = edgebench("run", str(suite), "--home", str(home), "--lease-timeout", "1", cwd=tmp_path).communicate(timeout=300)
    assert "target local: not measured: its lease was not free within 1 s (--lease-timeout), held by run run-A on" in out, out + err
    assert f"pid {holder.proc.pid}" in out
    run_id = re.search(r"^run (\S+): suite", out, re.M).group(1)
    cells = Store(store).cells(run_id, with_samples=False)
    assert [c.status for c in cells] == ["failed"] and "held by run run-A" in cells[0].error
    assert Store(store).run(run_id).summary["cells_failed"] == 1


@pytest.mark.slow
def test_cli_ctrl_c_while_waiting_for_the_lease_exits_130(built, tmp_path, holders):
    suite, home = cli_suite(tmp_path, built)
    store = str(home / "edgebench.sqlite")
    Store(store)
    holder = holders(store, "run-A", 600, LOCAL)
    holder.wait_held()
    proc = edgebench("run", str(suite), "--home", str(home), cwd=tmp_path)
    lines: list[str] = []
    waiting = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "waiting for its lease: held by run run-A" in line:
                waiting.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert waiting.wait(240), "".join(lines)
        os.killpg(proc.pid, signal.SIGINT)
        stderr = proc.stderr.read()
        assert proc.wait(30) == 130, "".join(lines) + stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr, stderr
    holder.kill()
    assert take(store, "run-C", 5.0, LOCAL)[0] < 4  # nothing left holding the board
