"""Target profiles: where a cell runs and how its device state is watched, as data (YAML).

Built-in profiles live in ``targets/profiles/*.yaml``. Users add their own in a YAML file (one profile,
or ``targets: [...]``) named by ``--targets FILE``, ``$EDGEBENCH_TARGETS`` or
``~/.config/edgebench/targets.yaml``, or inline in a suite under ``target_profiles``. A profile may
``extends`` another and override only what differs (usually ``ssh.host``); ``description`` is not
inherited (it describes one board). ``--targets FILE`` (or ``$EDGEBENCH_TARGETS``) *replaces* the user's
file: ``~/.config/edgebench/targets.yaml`` is then not read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from edgebench.bench.contracts.errors import ConfigError, from_validation_error, load_yaml
from edgebench.bench.contracts.strict import Strict
from edgebench.targets.samplers import AUTO, SAMPLERS, in_order
from edgebench.targets.transport import TRANSPORTS

BUILTIN_DIR = Path(__file__).parent / "profiles"
USER_FILE = Path("~/.config/edgebench/targets.yaml")


class SSHSettings(Strict):
    """How to reach a board. Key authentication only; host keys are checked against known_hosts."""

    host: str
    user: str | None = Field(None, description="[default: from ~/.ssh/config, else the local user]")
    port: int | None = Field(None, ge=1, le=65535, description="[default: from ~/.ssh/config, else 22]")
    identity_file: str | None = Field(None, description="private key [default: ssh-agent and ~/.ssh/id_*]")
    jump_host: str | None = Field(None, description="'[user@]host[:port]' to go through (ProxyJump)")
    known_hosts: str | None = Field(None, description="known_hosts file [default: ~/.ssh/known_hosts]")
    connect_timeout_s: float = Field(15.0, gt=0)
    reconnect_s: float = Field(90.0, ge=0, description="after a lost connection, keep trying this long (a rebooting board) before failing the next cell")


class MonitorProfile(Strict):
    """Device-state settings: the cool-down gate, the throttle threshold, idle power before a cell."""

    interval_s: float = Field(0.25, gt=0, description="sampling period of thermal/cpufreq/cpu/nvml")
    slow_interval_s: float = Field(1.0, gt=0, description="sampling period of vcgencmd (each call is a process)")
    thermal_limit_c: float | None = Field(None, description="before a cell, wait until the hottest zone is below this")
    cooldown_max_s: float = Field(0.0, ge=0, description="longest wait for the cool-down gate (0: no gate)")
    cooldown_poll_s: float = Field(1.0, gt=0)
    throttle_temp_c: float | None = Field(None, description="a cell that reaches this temperature is flagged throttled")
    idle_s: float = Field(0.0, ge=0, description="seconds of idle sampling before a cell (energy needs it)")


class TargetProfile(Strict):
    name: str = Field(..., min_length=1)
    description: str = ""
    extends: str | None = None
    transport: str = Field("", description=f"how the host reaches it: {' or '.join(TRANSPORTS.names())} [default: ssh with an ssh block, else local]")
    ssh: SSHSettings | None = None
    python: str = Field("python3", description="the board's interpreter used to create the venv")
    workdir: str = Field("~/.cache/edgebench", description="folder on the board for the venv, files and cell results")
    venv: str | None = Field(None, description="[default: WORKDIR/venv]")
    extras: list[str] = Field(["onnxruntime", "litert"], description="edgebench extras `target setup` installs")
    backends: list[str] | None = Field(None, description="backends the target offers [default: every one its venv has]")
    threads: int | None = Field(None, ge=1, le=1024, description="default threads [default: the device's CPUs]")
    samplers: list[str] = Field([AUTO], description=", ".join([AUTO, *(s.name for s in in_order())]))
    monitor: MonitorProfile = Field(default_factory=MonitorProfile)

    @model_validator(mode="after")
    def _default_transport(self) -> TargetProfile:
        # A profile that says how to reach a board over SSH means SSH; saying `transport: local` keeps it here.
        if not self.transport:
            self.transport = "ssh" if self.ssh is not None else "local"
        return self

    @property
    def is_local(self) -> bool:
        return self.transport == "local"

    def venv_dir(self) -> str:
        return self.venv or f"{self.workdir.rstrip('/')}/venv"

    def monitor_settings(self) -> dict[str, Any]:
        """The worker's MonitorSettings as plain data (targets/monitor.py)."""
        return {"samplers": list(self.samplers), **self.monitor.model_dump()}


def check_plugins(profile: TargetProfile, source: str) -> None:
    """The profile's transport and samplers are registered ones (TRANSPORTS, SAMPLERS); one line naming the key."""
    where = f"{source}: target {profile.name!r}"
    if profile.transport not in TRANSPORTS:
        raise ConfigError(f"{where}: transport: {TRANSPORTS.unknown(profile.transport)}")
    if profile.transport == "ssh" and profile.ssh is None:
        raise ConfigError(f"{where}: transport ssh needs an `ssh: {{host: ...}}` block")
    for name in profile.samplers:
        if name != AUTO and name not in SAMPLERS:
            raise ConfigError(f"{where}: samplers: {SAMPLERS.unknown(name)} (or {AUTO}: whatever the device has)")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _entries(data: Any, source: str) -> list[dict[str, Any]]:
    if isinstance(data, dict) and "targets" in data and set(data) == {"targets"}:
        data = data["targets"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ConfigError(f"{source}: expected a target profile (a mapping with name, transport, ...) or `targets: [...]`")
    return data


class Profiles:
    """Every profile known to a run: built-ins, then user files, then a suite's inline profiles."""

    def __init__(self) -> None:
        self._raw: dict[str, tuple[dict[str, Any], str]] = {}
        for path in sorted(BUILTIN_DIR.glob("*.yaml")):
            self.add(load_yaml(path), str(path))

    def add(self, data: Any, source: str) -> None:
        for i, entry in enumerate(_entries(data, source)):
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{source}: targets[{i}].name: a profile needs a name")
            self._raw[name] = (entry, source)

    def add_file(self, path: Path) -> None:
        self.add(load_yaml(path), str(path))

    def names(self) -> list[str]:
        return sorted(self._raw)

    def parent(self, name: str) -> str | None:
        """The profile ``name`` extends, as written (``description`` is never inherited: it is per board)."""
        return self._raw[name][0].get("extends") if name in self._raw else None

    def get(self, name: str) -> TargetProfile:
        if name not in self._raw:
            raise ConfigError(f"unknown target {name!r}; known targets: {', '.join(self.names())} (add one with --targets FILE)")
        data, source = self._resolved(name, [])
        try:
            profile = TargetProfile.model_validate(data)
        except ValidationError as exc:
            known = {"": list(TargetProfile.model_fields), "ssh": list(SSHSettings.model_fields), "monitor": list(MonitorProfile.model_fields)}
            raise from_validation_error(source, exc, known) from None
        check_plugins(profile, source)
        return profile

    def _resolved(self, name: str, seen: list[str]) -> tuple[dict[str, Any], str]:
        if name in seen:
            raise ConfigError(f"{self._raw[name][1]}: target {name!r}: `extends` loops ({' -> '.join(seen + [name])})")
        data, source = self._raw[name]
        parent = data.get("extends")
        if parent is None:
            return data, source
        if parent not in self._raw:
            raise ConfigError(f"{source}: target {name!r}: extends unknown target {parent!r}; known targets: {', '.join(self.names())}")
        base, _ = self._resolved(parent, seen + [name])
        merged = _merge({k: v for k, v in base.items() if k not in ("description",)}, data)
        merged.pop("extends", None)
        return merged, source


def load_profiles(targets_file: Path | None = None, inline: list[dict[str, Any]] | None = None, inline_source: str = "suite") -> Profiles:
    """Built-ins, the user's file (``targets_file``, else $EDGEBENCH_TARGETS, else ~/.config/...), then inline ones."""
    profiles = Profiles()
    env = os.environ.get("EDGEBENCH_TARGETS")
    candidates = [targets_file] if targets_file else ([Path(env)] if env else [USER_FILE.expanduser()])
    for path in candidates:
        if path is None:
            continue
        if path.exists():
            profiles.add_file(path)
        elif targets_file is not None or env:
            raise ConfigError(f"{path}: targets file not found; check --targets / $EDGEBENCH_TARGETS")
    if inline:
        profiles.add(inline, inline_source)
    return profiles
