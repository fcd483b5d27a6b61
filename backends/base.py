"""The backend protocol and the registry.

A backend is one module in this package that defines a subclass of :class:`Backend` and decorates
it with :func:`register`. Host-side work (turning a PyTorch model into the backend's portable
artifact), device-side work (an optional device build, loading, running batches) and the backend's
own post-processing live in the same module (or a ``_helper`` module beside it), but the device side
must only import the backend's own runtime: the heavy host imports (torch, onnx) happen inside
:meth:`Backend.export`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.registry import Registry
from edgebench.bench.contracts.results import GpuMemory


@dataclass
class Availability:
    """Whether a backend can run here, and if not, why (one line a user can act on)."""

    available: bool
    reason: str = ""
    version: str | None = None


@dataclass
class Artifact:
    """What a backend loads: a primary file plus any side files (e.g. ``model.onnx.data``)."""

    path: Path
    files: list[Path] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files or [self.path] if p.exists())


@dataclass
class Calibration:
    """What an int8 export calibrates activation ranges on.

    ``data`` is the recipe's calibration subset (float32 NCHW, drawn from the training split, never
    the evaluation split); ``method`` how ranges are chosen from it: ``minmax``, ``entropy`` or
    ``percentile`` (backends that offer fewer say which one they used in the artifact's facts).
    """

    data: np.ndarray
    method: str = "minmax"
    # Quantisation-aware training (a recipe's ``quantize: {qat: true}``): the backend prepares the
    # model with its own quantiser (prepare_qat_pt2e) instead of calibrating on ``data``, and
    # ``qat(prepared)`` fine-tunes that fake-quant module in place on the training split (NCHW float
    # inputs; models/qat.py) and returns facts about the training (epochs, lr, seed, steps) for the
    # artifact. None: post-training calibration (no QAT asked, or nothing to train: a given file).
    qat: Callable[[Any], Any] | None = None


class Session:
    """A loaded model, ready to run batches of float32 NCHW inputs."""

    def run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        """Run one batch and return the logits as a numpy array (batch, classes)."""
        raise NotImplementedError

    def prepare_input(self, batch: np.ndarray) -> Any:
        """Turn a float32 NCHW batch into what the runtime consumes (layout, dtype, quantisation).

        The timing loop calls this once and then times :meth:`run_prepared` only, the way
        benchmark_model and trtexec time the runtime on an input already in its native format.
        """
        return batch

    def run_prepared(self, prepared: Any) -> Any:
        """Run an input made by :meth:`prepare_input`; the output need not be converted back."""
        return self.run(prepared)

    def evidence(self) -> Evidence:
        """What really ran (contracts/evidence.py): providers, threads, delegation, kernels, layers."""
        raise NotImplementedError

    #: the session times each run itself (:meth:`run_timed`), e.g. with CUDA events on a GPU stream: a
    #: host clock around an asynchronous launch would time the launch, not the work
    own_clock: ClassVar[bool] = False

    def run_timed(self, prepared: Any) -> int:
        """Run an input made by :meth:`prepare_input` once; return its end-to-end duration in ns by the
        session's own clock (only for sessions with :attr:`own_clock`)."""
        raise NotImplementedError

    def phase_samples(self, runs: int) -> dict[str, list[int]]:
        """Per phase (contracts/results.py ``PHASES``), the durations in ns of the last ``runs`` calls of
        :meth:`run_timed` (the timed ones; warm-up came first). Empty for sessions without a split."""
        return {}

    def gpu_memory(self) -> GpuMemory | None:
        """The GPU memory this session used (peaks since load), or None on a CPU runtime."""
        return None


#: portable artifact kinds: what the host writes and a backend is made from, with their file suffixes
PORTABLE = {"onnx": (".onnx",), "tflite": (".tflite",), "torch": (".pt", ".ts")}


@dataclass
class DeviceBuild:
    """What a backend's device build step produced from a portable artifact, on the target."""

    path: Path
    files: list[Path] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


class Backend:
    """One runtime. Subclasses set ``name``, ``consumes`` and ``precisions``.

    The stages of a cell's artifact (docs/architecture.md):

    1. *portable artifact*, written on the host by :meth:`export` from the PyTorch model (or given by
       the user as a file of the kind in :attr:`consumes`, taken in by :meth:`import_artifact`);
    2. optional *device build*, run on the target by the worker (:meth:`device_build`), cached there
       under a key made of the input's hash and :meth:`build_key`;
    3. *load* on the target (:meth:`load`) and time the session.

    :meth:`availability` is asked on the machine that runs the cell (the target's probe); the host
    asks only :meth:`export_availability`.
    """

    name: ClassVar[str]
    #: the portable artifact kind this backend loads or builds from: a key of :data:`PORTABLE`
    consumes: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: bump when export() would write a different artifact for the same inputs (part of the cache key)
    export_version: ClassVar[int] = 1
    #: the quantiser its int8 export trains with for a QAT recipe (``quantize: {qat: true}``); None: its
    #: int8 is post-training only, and the run's notes say so
    qat_quantizer: ClassVar[str | None] = None
    install_hint: ClassVar[str] = ""
    #: backend-specific options a suite may set (``backends: [{name: litert, options: {...}}]``),
    #: each with a one-line description; options that change the artifact go to :meth:`export` too,
    #: options that change the device build are listed in :attr:`build_options`.
    options: ClassVar[dict[str, str]] = {}
    export_options: ClassVar[tuple[str, ...]] = ()
    build_options: ClassVar[tuple[str, ...]] = ()

    # -- where the cell runs ------------------------------------------------------------------
    def availability(self) -> Availability:
        """Import the runtime (cheaply) and say whether it is usable on this machine."""
        raise NotImplementedError

    def load(self, artifact: Path, precision: str, options: dict[str, Any]) -> Session:
        """Device side: load an artifact (portable, or device-built). ``options`` holds e.g. ``threads``."""
        raise NotImplementedError

    def wants_device_build(self, precision: str, options: dict[str, Any]) -> bool:
        """Whether this cell's artifact is built on the target before it is loaded (default: never)."""
        return False

    def build_key(self, precision: str, options: dict[str, Any]) -> dict[str, Any]:
        """Besides the input artifact's hash, what determines a device build: flags, the runtime's
        version, the device's name (and ``options["batch"]`` for a build fixed to a batch size).
        Asked on the target; must be cheap."""
        return {}

    def device_build(self, artifact: Path, precision: str, options: dict[str, Any], out_dir: Path) -> DeviceBuild:
        """Device side: build the runnable artifact from the portable one into ``out_dir``."""
        raise NotImplementedError(f"{self.name} has no device build step")

    # -- the host -----------------------------------------------------------------------------
    def export_availability(self) -> Availability:
        """Whether this host can write the portable artifact (the exporter, not the runtime)."""
        return Availability(True)

    def export_versions(self) -> dict[str, str | None]:
        """Versions of the host libraries that determine the exported artifact (part of its cache key)."""
        return {}

    def export(self, model: Any, example: np.ndarray, precision: str, out_dir: Path,
               calibration: Calibration | None = None, options: dict[str, Any] | None = None) -> Artifact:
        """Host side: write this backend's portable artifact for a PyTorch ``model`` into ``out_dir``.

        ``calibration`` is given for precisions that need it (int8); ``options`` holds the suite's
        values of :attr:`export_options`. Raise NotImplementedError (its message saying why and what
        to use instead) for an artifact this backend does not build for this model: the cell is
        skipped with that reason, not failed.
        """
        raise NotImplementedError

    def import_artifact(self, src: Path, precision: str, out_dir: Path, example: np.ndarray,
                        calibration: Calibration | None = None, options: dict[str, Any] | None = None) -> Artifact:
        """Host side: take a user's file of kind :attr:`consumes` into the pipeline at ``precision``.

        The default copies the file (and its side files) for ``fp32``; backends that can quantise a
        given file (onnxruntime's static int8) override it. NotImplementedError: not at this precision.
        """
        if precision != "fp32":
            raise NotImplementedError(f"{self.name} runs a given {self.consumes} file as it is, at fp32 only")
        return copy_artifact(src, out_dir)

    def check_artifact(self, artifact: Artifact, expect: dict[str, Any]) -> dict[str, Any]:
        """Host side: verify in the written artifact what the recipe promised (``expect``, e.g.
        ``{"pattern": "2:4"}``); returns facts to store. Default: nothing to check."""
        return {}

    def cell_options(self, options: dict[str, Any], expect: dict[str, Any]) -> dict[str, Any]:
        """The options a cell runs with, given the suite's and what its recipe promises about the artifact
        (``Method.expectations``, e.g. ``{"pattern": "2:4"}``): a backend may default an option from it
        (TensorRT's sparse weights for 2:4 recipes). Default: the suite's options unchanged."""
        return options

    def unsupported(self, precision: str) -> str | None:
        """A reason why this backend cannot run ``precision``, or None."""
        if precision not in self.precisions:
            return f"{self.name} supports precisions {', '.join(self.precisions)}, not {precision}"
        return None


BACKENDS: Registry[type[Backend]] = Registry("backend", discover="edgebench.backends")


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend known by its ``name`` (``BACKENDS.register``)."""
    if getattr(cls, "consumes", None) not in PORTABLE:
        raise TypeError(f"backend {cls.__name__}.consumes must be one of {', '.join(PORTABLE)}")
    return BACKENDS.register(cls)


def names() -> list[str]:
    """Every registered backend's name, sorted."""
    return BACKENDS.names()


def get(name: str) -> Backend:
    """An instance of the backend called ``name``; KeyError names the known ones."""
    return BACKENDS.get(name)()


def consumers(kind: str) -> list[str]:
    """The backends made from a portable artifact of ``kind`` (e.g. every backend that runs ONNX)."""
    return [n for n, cls in BACKENDS.items() if cls.consumes == kind]


def with_side_files(path: Path) -> list[Path]:
    """``path`` and, where it exists, its external-data file (``model.onnx.data``, written by the ONNX exporter)."""
    return [path] + [p for p in [path.with_name(path.name + ".data")] if p.exists()]


def copy_artifact(src: Path, out_dir: Path) -> Artifact:
    """Copy a given artifact and its side files into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in with_side_files(src):
        shutil.copy2(f, out_dir / f.name)
        copied.append(out_dir / f.name)
    return Artifact(path=copied[0], files=copied)


def version_of(distribution: str) -> str | None:
    """Installed version of a distribution, or None."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def missing(module: str, extra: str) -> Availability:
    """Availability for a runtime whose module cannot be imported."""
    return Availability(False, f"not installed (pip install 'edgebench[{extra}]' to get {module})")
