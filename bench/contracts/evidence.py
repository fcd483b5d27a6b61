"""What really ran, as a backend reports it: one schema for every runtime.

A backend's session fills an :class:`Evidence` after loading (``Session.evidence()``); the worker
returns it inside the cell's result, and reports read its fields: whether sparse kernels ran, which
operators a delegate left on the slow path, the kernel/tactic and precision of each layer, what a
device build produced. Fields a runtime cannot observe stay ``None`` ("unknown"), never a guess.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class LayerEvidence:
    """One layer (node, op, engine layer) as the runtime ran it."""

    name: str
    op: str | None = None
    kernel: str | None = None      # kernel, tactic or delegate the layer ran on
    precision: str | None = None
    sparse: bool | None = None     # ran a sparse kernel; None: the runtime does not say
    time_ms: float | None = None   # from a separate profiled pass, never from the timed samples


@dataclass
class Delegation:
    """Operators a delegate/accelerator took and the ones it left on the runtime's own kernels."""

    delegate: str                  # "XNNPACK", "none (built-in kernels)", ...
    total_ops: int
    delegated_ops: int
    partitions: int = 0
    undelegated: list[str] = field(default_factory=list)  # op names left outside, one entry per op
    expected: bool = False         # the user asked for no delegate: undelegated ops are the point, not a warning


@dataclass
class BuildFacts:
    """What a device build step produced on the target (a TensorRT engine, an optimised model)."""

    key: str                       # the device-side cache key (input hash, flags, runtime version, device)
    cached: bool                   # found in the target's build cache: nothing was built
    build_s: float | None
    size_bytes: int
    artifact: str                  # file name of the built artifact on the target
    determined_by: dict[str, Any] = field(default_factory=dict)  # what the key was made of, as data
    facts: dict[str, Any] = field(default_factory=dict)          # the build's own facts (backend-specific)


@dataclass
class Evidence:
    """What really ran for one cell."""

    runtime: str
    version: str | None = None
    device: str | None = None               # "cpu", a GPU's name
    providers: list[str] = field(default_factory=list)
    threads: int | None = None
    input_shape: list[int] | None = None    # the shape that was timed (batch first)
    input_layout: str | None = None         # "NCHW", "NHWC"
    input_dtype: str | None = None
    sparse_kernels: bool | None = None      # any sparse kernel ran; False: zeros run dense; None: unknown
    sparse_weights: int | None = None       # weight tensors stored sparse in the artifact
    sparse_path: str | None = None          # how stored-sparse weights are handled on this device
    delegation: Delegation | None = None
    layers: list[LayerEvidence] = field(default_factory=list)
    build: BuildFacts | None = None
    details: dict[str, Any] = field(default_factory=dict)  # backend-specific facts, shown as they are

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Evidence | None:
        if not data:
            return None
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("delegation"):
            kwargs["delegation"] = Delegation(**kwargs["delegation"])
        if kwargs.get("build"):
            kwargs["build"] = BuildFacts(**kwargs["build"])
        kwargs["layers"] = [LayerEvidence(**layer) for layer in kwargs.get("layers") or []]
        kwargs.setdefault("runtime", "")
        return cls(**kwargs)

    @classmethod
    def from_legacy(cls, info: dict[str, Any]) -> Evidence | None:
        """Evidence from the free-form ``backend_info`` of a store written by edgebench 0.1."""
        if not info:
            return None
        details = {k: v for k, v in info.items() if k not in ("runtime", "version", "providers", "sparse_kernels", "sparse_path",
                                                              "sparse_weights", "threads", "traceback")}
        deleg = None
        if info.get("total_ops") is not None:  # LiteRT's cells: undelegated_ops was a list of op names
            names = [str(o) for o in info.get("undelegated_ops") or []]
            total = int(info["total_ops"])
            deleg = Delegation(str(info.get("delegate", "")), total, int(info.get("delegated_ops", total - len(names))),
                               int(info.get("partitions", 0)), names)
        return cls(runtime=str(info.get("runtime", "")), version=info.get("version"), providers=list(info.get("providers") or []),
                   threads=info.get("threads"), sparse_kernels=info.get("sparse_kernels"), sparse_path=info.get("sparse_path"),
                   sparse_weights=info.get("sparse_weights"), delegation=deleg, details=details)
