"""The backend protocol and the registry.

A backend is one module in this package that defines a subclass of :class:`Backend` and decorates
it with :func:`register`. Host-side work (turning a PyTorch model into the backend's artifact) and
device-side work (loading that artifact and running batches) live in the same module, but the
device side must only import the backend's own runtime: the heavy host imports (torch, onnx)
happen inside :meth:`Backend.export`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


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

    def describe(self) -> dict[str, Any]:
        """What really ran: providers, threads, options, kernels - whatever the runtime reveals."""
        return {}


class Backend:
    """One runtime. Subclasses set ``name``, ``artifact_suffix`` and ``precisions``."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: bump when export() would write a different artifact for the same inputs (part of the cache key)
    export_version: ClassVar[int] = 1
    install_hint: ClassVar[str] = ""

    def availability(self) -> Availability:
        """Import the runtime (cheaply) and say whether it is usable here."""
        raise NotImplementedError

    #: backend-specific options a suite may set (``backends: [{name: litert, options: {...}}]``),
    #: each with a one-line description; options that change the artifact go to :meth:`export` too.
    options: ClassVar[dict[str, str]] = {}
    export_options: ClassVar[tuple[str, ...]] = ()

    def export(self, model: Any, example: np.ndarray, precision: str, out_dir: Path,
               calibration: Calibration | None = None, options: dict[str, Any] | None = None) -> Artifact:
        """Host side: write this backend's artifact for a PyTorch ``model`` into ``out_dir``.

        ``calibration`` is given for precisions that need it (int8); ``options`` holds the suite's
        values of :attr:`export_options`.
        """
        raise NotImplementedError

    def load(self, artifact: Path, precision: str, options: dict[str, Any]) -> Session:
        """Device side: load an artifact. ``options`` holds e.g. ``threads``."""
        raise NotImplementedError

    def unsupported(self, precision: str) -> str | None:
        """A reason why this backend cannot run ``precision``, or None."""
        if precision not in self.precisions:
            return f"{self.name} supports precisions {', '.join(self.precisions)}, not {precision}"
        return None


_REGISTRY: dict[str, type[Backend]] = {}
_DISCOVERED = False


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend known by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    # Importing every module of the package registers every backend; adding a backend is adding a
    # module. Backend modules import their runtime lazily, so this stays cheap.
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = importlib.import_module("edgebench.backends")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"edgebench.backends.{info.name}")
    _DISCOVERED = True


def names() -> list[str]:
    """Every registered backend's name, sorted."""
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> Backend:
    """An instance of the backend called ``name``; KeyError names the known ones."""
    _discover()
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known backends: {', '.join(sorted(_REGISTRY))}") from None


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
