"""The device build stage: on the target, a backend's runnable artifact built from the portable one.

Some artifacts can only be made where they run (a TensorRT engine is specific to the GPU, the
TensorRT version and the builder flags; ONNX Runtime's fully optimised graph to the CPU). The worker
builds them on the target before a cell is measured, into the target's own build cache, keyed by
what determines the result: the input artifact's content hash, the backend's build options, and the
backend's :meth:`~edgebench.backends.base.Backend.build_key` (runtime version, device name, ...). A
second run finds the entry and builds nothing; the facts (key, cached or built, build time, size)
travel back to the host inside the cell's evidence.

The build runs in a process of its own (``worker build``), so what it allocates (a builder's
workspace, a runtime's arenas) is not in the measuring process's memory baseline. Entries are written
into a temporary folder and renamed into place when complete, so an interrupted build is never
mistaken for a finished one, and two processes of one cell never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgebench.bench.contracts.evidence import BuildFacts
from edgebench.bench.contracts.errors import tail_text
from edgebench.bench.contracts.spec import CellSpec
from edgebench.targets.transport import artifact_bundle

MANIFEST = "build.json"


@dataclass
class Built:
    """A device-built artifact on this machine and the facts the host stores."""

    path: Path
    facts: BuildFacts


def default_cache() -> Path:
    """Where a worker keeps device builds when the spec names no folder."""
    return Path(os.environ.get("EDGEBENCH_BUILD_CACHE") or Path.home() / ".cache" / "edgebench" / "device-builds")


def build_options(spec: CellSpec) -> dict[str, Any]:
    """The options a backend's build step sees: the suite's, with the cell's batch size (an engine
    built for a fixed batch puts it in its ``build_key``; a batch-dynamic build does not)."""
    return {**spec.options, "batch": spec.batch}


def determined_by(backend: Any, spec: CellSpec) -> dict[str, Any]:
    """Everything the device build depends on, as data (its hash is the cache key)."""
    options = {k: spec.options.get(k) for k in backend.build_options}
    # the artifact with its side files (model.onnx.data), hashed as the transport copies them
    return {"input": artifact_bundle(Path(spec.artifact)).key(), "backend": backend.name, "precision": spec.precision,
            "options": options, **backend.build_key(spec.precision, build_options(spec))}


def ensure(backend: Any, spec: CellSpec, here: bool = False) -> Built | None:
    """The cell's device-built artifact, built now or found in the cache; None when the cell has no build step.

    A missing entry is built by a ``worker build`` child process, or in this process when ``here``
    (that child itself)."""
    if not backend.wants_device_build(spec.precision, build_options(spec)):
        return None
    inputs = determined_by(backend, spec)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:24]
    cache = Path(spec.build_cache) if spec.build_cache else default_cache()
    entry = cache / key
    cached = (entry / MANIFEST).exists()
    if not cached and here:
        _build(backend, spec, cache, entry, key, inputs)
    elif not cached:
        _build_in_child(spec, cache)
    manifest = json.loads((entry / MANIFEST).read_text())
    facts = BuildFacts(key=key, cached=cached, build_s=manifest["build_s"], size_bytes=manifest["size_bytes"],
                       artifact=manifest["artifact"], determined_by=inputs, facts=manifest["facts"])
    return Built(entry / manifest["artifact"], facts)


def _build(backend: Any, spec: CellSpec, cache: Path, entry: Path, key: str, inputs: dict[str, Any]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
    try:
        t0 = time.perf_counter()
        built = backend.device_build(Path(spec.artifact), spec.precision, build_options(spec), tmp)
        build_s = time.perf_counter() - t0
        files = built.files or [built.path]
        manifest = {"artifact": built.path.name, "build_s": build_s, "size_bytes": sum(f.stat().st_size for f in files),
                    "facts": built.facts, "determined_by": inputs, "files": [f.name for f in files]}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        try:
            tmp.rename(entry)
        except OSError:
            if not (entry / MANIFEST).exists():  # not a concurrent twin that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_in_child(spec: CellSpec, cache: Path) -> None:
    """Run ``python -m edgebench.bench.worker build`` on this machine; its one-line error if it fails."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".spec.json", dir=cache, delete=False) as f:
        f.write(spec.to_json())
    try:
        proc = subprocess.run([sys.executable, "-m", "edgebench.bench.worker", "build", f.name], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
    finally:
        os.unlink(f.name)
    try:
        payload = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"the device build exited with code {proc.returncode} without a result: {tail_text(proc.stderr)}") from None
    if not payload.get("built"):
        raise RuntimeError(f"the device build failed: {payload.get('error') or payload.get('reason')}")


def build_payload(backend: Any, spec: CellSpec) -> dict[str, Any]:
    """What ``worker build`` prints: the build's facts, or why the cell has no build step."""
    built = ensure(backend, spec, here=True)
    if built is None:
        return {"built": False, "reason": f"{spec.backend} needs no device build for {spec.precision} with these options"}
    return {"built": True, "path": str(built.path), **asdict(built.facts)}
