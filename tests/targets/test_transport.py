"""Transport pieces that need no server: content-hash bundles, remote quoting, unreachable boards."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import socket
from pathlib import Path

import pytest

from edgebench.bench.config import load_suite
from edgebench.bench.runner import Paths, Runner
from edgebench.targets.profiles import TargetProfile
from edgebench.targets.transport import TRANSPORTS, Bundle, LocalTransport, SSHTransport, TargetUnreachable, artifact_bundle, make_transport


def test_bundle_key_follows_content_not_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "m.onnx").write_bytes(b"graph")
    (b / "m.onnx").write_bytes(b"graph")
    assert Bundle([a / "m.onnx"]).key() == Bundle([b / "m.onnx"]).key()
    (b / "m.onnx").write_bytes(b"graph2")
    assert Bundle([a / "m.onnx"]).key() != Bundle([b / "m.onnx"]).key()


def test_artifact_bundle_carries_onnx_external_data(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"g")
    (tmp_path / "model.onnx.data").write_bytes(b"w")
    (tmp_path / "manifest.json").write_text("{}")
    names = [f.name for f in artifact_bundle(tmp_path / "model.onnx").files]
    assert names == ["model.onnx", "model.onnx.data"]


class FakeConn:
    def __init__(self):
        self.commands: list[str] = []

    async def run(self, command, check=False):
        self.commands.append(command)

        class R:
            exit_status, exit_signal, stdout, stderr = 0, None, "", ""
        return R()


def test_remote_commands_quote_every_word():
    t = SSHTransport(TargetProfile(name="x", transport="ssh", ssh={"host": "h"}), run_id="r")
    t.conn = FakeConn()
    argv = ["/home/u/dev ice's/venv/bin/python", "-m", "edgebench.bench.worker", "run", "/w/a; rm -rf ~/x $(id) `id`/cell.spec.json"]
    asyncio.run(t.run(argv, 5))
    [command] = t.conn.commands
    assert shlex.split(command) == argv  # the remote shell sees exactly these words, nothing to execute


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def test_connecting_to_a_closed_port_is_a_one_line_unreachable_error(tmp_path):
    profile = TargetProfile(name="gone", transport="ssh", ssh={"host": "127.0.0.1", "port": _closed_port(), "connect_timeout_s": 5})
    t = SSHTransport(profile, run_id="r")
    with pytest.raises(TargetUnreachable, match=r"target gone: cannot connect to 127.0.0.1"):
        asyncio.run(t.open())


def test_missing_identity_file_names_the_fix(tmp_path):
    profile = TargetProfile(name="k", transport="ssh", ssh={"host": "127.0.0.1", "identity_file": str(tmp_path / "nokey")})
    with pytest.raises(TargetUnreachable, match="identity_file .* not found; fix ssh.identity_file"):
        asyncio.run(SSHTransport(profile, run_id="r").open())


def test_missing_known_hosts_gives_the_keyscan_command_with_the_port(tmp_path):
    kh = tmp_path / "known_hosts"
    profile = TargetProfile(name="k", transport="ssh", ssh={"host": "10.0.0.7", "port": 2222, "known_hosts": str(kh)})
    with pytest.raises(TargetUnreachable, match=rf"known_hosts {kh} not found; add the board's host key with `ssh-keyscan -p 2222 10.0.0.7 >> {kh}`"):
        asyncio.run(SSHTransport(profile, run_id="r").open())


@pytest.mark.slow
def test_an_unreachable_board_fails_its_cells_and_the_local_cells_still_run(built, write_suite, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(built.cache_root, home / "cache")
    suite = write_suite("s.yaml", {
        "models": ["small_cnn"], "backends": [{"name": "onnxruntime", "threads": 1}], "targets": ["local", "gone"],
        "measure": {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 10, "min_seconds": 0.05},
        "target_profiles": [{"name": "gone", "transport": "ssh", "ssh": {"host": "127.0.0.1", "port": _closed_port(), "connect_timeout_s": 5}}]})
    log: list[str] = []
    runner = Runner(Paths(home=home), log=log.append)
    summary = runner.run(load_suite(suite))
    cells = {c.target: c for c in runner.store.cells(summary.run_id, with_samples=False)}
    assert cells["local"].status == "ok"
    assert cells["gone"].status == "failed" and "target gone: cannot connect to 127.0.0.1" in cells["gone"].error
    assert "error" in runner.store.environments(summary.run_id)["gone"]
    assert (summary.cells_ok, summary.cells_failed) == (1, 1)
    said = [line for line in log if "target gone" in line]
    assert len(said) == 1 and "target gone: target gone" not in said[0] and "1 cell not run" in said[0], said  # once per target
    assert len(summary.failures) == 1


def test_transports_are_registered_and_picked_by_the_profile(tmp_path):
    assert TRANSPORTS.names() == ["local", "ssh"]
    local = make_transport(TargetProfile(name="here"), "r", tmp_path / "cells", build_cache=tmp_path / "cache" / "device-builds")
    assert isinstance(local, LocalTransport) and local.workdir == tmp_path / "cells"
    assert local.build_cache_dir() == str(tmp_path / "cache" / "device-builds")
    assert make_transport(TargetProfile(name="here"), "r", tmp_path).build_cache_dir() == str(tmp_path / "device-builds")
    remote = make_transport(TargetProfile(name="pi", ssh={"host": "pi.local"}), "r", tmp_path)
    assert isinstance(remote, SSHTransport) and remote.run_id == "r"


def test_the_ssh_build_cache_is_under_the_workdir_once_connected():
    t = SSHTransport(TargetProfile(name="pi", ssh={"host": "pi.local"}, workdir="~/eb"), run_id="r")
    with pytest.raises(TargetUnreachable, match="not connected"):
        t.build_cache_dir()
    t.root = t._remote_path(t.profile.workdir, "/home/pi")
    assert t.build_cache_dir() == "/home/pi/eb/builds"  # the same folder for every run: builds are reused


def test_board_cell_files_go_to_a_per_target_folder_named_by_a_digest_and_are_kept_on_the_host(tmp_path):
    nasty = "lab pi'; rm -rf ~"
    t = SSHTransport(TargetProfile(name=nasty, ssh={"host": "pi"}), "20260101-000000-abcd", cells_dir=tmp_path / "cells")
    t.root = "/home/pi/.cache/edgebench"
    folder = t._run_folder()
    assert folder.startswith("/home/pi/.cache/edgebench/runs/20260101-000000-abcd/t") and nasty not in folder
    assert folder.rsplit("/", 1)[1][1:].isalnum()
    t._keep("cell-0001", "stderr.txt", "Traceback: boom\n")
    assert (tmp_path / "cells" / "cell-0001.stderr.txt").read_text() == "Traceback: boom\n"
    SSHTransport(TargetProfile(name="pi", ssh={"host": "pi"}), "r")._keep("x", "spec.json", "{}")  # no host folder: nothing kept, no error
