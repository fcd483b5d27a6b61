"""A real OpenSSH server on 127.0.0.1 for the ssh-loopback tests (Debian's openssh-server, `make sshd`).

Keys and a config are generated in a temp folder; sshd runs on a free port with key-only login,
the client's known_hosts holds exactly its host key, and the server is stopped at the end.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on port {port} within {timeout_s}s")


@dataclass
class LoopbackSSH:
    root: Path
    port: int
    user: str
    key: Path
    known_hosts: Path
    config: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.root / "sshd.log"
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config)], stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
        _wait_listening(self.port, self.proc, log)

    def stop(self) -> None:
        """Stop the listener and every session it serves (a board going down)."""
        if self.proc is None:
            return
        for child in self._sessions():
            child.kill()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _sessions(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True) if self.proc else []
        except psutil.NoSuchProcess:
            return []

    def kill_connections(self) -> int:
        """Kill every open SSH session (and what runs in it), keeping the listener: a dropped link."""
        killed = 0
        for child in self._sessions():
            try:
                child.kill()
                killed += 1
            except psutil.NoSuchProcess:
                pass
        return killed

    def workers(self) -> list[psutil.Process]:
        """Worker processes started through this server."""
        out = []
        for p in self._sessions():
            try:
                cmd = p.cmdline()
            except psutil.Error:
                continue
            if "edgebench.bench.worker" in cmd and "run" in cmd and not (cmd and cmd[0].endswith("timeout")):
                out.append(p)
        return out

    def profile(self, name: str = "ssh-loopback", workdir: Path | None = None, **extra) -> dict:
        """A target profile reaching this server (the venv is shared by every profile of the session)."""
        return {
            "name": name, "transport": "ssh", "description": "OpenSSH on 127.0.0.1 (test fixture)",
            "ssh": {"host": "127.0.0.1", "port": self.port, "user": self.user, "identity_file": str(self.key), "known_hosts": str(self.known_hosts)},
            "python": str(base_python()), "workdir": str(workdir or self.root / "device"), "venv": str(self.root / "device-venv"),
            "extras": ["onnxruntime", "litert"], **extra,
        }


def base_python() -> Path:
    """The interpreter the test venv was made from: a board's python3 has no edgebench and no torch."""
    import sys

    for candidate in (Path(sys.base_prefix) / "bin" / "python3", Path(sys._base_executable)):
        if candidate.exists():
            return candidate
    return Path(shutil.which("python3") or "python3")


def start_loopback_sshd(root: Path) -> LoopbackSSH:
    root.mkdir(parents=True, exist_ok=True)
    key, host_key = root / "id_ed25519", root / "host_ed25519"
    for path in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgebench-test", "-f", str(path)], check=True, timeout=30)
    (root / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    port = free_port()
    host_pub = host_key.with_suffix(".pub").read_text().split()
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxSessions 50", "MaxStartups 50",
    ]) + "\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
    server = LoopbackSSH(root, port, getpass.getuser(), key, known, config)
    server.start()
    return server
