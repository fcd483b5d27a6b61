"""Board (bench/board.py): one target's share of a run, driven here by a scripted transport (no server, no worker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgebench.bench.contracts.version import __version__
from edgebench.bench.contracts.results import CellResult
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench import board as board_mod
from edgebench.targets.profiles import TargetProfile
from edgebench.targets.transport import TargetUnreachable, WorkerOutcome
from edgebench.targets.version import source_digest


class ScriptedTransport:
    """Answers each run_cell from a script: "ok", "lost", or "unplaceable" (place raises)."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.opened = 0
        self.connected = False
        self.ran: list[str] = []
        self.discarded = 0

    async def discard_run_files(self) -> None:
        self.discarded += 1

    async def open(self) -> None:
        self.opened += 1
        self.connected = True

    async def close(self) -> None:
        self.connected = False

    async def probe(self, state_only: bool = False) -> dict[str, Any]:
        if state_only:
            return {"temp_c": 40.0}
        return {"edgebench_version": __version__, "edgebench_source": source_digest(), "device_state": {"temp_c": 39.0},
                "backends": {"onnxruntime": {"available": True}}}

    async def place(self, bundle: Any) -> str:
        if self.script and self.script[0] == "unplaceable":
            self.script.pop(0)
            raise TargetUnreachable("connection lost to target pi while copying files (ConnectionResetError: reset)")
        return "/device/files/abc"

    async def run_cell(self, spec_json: str, name: str, timeout_s: float) -> WorkerOutcome:
        self.ran.append(name)
        step = self.script.pop(0)
        if step == "failed":
            return WorkerOutcome(CellResult.failed("worker killed by SIGKILL"))
        if step == "lost":
            self.connected = False
            return WorkerOutcome(CellResult.failed("connection lost to target pi during the cell (ConnectionError: gone)"), lost=True)
        return WorkerOutcome(CellResult(status="ok"))

    def build_cache_dir(self) -> str:
        return "/device/builds"


@dataclass
class Record:
    cell_key: str
    facts: dict = field(default_factory=dict)
    result: Any = None
    status: str = ""
    error: str | None = None
    finished_at: Any = None


@dataclass
class Cell:
    key: str
    backend: str = "onnxruntime"


@dataclass
class Job:
    index: int
    cell: Cell
    spec: CellSpec
    record: Record


class FakeStore:
    def __init__(self, earlier: dict[str, dict[str, dict]] | None = None) -> None:
        self.envs: dict[str, dict] = {}
        self.earlier = earlier or {}  # run id -> {target: fingerprint}, newest first

    def add_environment(self, run_id: str, target: str, env: dict) -> None:
        self.envs[target] = dict(env)

    def runs(self, limit: int = 50) -> list[Any]:
        return [type("Run", (), {"id": rid})() for rid in list(self.earlier)[:limit]]

    def environments(self, run_id: str) -> dict[str, dict]:
        return self.earlier.get(run_id, {})


class FakeRunner:
    run_id = "run-1"
    progress = None
    _pythonpath: list[str] = []
    previous_errors: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.store = FakeStore()
        self.saved: list[Record] = []
        self.logged: list[str] = []
        self.paths = type("P", (), {"cells_dir": lambda _self, run_id: tmp, "cache": tmp / "cache", "device_builds": tmp / "cache" / "device-builds"})()

    def save(self, record: Record, summary: Any, replace: bool) -> None:
        self.saved.append(record)

    def log_cell(self, record: Record) -> None:
        pass

    def log(self, message: str) -> None:
        self.logged.append(message)


def jobs(n: int, tmp: Path) -> list[Job]:
    out = []
    for i in range(n):
        key = f"m/dense/onnxruntime/fp32/b{i}/pi"
        spec = CellSpec(cell_key=key, backend="onnxruntime", precision="fp32", artifact=str(tmp / "model.onnx"), batch=1,
                        eval_data=str(tmp / "eval.npz"))
        out.append(Job(i, Cell(key), spec, Record(key)))
    return out


def run_board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: list[str], n: int) -> tuple[FakeRunner, ScriptedTransport]:
    transport = ScriptedTransport(script)
    monkeypatch.setattr(board_mod, "make_transport", lambda *a, **k: transport)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "eval.npz").write_bytes(b"npz")
    runner = FakeRunner(tmp_path)
    profile = TargetProfile(name="pi", transport="ssh", ssh={"host": "pi.local"})
    asyncio.run(board_mod.Board(runner, profile, jobs(n, tmp_path), 60, summary=None, replace=False).run())
    return runner, transport


def test_two_lost_cells_in_a_row_fail_the_rest_with_the_last_reason(tmp_path, monkeypatch):
    runner, transport = run_board(tmp_path, monkeypatch, ["ok", "lost", "lost"], 5)
    statuses = [r.status for r in runner.saved]
    assert statuses == ["ok", "failed", "failed", "failed", "failed"]
    assert transport.ran == ["cell-0000", "cell-0001", "cell-0002"]  # the last two were never tried
    given_up = runner.saved[3].error
    assert given_up.startswith("not run: target pi unreachable (connection lost to target pi during the cell")
    assert "edgebench run --resume run-1" in given_up
    assert transport.opened == 3  # the first connection, then a reconnect before each cell after a loss


def test_a_cell_that_works_between_losses_resets_the_count(tmp_path, monkeypatch):
    runner, transport = run_board(tmp_path, monkeypatch, ["lost", "ok", "lost", "ok"], 4)
    assert [r.status for r in runner.saved] == ["failed", "ok", "failed", "ok"]
    assert runner.store.envs["pi"]["state_start"] == {"temp_c": 39.0} and runner.store.envs["pi"]["state_end"] == {"temp_c": 40.0}


def test_losing_the_link_while_copying_counts_as_unreachable(tmp_path, monkeypatch):
    runner, transport = run_board(tmp_path, monkeypatch, ["unplaceable", "unplaceable"], 3)
    assert transport.ran == []
    assert "while copying files" in runner.saved[0].error
    assert runner.saved[2].error.startswith("not run: target pi unreachable (connection lost to target pi while copying files")


def test_each_cell_gets_the_device_paths_and_the_profile_monitor(tmp_path, monkeypatch):
    seen: list[CellSpec] = []
    transport = ScriptedTransport(["ok"])
    original = transport.run_cell

    async def capture(spec_json: str, name: str, timeout_s: float) -> WorkerOutcome:
        seen.append(CellSpec.from_json(spec_json))
        return await original(spec_json, name, timeout_s)

    transport.run_cell = capture  # type: ignore[method-assign]
    monkeypatch.setattr(board_mod, "make_transport", lambda *a, **k: transport)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "eval.npz").write_bytes(b"npz")
    profile = TargetProfile(name="pi", transport="ssh", ssh={"host": "pi.local"}, monitor={"thermal_limit_c": 55, "cooldown_max_s": 30})
    asyncio.run(board_mod.Board(FakeRunner(tmp_path), profile, jobs(1, tmp_path), 60, summary=None, replace=False).run())
    assert seen[0].artifact == "/device/files/abc/model.onnx" and seen[0].eval_data == "/device/files/abc/eval.npz"
    assert seen[0].monitor["thermal_limit_c"] == 55 and seen[0].monitor["cooldown_max_s"] == 30
    assert seen[0].build_cache == "/device/builds"  # the target's build cache, from its transport


def test_a_version_mismatch_fails_every_cell_with_both_versions(tmp_path, monkeypatch):
    class OldDevice(ScriptedTransport):
        async def probe(self, state_only: bool = False) -> dict[str, Any]:
            return {"edgebench_version": "0.0.9", "edgebench_source": "0123456789ab"}

    transport = OldDevice([])
    monkeypatch.setattr(board_mod, "make_transport", lambda *a, **k: transport)
    runner = FakeRunner(tmp_path)
    profile = TargetProfile(name="pi", transport="ssh", ssh={"host": "pi.local"})
    asyncio.run(board_mod.Board(runner, profile, jobs(2, tmp_path), 60, summary=None, replace=False).run())
    errors = {r.error for r in runner.saved}
    assert len(errors) == 1
    (error,) = errors
    assert "target pi is 0.0.9 (source 0123456789ab)" in error and f"the host's is {__version__}" in error
    assert "edgebench target setup pi" in error and transport.ran == []


class FlakyLink(ScriptedTransport):
    """The connection drops in a cell, then refuses `refusals` reconnects (a board rebooting)."""

    def __init__(self, script: list[str], refusals: int) -> None:
        super().__init__(script)
        self.refusals = refusals

    async def open(self) -> None:
        if self.opened and self.refusals > 0:
            self.refusals -= 1
            self.opened += 1
            raise TargetUnreachable("target pi: cannot connect to pi.local: ConnectionRefusedError: refused")
        await super().open()


def _run_flaky(tmp_path, monkeypatch, refusals: int, reconnect_s: float) -> tuple[FakeRunner, FlakyLink]:
    transport = FlakyLink(["lost", "ok", "ok"], refusals)
    monkeypatch.setattr(board_mod, "make_transport", lambda *a, **k: transport)
    monkeypatch.setattr(board_mod, "RECONNECT_POLL_S", 0.01)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "eval.npz").write_bytes(b"npz")
    runner = FakeRunner(tmp_path)
    profile = TargetProfile(name="pi", transport="ssh", ssh={"host": "pi.local", "reconnect_s": reconnect_s})
    asyncio.run(board_mod.Board(runner, profile, jobs(3, tmp_path), 60, summary=None, replace=False).run())
    return runner, transport


def test_a_rebooting_board_is_waited_for_within_reconnect_s(tmp_path, monkeypatch):
    runner, transport = _run_flaky(tmp_path, monkeypatch, refusals=3, reconnect_s=30)
    assert [r.status for r in runner.saved] == ["failed", "ok", "ok"]  # only the cell the reboot hit
    assert transport.opened == 5  # first connection, three refusals, then back


def test_without_reconnect_s_a_refused_reconnect_fails_at_once(tmp_path, monkeypatch):
    runner, transport = _run_flaky(tmp_path, monkeypatch, refusals=10, reconnect_s=0)
    assert [r.status for r in runner.saved] == ["failed", "failed", "failed"]
    assert "cannot connect to pi.local" in runner.saved[1].error and "retried" not in runner.saved[1].error
    assert runner.saved[2].error.startswith("not run: target pi unreachable (target pi: cannot connect")


def test_with_processes_each_process_is_a_worker_and_a_failure_names_its_process(tmp_path, monkeypatch):
    transport = ScriptedTransport(["ok", "failed", "lost"])
    monkeypatch.setattr(board_mod, "make_transport", lambda *a, **k: transport)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "eval.npz").write_bytes(b"npz")
    runner = FakeRunner(tmp_path)
    two = jobs(2, tmp_path)
    for job in two:
        job.spec.measure.processes = 2
    profile = TargetProfile(name="pi", transport="ssh", ssh={"host": "pi.local", "reconnect_s": 0})
    asyncio.run(board_mod.Board(runner, profile, two, 60, summary=None, replace=False).run())
    assert transport.ran == ["cell-0000-p1", "cell-0000-p2", "cell-0001-p1"]
    assert runner.saved[0].error == "process 2 of 2: worker killed by SIGKILL"
    assert runner.saved[1].error.startswith("connection lost to target pi during the cell")


# -- an unreachable board says so once; cells it would not run anyway are skipped --------------

class Summary:
    def __init__(self) -> None:
        self.failures: list[str] = []


class TallyRunner(FakeRunner):
    """Adds the failure list the real Runner keeps (one entry per failed cell)."""

    def save(self, record: Record, summary: Any, replace: bool) -> None:
        super().save(record, summary, replace)
        if record.status == "failed":
            summary.failures.append(f"{record.cell_key}: {record.error}")

    def log_cell(self, record: Record) -> None:
        self.logged.append(f"{record.cell_key}: {record.status} - {record.error}")


class Down(ScriptedTransport):
    async def open(self) -> None:
        self.opened += 1
        raise TargetUnreachable("target pi: cannot connect to pi.local: ConnectionRefusedError: refused")


def _mixed_jobs(tmp_path: Path) -> list[Job]:
    out = jobs(4, tmp_path)
    for job, backend in zip(out, ["onnxruntime", "torch", "litert", "onnxruntime"]):
        job.cell.backend = backend
    return out


def test_an_unreachable_board_is_reported_once_and_cells_it_lacks_are_skipped(tmp_path, monkeypatch):
    transport = Down([])
    monkeypatch.setattr(board_mod, "make_transport", lambda *a, **k: transport)
    runner, summary = TallyRunner(tmp_path), Summary()
    runner.store = FakeStore({"older-run": {"pi": {"backends": {"torch": {"available": False, "reason": "not installed (pip install x)"},
                                                                "onnxruntime": {"available": True}, "litert": {"available": True}}}}})
    profile = TargetProfile(name="pi", transport="ssh", ssh={"host": "pi.local"}, backends=["onnxruntime", "torch"])
    asyncio.run(board_mod.Board(runner, profile, _mixed_jobs(tmp_path), 60, summary=summary, replace=False).run())
    assert [r.status for r in runner.saved] == ["failed", "skipped", "skipped", "failed"]  # torch: lacked at its last probe; litert: not offered
    assert len(runner.logged) == 1, runner.logged
    (line,) = runner.logged
    assert line.startswith("target pi: cannot connect") and "target pi: target pi" not in line
    assert "2 cells not run, 2 skipped" in line and "edgebench run --resume run-1" in line
    assert summary.failures == [line]  # one entry for the target, not one per cell
    assert runner.saved[0].error.startswith("target pi: cannot connect to pi.local: ConnectionRefusedError: refused; `edgebench run --resume")
    assert "does not offer litert" in runner.saved[2].error and "pip install" not in runner.saved[1].error
    assert "edgebench target setup pi" in runner.saved[1].error


def test_giving_up_mid_run_says_it_once_for_the_remaining_cells(tmp_path, monkeypatch):
    transport = ScriptedTransport(["lost", "lost"])
    monkeypatch.setattr(board_mod, "make_transport", lambda *a, **k: transport)
    runner, summary = TallyRunner(tmp_path), Summary()
    profile = TargetProfile(name="pi", transport="ssh", ssh={"host": "pi.local", "reconnect_s": 0})
    asyncio.run(board_mod.Board(runner, profile, jobs(6, tmp_path), 60, summary=summary, replace=False).run())
    assert [r.status for r in runner.saved] == ["failed"] * 6
    assert len(runner.logged) == 3  # the two lost cells, then one line for the four not tried
    assert runner.logged[-1].startswith("not run: target pi unreachable (connection lost") and "4 cells not run" in runner.logged[-1]
    assert len(summary.failures) == 3 and transport.discarded == 0  # a failed run keeps its board files to debug


def test_a_run_whose_cells_all_finish_removes_its_board_folder(tmp_path, monkeypatch):
    runner, transport = run_board(tmp_path, monkeypatch, ["ok", "ok"], 2)
    assert transport.discarded == 1


def test_a_resumed_run_names_its_cell_files_apart_from_the_first_attempt(tmp_path, monkeypatch):
    transport = ScriptedTransport(["ok", "ok"])
    monkeypatch.setattr(board_mod, "make_transport", lambda *a, **k: transport)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "eval.npz").write_bytes(b"npz")
    profile = TargetProfile(name="pi", transport="ssh", ssh={"host": "pi.local"})
    asyncio.run(board_mod.Board(FakeRunner(tmp_path), profile, jobs(2, tmp_path), 60, summary=None, replace=True).run())
    assert len(transport.ran) == 2 and all(n.startswith(("cell-0000-r", "cell-0001-r")) for n in transport.ran), transport.ran
