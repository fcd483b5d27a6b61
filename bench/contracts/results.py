"""Results as data: what a worker returns for one cell. Plain dataclasses, JSON round-trippable.

This module is imported on the device side, so it needs nothing beyond the standard library and numpy (the
samples' compact form, contracts/samples.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.samples import samples_from_data, samples_to_data


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
    # Robust dispersion and outliers (None in results stored before they existed). Quartiles and
    # outlier counts are pytest-benchmark's (its export writes the same numbers).
    q1_ms: float | None = None
    q3_ms: float | None = None
    iqr_ratio: float | None = None  # (q3 - q1) / median: what the high-variance warning reads
    mad_ms: float | None = None  # median absolute deviation from the median
    stddev_outliers: int | None = None  # samples more than 1 std from the mean
    iqr_outliers: int | None = None  # samples beyond 1.5 IQR outside the quartiles (Tukey's fences)

    @property
    def iqr_ms(self) -> float | None:
        return self.q3_ms - self.q1_ms if self.q1_ms is not None and self.q3_ms is not None else None

    @property
    def outliers(self) -> str | None:
        """pytest-benchmark's ``outliers``: "stddev;iqr" counts."""
        return None if self.stddev_outliers is None or self.iqr_outliers is None else f"{self.stddev_outliers};{self.iqr_outliers}"


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
    """Agreement with a reference's logits on the same evaluation inputs; ``reference`` names it.

    ``independent`` is False when the reference is the cell's own file on the same runtime (a given
    ONNX/.tflite/TorchScript file at fp32): the numbers are then a reload check, not fidelity, and
    reports say "no independent reference". Results stored before these fields read as the dense
    PyTorch model, independent."""

    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    reference: str = ""  # "" in results stored before references were named: the dense PyTorch model
    independent: bool = True


@dataclass
class Contention:
    """CPU used by other processes while the cell was measured (share of all logical cores)."""

    other_cpu_share: float | None
    own_cpu_share: float | None
    logical_cpus: int
    contended: bool
    steal_share: float | None = None  # hypervisor steal, included in other_cpu_share
    # The quiet gate before measuring (measure.quiet_wait_s): seconds spent waiting for other processes'
    # share to drop to the threshold, and whether it did (None: gate off, or /proc/stat unreadable).
    quiet_wait_s: float | None = None
    quiet: bool | None = None
    # Contended cells are measured again (measure.remeasure_contended): how many attempts were made and
    # each one's other_cpu_share, in order; the result kept is the first quiet attempt, else the least contended.
    attempts: int = 1
    attempt_other_shares: list[float | None] = field(default_factory=list)


def _bound(default: Any, doc: str = "", **limits: Any) -> Any:
    """A settings field with its validation bounds (``ge``, ``gt``, ``le``) for the suite's config
    model, which is generated from this dataclass (bench/config.py): one definition of each setting."""
    return field(default=default, metadata={"doc": doc, **limits})


@dataclass
class MeasureSettings:
    """Warm-up and measurement floors (both a count and a time must be reached) and caps.

    Defaults follow trtexec / benchmark_model practice; a suite's ``measure:`` block sets them."""

    warmup_runs: int = _bound(10, "warm-up ends when both floors are reached...", ge=0)
    warmup_seconds: float = _bound(0.5, ge=0)
    min_runs: int = _bound(100, "...and so does measurement", ge=1)
    min_seconds: float = _bound(2.0, ge=0)
    max_runs: int = _bound(100_000, "caps, reported as a warning when they stop a cell", ge=1)
    max_seconds: float = _bound(60.0, gt=0)
    dispersion_warn: float = _bound(0.20, "warn (high variance) when IQR/median exceeds this", gt=0)
    cov_warn: float = _bound(0.0, "also warn when std/mean exceeds this (edgebench 0.1's variance warning); 0, the default, is off: "
                                  "a few slow samples put nearly every cell above any useful CoV, which stays a report column", ge=0)
    contention_threshold: float = _bound(0.05, "flag a cell when other processes used more of the CPU than this", gt=0, le=1)
    quiet_wait_s: float = _bound(3.0, "before measuring, wait up to this long for other processes' CPU share to drop to "
                                      "contention_threshold (0: do not wait)", ge=0, le=600)
    remeasure_contended: int = _bound(2, "measure a contended cell again up to this many times; one still contended is "
                                         "excluded from wins and regression verdicts", ge=0, le=10)
    rss_interval_s: float = _bound(0.01, gt=0)
    uss_interval_s: float = _bound(0.1, gt=0)
    processes: int = _bound(1, "worker processes per cell, each with the full warm-up and 1/N of the floors; samples pooled, "
                               "so one process's mode (layout, placement) does not decide a run, and the reports' intervals "
                               "resample processes (a win needs at least 2; the built-in default suite uses 3)", ge=1, le=50)


#: the phases of a GPU run, in the order they happen on the stream (``enqueue`` is host time)
PHASES = ("end_to_end", "h2d", "compute", "d2h", "enqueue")


@dataclass
class DeviceTiming:
    """A GPU cell's time split the way trtexec reports it, over the timed runs only: GPU compute (CUDA
    events around the model on the stream), host-to-device and device-to-host copies apart, end-to-end
    (the first copy's start to the last copy's end: the cell's own samples) and enqueue (host time to
    launch the copies and the model). ``samples_ns`` holds every run of every phase (``PHASES``), in
    order; ``phases`` their summaries (bench/stats.py ``summarize``). ``launch_bound``: the median enqueue
    time is at least ``LAUNCH_BOUND_SHARE`` of the median compute time, so the GPU may wait on the CPU's
    launches (the cell then carries the ``launch-bound`` flag)."""

    clock: str                                       # "cuda-events"
    samples_ns: dict[str, list[int]]
    phases: dict[str, LatencyStats]
    cuda_graph: bool = False                         # the model ran as one CUDA graph replay

    @property
    def launch_bound(self) -> bool:
        enq, comp = self.phases.get("enqueue"), self.phases.get("compute")
        return enq is not None and comp is not None and enq.p50_ms >= LAUNCH_BOUND_SHARE * comp.p50_ms

    def to_data(self) -> dict[str, Any]:
        return {"clock": self.clock, "cuda_graph": self.cuda_graph, "phases": {k: asdict(v) for k, v in self.phases.items()},
                "samples_ns": {k: samples_to_data(v) for k, v in self.samples_ns.items()}}

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> DeviceTiming | None:
        if not data:
            return None
        return cls(clock=str(data.get("clock", "")), cuda_graph=bool(data.get("cuda_graph")),
                   phases={k: LatencyStats(**v) for k, v in (data.get("phases") or {}).items()},
                   samples_ns={k: samples_from_data(v) for k, v in (data.get("samples_ns") or {}).items()})


LAUNCH_BOUND_SHARE = 0.8


@dataclass
class GpuMemory:
    """GPU memory of one cell, in MiB: the caching allocator's peaks over load and timing
    (``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``), and NVML's view of the whole device
    (every process's memory) where nvidia-ml-py is installed (None otherwise)."""

    allocated_peak_mib: float
    reserved_peak_mib: float
    weights_mib: float | None = None          # the loaded model's parameters and buffers, as stored on the GPU
    device_used_mib: float | None = None      # NVML, the whole device, at the end of timing
    device_total_mib: float | None = None


@dataclass
class CellResult:
    """Everything a worker measured for one cell; ``status`` is ``ok`` or ``failed``."""

    status: str
    error: str | None = None
    evidence: Evidence | None = None  # what really ran (contracts/evidence.py), from the backend's session
    traceback: str | None = None  # a failed cell's traceback, for the report's failure section
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
    flags: list[Flag] = field(default_factory=list)  # warnings as codes with their text (contracts/flags.py)
    worker_wall_s: float | None = None
    # The device during the cell (targets/monitor.py DeviceReport as data): timeline, temperatures,
    # throttling, cool-down wait, power; None when the cell ran without a monitor.
    device: dict[str, Any] | None = None
    energy_mj_per_inference: float | None = None
    processes: int = 1  # worker processes whose samples were pooled into this result
    process_p50_ms: list[float] = field(default_factory=list)  # each process's own median, when more than one
    # How many of ``samples_ns`` each worker process measured, in order (their sum is len(samples_ns)); the
    # reports' intervals resample processes with it. Empty for one process and in results stored before it.
    process_samples: list[int] = field(default_factory=list)
    # GPU cells (sessions with their own clock, e.g. torch-cuda): the time split and GPU memory; None elsewhere
    device_timing: DeviceTiming | None = None
    gpu_memory: GpuMemory | None = None

    @property
    def warnings(self) -> list[str]:
        """The flags' texts, for display; code that decides anything reads :attr:`flags`."""
        return [f.text for f in self.flags]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data; ``samples_ns`` in its compact form (contracts/samples.py ``samples_to_data``: a
        worker's result file is ~3x smaller than with a list of numbers), which :meth:`from_dict` reads back exactly."""
        data = asdict(replace(self, samples_ns=[], device_timing=None))  # asdict would deep-copy every sample first
        data["samples_ns"] = samples_to_data(self.samples_ns)
        data["device_timing"] = self.device_timing.to_data() if self.device_timing is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        nested = {"latency": LatencyStats, "memory": MemoryStats, "accuracy": Accuracy, "fidelity": Fidelity, "contention": Contention,
                  "gpu_memory": GpuMemory}
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["samples_ns"] = samples_from_data(kwargs.get("samples_ns"))  # compact form or a plain list (older results)
        for key, typ in nested.items():
            if kwargs.get(key) is not None:
                kwargs[key] = typ(**kwargs[key])
        kwargs["evidence"] = Evidence.from_dict(kwargs.get("evidence"))
        kwargs["device_timing"] = DeviceTiming.from_data(kwargs.get("device_timing"))
        # results stored by edgebench 0.1: free-form backend_info and warnings as plain text
        legacy = data.get("backend_info") or {}
        if kwargs["evidence"] is None and legacy:
            kwargs["evidence"] = Evidence.from_legacy(legacy)
        if kwargs.get("traceback") is None and legacy.get("traceback"):
            kwargs["traceback"] = str(legacy["traceback"])
        kwargs["flags"] = [Flag.from_data(f) for f in kwargs.get("flags") or data.get("warnings") or []]
        return cls(**kwargs)

    @classmethod
    def failed(cls, reason: str, **extra: Any) -> CellResult:
        return cls(status="failed", error=reason, **extra)
