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
from edgebench.bench.contracts.results import CellResult, Contention, DeviceTiming, LatencyStats, MeasureSettings
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench.lease import LeaseError, board_lease
from edgebench.bench.stats import summarize
from edgebench.bench.store import now
from edgebench.bench import worker
from edgebench.bench.worker import launch_flag, variance_flag
from edgebench.targets.probe import for_board
from edgebench.targets.profiles import TargetProfile
from edgebench.targets.transport import Bundle, TargetUnreachable, artifact_bundle, make_transport
from edgebench.targets.version import version_mismatch

# After this many cells in a row could not reach the target, the rest are failed without trying.
GIVE_UP_AFTER = 2
RECONNECT_POLL_S = 5.0
# Per-process medians further apart than this ratio raise ``processes-disagree``. The intervals already
# resample processes, so this warns only of a swing beyond the usual: in two idle default runs here
# (3 processes per cell) the per-process p50 spread was 1.00-2.06x, and at 1.10 (the old rule,
# 1 + 2 x the old cov_warn) 11-16 of 30 cells warned; at 1.4, 5 of 30 (ORT b1 cells, bimodal).
PROCESSES_DISAGREE = 1.4


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
        # A resumed run numbers its cells from 0 again: its files get a tag of their own so the first
        # attempt's spec/result/stderr files (on the board and in runs/RUN_ID/cells/) stay.
        self._resume_tag = f"-r{time.strftime('%H%M%S')}" if replace else ""
        self._task = runner.progress.add_task(f"{profile.name}", total=len(jobs)) if runner.progress else None

    # -- the board's whole share ---------------------------------------------------------
    async def run(self) -> None:
        """Measure every job on the target under its lease (bench/lease.py): taken before connecting, held
        until the transport is closed, so one run at a time measures the board. A lease not free within
        ``--lease-timeout`` fails the board's cells with one line naming the run that holds it."""
        options = getattr(self.runner, "options", None)  # RunOptions; a runner without any waits as long as it takes
        try:
            async with board_lease(self.runner.store, self.profile, self.run_id, options.lease_timeout_s if options else None, self.runner.log):
                await self._run_leased()
        except LeaseError as exc:
            self._give_up(self.jobs, str(exc), self._last_probe_backends())

    async def _run_leased(self) -> None:
        """Measure every job on the target, storing each result as it finishes."""
        reason = await self._connect_and_probe()
        if reason is None:
            reason = None if self.profile.is_local else version_mismatch(self.profile, self.fingerprint)
        if reason is not None:
            self._give_up(self.jobs, self._about_target(reason), self.fingerprint.get("backends") or self._last_probe_backends())
            await self.transport.close()
            return
        statuses = []
        try:
            for i, job in enumerate(self.jobs):
                if self._unreachable >= GIVE_UP_AFTER:
                    self._give_up(self.jobs[i:], f"not run: target {self.profile.name} unreachable ({self._last_reason})", self.fingerprint.get("backends"))
                    statuses.append("failed")
                    break
                job.record.started_at = now()  # when its measurement begins (not when its artifact was prepared)
                result = await self._measure(job)
                self._store(job, result)
                statuses.append(result.status)
            await self._record_end_state()
            if all(s in ("ok", "skipped") for s in statuses):
                await self.transport.discard_run_files()  # every result is on the host; kept after a failure, to debug
        finally:
            await self.transport.close()

    def _about_target(self, reason: str) -> str:
        """The reason with the target named once (transport errors already start with "target NAME:")."""
        return reason if reason.startswith(f"target {self.profile.name}") else f"target {self.profile.name}: {reason}"

    def _give_up(self, jobs: list[Any], reason: str, backends: dict[str, Any] | None) -> None:
        """Store ``jobs`` as not run, saying why ONCE for the target: cells the board would not run anyway (a
        backend it does not offer, or lacked at its last probe) are skipped; the others fail with ``reason``."""
        failed = 0
        for job in jobs:
            skip = self._skip_reason(job, backends)
            if skip is None:
                failed += 1
            self._store(job, CellResult(status="skipped", error=skip) if skip else
                        CellResult.failed(f"{reason}; `edgebench run --resume {self.run_id}` runs it later"), log=False)
        skipped = len(jobs) - failed
        line = (f"{reason}; {failed} cell{'s' * (failed != 1)} not run" + (f", {skipped} skipped (backend not on the board)" if skipped else "")
                + (f"; `edgebench run --resume {self.run_id}` runs them once fixed" if failed else ""))
        self.runner.log(line)
        if self.summary is not None and failed:  # one line in the run's failure list, not one per cell
            prefixes = tuple(f"{job.record.cell_key}: " for job in jobs)
            self.summary.failures[:] = [f for f in self.summary.failures if not f.startswith(prefixes)] + [line]

    def _last_probe_backends(self) -> dict[str, Any] | None:
        """The runtimes this target had at its latest successful probe in the store (None: never probed)."""
        store = self.runner.store
        for run in store.runs(limit=20):
            env = store.environments(run.id).get(self.profile.name) or {}
            if isinstance(env.get("backends"), dict):
                return env["backends"]
        return None

    async def _connect_and_probe(self) -> str | None:
        try:
            await self.transport.open()
            self.fingerprint = await self.transport.probe()
        except TargetUnreachable as exc:
            self.runner.store.add_environment(self.run_id, self.profile.name, {"error": str(exc), "target_profile": self.profile.model_dump()})
            return str(exc)
        if not self.profile.is_local:  # install hints only for what the profile asks for (torch is absent from a Pi on purpose)
            self.fingerprint = for_board(self.fingerprint, self.profile.name, self.profile.extras, self.profile.backends)
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
    def _skip_reason(self, job: Any, backends: dict[str, Any] | None = None) -> str | None:
        """Why the target would not run this cell's backend (``backends``: a probe's; default: this run's)."""
        backend = job.cell.backend
        offered = self.profile.backends
        if offered is not None and backend not in offered:
            return f"target {self.profile.name} does not offer {backend} (it offers {', '.join(offered)})"
        # The target's probe says which runtimes its worker can import: availability is decided
        # here, per target, never from the host's imports.
        probed = self.fingerprint.get("backends") if backends is None else backends
        info = (probed or {}).get(backend)
        if info is not None and not info.get("available"):
            if self.profile.is_local:
                return f"{backend}: {info.get('reason')}"
            # a board's venv has what `target setup` installed: the host's pip hint would be the wrong advice
            has = ", ".join(sorted(k for k, v in probed.items() if isinstance(v, dict) and v.get("available"))) or "none"
            return (f"{backend} is not installed on target {self.profile.name} (it has: {has}); to measure it there, add its extra to the "
                    f"profile's `extras` and run `edgebench target setup {self.profile.name}`")
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
        return await self._measure_until_quiet(job, spec)

    async def _measure_until_quiet(self, job: Any, spec: CellSpec) -> CellResult:
        """Measure the cell; while it comes out contended, measure it again, up to
        ``measure.remeasure_contended`` more times. Keeps the first uncontended attempt, else the least
        contended one (still flagged ``contended``), with every attempt's other-CPU share."""
        attempts: list[CellResult] = []
        for attempt in range(1 + spec.measure.remeasure_contended):
            if attempt:
                self._describe(job, f"re-measuring, attempt {attempt + 1} (contended)")
            result = await self._measure_once(job, spec, attempt)
            if result.status != "ok" or result.contention is None:
                return result  # a failure ends the cell; no meter, nothing to re-measure on
            attempts.append(result)
            if not result.contention.contended:
                break
        return remeasured(attempts)

    async def _measure_once(self, job: Any, spec: CellSpec, attempt: int = 0) -> CellResult:
        """One measurement of the cell: ``measure.processes`` workers, pooled."""
        n = max(1, spec.measure.processes)
        if n > 1:
            spec = dataclasses.replace(spec, measure=per_process(spec.measure))
        parts = []
        for i in range(n):
            # each attempt keeps its own spec/result files (cell-0003-a2-p1): nothing measured is overwritten
            name = f"cell-{job.index:04d}{self._resume_tag}" + (f"-a{attempt + 1}" if attempt else "") + (f"-p{i + 1}" if n > 1 else "")
            outcome = await self.transport.run_cell(_gated(spec, parts).to_json(), name, self.timeout_s)
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

    def _describe(self, job: Any, doing: str = "") -> None:
        if self._task is not None:
            self.runner.progress.update(self._task, description=f"{self.profile.name}: {job.cell.key}" + (f" ({doing})" if doing else ""))

    def _store(self, job: Any, result: CellResult, log: bool = True) -> None:
        record = job.record
        previous = self.runner.previous_errors.get(record.cell_key)
        if previous:
            record.facts = {**record.facts, "previous_attempt": previous}
        record.result = result if result.status != "skipped" else None
        record.status, record.error, record.finished_at = result.status, result.error, now()
        self.runner.save(record, self.summary, self.replace)
        if log:
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
        process_samples=[len(p.samples_ns) for p in parts],
        device_timing=(timing := _device_timing(parts, batch)),
        gpu_memory=max((p.gpu_memory for p in parts if p.gpu_memory is not None), key=lambda m: m.allocated_peak_mib, default=None),
        flags=_flags(parts, latency, settings, timing),
    )


def _device_timing(parts: list[CellResult], batch: int) -> DeviceTiming | None:
    """The processes' GPU time splits pooled like their samples (every phase's runs, re-summarised)."""
    timings = [p.device_timing for p in parts if p.device_timing is not None]
    if len(timings) != len(parts):
        return None
    phases = {k: [s for t in timings for s in t.samples_ns.get(k, [])] for k in timings[0].samples_ns}
    return worker.device_timing(phases, batch, timings[0].cuda_graph)


def _contention(parts: list[Contention]) -> Contention | None:
    """The worst process decides: a cell is contended if any of its processes was."""
    if not parts:
        return None
    others = [c.other_cpu_share for c in parts if c.other_cpu_share is not None]
    own = [c.own_cpu_share for c in parts if c.own_cpu_share is not None]
    steal = [c.steal_share for c in parts if c.steal_share is not None]
    gates = [c for c in parts if c.quiet is not None]
    return Contention(max(others) if others else None, sum(own) / len(own) if own else None, parts[0].logical_cpus,
                      any(c.contended for c in parts), max(steal) if steal else None,
                      quiet_wait_s=sum(c.quiet_wait_s or 0.0 for c in parts), quiet=all(c.quiet for c in gates) if gates else None)


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


def _flags(parts: list[CellResult], latency: LatencyStats, settings: MeasureSettings, timing: DeviceTiming | None = None) -> list[Flag]:
    """Each process's flags once, with the variance and launch-bound flags recomputed on the pooled
    samples and one ``contended`` flag for the processes that were."""
    out = list(dict.fromkeys(f for p in parts for f in p.flags if f.code not in ("high-variance", "contended", "launch-bound")))
    if high := variance_flag(latency, settings):
        out.insert(0, high)
    if launch := launch_flag(timing):
        out.append(launch)
    busy = [p.contention.other_cpu_share or 0.0 for p in parts if p.contention is not None and p.contention.contended]
    if busy:
        out.append(Flag("contended", f"contended: other processes used up to {max(busy):.0%} of the CPU while measuring "
                                     f"({len(busy)} of {len(parts)} worker processes)"))
    p50 = [p.latency.p50_ms for p in parts if p.latency is not None]
    if len(p50) > 1 and min(p50) > 0 and max(p50) / min(p50) > PROCESSES_DISAGREE:
        out.append(Flag("processes-disagree", f"processes disagree: per-process p50 {min(p50):.4g}-{max(p50):.4g} ms ({max(p50) / min(p50):.2f}x)"))
    return out


# -- a contended cell measured again (measure.remeasure_contended) ------------------------------

def _gated(spec: CellSpec, before: list[CellResult]) -> CellSpec:
    """The spec for the next worker process of an attempt: the quiet gate is skipped when the process
    just before it measured uncontended (the machine was quiet a moment ago; each look costs 0.2 s)."""
    last = before[-1].contention if before else None
    if last is None or last.contended or spec.measure.quiet_wait_s == 0:
        return spec
    return dataclasses.replace(spec, measure=dataclasses.replace(spec.measure, quiet_wait_s=0.0))


def remeasured(attempts: list[CellResult]) -> CellResult:
    """The result kept from a cell's attempts (all ``ok``, with contention): the first uncontended one,
    else the least contended; its contention records every attempt's other-CPU share."""
    quiet = [r for r in attempts if not r.contention.contended]
    kept = quiet[0] if quiet else min(attempts, key=lambda r: r.contention.other_cpu_share or 0.0)
    shares = [r.contention.other_cpu_share for r in attempts]
    kept.contention = dataclasses.replace(kept.contention, attempts=len(attempts), attempt_other_shares=shares)
    first = attempts[0].evidence
    if kept is not attempts[0] and first is not None and first.build is not None and kept.evidence is not None:
        # The device build happened in the first attempt; later ones found it cached. The cell's
        # record says how its artifact came to be on the device, so it keeps the first attempt's facts.
        kept.evidence = dataclasses.replace(kept.evidence, build=first.build)
    if not quiet and len(attempts) > 1:
        seen = ", ".join("?" if v is None else f"{v:.0%}" for v in shares)
        kept.flags = [Flag("contended", f"contended in all {len(attempts)} attempts (other processes used {seen} of the CPU); "
                                        "excluded from wins and regression verdicts") if f.code == "contended" else f for f in kept.flags]
    return kept
