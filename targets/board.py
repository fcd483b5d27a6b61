"""One target's share of a run: connect, probe, check versions, then measure its cells one at a time.

A lost connection fails the cell it happened in; the next cell reconnects. A target that stays
unreachable fails its remaining cells at once with the reason, and ``edgebench run --resume RUN_ID``
runs them later. Finished cells are in the store as soon as they finish.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from edgebench.bench.processes import per_process, pool
from edgebench.bench.results import CellResult
from edgebench.bench.store import now
from edgebench.targets.profiles import TargetProfile
from edgebench.targets.transport import Bundle, TargetUnreachable, artifact_bundle, make_transport
from edgebench.targets.version import source_digest

# After this many cells in a row could not reach the target, the rest are failed without trying.
GIVE_UP_AFTER = 2
RECONNECT_POLL_S = 5.0


def version_mismatch(profile: TargetProfile, device_fp: dict[str, Any]) -> str | None:
    """A one-line error when the device's edgebench differs from the host's, else None."""
    from edgebench.bench import __version__

    host = (__version__, source_digest())
    device = (device_fp.get("edgebench_version"), device_fp.get("edgebench_source"))
    if host == device:
        return None
    return (f"edgebench on target {profile.name} is {device[0]} (source {device[1]}), the host's is {host[0]} (source {host[1]}); "
            f"run `edgebench target setup {profile.name}` to install the host's version there")


class Board:
    def __init__(self, runner: Any, profile: TargetProfile, jobs: list[Any], timeout_s: float, summary: Any, replace: bool) -> None:
        self.runner = runner
        self.profile = profile
        self.jobs = jobs
        self.timeout_s = timeout_s
        self.summary = summary
        self.replace = replace
        self.run_id = runner.run_id
        self.transport = make_transport(profile, self.run_id, runner.paths.cells_dir(self.run_id), runner._pythonpath)
        self.fingerprint: dict[str, Any] = {}
        self._unreachable = 0
        self._last_reason = ""
        self._task = runner.progress.add_task(f"{profile.name}", total=len(jobs)) if runner.progress else None

    # -- the board's whole share ---------------------------------------------------------
    async def run(self) -> None:
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
        info = (self.fingerprint.get("backends") or {}).get(backend)
        if not self.profile.is_local and info is not None and not info.get("available"):
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

    async def _device_spec(self, job: Any) -> Any:
        """The job's spec with the device's paths (files copied once per content hash) and the profile's monitor."""
        spec = job.spec
        artifact, eval_data = Path(spec.artifact), Path(spec.eval_data)
        art_dir = await self.transport.place(artifact_bundle(artifact))
        eval_dir = await self.transport.place(Bundle([eval_data]))
        return dataclasses.replace(spec, artifact=f"{art_dir}/{artifact.name}", eval_data=f"{eval_dir}/{eval_data.name}",
                                   monitor=self.profile.monitor_settings())

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
