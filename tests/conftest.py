"""Shared fixtures: the real small_cnn artifacts (built once per session), short measurement floors,
suite files in tmp folders, and an EDGEBENCH_HOME that never points into the repository."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgebench.bench.contracts.results import MeasureSettings

@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory):
    """Anything that falls back on EDGEBENCH_HOME writes into a tmp folder, never ./edgebench-results."""
    home = tmp_path_factory.mktemp("edgebench-home")
    old = os.environ.get("EDGEBENCH_HOME")
    os.environ["EDGEBENCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("EDGEBENCH_HOME", None)
    else:
        os.environ["EDGEBENCH_HOME"] = old


@dataclass
class Built:
    """The session's real artifacts: the trained dense small_cnn and its torch and ONNX exports."""

    cache_root: Path
    dense_dir: Path
    ort_path: Path
    torch_path: Path
    dense_facts: dict[str, Any]
    ort_facts: dict[str, Any]
    torch_facts: dict[str, Any]
    log: list[str] = field(default_factory=list)
    counters: Any = None

    @property
    def eval_npz(self) -> Path:
        return self.dense_dir / "eval.npz"

    def eval_data(self) -> dict[str, np.ndarray]:
        with np.load(self.eval_npz) as d:
            return {k: d[k] for k in d.files}

    def module(self):
        """A fresh PyTorch module with the trained dense weights."""
        import torch

        from edgebench.models.arch import build_module

        m = build_module(json.loads((self.dense_dir / "arch.json").read_text()))
        m.load_state_dict(torch.load(self.dense_dir / "model.pt", weights_only=True))
        return m.eval()


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    import torch

    from edgebench.models import recipes
    from edgebench.models.cache import Cache
    from edgebench.bench.prepare import Preparer

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("artifact-cache")
    log: list[str] = []
    prep = Preparer(Cache(root), log=log.append)
    dense_recipe = recipes.load("dense")
    ort = prep.artifact("small_cnn", dense_recipe, "onnxruntime", "fp32")
    tor = prep.artifact("small_cnn", dense_recipe, "torch", "fp32")
    dense = prep.dense("small_cnn")
    torch.set_num_threads(threads)  # export checks load sessions that set torch's thread count
    return Built(
        cache_root=root,
        dense_dir=dense.dir,
        ort_path=ort.dir / ort.manifest["facts"]["artifact"],
        torch_path=tor.dir / tor.manifest["facts"]["artifact"],
        dense_facts=dense.manifest["facts"],
        ort_facts=ort.manifest["facts"],
        torch_facts=tor.manifest["facts"],
        log=log,
        counters=prep.counters,
    )


@pytest.fixture
def fast_measure() -> MeasureSettings:
    return MeasureSettings(warmup_runs=2, warmup_seconds=0.0, min_runs=10, min_seconds=0.05)


@pytest.fixture
def restore_torch_threads():
    """Backends set torch's global thread count on load; put it back after the test."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def write_suite(tmp_path: Path):
    """write_suite(name, mapping_or_text, folder=None) -> path of a suite (or recipe) YAML in tmp."""

    def write(name: str, content: dict[str, Any] | str, folder: Path | None = None) -> Path:
        folder = folder or tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


# -- PostgreSQL: a throwaway cluster on a free loopback port, for the store suite ------------------------------

@dataclass
class PostgresServer:
    """A running throwaway PostgreSQL cluster (trust auth on 127.0.0.1 only)."""

    port: int
    user: str
    datadir: Path
    _databases: int = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database on the cluster; returns its URL."""
        import psycopg

        self._databases += 1
        name = f"edgebench_t{self._databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _unavailable(reason: str) -> None:
    """Skip locally; under CI (CI set, as .ci/run does) a missing PostgreSQL is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/VERSION/bin (newest)."""
    import shutil

    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """initdb a cluster in a temp folder, start it on a free loopback port, yield it, stop it and delete it.

    PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user Debian's package creates.
    """
    import pwd
    import shutil
    import subprocess
    import tempfile

    bindir = postgres_bindir()
    if bindir is None:
        _unavailable("PostgreSQL server not installed (no initdb/pg_ctl); `make postgres` installs Debian's postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed; `make install` installs the postgres extra")
    run_as: list[str] = []
    datadir = Path(tempfile.mkdtemp(prefix="edgebench-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(datadir)
            _unavailable("running as root and there is no 'postgres' user to run the server as; install Debian's postgresql (`make postgres`)")
        os.chown(datadir, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, log = datadir / "data", datadir / "server.log"

    def pg(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run(run_as + [str(bindir / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout)

    init = pg("initdb", "-D", str(data), "-U", "edgebench", "-A", "trust", "-E", "UTF8", "--no-sync")
    if init.returncode != 0:
        shutil.rmtree(datadir, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr.strip()[-500:]}", pytrace=False)
    for attempt in range(3):  # the free port may be taken between choosing and binding it
        port = _free_port()
        opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        start = pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", opts, "start")
        if start.returncode == 0:
            break
    else:
        text = log.read_text(errors="replace")[-800:] if log.exists() else start.stderr
        shutil.rmtree(datadir, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {text}", pytrace=False)
    try:
        yield PostgresServer(port, "edgebench", datadir)
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """The location of a new, empty store: a SQLite file, and a database on the throwaway PostgreSQL cluster."""
    if request.param == "sqlite":
        return str(tmp_path / "edgebench.sqlite")
    return request.getfixturevalue("postgres").new_database()


# -- ssh-loopback: a real OpenSSH server on 127.0.0.1 and a torch-free worker venv behind it -------

@dataclass
class LoopbackTarget:
    """The running server, a targets file naming ``ssh-loopback``, and what ``target setup`` printed."""

    server: Any
    targets_file: Path
    setup_output: str

    def write_targets(self, path: Path, *profiles: dict) -> Path:
        path.write_text(yaml.safe_dump({"targets": list(profiles)}))
        return path


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory):
    from sshd_support import SSHD, start_loopback_sshd

    if not SSHD.exists():
        _unavailable("OpenSSH server not installed (/usr/sbin/sshd); `make sshd` installs Debian's openssh-server")
    server = start_loopback_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ssh_loopback(ssh_server, tmp_path_factory: pytest.TempPathFactory) -> LoopbackTarget:
    """`edgebench target setup ssh-loopback` for real: wheel built here, copied over SSH, venv made there."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("loopback-targets")
    targets = folder / "targets.yaml"
    targets.write_text(yaml.safe_dump({"targets": [ssh_server.profile()]}))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run([sys.executable, "-m", "edgebench.bench.cli", "target", "setup", "ssh-loopback", "--targets", str(targets),
                           "--constraints", str(repo / "constraints.txt")], capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return LoopbackTarget(ssh_server, targets, proc.stdout)
