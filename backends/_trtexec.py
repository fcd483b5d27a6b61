"""Read a trtexec log: version, device, the performance summary, timing warnings, sparsity lines.

The tensorrt backend's optional cross-check runs ``trtexec`` on the board and stores its median
and p90 beside ours; :func:`parse_log` reads what it printed. Formats handled, each seen in real
logs kept in ``tests/backends/data/trt_log_*.txt`` with their source:

- the banner ``&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # ...`` (10.x packs the version
  as MAJOR*10000 + MINOR*100 + PATCH; 8.x and earlier as MAJOR*1000 + MINOR*100 + PATCH);
- ``Selected Device: NVIDIA GeForce GTX 1080 Ti``;
- summary lines ``Latency: min = a ms, max = b ms, mean = c ms, median = d ms, percentile(99%) = e ms``
  (TensorRT 7/8: one percentile) or ``..., percentile(90%) = x ms, percentile(95%) = y ms,
  percentile(99%) = z ms`` (TensorRT 10: three), for Latency, Enqueue Time, H2D Latency,
  GPU Compute Time and D2H Latency; ``Throughput: 130.298 qps``;
- the advice ``[W] * ...`` lines (their indented ``[W]   ...`` continuation joined on);
- ``(Sparsity) Layers eligible for sparse math: a, b`` and
  ``(Sparsity) TRT inference plan picked sparse implementation for layers: b``.

Also :func:`parse_profile` for ``trtexec --exportProfile`` JSON. Lines starting with ``# `` are
skipped (fixture headers). Anything absent stays empty or None: a log without a summary is not an
error. Standard library only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_BANNER = re.compile(r"\[TensorRT v(\d+)\]")
_DEVICE = re.compile(r"Selected Device: (.+?)\s*$")
_THROUGHPUT = re.compile(r"\] Throughput: ([0-9.eE+-]+) qps")
# The label must follow "[I] " directly: "End-to-End Host Latency" (TensorRT 7) is not "Latency".
_STAT_LINE = re.compile(r"\[I\] (Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency): (.*)$")
_STAT = re.compile(r"\b(min|max|mean|median) = ([0-9.eE+-]+) ms")
_PERCENTILE = re.compile(r"percentile\((\d+(?:\.\d+)?)%\) = ([0-9.eE+-]+) ms")
_WARNING = re.compile(r"\[W\] (\s*)(.*?)\s*$")
_ELIGIBLE = re.compile(r"\(Sparsity\) Layers eligible for sparse math:(.*)$")
_PICKED = re.compile(r"\(Sparsity\) TRT inference plan picked sparse implementation for layers:(.*)$")
_FIELDS = {
    "Latency": "latency_ms",
    "GPU Compute Time": "gpu_compute_ms",
    "H2D Latency": "h2d_ms",
    "D2H Latency": "d2h_ms",
    "Enqueue Time": "enqueue_ms",
}


@dataclass
class TrtexecSummary:
    """What one trtexec run printed (times in milliseconds, percentiles as ``p90``/``p95``/``p99``)."""

    version: str | None = None
    device: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    gpu_compute_ms: dict[str, float] = field(default_factory=dict)
    h2d_ms: dict[str, float] = field(default_factory=dict)
    d2h_ms: dict[str, float] = field(default_factory=dict)
    enqueue_ms: dict[str, float] = field(default_factory=dict)
    throughput_qps: float | None = None
    warnings: list[str] = field(default_factory=list)
    sparse_eligible: list[str] = field(default_factory=list)
    sparse_picked: list[str] = field(default_factory=list)


@dataclass
class TrtLayerTime:
    """One layer of ``trtexec --exportProfile`` (a profiled pass: never mix with latency samples)."""

    name: str
    time_ms: float
    average_ms: float
    median_ms: float | None
    percentage: float | None


def decode_version(packed: str) -> str:
    """``"100300"`` -> ``"10.3.0"``, ``"8401"`` -> ``"8.4.1"`` (trtexec's banner encoding)."""
    n = int(packed)
    if n >= 100000:  # 10.x and later: MAJOR*10000 + MINOR*100 + PATCH
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"  # 8.x and earlier: MAJOR*1000 + MINOR*100 + PATCH


def _stats(rest: str) -> dict[str, float]:
    out = {key: float(value) for key, value in _STAT.findall(rest)}
    for pct, value in _PERCENTILE.findall(rest):
        out[f"p{pct}"] = float(value)  # "percentile(99%)" -> p99
    return out


def _names(listed: str) -> list[str]:
    # Layer names hold " + " (fused layers) but never ", ", which is trtexec's separator.
    return [name.strip() for name in listed.split(", ") if name.strip()]


def _read_warning(line: str, summary: TrtexecSummary) -> None:
    match = _WARNING.search(line)
    if not match:
        return
    indent, text = match.groups()
    if text.startswith("* "):
        summary.warnings.append(text[2:])
    elif indent and text and summary.warnings:  # "[W]   If not already in use, ..." continues the advice
        summary.warnings[-1] += " " + text


def _read_line(line: str, summary: TrtexecSummary) -> None:
    if summary.version is None and (match := _BANNER.search(line)):
        summary.version = decode_version(match.group(1))
    elif summary.device is None and (match := _DEVICE.search(line)):
        summary.device = match.group(1)
    elif match := _STAT_LINE.search(line):
        getattr(summary, _FIELDS[match.group(1)]).update(_stats(match.group(2)))
    elif match := _THROUGHPUT.search(line):
        summary.throughput_qps = float(match.group(1))
    elif match := _ELIGIBLE.search(line):
        summary.sparse_eligible = _names(match.group(1))
    elif match := _PICKED.search(line):
        summary.sparse_picked = _names(match.group(1))
    elif "[W]" in line:
        _read_warning(line, summary)


def parse_log(text: str) -> TrtexecSummary:
    """Everything :class:`TrtexecSummary` holds that the log shows; the rest stays empty/None."""
    summary = TrtexecSummary()
    for line in text.splitlines():
        if not line.startswith("# "):
            _read_line(line, summary)
    return summary


def parse_profile(text: str) -> list[TrtLayerTime]:
    """The per-layer rows of ``trtexec --exportProfile`` JSON (the leading ``{"count": N}`` skipped)."""
    rows = json.loads(text)
    return [
        TrtLayerTime(
            name=row["name"],
            time_ms=float(row["timeMs"]),
            average_ms=float(row["averageMs"]),
            median_ms=float(row["medianMs"]) if "medianMs" in row else None,
            percentage=float(row["percentage"]) if "percentage" in row else None,
        )
        for row in rows
        if isinstance(row, dict) and "name" in row
    ]
