"""Why a board's SSH host key was not verified: an unknown host, or a host whose key CHANGED.

asyncssh raises the same ``HostKeyNotVerifiable`` for both, but the advice must differ: for an
unknown host, adding its key (``ssh-keyscan``) is the fix; for a changed key, that advice would
let a man-in-the-middle in. Here the known_hosts file is read with asyncssh's own parser (the same
matching the connection used, ``[host]:port`` included) and the key the board offers is fetched
without logging in, so the message can show both SHA256 fingerprints the way OpenSSH does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")


@dataclass
class HostKeyFacts:
    """What known_hosts holds for a host and what the host offered (``offered`` None: not fetched)."""

    host: str
    port: int
    known_hosts: Path
    known: list[Any] = field(default_factory=list)  # asyncssh SSHKey objects
    offered: Any = None
    fetch_error: str = ""


def host_label(host: str, port: int) -> str:
    """The host as known_hosts names it: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def keyscan_command(host: str, port: int, known_hosts: Path) -> str:
    port_arg = f"-p {port} " if port != 22 else ""
    return f"ssh-keyscan {port_arg}{shlex.quote(host)} >> {shlex.quote(str(known_hosts))}"


def _fingerprint(key: Any) -> str:
    return f"{key.get_fingerprint('sha256')} ({key.get_algorithm()})"


def _unique(keys: Any) -> list[Any]:
    # asyncssh's match can return a key twice ([host]:port and the port-less fallback)
    seen: dict[str, Any] = {}
    for k in keys:
        seen.setdefault(k.get_fingerprint("sha256"), k)
    return list(seen.values())


def known_keys(known_hosts: Path, host: str, port: int) -> list[Any]:
    """The keys ``known_hosts`` holds for ``host`` at ``port`` (asyncssh's matching, hashed names included)."""
    import asyncssh

    if not known_hosts.exists():
        return []
    try:
        addr = str(ipaddress.ip_address(host))
    except ValueError:
        addr = ""
    return _unique(asyncssh.read_known_hosts(str(known_hosts)).match(host, addr, port if port != 22 else None)[0])


async def gather_facts(host: str, port: int, known_hosts: Path, tunnel: Any = (), timeout_s: float = 15.0) -> HostKeyFacts:
    """known_hosts' keys for the host and the key the host offers (of the same algorithms, so they compare)."""
    import asyncssh

    facts = HostKeyFacts(host, port, known_hosts)
    try:
        facts.known = known_keys(known_hosts, host, port)
    except (OSError, ValueError, asyncssh.Error) as exc:
        facts.fetch_error = f"{known_hosts} unreadable: {exc}"
        return facts
    if not facts.known:
        return facts
    algs = list(dict.fromkeys(k.get_algorithm() for k in facts.known))
    for attempt in (algs, ()):  # the known algorithms first; any key if the board has none of them now
        try:
            facts.offered = await asyncio.wait_for(
                asyncssh.get_server_host_key(host, port, tunnel=tunnel, server_host_key_algs=attempt), timeout_s)
            if facts.offered is not None:
                return facts
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            facts.fetch_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return facts


def describe(target: str, facts: HostKeyFacts, detail: str) -> str:
    """One line: the changed key (both fingerprints, refused, how to remove the stale entry if expected),
    or the unknown host (how to add it)."""
    label, kh = host_label(facts.host, facts.port), facts.known_hosts
    if not facts.known:
        return (f"target {target}: host key of {label} is not in {kh} (unknown host; {detail}); if this is your board, add its key with "
                f"`{keyscan_command(facts.host, facts.port, kh)}` (compare the fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` "
                f"on the board), or set ssh.known_hosts")
    known = ", ".join(_fingerprint(k) for k in facts.known)
    if facts.offered is None:
        return (f"target {target}: host key of {label} does not match {kh} (it has {known}); the board's key could not be fetched "
                f"({facts.fetch_error or 'no key'}); refused")
    offered = facts.offered.get_fingerprint("sha256")
    if any(k.get_fingerprint("sha256") == offered for k in facts.known):
        return f"target {target}: host key of {label} not verified ({detail}); {kh} has it ({known}): check it is not marked @revoked"
    return (f"target {target}: HOST KEY CHANGED for {label}: {kh} has {known}, the board offered {_fingerprint(facts.offered)}; "
            f"refused (this may be a man-in-the-middle). Only if the change is expected (the board was reinstalled): "
            f"`ssh-keygen -R {shlex.quote(label)} -f {shlex.quote(str(kh))}`, then add the new key with "
            f"`{keyscan_command(facts.host, facts.port, kh)}`")
