"""``edgebench target setup NAME``: install the host's edgebench on a board, in a venv of its own.

The host builds a wheel from its source, copies it (and, for an offline board, a local wheelhouse)
over SSH, creates ``VENV`` with the board's Python and installs edgebench there with the runtimes of
EXTRAS. By default only what the worker imports is installed (numpy, psutil and the runtimes; the wheel
itself with --no-deps): no torch, no onnx, and none of the host's CLI, store or report dependencies.
``full=True`` installs ``edgebench[EXTRAS]`` with every dependency, for a board that runs the CLI itself.
Older edgebench wheels an earlier setup left on the board are removed once the new one is installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebench.bench.contracts.errors import EdgebenchError, one_line, tail_text
from edgebench.targets.profiles import TargetProfile
from edgebench.targets.transport import Bundle, SSHTransport, TargetUnreachable
from edgebench.targets.version import version_mismatch

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out_dir: Path) -> Path:
    """A wheel of the host's edgebench, built from a copy of its package folders (nothing written to the checkout)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 has no tomllib; tomli is optional there, so only this step needs it
        import tomli as tomllib  # type: ignore[no-redef]

    pyproject = SOURCE_ROOT / "pyproject.toml"
    if not pyproject.exists():
        raise EdgebenchError(f"{SOURCE_ROOT}: not an edgebench source checkout; pass --wheel FILE (an edgebench wheel) instead")
    src = Path(tempfile.mkdtemp(prefix="edgebench-wheel-src-"))
    try:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(SOURCE_ROOT / name, src / name)
        for folder in tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"].values():
            shutil.copytree(SOURCE_ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        out_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out_dir)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise EdgebenchError(f"building the edgebench wheel failed: {tail_text(proc.stderr or proc.stdout)}")
    finally:
        shutil.rmtree(src, ignore_errors=True)
    wheels = sorted(out_dir.glob("edgebench-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1]


# What the worker imports from the core's dependencies; the rest (pydantic, SQLAlchemy, rich, typer, ...)
# serve the host's CLI, store and reports.
WORKER_CORE = ("numpy", "psutil")
# Extras whose runtime the board already has, built for its GPU (a CUDA torch from JetPack or pytorch.org):
# pip would fetch a different build, so the venv sees the system's site-packages instead, and setup
# checks the runtime imports and sees the GPU. extra -> (module, the check's Python, what to install if absent)
SYSTEM_RUNTIMES = {
    "torch-cuda": ("torch", "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())",
                   "a CUDA build of torch for the board (JetPack: NVIDIA's torch wheel for its L4T; desktop: pytorch.org's CUDA wheel)"),
    "tensorrt-system": ("tensorrt", "import tensorrt; print(tensorrt.__version__)",
                        "JetPack's TensorRT Python bindings (sudo apt install python3-libnvinfer), and PyCUDA or cuda-python for its buffers"),
}


def worker_requirements(wheel: Path, extras: list[str]) -> list[str]:
    """The wheel's requirements the device-side worker needs: WORKER_CORE and those of ``extras``."""
    from packaging.requirements import Requirement  # the ssh extra's: host-side only

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    known = {line.split(":", 1)[1].strip() for line in lines if line.startswith("Provides-Extra:")}
    unknown = [e for e in extras if e not in known]
    if unknown:
        raise EdgebenchError(f"{wheel.name}: no extra {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    out = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None:
            wanted = req.name in WORKER_CORE
        else:
            wanted = any(req.marker.evaluate({"extra": e}) for e in extras) and "extra" in str(req.marker)
        if wanted:
            out.append(f"{req.name}{req.specifier}")
    return list(dict.fromkeys(out))


@dataclass
class SetupReport:
    target: str
    python: str
    venv: str
    installed: str
    device: dict[str, Any] = field(default_factory=dict)
    mismatch: str | None = None
    copied_files: int = 0


async def setup_target(profile: TargetProfile, wheel: Path, wheelhouse: Path | None = None, extras: list[str] | None = None,
                       constraints: Path | None = None, log: Callable[[str], None] = print, pip_timeout_s: float = 1800,
                       full: bool = False) -> SetupReport:
    """Create the venv on the board, install the wheel (worker-only, or ``full``) with ``extras`` and probe what got installed."""
    if profile.is_local:
        raise EdgebenchError(f"target {profile.name} is this host: it uses the environment edgebench runs in; nothing to set up")
    extras = profile.extras if extras is None else extras
    t = SSHTransport(profile, run_id="setup")
    await t.open()
    try:
        venv_python = t.python
        venv = venv_python.rsplit("/bin/python", 1)[0]
        log(f"{profile.name}: copying {wheel.name}" + (f" and the wheelhouse {wheelhouse}" if wheelhouse else ""))
        wheel_dir = await t.place(Bundle([wheel]))
        pip_source: list[str] = []
        if wheelhouse is not None:
            files = sorted(p for p in wheelhouse.iterdir() if p.is_file())
            if not files:
                need = " ".join(shlex.quote(r) for r in (worker_requirements(wheel, extras) if not full else [f"edgebench[{','.join(extras)}]"]))
                raise EdgebenchError(f"{wheelhouse}: the wheelhouse is empty; fill it with `pip download {need} -d DIR` for the board's platform "
                                     "(--platform, --python-version, --only-binary=:all:)")
            house = await t.place(Bundle(files))
            pip_source = ["--no-index", "--find-links", house]
        if constraints is not None:
            cdir = await t.place(Bundle([constraints]))
            pip_source += ["--constraint", f"{cdir}/{constraints.name}"]

        system = [e for e in extras if e in SYSTEM_RUNTIMES]
        venv_args = ["--system-site-packages"] if system else []  # the board's own CUDA torch stays visible
        await _step(t, f"{profile.name}: creating {venv} with {profile.python}" + (f" (with the system's packages, for {', '.join(system)})" if system else ""),
                    [profile.python, "-m", "venv", *venv_args, venv], 300, log,
                    hint=f"install python3-venv on the board, or set `python:` in the target profile to a Python >= 3.10")
        for extra in system:
            module, check, install = SYSTEM_RUNTIMES[extra]
            await _step(t, f"{profile.name}: checking the board's own {module} for {extra}", [venv_python, "-c", check], 120, log,
                        hint=f"install {install}, then run `edgebench target setup {profile.name}` again")
        remote_wheel = f"{wheel_dir}/{wheel.name}"
        pip = [venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        label = f"edgebench[{','.join(extras)}]" if extras else "edgebench"
        offline_hint = "for an offline board pass --wheelhouse DIR with wheels for its platform"
        if full:
            spec = f"{remote_wheel}[{','.join(extras)}]" if extras else remote_wheel
            await _step(t, f"{profile.name}: installing {label} with every dependency", [*pip, *pip_source, spec], pip_timeout_s, log, hint=offline_hint)
        else:
            reqs = worker_requirements(wheel, extras)
            spec = f"{label} (worker only: {', '.join(reqs)})"
            await _step(t, f"{profile.name}: installing {spec}", [*pip, *pip_source, *reqs], pip_timeout_s, log, hint=offline_hint)
        # The same version number may hide different source: always put the host's build in place.
        await _step(t, f"{profile.name}: installing the host's edgebench build", [*pip, "--no-deps", "--force-reinstall", remote_wheel], 600, log)
        removed = await remove_old_wheels(t, keep=wheel_dir)
        if removed:
            log(f"{profile.name}: removed {removed} older edgebench wheel{'s' * (removed != 1)} an earlier setup left in {t.root}/files")
        fp = await t.probe()
        return SetupReport(profile.name, profile.python, venv, spec, fp, version_mismatch(profile, fp), t.copied.files)
    finally:
        await t.close()


async def remove_old_wheels(t: SSHTransport, keep: str) -> int:
    """Remove the board's ``WORKDIR/files/<hash>/`` folders that hold nothing but an edgebench wheel (each
    earlier `target setup` left one), except ``keep``; returns how many. A folder is recognised by its
    ``.complete`` manifest (written by the copy), so artifacts and wheelhouses are never touched."""
    files = f"{t.root}/files"
    if not await t.sftp.exists(files):
        return 0
    stale = []
    for name in await t.sftp.listdir(files):
        folder = f"{files}/{name}"
        if folder == keep or name.startswith(".") or ".part-" in name:
            continue
        try:
            async with t.sftp.open(f"{folder}/.complete", "r") as fh:
                manifest = json.loads(await fh.read())
        except Exception:  # no manifest (not ours) or unreadable: leave it
            continue
        if isinstance(manifest, dict) and len(manifest) == 1 and WHEEL_NAME.fullmatch(next(iter(manifest))):
            stale.append(folder)
    if stale:
        await _step(t, f"{t.profile.name}: removing {len(stale)} older edgebench wheel(s)", ["rm", "-rf", "--", *stale], 120, lambda _: None)
    return len(stale)


WHEEL_NAME = re.compile(r"edgebench-[^/]*\.whl")


async def _step(t: SSHTransport, what: str, argv: list[str], timeout_s: float, log: Callable[[str], None], hint: str = "") -> None:
    log(what)
    try:
        proc = await t.run(argv, timeout_s)
    except Exception as exc:  # asyncssh and asyncio errors: the board went away mid-step
        raise TargetUnreachable(f"{what}: {type(exc).__name__}: {one_line(exc)}") from None
    if proc.exit_status != 0:
        raise EdgebenchError(f"{what} failed (exit {proc.exit_status}): {tail_text(proc.stderr or proc.stdout or '')}" + (f"; {hint}" if hint else ""))
