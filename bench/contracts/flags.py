"""Warnings as codes with their text: what the reports, the recommendation and compare key on.

A :class:`Flag` is produced where the fact is known (the worker, the pooling of processes, the
report's evidence check) with a ``code`` from :data:`CODES` and a human ``text``. Readers decide by
``code``, never by the text, which stays free to change wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# kinds: what a flag says about a cell's numbers
NOISE = "noise"          # the timing is less trustworthy (contention, variance, caps)
HARDWARE = "hardware"    # the device was not in its normal state (throttling, still hot)
EVIDENCE = "evidence"    # what really ran differs from what the recipe/backend promises
VALIDITY = "validity"    # a number is wrong and must not be ranked (NaN outputs, ...)
INFO = "info"


@dataclass(frozen=True)
class Code:
    """One flag code: its name, a short tag for tables, its kind and a sentence a user can act on."""

    name: str
    tag: str
    kind: str
    explanation: str
    untrusted_timing: bool = False  # compare/recommend treat the cell's latency as inconclusive


CODES: dict[str, Code] = {c.name: c for c in [
    Code("contended", "contended", NOISE,
         "Other processes used the CPU while this cell was measured, still after the quiet gate's wait (measure.quiet_wait_s) and "
         "re-measuring (measure.remeasure_contended): its latencies are inflated and noisy, so it is excluded from wins and regression verdicts. "
         "Re-run on an idle machine.",
         untrusted_timing=True),
    Code("high-variance", "high variance", NOISE,
         "The interquartile range is above the suite's dispersion_warn share of the median (or the CoV above cov_warn, where the suite sets one): "
         "a wide distribution, not just a few slow samples. Compare with the intervals in the recommendation, not the point values."),
    Code("sparse-not-used", "sparse-not-used", EVIDENCE,
         "Zero weights are stored and executed dense by this backend: expect no speedup and no smaller file from unstructured sparsity."),
    Code("sparse-path", "sparse-path", EVIDENCE,
         "Weights are stored sparse (DENSIFY) for XNNPACK's sparse kernels, which run on ARM CPUs only; on other CPUs XNNPACK densifies them at load and runs dense."),
    Code("ops-not-delegated", "ops not delegated", EVIDENCE,
         "Some operators run outside the backend's delegate/accelerator, usually on a slower path."),
    Code("int8-not-used", "int8-not-used", EVIDENCE,
         "Layers of an int8 engine ran in fp16 or fp32 (TensorRT fell back where the Q/DQ graph left a layer unquantised or an int8 "
         "tactic was slower): the int8 speed-up is partial. The cell's evidence names the layers."),
    Code("launch-bound", "launch-bound", EVIDENCE,
         "On a GPU, the host's time to launch each run (enqueue) is close to the GPU's compute time: the GPU waits on Python and "
         "the driver, so the latency is the CPU's, not the kernels'. A CUDA graph (cuda_graph), compile, or a larger batch removes most of it."),
    Code("measurement-capped", "measurement capped", NOISE,
         "A max_runs or max_seconds cap stopped the measurement before its floors were reached."),
    Code("throttled", "throttled", HARDWARE,
         "The device throttled while this cell ran (Pi throttle bits, a CPU frequency cap, or a temperature above the profile's threshold): its latencies are not the device's normal speed.",
         untrusted_timing=True),
    Code("cooldown-not-reached", "cool-down", HARDWARE,
         "The device was still above the profile's temperature limit when the cool-down wait ran out."),
    Code("processes-disagree", "processes disagree", NOISE,
         "The worker processes of this cell measured different medians: one process's mode (layout, placement) moved its numbers."),
    Code("nan-outputs", "nan outputs", VALIDITY,
         "The model produced NaN or Inf outputs: its accuracy is not valid and it is never ranked."),
    Code("other", "other", INFO, "A warning without a code of its own."),
]}


@dataclass(frozen=True)
class Flag:
    """One warning on a cell: ``code`` (a key of :data:`CODES`) and the ``text`` shown to users."""

    code: str
    text: str

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown flag code {self.code!r}; known codes: {', '.join(CODES)}")

    @property
    def info(self) -> Code:
        return CODES[self.code]

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "text": self.text}

    @classmethod
    def from_data(cls, data: Any) -> Flag:
        """A stored flag: ``{"code", "text"}``, or a bare string from a store written before codes existed."""
        if isinstance(data, Flag):
            return data
        if isinstance(data, dict):
            return cls(data["code"] if data.get("code") in CODES else "other", str(data.get("text", "")))
        return cls(legacy_code(str(data)), str(data))


def has(flags: list[Flag], code: str) -> bool:
    """Whether any of ``flags`` carries ``code``."""
    return any(f.code == code for f in flags)


def texts(flags: list[Flag], code: str | None = None) -> list[str]:
    """The texts of ``flags`` (only those with ``code`` when given)."""
    return [f.text for f in flags if code is None or f.code == code]


# Records written before flags had codes (edgebench 0.1 stores) hold plain text: these were the
# texts' fixed first words then. Only data read back from such stores goes through this map.
_LEGACY_PREFIXES = [
    ("contended", "contended"), ("high variance", "high-variance"), ("sparse-not-used", "sparse-not-used"),
    ("sparse-path", "sparse-path"), ("ops not delegated", "ops-not-delegated"), ("measurement", "measurement-capped"),
    ("throttled", "throttled"), ("cool-down", "cooldown-not-reached"), ("processes disagree", "processes-disagree"),
]


def legacy_code(text: str) -> str:
    """The code of a warning stored as text by an edgebench that had no codes."""
    for prefix, code in _LEGACY_PREFIXES:
        if text.startswith(prefix):
            return code
    return "other"
