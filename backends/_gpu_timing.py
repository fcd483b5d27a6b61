"""The phases of a GPU run, kept per run for the sessions that time themselves (torch-cuda, tensorrt).

A session records CUDA events around the host-to-device copy, the model and the device-to-host copy,
and the host's time to launch them; :class:`Phases` turns one run's event spans into nanoseconds, keeps
them (contracts/results.py ``PHASES``) and hands back the timed runs' share.
"""

from __future__ import annotations

from edgebench.bench.contracts.results import PHASES


class Phases:
    """Every recorded run's duration per phase, in nanoseconds, in order."""

    def __init__(self) -> None:
        self.samples: dict[str, list[int]] = {k: [] for k in PHASES}

    def add(self, end_to_end_ms: float, h2d_ms: float, compute_ms: float, d2h_ms: float, enqueue_ns: int, record: bool = True) -> int:
        """One run's spans (ms, from CUDA events) and enqueue (ns, host clock); returns its end-to-end ns.
        ``record`` False: a profiled or evaluation run, measured but not kept among the timed ones."""
        ns = {"end_to_end": end_to_end_ms, "h2d": h2d_ms, "compute": compute_ms, "d2h": d2h_ms}
        ns = {k: int(round(v * 1e6)) for k, v in ns.items()}
        if record:
            for k, v in {**ns, "enqueue": int(enqueue_ns)}.items():
                self.samples[k].append(v)
        return ns["end_to_end"]

    def last(self, runs: int) -> dict[str, list[int]]:
        """The last ``runs`` runs of each phase (the timed ones: warm-up came first)."""
        return {k: v[-runs:] for k, v in self.samples.items()} if runs > 0 else {}
