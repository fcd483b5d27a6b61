"""Running one target's cells: connect, probe, check versions, then measure each cell in one or
more worker processes and pool them. The one place a cell meets its target (the transport, local
or SSH, is targets/transport.py).

A lost connection fails the cell it happened in; the next cell reconnects. A target that stays
unreachable fails its remaining cells at once with the reason, and ``edgebench run --resume RUN_ID``
runs them later. Finished cells are in the store as soon as they finish.

``measure.processes``: one process's median is a draw, not the cell's. Address-space layout, memory
placement and the core a process lands on put some processes of the same cell in a slower or faster
mode for their whole life (pyperf spawns 20 processes per benchmark for this reason). On the 2-core VM
edgebench is developed on, one small cell's p50 came out at 0.033 ms in some runs and 0.050 ms in
others; a regression check comparing two single-process runs then sees a 1.5x "change" whenever the
two draws differ. Pooling the samples of N processes per cell puts several draws into every run, so
runs differ less. Each process keeps the full warm-up and gets 1/N of the measurement floors and caps;
the samples are concatenated in process order (the regression tests' blocks stay contiguous within a
process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.results import CellResult, Contention, MeasureSettings
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench.stats import summarize
from edgebench.bench.store import now
from edgebench.bench.worker import variance_flag
from edgebench.targets.profiles import TargetProfile
from edgebench.targets.transport import Bundle, TargetUnreachable, artifact_bundle, make_transport
from edgebench.targets.version import version_mismatch

# After this many cells in a row could not reach the target, the rest are failed without trying.
GIVE_UP_AFTER = 2
RECONNECT_POLL_S = 5.0


class Board:
    """One target's share of a run (``runner``: the Runner; ``jobs``: its cells, built on the host)."""

    def __init__(self, runner: Any, profile: TargetProfile, jobs: list[Any], timeout_s: float, summary: Any, replace: bool) -> None:
        self.runner = runner
        self.profile = profile
        self.jobs = jobs
        self.timeout_s = timeout_s
        self.summary = summary
        self.replace = replace
        self.run_id = runner.run_id
        self.transport = make_transport(profile, self.run_id, runner.paths.cells_dir(self.run_id), runner._pythonpath,
                                        build_cache=runner.paths.device_builds)
        self.fingerprint: dict[str, Any] = {}
        self._unreachable = 0
        self._last_reason = ""
        self._task = runner.progress.add_task(f"{profile.name}", total=len(jobs)) if runner.progress else None

    # -- the board's whole share ---------------------------------------------------------
    async def run(self) -> None:
        """Measure every job on the target, storing each result as it finishes."""
        reason = await self._connect_and_probe()
        if reason is None:
            reason = None if self.profile.is_local else version_mismatch(self.profile, self.fingerprint)
        if reason is not None:
            self.runner.log(f"target {self.profile.name}: {reason}")
            for job in self.jobs:
                self._store(job, CellResult.failed(reason))
            await self.transport.close()
            return
        try:
            for job in self.jobs:
                if self._unreachable >= GIVE_UP_AFTER:
                    self._store(job, CellResult.failed(f"not run: target {self.profile.name} unreachable ({self._last_reason}); "
                                                       f"`edgebench run --resume {self.run_id}` runs it later"))
                    continue
                result = await self._measure(job)
                self._store(job, result)
            await self._record_end_state()
        finally:
            await self.transport.close()

    async def _connect_and_probe(self) -> str | None:
        try:
            await self.transport.open()
            self.fingerprint = await self.transport.probe()
        except TargetUnreachable as exc:
            self.runner.store.add_environment(self.run_id, self.profile.name, {"error": str(exc), "target_profile": self.profile.model_dump()})
            return str(exc)
        self.fingerprint["target_profile"] = self.profile.model_dump()
        self.fingerprint["state_start"] = self.fingerprint.pop("device_state", None)
        self.runner.store.add_environment(self.run_id, self.profile.name, self.fingerprint)
        return None

    async def _record_end_state(self) -> None:
        try:
            if not self.transport.connected:
                await self.transport.open()
            state = await self.transport.probe(state_only=True)
        except TargetUnreachable as exc:
            state = {"error": str(exc)}
        self.fingerprint["state_end"] = state
        self.runner.store.add_environment(self.run_id, self.profile.name, self.fingerprint)

    # -- one cell ------------------------------------------------------------------------
    def _skip_reason(self, job: Any) -> str | None:
        backend = job.cell.backend
        offered = self.profile.backends
        if offered is not None and backend not in offered:
            return f"target {self.profile.name} does not offer {backend} (it offers {', '.join(offered)})"
        # The target's probe says which runtimes its worker can import: availability is decided
        # here, per target, never from the host's imports.
        info = (self.fingerprint.get("backends") or {}).get(backend)
        if info is not None and not info.get("available"):
            if self.profile.is_local:
                return f"{backend}: {info.get('reason')}"
            return f"{backend} is not installed on target {self.profile.name}: {info.get('reason')}"
        return None

    async def _measure(self, job: Any) -> CellResult:
        reason = self._skip_reason(job)
        if reason is not None:
            return CellResult(status="skipped", error=reason)
        self._describe(job)
        try:
            if not self.transport.connected:
                await self._reconnect()
            spec = await self._device_spec(job)
        except TargetUnreachable as exc:
            return self._lost(str(exc))
        except OSError as exc:  # a host-side file vanished or the device's disk is full: this cell's problem
            return CellResult.failed(f"copying the cell's files to {self.profile.name} failed: {type(exc).__name__}: {exc}")
        n = max(1, spec.measure.processes)
        if n > 1:
            spec = dataclasses.replace(spec, measure=per_process(spec.measure))
        parts = []
        for i in range(n):
            name = f"cell-{job.index:04d}" + (f"-p{i + 1}" if n > 1 else "")
            outcome = await self.transport.run_cell(spec.to_json(), name, self.timeout_s)
            if outcome.lost:
                self._unreachable += 1
                self._last_reason = outcome.result.error
                return outcome.result
            self._unreachable, self._last_reason = 0, ""
            if outcome.result.status != "ok":
                if n > 1:
                    outcome.result.error = f"process {i + 1} of {n}: {outcome.result.error}"
                return outcome.result
            parts.append(outcome.result)
        return pool(parts, spec.batch, job.spec.measure)

    async def _reconnect(self) -> None:
        """Open the connection again, retrying for ``ssh.reconnect_s`` so a board that is rebooting
        (or a network that blips) costs a wait, not the rest of the run."""
        wait = self.profile.ssh.reconnect_s if self.profile.ssh else 0.0
        deadline = time.monotonic() + wait
        while True:
            try:
                await self.transport.open()
                return
            except TargetUnreachable as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TargetUnreachable(f"{exc} (retried for {wait:.0f} s; ssh.reconnect_s)" if wait else str(exc)) from None
                if self._task is not None:
                    self.runner.progress.update(self._task, description=f"{self.profile.name}: reconnecting ({left:.0f} s left)")
                await asyncio.sleep(min(RECONNECT_POLL_S, left))

    def _lost(self, reason: str) -> CellResult:
        self._unreachable += 1
        self._last_reason = reason
        return CellResult.failed(reason)

    async def _device_spec(self, job: Any) -> CellSpec:
        """The job's spec with the device's paths (files copied once per content hash), the profile's
        monitor and the target's build cache."""
        spec = job.spec
        artifact, eval_data = Path(spec.artifact), Path(spec.eval_data)
        art_dir = await self.transport.place(artifact_bundle(artifact))
        eval_dir = await self.transport.place(Bundle([eval_data]))
        return dataclasses.replace(spec, artifact=f"{art_dir}/{artifact.name}", eval_data=f"{eval_dir}/{eval_data.name}",
                                   monitor=self.profile.monitor_settings(), build_cache=self.transport.build_cache_dir())

    def _describe(self, job: Any) -> None:
        if self._task is not None:
            self.runner.progress.update(self._task, description=f"{self.profile.name}: {job.cell.key}")

    def _store(self, job: Any, result: CellResult) -> None:
        record = job.record
        previous = self.runner.previous_errors.get(record.cell_key)
        if previous:
            record.facts = {**record.facts, "previous_attempt": previous}
        record.result = result if result.status != "skipped" else None
        record.status, record.error, record.finished_at = result.status, result.error, now()
        self.runner.save(record, self.summary, self.replace)
        self.runner.log_cell(record)
        if self._task is not None:
            self.runner.progress.advance(self._task)


# -- one cell in N processes (measure.processes) ---------------------------------------------

def per_process(settings: MeasureSettings) -> MeasureSettings:
    """The floors and caps one of ``settings.processes`` workers measures to (warm-up unchanged)."""
    n = max(1, settings.processes)
    if n == 1:
        return settings
    return dataclasses.replace(settings, processes=1, min_runs=math.ceil(settings.min_runs / n), min_seconds=settings.min_seconds / n,
                               max_runs=math.ceil(settings.max_runs / n), max_seconds=settings.max_seconds / n)


def pool(parts: list[CellResult], batch: int, settings: MeasureSettings) -> CellResult:
    """One result from the results of the same cell's worker processes (all ``ok``)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    samples = [s for p in parts for s in p.samples_ns]
    latency = summarize(samples, batch)
    memory = max((p.memory for p in parts if p.memory is not None), key=lambda m: m.peak_rss_mib, default=None)
    energies = [p.energy_mj_per_inference for p in parts if p.energy_mj_per_inference is not None]
    return dataclasses.replace(
        first,
        samples_ns=samples, latency=latency, memory=memory,
        warmup_runs=sum(p.warmup_runs or 0 for p in parts), warmup_s=sum(p.warmup_s or 0.0 for p in parts),
        worker_wall_s=sum(p.worker_wall_s or 0.0 for p in parts),
        contention=_contention([p.contention for p in parts if p.contention is not None]),
        device=_device([p.device for p in parts]),
        energy_mj_per_inference=sum(energies) / len(energies) if energies else None,
        processes=len(parts),
        process_p50_ms=[p.latency.p50_ms for p in parts if p.latency is not None],
        flags=_flags(parts, latency.cov, settings),
    )


def _contention(parts: list[Contention]) -> Contention | None:
    """The worst process decides: a cell is contended if any of its processes was."""
    if not parts:
        return None
    others = [c.other_cpu_share for c in parts if c.other_cpu_share is not None]
    own = [c.own_cpu_share for c in parts if c.own_cpu_share is not None]
    steal = [c.steal_share for c in parts if c.steal_share is not None]
    return Contention(max(others) if others else None, sum(own) / len(own) if own else None, parts[0].logical_cpus,
                      any(c.contended for c in parts), max(steal) if steal else None)


def _device(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The first process's device report, with every process's timeline and the worst state of any."""
    reports = [d for d in parts if d]
    if not reports:
        return None
    out = dict(reports[0])
    out["timeline"] = [{**row, "process": i} for i, d in enumerate(reports) for row in d.get("timeline", [])]
    out["throttled"] = any(d.get("throttled") for d in reports)
    out["throttle_reasons"] = list(dict.fromkeys(r for d in reports for r in d.get("throttle_reasons") or []))
    temps = [d["temp_max_c"] for d in reports if d.get("temp_max_c") is not None]
    out["temp_max_c"] = max(temps) if temps else None
    out["temp_end_c"] = reports[-1].get("temp_end_c")
    return out


def _flags(parts: list[CellResult], cov: float, settings: MeasureSettings) -> list[Flag]:
    """Each process's flags once, with the variance flag recomputed on the pooled samples."""
    out = list(dict.fromkeys(f for p in parts for f in p.flags if f.code != "high-variance"))
    if high := variance_flag(cov, settings):
        out.insert(0, high)
    p50 = [p.latency.p50_ms for p in parts if p.latency is not None]
    if len(p50) > 1 and min(p50) > 0 and max(p50) / min(p50) > 1 + settings.cov_warn * 2:
        out.append(Flag("processes-disagree", f"processes disagree: per-process p50 {min(p50):.4g}-{max(p50):.4g} ms ({max(p50) / min(p50):.2f}x)"))
    return out
