"""Exclusive board leases: a board is measured by one run at a time, even when several hosts target it.

A board's share of a run (connect, probe, every cell, the end-state probe, closing the transport) runs
under its lease (bench/board.py). The lease is named by :func:`lease_key`, what identifies the physical
board whatever the targets file calls it: ``USER@HOST:PORT`` for SSH (after ``~/.ssh/config``'s
``HostName``/``User``/``Port``, as the connection resolves them), ``local:HOSTNAME`` for this host's CPU.

Where the lease lives follows the store, the one thing every run of a team already shares:

- PostgreSQL store: a session-level advisory lock (``pg_try_advisory_lock`` on the key's 63-bit hash,
  :func:`lease_number`) on a connection of its own, held for the board's whole share. The connection's
  ``application_name`` says who holds it ("edgebench run RUN on HOST pid PID"), which a waiter reads from
  ``pg_locks`` joined with ``pg_stat_activity``. A crashed or killed run releases it: its session ends
  and PostgreSQL drops the session's locks; a host that vanishes from the network is noticed by the
  server's TCP keepalives set on that session (about a minute).
- SQLite store: an ``fcntl`` lock (``flock``) on ``<store file>.leases/<hash>.lock``, the holder written
  into the file once taken. The kernel releases it when the holding process dies, even by SIGKILL.
  Only runs sharing that store file exclude each other (a SQLite store is one host's, or one shared
  filesystem's).

A store with neither (in memory) has no other run to share a board with: no lease. Waiting is a poll
(every :data:`POLL_S`, the database call in a thread) so the event loop keeps measuring other boards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from edgebench.bench.contracts.errors import EdgebenchError, one_line
from edgebench.targets.profiles import TargetProfile

POLL_S = 0.5  # how often a waiting board asks again
REPORT_EVERY_S = 60.0  # a waiting board says it still waits this often
_UNKNOWN_HOLDER_S = 2.0  # a holder that has not written its name yet gets this long before the wait is reported anyway
_APP_NAME_BYTES = 63  # PostgreSQL keeps this much of application_name (NAMEDATALEN - 1)
_APP_NAME = re.compile(r"^edgebench run (?P<run>\S+) on (?P<host>\S+) pid (?P<pid>\d+)$")
# A lease's session tells the server to notice a vanished client within about a minute (idle 30 s, then
# 3 probes 10 s apart), so a host that loses its network does not hold a board until TCP gives up (hours).
_KEEPALIVES = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"


class LeaseError(EdgebenchError):
    """The board's lease could not be taken: its cells are not measured (the message says why, in one line)."""


class LeaseTimeout(LeaseError):
    """Another run held the board's lease for longer than ``--lease-timeout``."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or asks for) a lease: a run, on a host, in a process, since when."""

    run_id: str | None = None
    host: str | None = None
    pid: int | None = None
    since: dt.datetime | None = None
    raw: str | None = None  # the holder's own words when they do not parse (a name PostgreSQL cut short)

    def describe(self) -> str:
        """``run R on HOST pid P since T``, with what is known."""
        if self.run_id is None:
            who = f"{self.raw!r}" if self.raw else "another run (it has not said which)"
        else:
            who = f"run {self.run_id}" + (f" on {self.host}" if self.host else "") + (f" pid {self.pid}" if self.pid is not None else "")
        return who + (f" since {self.since.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC" if self.since else "")

    def application_name(self) -> str:
        """The PostgreSQL session name a waiter reads, within its 63 bytes: the host name is what gives way
        (its first label, then cut short), so the run id and pid always survive."""
        fixed = f"edgebench run {self.run_id} on  pid {self.pid}"
        room = _APP_NAME_BYTES - len(fixed.encode())
        host = self.host or "?"
        if len(host.encode()) > room:
            host = host.split(".")[0].encode()[:max(room, 1)].decode(errors="ignore") or "?"
        return f"edgebench run {self.run_id} on {host} pid {self.pid}".encode()[:_APP_NAME_BYTES].decode(errors="ignore")


@dataclass(frozen=True)
class Lease:
    """A lease held: its key, the number PostgreSQL locks, how long the board waited for it, its holder."""

    key: str
    number: int
    waited_s: float
    holder: Holder


# -- what names a board ---------------------------------------------------------------------

def lease_key(profile: TargetProfile) -> str:
    """The name of the physical board behind ``profile``: the same board in two hosts' targets files
    (under any profile name) gets the same key. SSH: ``host:port`` as the connection resolves them; the user
    is left out on purpose, since two accounts on one board still share its CPU."""
    if profile.is_local:
        return f"local:{socket.gethostname()}"
    if profile.transport == "ssh" and profile.ssh is not None:
        _user, host, port = _ssh_address(profile.ssh.user, profile.ssh.host, profile.ssh.port)
        return f"{host}:{port}"
    return f"{profile.transport}:{profile.name}"  # another transport plugin: its profile name is all we know


def lease_number(key: str) -> int:
    """``key`` hashed to a non-negative 63-bit integer (PostgreSQL's advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def _ssh_address(user: str | None, host: str, port: int | None) -> tuple[str, str, int]:
    """User, host and port as asyncssh will connect: the profile's, else ~/.ssh/config's, else the defaults."""
    local_user = getpass.getuser()
    try:
        from asyncssh.config import SSHClientConfig
    except ImportError:  # no ssh extra: nothing will connect anyway; the profile's own words name the board
        return user or local_user, host.lower(), port or 22
    path = Path("~/.ssh/config").expanduser()
    try:
        config = SSHClientConfig.load(None, [path] if os.access(path, os.R_OK) else [], False, False, False,
                                      local_user, () if user is None else user, host, () if port is None else port)
    except (OSError, ValueError):  # an unreadable config fails the connection with its own message
        return user or local_user, host.lower(), port or 22
    return str(config.get("User", user or local_user)), str(config.get("Hostname", host)).lower(), int(config.get("Port", port or 22))


# -- the two kinds of lock ----------------------------------------------------------------------

class _Lock(Protocol):
    def try_take(self) -> bool: ...
    def holder(self) -> Holder | None: ...
    def release(self) -> None: ...


class _NoLock:
    """A store nobody else can reach (in memory) or a system without fcntl: nobody to exclude."""

    def try_take(self) -> bool:
        return True

    def holder(self) -> Holder | None:
        return None

    def release(self) -> None:
        pass


class _PgLock:
    """A session-level advisory lock on a connection of its own (never pooled: closing it must end the session)."""

    _HOLDER = sa.text(
        "SELECT a.application_name, a.query_start, a.backend_start FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")

    def __init__(self, url: sa.URL, display_url: str, number: int, me: Holder) -> None:
        self.display_url, self.number = display_url, number
        # AUTOCOMMIT: the lock is the session's, and a session idle in a transaction for a whole run would hold back vacuum
        self.engine = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                                       connect_args={"application_name": me.application_name(), "connect_timeout": 15, "options": _KEEPALIVES})
        self.conn: sa.Connection | None = None

    def try_take(self) -> bool:
        try:
            if self.conn is None:
                self.conn = self.engine.connect()
            # The holder's session runs nothing after the try that took the lock, so its query_start is when it was taken.
            return bool(self.conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.number}).scalar())
        except sa.exc.DBAPIError as exc:
            raise LeaseError(f"cannot take the board's lease in {self.display_url}: {one_line(exc.orig, 300)}") from None

    def holder(self) -> Holder | None:
        if self.conn is None:
            return None
        try:
            row = self.conn.execute(self._HOLDER, {"hi": self.number >> 32, "lo": self.number & 0xFFFFFFFF}).first()
        except sa.exc.DBAPIError:  # who holds it is for the message; the next try_take reports a broken session
            return None
        if row is None:
            return None
        name, query_start, backend_start = row
        since = query_start or backend_start  # both None when the holder's session is another role's (no pg_read_all_stats)
        found = _APP_NAME.match(name or "")
        if found is None:
            return Holder(since=since, raw=name or "a session without a name")
        return Holder(found["run"], found["host"], int(found["pid"]), since)

    def release(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):  # a broken session has released the lock already
                self.conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.number})
            with contextlib.suppress(sa.exc.DBAPIError):
                self.conn.close()
            self.conn = None
        self.engine.dispose()


class _FileLock:
    """``flock`` on one file per board beside the SQLite store; the holder's JSON is the file's content."""

    def __init__(self, path: Path, key: str, me: Holder) -> None:
        self.path, self.key, self.me = path, key, me
        self.fd: int | None = None
        self.held = False

    def try_take(self) -> bool:
        import fcntl

        if self.fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        me = {"key": self.key, "run_id": self.me.run_id, "host": self.me.host, "pid": self.me.pid,
              "since": (self.me.since or dt.datetime.now(dt.timezone.utc)).isoformat()}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(me).encode(), 0)
        return True

    def holder(self) -> Holder | None:
        try:
            data = json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):  # the holder is between taking the lock and writing its name
            return None
        if not isinstance(data, dict):
            return None
        since = dt.datetime.fromisoformat(data["since"]) if data.get("since") else None
        return Holder(data.get("run_id"), data.get("host"), data.get("pid"), since)

    def release(self) -> None:
        import fcntl

        if self.fd is None:
            return
        if self.held:
            os.ftruncate(self.fd, 0)  # a waiter never reads a holder that has gone
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held = False
        os.close(self.fd)
        self.fd = None


def _lock_for(store: Any, key: str, me: Holder) -> _Lock:
    """The lock kind the store calls for (``store``: bench/store.py's Store)."""
    engine = getattr(store, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        return _PgLock(engine.url, store.display_url, lease_number(key), me)
    path = getattr(store, "path", None)  # the SQLite file; None in memory (or a stand-in store without one)
    try:
        import fcntl  # noqa: F401
    except ImportError:  # not POSIX: as for the store's own migration lock, exclusion is then up to the user
        return _NoLock()
    if path is None:
        return _NoLock()
    return _FileLock(Path(f"{path}.leases") / f"{lease_number(key):016x}.lock", key, me)


# -- taking one ---------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def board_lease(store: Any, profile: TargetProfile, run_id: str, timeout_s: float | None,
                      log: Callable[[str], None]) -> AsyncIterator[Lease]:
    """Hold ``profile``'s board for run ``run_id`` while the ``async with`` body runs.

    Waits while another run holds it, saying once whom it waits for (and again every minute); with
    ``timeout_s`` (``--lease-timeout``; None waits as long as it takes) raises :class:`LeaseTimeout`
    naming the holder. Cancelled while waiting (Ctrl-C), it lets go of everything. Released on exit;
    a crash releases it too (the PostgreSQL session ends, the kernel drops the file lock).
    """
    key = lease_key(profile)
    me = Holder(run_id, socket.gethostname(), os.getpid())
    lock = _lock_for(store, key, me)
    try:
        waited = await _wait_for(lock, profile.name, timeout_s, log)
        yield Lease(key, lease_number(key), waited, Holder(run_id, me.host, me.pid, dt.datetime.now(dt.timezone.utc)))
    finally:
        lock.release()


async def _wait_for(lock: _Lock, name: str, timeout_s: float | None, log: Callable[[str], None]) -> float:
    """Poll until the lock is taken; the seconds waited. Raises LeaseTimeout past ``timeout_s``."""
    t0 = time.monotonic()
    reported_at: float | None = None
    holder: Holder | None = None
    while True:
        try:
            if await _in_thread(lock.try_take):
                if reported_at is not None:
                    log(f"target {name}: lease taken after waiting {_duration(time.monotonic() - t0)}")
                return time.monotonic() - t0
        except LeaseError as exc:
            raise LeaseError(f"target {name}: {exc}") from None
        waited = time.monotonic() - t0
        holder = await _in_thread(lock.holder) or holder
        if timeout_s is not None and waited >= timeout_s:
            raise LeaseTimeout(f"target {name}: not measured: its lease was not free within {timeout_s:g} s (--lease-timeout), "
                               f"held by {(holder or Holder()).describe()}")
        if reported_at is None and (holder is not None or waited >= _UNKNOWN_HOLDER_S):
            log(f"target {name}: waiting for its lease: held by {(holder or Holder()).describe()}")
            reported_at = waited
        elif reported_at is not None and waited - reported_at >= REPORT_EVERY_S:
            log(f"target {name}: still waiting for its lease after {_duration(waited)}: held by {(holder or Holder()).describe()}")
            reported_at = waited
        await asyncio.sleep(POLL_S if timeout_s is None else max(0.0, min(POLL_S, timeout_s - waited)))


async def _in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread. Cancelled (Ctrl-C), it still lets ``fn`` finish before the caller releases the
    lock, so the release never races a query on the same connection."""
    task = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
