"""How the host reaches a target's worker: a local child process, or the same worker over SSH.

Local and remote differ only here. Both run ``python -m edgebench.bench.worker`` with a cell spec
and read back a CellResult; the SSH transport first copies the cell's files to the board, once per
content hash. Remote commands are built from argument lists with every word quoted
(``shlex.join``), never from a shell string holding user input.

Transports are plugins of :data:`TRANSPORTS`, picked by a profile's ``transport`` (``ssh`` when the
profile has an ``ssh:`` block): a new way to reach a board is one class registered here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgebench.bench.contracts.errors import EdgebenchError, one_line, tail_text
from edgebench.bench.contracts.files import writing
from edgebench.bench.contracts.registry import Registry
from edgebench.bench.contracts.results import CellResult
from edgebench.bench.contracts.spec import CellSpec
from edgebench.targets import hostkeys

if TYPE_CHECKING:  # profiles.py imports this module to check a profile's transport name
    from edgebench.targets.profiles import TargetProfile

# Transport failures that mean "the board went away", as opposed to a cell failing on it.
LOST = "connection lost"


class TargetUnreachable(EdgebenchError):
    """The target cannot be reached (or its worker cannot be started) at all."""


@dataclass
class Bundle:
    """Files that must sit side by side on the device (``model.onnx`` with its ``model.onnx.data``)."""

    files: list[Path]

    def key(self) -> str:
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda p: p.name):
            h.update(f.name.encode() + b"\0" + file_digest(f).encode() + b"\0")
        return h.hexdigest()[:32]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so a run hashes each artifact once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def artifact_bundle(artifact: Path) -> Bundle:
    """The artifact and its companions: files in its folder whose name starts with the artifact's
    name (the ONNX exporter writes weights to ``model.onnx.data``)."""
    companions = [p for p in artifact.parent.iterdir() if p.is_file() and p != artifact and p.name.startswith(artifact.name)]
    return Bundle([artifact, *sorted(companions)])


@dataclass
class WorkerOutcome:
    """What came back from one worker run; ``lost`` when the transport failed, not the cell."""

    result: CellResult
    lost: bool = False


@dataclass
class CopyStats:
    files: int = 0
    bytes: int = 0


TRANSPORTS: Registry[type[Transport]] = Registry("transport")


class Transport:
    """One target's connection. Subclasses register in :data:`TRANSPORTS` under their ``name``."""

    name: ClassVar[str] = ""

    def __init__(self, profile: TargetProfile) -> None:
        self.profile = profile
        self.copied = CopyStats()

    @classmethod
    def create(cls, profile: TargetProfile, *, run_id: str, cells_dir: Path, pythonpath: list[str], build_cache: Path | None) -> Transport:
        """The transport for one run: ``cells_dir`` and ``pythonpath`` serve a local worker, ``build_cache``
        is the host's device-build cache (each transport takes what it needs)."""
        raise NotImplementedError

    async def open(self) -> None:
        """Connect (a no-op locally); raises TargetUnreachable with the reason."""

    async def close(self) -> None:
        """Disconnect."""

    @property
    def connected(self) -> bool:
        """Whether ``open`` is needed before the next command (a local target is always there)."""
        return True

    async def probe(self, state_only: bool = False) -> dict[str, Any]:
        """The device's fingerprint (with its state now), or only the state."""
        raise NotImplementedError

    async def place(self, bundle: Bundle) -> str:
        """The folder on the device holding the bundle's files (copied there if not yet)."""
        raise NotImplementedError

    async def run_cell(self, spec_json: str, name: str, timeout_s: float) -> WorkerOutcome:
        """Run the worker on one cell spec (JSON text) and read its result."""
        raise NotImplementedError

    def build_cache_dir(self) -> str:
        """The target's folder for device-built artifacts, the same for every run (a cell spec's ``build_cache``)."""
        raise NotImplementedError

    async def discard_run_files(self) -> None:
        """Remove the run's cell files on the device once every cell's result is on the host (locally: kept)."""


@TRANSPORTS.register
class LocalTransport(Transport):
    """The worker as a child process of this host (no copying: paths are already local)."""

    name = "local"

    def __init__(self, profile: TargetProfile, workdir: Path, pythonpath: list[str] | None = None, build_cache: Path | None = None) -> None:
        super().__init__(profile)
        self.workdir = workdir
        self.pythonpath = pythonpath or []
        self.build_cache = build_cache or workdir / "device-builds"

    @classmethod
    def create(cls, profile: TargetProfile, *, run_id: str, cells_dir: Path, pythonpath: list[str], build_cache: Path | None) -> Transport:
        return cls(profile, cells_dir, pythonpath, build_cache)

    async def probe(self, state_only: bool = False) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "edgebench.bench.worker", "probe"] + (["--state"] if state_only else [])
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        except asyncio.TimeoutError:
            proc.kill()
            raise TargetUnreachable(f"target {self.profile.name}: the probe did not finish in 120 s") from None
        except asyncio.CancelledError:  # Ctrl-C: no probe left behind
            proc.kill()
            raise
        if proc.returncode != 0:
            raise TargetUnreachable(f"target {self.profile.name}: probe failed: {tail_text(err.decode(errors='replace'))}")
        return json.loads(out)

    async def place(self, bundle: Bundle) -> str:
        return str(bundle.files[0].parent)

    async def run_cell(self, spec_json: str, name: str, timeout_s: float) -> WorkerOutcome:
        # The child runs in its own session (Ctrl-C in the terminal does not reach it) and a thread waits
        # for it; when the run is cancelled (Ctrl-C, another board's error) its process group is killed
        # here, so the run stops now instead of when the cell would have finished.
        child = _ChildGuard()
        waiting = asyncio.ensure_future(asyncio.to_thread(run_worker, CellSpec.from_json(spec_json), self.workdir, timeout_s, child.started, self.pythonpath, name))
        try:
            outcome = await asyncio.shield(waiting)
        except asyncio.CancelledError:
            child.kill()
            waiting.add_done_callback(lambda t: t.cancelled() or t.exception())  # nobody awaits it now: no "never retrieved"
            raise
        return WorkerOutcome(outcome.result)

    def build_cache_dir(self) -> str:
        return str(self.build_cache)


class _ChildGuard:
    """The worker child of one cell, killable from the event loop while a thread waits for it.

    ``kill`` may come before the thread has started the child: the child is then killed as it starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._killed = False

    def started(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._proc = proc
            if not self._killed:
                return
        _signal_group(proc)

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            proc = self._proc
        if proc is not None:
            _signal_group(proc)  # the waiting thread reaps it


def _signal_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the child's whole process group (it leads its own session), not only the child."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class ChildOutcome:
    """A local worker child's result and exit status (None: killed when it ran out of time)."""

    result: CellResult
    returncode: int | None


def run_worker(spec: CellSpec, workdir: Path, timeout_s: float, on_start: Callable[[subprocess.Popen], None] | None = None,
               pythonpath: list[str] | None = None, name: str | None = None) -> ChildOutcome:
    """Run one cell in a fresh ``python -m edgebench.bench.worker`` child and read its result.

    ``pythonpath`` adds folders the worker must import from (a user's model factory beside the suite).
    The spec, result and stderr files are ``WORKDIR/NAME.*`` (NAME defaults to the cell key).
    """
    stem = name or spec.cell_key.replace("/", "__")
    spec_path, out_path, err_path = workdir / f"{stem}.spec.json", workdir / f"{stem}.result.json", workdir / f"{stem}.stderr.txt"
    with writing(spec_path):  # a full disk: one line naming the file (the runner marks the run interrupted)
        workdir.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(spec.to_json())
    out_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "edgebench.bench.worker", "run", str(spec_path), "--out", str(out_path)]
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        if on_start is not None:
            on_start(proc)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return ChildOutcome(CellResult.failed(f"timed out after {timeout_s:g}s (cell_timeout_s); raise it in the suite or look for a hang"
                                                  f"{_stderr_suffix(err_path)}"), None)
    if out_path.exists() and code == 0:
        try:
            return ChildOutcome(CellResult.from_dict(json.loads(out_path.read_text())), code)
        except (ValueError, TypeError) as exc:
            return ChildOutcome(CellResult.failed(f"{out_path}: unreadable worker result ({exc})"), code)
    return ChildOutcome(CellResult.failed(describe_exit(code) + _stderr_suffix(err_path)), code)


def describe_exit(code: int) -> str:
    """Why a local worker child ended without a result, from its exit status (negative: a signal)."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        hint = " (out of memory, or killed from outside)" if -code == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code} without a result"


def _kill_group(proc: subprocess.Popen) -> None:
    _signal_group(proc)
    proc.wait()


def _stderr_suffix(path: Path) -> str:
    """``; stderr: <its last lines>``, or nothing when the child wrote none."""
    try:
        tail = tail_text(path.read_text(errors="replace"))
    except OSError:
        return ""
    return f"; stderr: {tail}" if tail else ""


@TRANSPORTS.register
class SSHTransport(Transport):
    """The worker on a board over SSH (asyncssh): key authentication, known_hosts checked.

    Files go to ``WORKDIR/files/<content hash>/`` through SFTP into a temporary folder that is
    renamed when complete, so an interrupted copy is never mistaken for a finished one. Device
    builds stay in ``WORKDIR/builds`` across runs.
    """

    name = "ssh"

    def __init__(self, profile: TargetProfile, run_id: str, cells_dir: Path | None = None) -> None:
        super().__init__(profile)
        self.run_id = run_id
        self.cells_dir = cells_dir  # the host's copy of each cell's spec, result and stderr (None: keep none)
        self.conn: Any = None
        self.sftp: Any = None
        self.root = ""
        self.python = ""
        self._placed: dict[str, str] = {}

    @classmethod
    def create(cls, profile: TargetProfile, *, run_id: str, cells_dir: Path, pythonpath: list[str], build_cache: Path | None) -> Transport:
        return cls(profile, run_id, cells_dir)

    def build_cache_dir(self) -> str:
        if not self.root:  # WORKDIR's "~" is known only once connected
            raise TargetUnreachable(f"target {self.profile.name}: not connected, so its build folder is not known yet")
        return f"{self.root}/builds"

    # -- connection --------------------------------------------------------------------------
    def connect_options(self) -> dict[str, Any]:
        s = self.profile.ssh
        assert s is not None
        opts: dict[str, Any] = {"host": s.host, "connect_timeout": s.connect_timeout_s}
        if s.port is not None:
            opts["port"] = s.port
        if s.user is not None:
            opts["username"] = s.user
        if s.identity_file is not None:
            key = Path(s.identity_file).expanduser()
            if not key.exists():
                raise TargetUnreachable(f"target {self.profile.name}: identity_file {key} not found; fix ssh.identity_file in the profile")
            opts["client_keys"] = [str(key)]
        if s.known_hosts is not None:
            known = Path(s.known_hosts).expanduser()
            if not known.exists():
                raise TargetUnreachable(f"target {self.profile.name}: known_hosts {known} not found; add the board's host key with "
                                        f"`{hostkeys.keyscan_command(s.host, s.port or 22, known)}` or fix ssh.known_hosts")
            opts["known_hosts"] = str(known)
        if s.jump_host is not None:
            opts["tunnel"] = s.jump_host
        return opts

    async def open(self) -> None:
        import asyncssh

        try:
            self.conn = await asyncssh.connect(**self.connect_options())
            self.sftp = await self.conn.start_sftp_client()
            home = await self.sftp.realpath(".")
        except asyncssh.HostKeyNotVerifiable as exc:
            raise TargetUnreachable(await self._host_key_problem(one_line(exc))) from None
        except asyncssh.PermissionDenied as exc:
            raise TargetUnreachable(f"target {self.profile.name}: key authentication refused ({one_line(exc)}); check ssh.user and ssh.identity_file") from None
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            raise TargetUnreachable(f"target {self.profile.name}: cannot connect to {self.profile.ssh.host}: {type(exc).__name__}: {one_line(exc) or 'timed out'}") from None
        self.root = self._remote_path(self.profile.workdir, home)
        self.python = f"{self._remote_path(self.profile.venv_dir(), home)}/bin/python"

    async def _host_key_problem(self, detail: str) -> str:
        """Unknown host or CHANGED key (asyncssh says the same for both): the one line that tells them apart."""
        s = self.profile.ssh
        known = Path(s.known_hosts or hostkeys.DEFAULT_KNOWN_HOSTS).expanduser()
        facts = await hostkeys.gather_facts(s.host, s.port or 22, known, tunnel=s.jump_host or (), timeout_s=s.connect_timeout_s)
        return hostkeys.describe(self.profile.name, facts, detail)

    @staticmethod
    def _remote_path(path: str, home: str) -> str:
        # "~" is expanded here, not by a remote shell: every path is quoted when used.
        if path == "~" or path.startswith("~/"):
            return home.rstrip("/") + path[1:]
        return path if path.startswith("/") else f"{home.rstrip('/')}/{path}"

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            try:
                await asyncio.wait_for(self.conn.wait_closed(), 10)
            except (asyncio.TimeoutError, OSError):
                pass
            self.conn = self.sftp = None

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.is_closed()

    async def run(self, argv: list[str], timeout_s: float) -> Any:
        """Run one remote command given as an argument list (each word quoted for the remote shell)."""
        return await asyncio.wait_for(self.conn.run(shlex.join(argv), check=False), timeout_s)

    # -- probe -----------------------------------------------------------------------------
    async def probe(self, state_only: bool = False) -> dict[str, Any]:
        import asyncssh

        argv = [self.python, "-m", "edgebench.bench.worker", "probe"] + (["--state"] if state_only else [])
        try:
            proc = await self.run(argv, 120)
        except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:  # asyncssh errors have no common base with OSError
            raise TargetUnreachable(f"target {self.profile.name}: probe failed: {type(exc).__name__}: {one_line(exc)}") from None
        if proc.exit_status == 127 or "No such file" in (proc.stderr or ""):
            raise TargetUnreachable(f"target {self.profile.name}: no edgebench worker at {self.python}; run `edgebench target setup {shlex.quote(self.profile.name)}`")
        if proc.exit_status != 0:
            raise TargetUnreachable(f"target {self.profile.name}: probe failed (exit {proc.exit_status}): {tail_text(proc.stderr or '')}")
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise TargetUnreachable(f"target {self.profile.name}: probe printed no JSON: {tail_text(proc.stdout or '')}") from None

    # -- files -----------------------------------------------------------------------------
    async def place(self, bundle: Bundle) -> str:
        import asyncssh

        key = bundle.key()
        if key in self._placed:
            return self._placed[key]
        folder = f"{self.root}/files/{key}"
        try:
            if not await self.sftp.exists(f"{folder}/.complete"):
                await self._upload(bundle, folder)
        except (asyncssh.Error, ConnectionError, asyncio.TimeoutError) as exc:  # the link, not the files
            raise TargetUnreachable(f"connection lost to target {self.profile.name} while copying files "
                                    f"({type(exc).__name__}: {one_line(exc)})") from None
        self._placed[key] = folder
        return folder

    async def _upload(self, bundle: Bundle, folder: str) -> None:
        part = f"{folder}.part-{secrets.token_hex(4)}"
        await self.sftp.makedirs(part, exist_ok=True)
        for f in bundle.files:
            await self.sftp.put(str(f), f"{part}/{f.name}")
            self.copied.files += 1
            self.copied.bytes += f.stat().st_size
        async with self.sftp.open(f"{part}/.complete", "w") as fh:
            await fh.write(json.dumps({f.name: file_digest(f) for f in bundle.files}))
        if await self.sftp.exists(folder):  # another run placed it meanwhile: keep theirs
            await self.run(["rm", "-rf", "--", part], 60)
        else:
            await self.sftp.rename(part, folder)

    # -- cells -----------------------------------------------------------------------------
    async def run_cell(self, spec_json: str, name: str, timeout_s: float) -> WorkerOutcome:
        """Write the spec, run the worker under ``timeout -s KILL``, read the result back.

        Remote file names are the cell's index, not its key: user-chosen names never reach a path.
        The spec, the worker's stderr and its result are also kept on the host (``cells_dir``), as a
        local cell's are, so a board cell can be debugged after the board's run folder is removed.
        """
        import asyncssh

        folder = self._run_folder()
        spec, out = f"{folder}/{name}.spec.json", f"{folder}/{name}.result.json"
        limit = max(int(timeout_s), 1)
        self._keep(name, "spec.json", spec_json)
        try:
            await self.sftp.makedirs(folder, exist_ok=True)
            async with self.sftp.open(spec, "w") as fh:
                await fh.write(spec_json)
            if await self.sftp.exists(out):
                await self.sftp.remove(out)
            proc = await self.run(["timeout", "-s", "KILL", str(limit), self.python, "-m", "edgebench.bench.worker", "run", spec, "--out", out], limit + 60)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            return self._lost(exc)
        self._keep(name, "stderr.txt", proc.stderr or "")
        if proc.exit_status is None and proc.exit_signal is None:
            return self._lost(ConnectionError("the SSH channel closed without an exit status"))
        if proc.exit_status == 0:
            try:
                async with self.sftp.open(out, "r") as fh:
                    text = await fh.read()
                self._keep(name, "result.json", text)
                return WorkerOutcome(CellResult.from_dict(json.loads(text)))
            except (OSError, asyncssh.Error) as exc:
                return self._lost(exc)
            except (ValueError, TypeError) as exc:
                return WorkerOutcome(CellResult.failed(f"{out} on {self.profile.name}: unreadable worker result ({exc})"))
        tail = tail_text(proc.stderr or "")
        return WorkerOutcome(CellResult.failed(self._describe_exit(proc, limit) + (f"; stderr: {tail}" if tail else "")))

    def _keep(self, name: str, suffix: str, text: str) -> None:
        """The host's copy of one cell file (``cells_dir/NAME.SUFFIX``). Best effort: the result itself is
        stored in the store; a host disk that cannot take this debugging copy must not fail the cell."""
        if self.cells_dir is None:
            return
        try:
            self.cells_dir.mkdir(parents=True, exist_ok=True)
            (self.cells_dir / f"{name}.{suffix}").write_text(text)
        except OSError:
            pass

    def _run_folder(self) -> str:
        """``WORKDIR/runs/RUN_ID/t<hash of the target's name>``: one folder per target (two profiles may reach
        the same board), named by a digest so a user-chosen name never reaches a path."""
        tag = hashlib.sha256(self.profile.name.encode()).hexdigest()[:10]
        return f"{self.root}/runs/{self.run_id}/t{tag}"

    async def discard_run_files(self) -> None:
        """Remove this target's cell files of the run on the board (1-2 MB a run, every attempt's), and the
        run's folder if no other target of the run left files there."""
        import asyncssh

        if not self.connected or not self.root:
            return
        try:
            await self.run(["rm", "-rf", "--", self._run_folder()], 60)
            await self.run(["rmdir", "--ignore-fail-on-non-empty", "--", f"{self.root}/runs/{self.run_id}"], 60)
        except (OSError, asyncssh.Error, asyncio.TimeoutError):
            pass  # left for the next successful attempt of this run; nothing measured depends on it

    def _describe_exit(self, proc: Any, limit: int) -> str:
        where = f"on {self.profile.name}"
        kill_hint = f" (out of memory, cell_timeout_s={limit} reached, or killed from outside)"
        if proc.exit_signal:  # `timeout` re-raises the signal that killed the worker on itself
            name = f"SIG{proc.exit_signal[0]}" if not str(proc.exit_signal[0]).startswith("SIG") else proc.exit_signal[0]
            return f"worker {where} killed by {name}" + (kill_hint if name == "SIGKILL" else "")
        code = proc.exit_status
        if code == 137:
            return f"worker {where} killed by SIGKILL" + kill_hint
        if code == 127:
            return f"no edgebench worker at {self.python} {where}; run `edgebench target setup {shlex.quote(self.profile.name)}`"
        if code is not None and code > 128:
            return f"worker {where} killed by signal {code - 128}"
        return f"worker {where} exited with code {code} without a result"

    def _lost(self, exc: BaseException) -> WorkerOutcome:
        reason = f"{type(exc).__name__}: {one_line(exc)}" if str(exc) else type(exc).__name__
        # The connection is dropped so the next cell reconnects instead of reusing a dead channel.
        if self.conn is not None:
            self.conn.abort()
            self.conn = self.sftp = None
        return WorkerOutcome(CellResult.failed(f"{LOST} to target {self.profile.name} during the cell ({reason}); `edgebench run --resume {self.run_id}` reruns it"), lost=True)


def make_transport(profile: TargetProfile, run_id: str, local_workdir: Path, pythonpath: list[str] | None = None,
                   build_cache: Path | None = None) -> Transport:
    """The transport the profile names (TRANSPORTS), set up for run ``run_id``.

    ``local_workdir`` holds a local worker's spec/result files; ``build_cache`` is the host's device-build
    cache [default: ``local_workdir/device-builds``]; a remote transport keeps its own on the board.
    """
    kind = TRANSPORTS.get(profile.transport)
    return kind.create(profile, run_id=run_id, cells_dir=local_workdir, pythonpath=list(pythonpath or []), build_cache=build_cache)
