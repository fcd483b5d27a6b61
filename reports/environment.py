"""Is a baseline from the same environment? Compare two environment fingerprints (targets/probe.py).

Fields are in two groups. *Strict* ones make latencies incomparable: the hardware (board, CPU model,
cores, memory, the CPUs the process may use), the power mode (cpufreq governor and frequency limits per
policy, and ``power_mode`` / ``nvpmodel`` where a target's probe reports one) and the version of every
backend the compared cells use. A comparison across a strict difference is refused unless the user
overrides it. *Informational* ones (host name, OS, kernel, Python, numpy, edgebench version) are listed
in the verdict but do not block it: a kernel update on the same board is exactly what a nightly run
should be able to judge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

HARDWARE = ("board_model", "cpu_model", "machine", "logical_cpus", "physical_cores", "memory_total_mib", "cpu_affinity")
POWER = ("power_mode", "nvpmodel")
INFORMATIONAL = ("hostname", "os", "kernel", "python", "python_implementation", "numpy", "edgebench_version")


@dataclass
class Difference:
    field: str
    base: Any
    head: Any
    strict: bool


@dataclass
class EnvironmentCheck:
    target: str
    differences: list[Difference] = field(default_factory=list)

    @property
    def strict(self) -> list[Difference]:
        return [d for d in self.differences if d.strict]

    @property
    def comparable(self) -> bool:
        return not self.strict

    def describe(self, strict_only: bool = True) -> str:
        diffs = self.strict if strict_only else self.differences
        return "; ".join(f"{d.field}: {_short(d.base)} -> {_short(d.head)}" for d in diffs)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "comparable": self.comparable, "differences": [asdict(d) for d in self.differences]}


def _short(v: Any, limit: int = 60) -> str:
    s = str(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def power_fields(fp: dict[str, Any]) -> dict[str, Any]:
    """Governor and min/max frequency per cpufreq policy (current frequency moves all the time: left out)."""
    out: dict[str, Any] = {}
    policies = fp.get("cpufreq")
    if isinstance(policies, list):
        for p in policies:
            name = p.get("policy", "?")
            for k in ("governor", "min_mhz", "max_mhz"):
                out[f"cpufreq.{name}.{k}"] = p.get(k)
    for k in POWER:
        if k in fp:
            out[k] = fp[k]
    return out


def backend_versions(fp: dict[str, Any], names: set[str]) -> dict[str, Any]:
    backends = fp.get("backends") if isinstance(fp.get("backends"), dict) else {}
    return {f"backends.{n}.version": (backends.get(n) or {}).get("version") for n in sorted(names)}


def check(target: str, base: dict[str, Any], head: dict[str, Any], backends: set[str]) -> EnvironmentCheck:
    """The differences between two fingerprints of ``target``; ``backends`` are the ones the compared cells use."""
    result = EnvironmentCheck(target)
    if "error" in base or "error" in head or not base or not head:
        missing = "base" if (not base or "error" in base) else "head"
        result.differences.append(Difference("fingerprint", "missing" if missing == "base" else "ok", "missing" if missing == "head" else "ok", True))
        return result
    strict = {k: (base.get(k), head.get(k)) for k in HARDWARE}
    bp, hp = power_fields(base), power_fields(head)
    strict.update({k: (bp.get(k), hp.get(k)) for k in sorted(set(bp) | set(hp))})
    bv, hv = backend_versions(base, backends), backend_versions(head, backends)
    strict.update({k: (bv[k], hv[k]) for k in bv})
    for k, (b, h) in strict.items():
        if b != h:
            result.differences.append(Difference(k, b, h, True))
    for k in INFORMATIONAL:
        if base.get(k) != head.get(k):
            result.differences.append(Difference(k, base.get(k), head.get(k), False))
    return result


def fingerprint_line(fp: dict[str, Any], short: bool = False) -> str:
    """A target's environment in one line. The Markdown report's (default): board, CPU, cores, governors,
    power mode, memory, OS, kernel, Python, backends and edgebench; ``short`` (the HTML's, beside a link
    to the full fingerprint): CPU, cores, memory, OS, kernel, Python and backends, "not recorded" for none."""
    if short and not fp:
        return "not recorded"
    if "error" in fp:
        return str(fp["error"])
    backends = ", ".join(f"{k} {v.get('version')}" for k, v in (fp.get("backends") or {}).items() if isinstance(v, dict) and v.get("available"))
    if short:
        return (f"{fp.get('cpu_model')} · {fp.get('logical_cpus')} logical CPUs · {fp.get('memory_total_mib')} MiB · {fp.get('os')} · "
                f"kernel {fp.get('kernel')} · Python {fp.get('python')} · {backends}")
    gov = fp.get("cpufreq")
    governors = ", ".join(sorted({p["governor"] for p in gov})) if isinstance(gov, list) else "not available"
    board = fp.get("board_model")
    power = f", power mode {fp['nvpmodel']}" if fp.get("nvpmodel") not in (None, "not available") else ""
    return ((f"{board}: " if board and board != "not available" else "")
            + f"{fp.get('cpu_model')} ({fp.get('logical_cpus')} logical CPUs, governor: {governors}{power}), "
            f"{fp.get('memory_total_mib')} MiB, {fp.get('os')}, kernel {fp.get('kernel')}, Python {fp.get('python')}, "
            f"{backends}; edgebench {fp.get('edgebench_version')} @ {fp.get('edgebench_commit')}")
