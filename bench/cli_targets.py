"""``edgebench target ...``: list and show target profiles, probe a target, set one up."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
import yaml

from edgebench.bench.cli_common import TargetsFileOpt
from edgebench.bench.cli_common import echo as _echo
from edgebench.bench.contracts.errors import EdgebenchError

if TYPE_CHECKING:
    from edgebench.targets.profiles import TargetProfile

target_app = typer.Typer(no_args_is_help=True, help="Targets: the host, and boards reached over SSH.")


def _profile(name: str, targets_file: Optional[Path]) -> TargetProfile:
    from edgebench.targets.profiles import load_profiles

    return load_profiles(targets_file).get(name)


def print_targets(targets_file: Optional[Path]) -> None:
    """One line per known target profile (built-in and the user's): how it is reached and its description."""
    from edgebench.targets.profiles import load_profiles

    profiles = load_profiles(targets_file)
    for name in profiles.names():
        p = profiles.get(name)
        where = "this host" if p.is_local else f"ssh {p.ssh.user + '@' if p.ssh.user else ''}{p.ssh.host}{':' + str(p.ssh.port) if p.ssh.port else ''}"
        parent = profiles.parent(name)
        about = p.description or (f"(no description; extends {parent})" if parent else "(no description)")
        _echo(f"{name}: {where}; {about}")


@target_app.command("list")
def list_targets(targets_file: Optional[Path] = TargetsFileOpt) -> None:
    """Every known target profile: built-in and yours."""
    print_targets(targets_file)


@target_app.command("show")
def show_target(name: str, targets_file: Optional[Path] = TargetsFileOpt) -> None:
    """One profile, resolved (``extends`` applied), as YAML."""
    _echo(yaml.safe_dump(_profile(name, targets_file).model_dump(), sort_keys=False).rstrip())


@target_app.command("probe")
def probe_target(name: str, targets_file: Optional[Path] = TargetsFileOpt, state: bool = typer.Option(False, "--state", help="Only the device state now.")) -> None:
    """The target's fingerprint (board, CPU, clocks, governor, power mode, runtimes) as JSON."""
    profile = _profile(name, targets_file)

    async def go() -> dict:
        from edgebench.targets.transport import make_transport

        t = make_transport(profile, "probe", Path.cwd())
        await t.open()
        try:
            return await t.probe(state_only=state)
        finally:
            await t.close()

    fp = asyncio.run(go())
    if not profile.is_local and not state:
        from edgebench.targets.probe import for_board

        fp = for_board(fp, profile.name, profile.extras, profile.backends)
    _echo(json.dumps(fp, indent=2))


@target_app.command("setup")
def setup_target(
    name: str,
    targets_file: Optional[Path] = TargetsFileOpt,
    wheelhouse: Optional[Path] = typer.Option(None, "--wheelhouse", help="Folder of wheels for an offline board (pip install --no-index --find-links)."),
    extras: Optional[str] = typer.Option(None, "--extras", help="edgebench extras to install, comma-separated [default: the profile's]."),
    wheel: Optional[Path] = typer.Option(None, "--wheel", help="An edgebench wheel to install [default: build one from this checkout]."),
    constraints: Optional[Path] = typer.Option(None, "--constraints", help="A pip constraints file to pin the board's packages."),
    full: bool = typer.Option(False, "--full", help="Install every dependency (to run the edgebench CLI on the board) [default: only what the worker needs]."),
) -> None:
    """Install this host's edgebench in a venv on the target (wheel built here, copied over SSH), then report versions."""
    from edgebench.targets.setup import build_wheel
    from edgebench.targets.setup import setup_target as do_setup

    profile = _profile(name, targets_file)
    for path, what in ((wheelhouse, "--wheelhouse"), (wheel, "--wheel"), (constraints, "--constraints")):
        if path is not None and not path.exists():
            raise EdgebenchError(f"{path}: {what} not found; check the path")
    with tempfile.TemporaryDirectory(prefix="edgebench-wheel-") as tmp:
        whl = wheel or build_wheel(Path(tmp))
        _echo(f"{name}: built {whl.name}" if wheel is None else f"{name}: using {whl}")
        chosen = [e.strip() for e in extras.split(",") if e.strip()] if extras is not None else None
        report = asyncio.run(do_setup(profile, whl, wheelhouse, chosen, constraints, log=_echo, full=full))
    for line in setup_summary(name, report.venv, report.device, profile):
        _echo(line)
    if report.mismatch:
        raise EdgebenchError(report.mismatch)


def setup_summary(name: str, venv: str, fp: dict, profile: TargetProfile) -> list[str]:
    """What `target setup` found on the board: Python, edgebench, and each runtime (hints only for wanted ones)."""
    from edgebench.targets.probe import for_board

    fp = for_board(fp, profile.name, profile.extras, profile.backends)
    version = fp.get("edgebench_version")
    lines = [f"{name}: venv {venv} (Python {fp.get('python')}, {fp.get('machine')}, {fp.get('os')})",
             f"{name}: edgebench {version} (source {fp.get('edgebench_source')})" if version
             else f"{name}: edgebench not installed on the board (run `edgebench target setup {name}`)"]
    for backend, info in sorted((fp.get("backends") or {}).items()):
        state = f"{info.get('version')}" if info.get("available") else f"not available ({info.get('reason')})"
        lines.append(f"{name}: {backend}: {state}")
    return lines


def register(app: typer.Typer) -> None:
    app.add_typer(target_app, name="target")
