"""The cell worker: reads one cell spec (JSON), measures it, writes a CellResult (JSON).

Locally the harness starts it as a child process; on a board the same module is started over SSH.
It imports only numpy, psutil, the standard library and the one runtime the cell needs.

    python -m edgebench.bench.worker run CELL.json --out RESULT.json
    python -m edgebench.bench.worker probe [--state] [--out FP.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.bench.results import Accuracy, CellResult, Fidelity, MeasureSettings


@dataclass
class CellSpec:
    """What the worker needs to measure one cell; every path is local to the machine it runs on."""

    cell_key: str
    backend: str
    precision: str
    artifact: str
    batch: int
    eval_data: str
    options: dict[str, Any] = field(default_factory=dict)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    monitor: dict[str, Any] | None = None  # targets.samplers.MonitorSettings as data; None: no device monitor

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CellSpec:
        data = json.loads(text)
        data["measure"] = MeasureSettings(**data.get("measure", {}))
        return cls(**data)


def _batches(inputs: np.ndarray, batch: int):
    """Yield (padded batch, real count); the last batch is padded so static-shape runtimes work too."""
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        real = len(chunk)
        if real < batch:
            pad = np.repeat(chunk[-1:], batch - real, axis=0)
            chunk = np.concatenate([chunk, pad])
        yield np.ascontiguousarray(chunk), real


def evaluate(session: Any, inputs: np.ndarray, batch: int) -> np.ndarray:
    """Logits for every evaluation input, run at the cell's batch size."""
    outs = [session.run(chunk)[:real] for chunk, real in _batches(inputs, batch)]
    return np.concatenate(outs).astype(np.float64)


def accuracy_and_fidelity(logits: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None) -> tuple[Accuracy | None, Fidelity | None]:
    from edgebench.bench.stats import topk_accuracy

    classes = logits.shape[1]
    acc = None
    if labels is not None:
        acc = Accuracy(n=int(len(labels)), top1=topk_accuracy(logits, labels, 1), top5=topk_accuracy(logits, labels, 5) if classes > 5 else None)
    if reference is None:
        return acc, None
    diff = np.abs(logits - reference)
    fid = Fidelity(
        top1_agreement=float(np.mean(logits.argmax(1) == reference.argmax(1))),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
    )
    return acc, fid


def run_cell(spec: CellSpec) -> CellResult:
    """Measure one cell in this process. Exceptions become a failed result with the reason."""
    from edgebench.backends import base as backends
    from edgebench.bench.measure import ContentionMeter, MemorySampler, time_runs
    from edgebench.bench.stats import summarize

    started = time.perf_counter()
    settings = spec.measure
    try:
        backend = backends.get(spec.backend)
        avail = backend.availability()  # imports the runtime, so the memory baseline includes it
        if not avail.available:
            return CellResult.failed(f"{spec.backend}: {avail.reason}")
        artifact = Path(spec.artifact)
        if not artifact.exists():
            return CellResult.failed(f"{artifact}: artifact not found; rebuild it with `edgebench run` on the host")
        data = np.load(spec.eval_data)
        inputs = np.ascontiguousarray(data["inputs"], dtype=np.float32)
        labels = data["labels"] if "labels" in data.files else None  # latency-only models have none
        reference = data["reference_logits"] if "reference_logits" in data.files else None

        monitor = _monitor(spec)
        if monitor:
            monitor.cooldown()  # kept in the report it makes
            monitor.start()  # samples idle_s of idle device first: the baseline energy subtracts
        sampler = MemorySampler(settings.rss_interval_s, settings.uss_interval_s).start()
        result = CellResult(status="ok")
        try:
            _mark(monitor, "load")
            t0 = time.perf_counter()
            session = _load(backend, artifact, spec)
            result.load_s = time.perf_counter() - t0
            sample = np.ascontiguousarray(next(_batches(inputs, spec.batch))[0])
            # The input is put into the runtime's own layout/dtype once, outside the timed loop
            # (as benchmark_model and trtexec do); accuracy below goes through the full path.
            prepared = session.prepare_input(sample)
            t0 = time.perf_counter()
            session.run_prepared(prepared)
            result.first_inference_s = time.perf_counter() - t0

            meter = ContentionMeter(settings.contention_threshold)
            _mark(monitor, "measure")
            meter.start()
            timed = time_runs(lambda: session.run_prepared(prepared), settings)
            result.contention = meter.stop()
            _mark(monitor, "evaluate")
            logits = evaluate(session, inputs, spec.batch)
        finally:
            sampler.stop()
            report = monitor.stop() if monitor else None

        result.backend_info = {"version": avail.version, **session.describe()}
        result.warmup_runs, result.warmup_s = timed.warmup_runs, timed.warmup_s
        result.samples_ns = timed.samples_ns
        result.latency = summarize(timed.samples_ns, spec.batch)
        result.memory = sampler.stats()
        result.memory_timeline = sampler.timeline
        result.accuracy, result.fidelity = accuracy_and_fidelity(logits, labels, reference)
        if report is not None:
            from edgebench.targets.samplers import energy_per_inference_mj

            result.device = report.to_dict()
            result.energy_mj_per_inference = energy_per_inference_mj(report, result.latency.mean_ms / 1000, spec.batch)
        result.warnings = _warnings(result, timed.stopped_by_cap, settings)
    except Exception as exc:  # one cell's failure is data, never the end of the run
        result = CellResult.failed(_one_line(exc), backend_info={"traceback": traceback.format_exc(limit=8)})
    result.worker_wall_s = time.perf_counter() - started
    return result


def _monitor(spec: CellSpec) -> Any:
    if spec.monitor is None:
        return None
    from edgebench.targets.samplers import DeviceMonitor, MonitorSettings

    return DeviceMonitor(MonitorSettings(**spec.monitor))


def _mark(monitor: Any, phase: str) -> None:
    if monitor is not None:
        monitor.mark(phase)


def _load(backend: Any, artifact: Path, spec: CellSpec) -> Any:
    options = {**spec.options, "batch": spec.batch}
    if options.get("threads") is None:  # a remote cell with no thread count uses every CPU the device gives it
        from edgebench.bench.measure import usable_cpus

        options["threads"] = usable_cpus()
    try:
        return backend.load(artifact, spec.precision, options)
    except Exception as exc:
        raise RuntimeError(f"{artifact}: {spec.backend} could not load it ({_one_line(exc)}); re-export it or check the file") from exc


def variance_warning(cov: float, settings: MeasureSettings) -> str | None:
    """``high variance`` when the samples' CoV is above the suite's ``cov_warn``."""
    return f"high variance: CoV {cov:.1%} > {settings.cov_warn:.0%}" if cov > settings.cov_warn else None


def _warnings(result: CellResult, cap: str | None, settings: MeasureSettings) -> list[str]:
    out = []
    if result.latency is not None and (high := variance_warning(result.latency.cov, settings)):
        out.append(high)
    if cap:
        out.append(f"measurement {cap}")
    device = result.device or {}
    if device.get("throttled"):
        out.append("throttled: " + "; ".join(device.get("throttle_reasons") or ["the device throttled"]))
    cool = device.get("cooldown") or {}
    if cool.get("reached") is False:
        out.append(f"cool-down: still {cool.get('end_c')} C after {cool.get('waited_s', 0):.0f} s (limit {cool.get('limit_c')} C)")
    c = result.contention
    if c is not None and c.contended:
        stolen = f" ({c.steal_share:.0%} stolen by the hypervisor)" if c.steal_share else ""
        out.append(f"contended: other processes used {c.other_cpu_share:.0%} of the CPU while measuring{stolen}")
    return out


def _one_line(exc: BaseException) -> str:
    from edgebench.bench.errors import one_line

    return one_line(f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError) or not str(exc) else exc)


def probe_payload(state_only: bool = False) -> dict[str, Any]:
    """The fingerprint with the device's state now and the edgebench source digest (targets/version.py)."""
    from edgebench.targets import probe
    from edgebench.targets.version import source_digest

    if state_only:
        return probe.device_state()
    return {**probe.fingerprint(), "edgebench_source": source_digest(), "device_state": probe.device_state()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgebench-worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure one cell")
    run.add_argument("spec", type=Path)
    run.add_argument("--out", type=Path, help="where to write the result JSON (default: stdout)")
    probe = sub.add_parser("probe", help="print this machine's environment fingerprint")
    probe.add_argument("--state", action="store_true", help="only the device state now (temperatures, clocks, throttling)")
    probe.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    if args.command == "probe":
        payload: dict[str, Any] = probe_payload(args.state)
    else:
        try:
            spec = CellSpec.from_json(args.spec.read_text())
        except (OSError, ValueError, TypeError) as exc:
            print(f"{args.spec}: not a valid cell spec ({_one_line(exc)})", file=sys.stderr)
            return 2
        payload = run_cell(spec).to_dict()
    text = json.dumps(payload)
    if args.out:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
