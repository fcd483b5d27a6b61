"""Host keys: an unknown host and a CHANGED key get different advice (targets/hostkeys.py).

The pure part (known_hosts matching, the message) runs without a server; the loopback part connects
to the real OpenSSH server of tests/sshd_support.py with a known_hosts that is empty or holds another key.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from edgebench.targets import hostkeys
from edgebench.targets.profiles import TargetProfile
from edgebench.targets.transport import SSHTransport, TargetUnreachable


def _keypair(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _fp(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


def test_known_keys_match_host_and_port_like_openssh(tmp_path):
    key = _keypair(tmp_path / "k")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[10.0.0.7]:2222 {key}\nother.example {key}\n")
    assert [k.get_fingerprint("sha256") for k in hostkeys.known_keys(kh, "10.0.0.7", 2222)] == [_fp(tmp_path / "k.pub")]
    assert hostkeys.known_keys(kh, "10.0.0.7", 22) == []
    assert hostkeys.known_keys(tmp_path / "missing", "10.0.0.7", 22) == []


def test_unknown_host_advice_has_keyscan_with_the_port(tmp_path):
    facts = hostkeys.HostKeyFacts("10.0.0.7", 2222, tmp_path / "kh")
    line = hostkeys.describe("pi", facts, "Host key is not trusted")
    assert "not in" in line and f"`ssh-keyscan -p 2222 10.0.0.7 >> {tmp_path / 'kh'}`" in line
    assert "CHANGED" not in line and "ssh-keygen -R" not in line
    assert "ssh-keyscan 10.0.0.7 >>" in hostkeys.describe("pi", hostkeys.HostKeyFacts("10.0.0.7", 22, tmp_path / "kh"), "x")


def test_changed_key_shows_both_fingerprints_and_how_to_remove_the_stale_entry(tmp_path):
    import asyncssh

    old, new = _keypair(tmp_path / "old"), _keypair(tmp_path / "new")
    facts = hostkeys.HostKeyFacts("10.0.0.7", 2222, tmp_path / "kh", known=[asyncssh.import_public_key(old)], offered=asyncssh.import_public_key(new))
    line = hostkeys.describe("pi", facts, "Host key is not trusted")
    assert "HOST KEY CHANGED for [10.0.0.7]:2222" in line and "refused" in line and "man-in-the-middle" in line
    assert _fp(tmp_path / "old.pub") in line and _fp(tmp_path / "new.pub") in line
    assert line.index(_fp(tmp_path / "old.pub")) < line.index(_fp(tmp_path / "new.pub"))  # known first, then offered
    assert f"ssh-keygen -R '[10.0.0.7]:2222' -f {tmp_path / 'kh'}" in line and "Only if the change is expected" in line
    assert "\n" not in line


# -- against the loopback server -------------------------------------------------------------------

def _open(server, known_hosts: Path) -> str:
    profile = TargetProfile.model_validate({**server.profile(), "ssh": {**server.profile()["ssh"], "known_hosts": str(known_hosts)}})
    with pytest.raises(TargetUnreachable) as err:
        asyncio.run(SSHTransport(profile, "t").open())
    return str(err.value)


@pytest.mark.slow
def test_loopback_changed_host_key_is_refused_with_both_fingerprints(ssh_server, tmp_path):
    other = _keypair(tmp_path / "other")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{ssh_server.port} {other}\n")
    line = _open(ssh_server, kh)
    assert line.startswith("target ssh-loopback: HOST KEY CHANGED")
    assert _fp(tmp_path / "other.pub") in line and _fp(ssh_server.root / "host_ed25519.pub") in line
    assert f"ssh-keygen -R '[127.0.0.1]:{ssh_server.port}'" in line


@pytest.mark.slow
def test_loopback_unknown_host_gets_the_keyscan_advice(ssh_server, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    line = _open(ssh_server, kh)
    assert "unknown host" in line and f"ssh-keyscan -p {ssh_server.port} 127.0.0.1" in line and "CHANGED" not in line
    subprocess.run(f"ssh-keyscan -p {ssh_server.port} 127.0.0.1 >> {kh}", shell=True, check=True, capture_output=True, timeout=30)
    profile = TargetProfile.model_validate({**ssh_server.profile(), "ssh": {**ssh_server.profile()["ssh"], "known_hosts": str(kh)}})

    async def connect() -> None:
        t = SSHTransport(profile, "t")
        await t.open()
        await t.close()

    asyncio.run(connect())  # the advice, followed, works
