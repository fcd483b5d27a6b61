"""Results as data: what a worker returns for one cell. Plain dataclasses, JSON round-trippable.

This module is imported on the device side, so it needs nothing beyond the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class LatencyStats:
    """Summary of per-batch latency samples, in milliseconds (throughput in items per second)."""

    n: int
    min_ms: float
    mean_ms: float
    std_ms: float
    cov: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput_ips: float


@dataclass
class MemoryStats:
    """Resident memory of the worker, in MiB. Baseline is taken after importing the runtime."""

    baseline_rss_mib: float
    peak_rss_mib: float
    peak_rss_delta_mib: float
    peak_uss_mib: float | None
    peak_uss_delta_mib: float | None
    baseline_uss_mib: float | None
    sample_interval_s: float
    n_samples: int


@dataclass
class Accuracy:
    n: int
    top1: float
    top5: float | None


@dataclass
class Fidelity:
    """Agreement with the dense PyTorch model's logits on the same evaluation inputs."""

    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float


@dataclass
class Contention:
    """CPU used by other processes while the cell was measured (share of all logical cores)."""

    other_cpu_share: float | None
    own_cpu_share: float | None
    logical_cpus: int
    contended: bool
    steal_share: float | None = None  # hypervisor steal, included in other_cpu_share


@dataclass
class MeasureSettings:
    """Warm-up and measurement floors (both a count and a time must be reached) and caps."""

    warmup_runs: int = 10
    warmup_seconds: float = 0.5
    min_runs: int = 100
    min_seconds: float = 2.0
    max_runs: int = 100_000
    max_seconds: float = 60.0
    cov_warn: float = 0.05
    contention_threshold: float = 0.05
    rss_interval_s: float = 0.01
    uss_interval_s: float = 0.1
    processes: int = 1  # worker processes per cell, samples pooled (bench/processes.py)


@dataclass
class CellResult:
    """Everything a worker measured for one cell; ``status`` is ``ok`` or ``failed``."""

    status: str
    error: str | None = None
    backend_info: dict[str, Any] = field(default_factory=dict)
    load_s: float | None = None
    first_inference_s: float | None = None
    warmup_runs: int | None = None
    warmup_s: float | None = None
    samples_ns: list[int] = field(default_factory=list)
    latency: LatencyStats | None = None
    memory: MemoryStats | None = None
    memory_timeline: list[list[float]] = field(default_factory=list)
    accuracy: Accuracy | None = None
    fidelity: Fidelity | None = None
    contention: Contention | None = None
    warnings: list[str] = field(default_factory=list)
    worker_wall_s: float | None = None
    # The device during the cell (targets/samplers.py DeviceReport as data): timeline, temperatures,
    # throttling, cool-down wait, power; None when the cell ran without a monitor.
    device: dict[str, Any] | None = None
    energy_mj_per_inference: float | None = None
    processes: int = 1  # worker processes whose samples were pooled into this result
    process_p50_ms: list[float] = field(default_factory=list)  # each process's own median, when more than one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        nested = {"latency": LatencyStats, "memory": MemoryStats, "accuracy": Accuracy, "fidelity": Fidelity, "contention": Contention}
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key, typ in nested.items():
            if kwargs.get(key) is not None:
                kwargs[key] = typ(**kwargs[key])
        return cls(**kwargs)

    @classmethod
    def failed(cls, reason: str, **extra: Any) -> CellResult:
        return cls(status="failed", error=reason, **extra)
