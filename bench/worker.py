"""The cell worker: reads one cell spec (JSON), measures it, writes a CellResult (JSON).

Locally the harness starts it as a child process; on a board the same module is started over SSH.
It imports only numpy, psutil, the standard library and the one runtime the cell needs.

    python -m edgebench.bench.worker run CELL.json --out RESULT.json
    python -m edgebench.bench.worker build CELL.json [--out BUILD.json]
    python -m edgebench.bench.worker probe [--state] [--out FP.json]

``build`` runs the backend's device build step (if the cell has one) into the target's build cache
and prints what it built; ``run`` does the same first (a cache hit when ``build`` ran before), then
measures the built artifact.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends import base as backends
from edgebench.bench import device_build
from edgebench.bench.contracts.errors import one_line
from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.results import Accuracy, CellResult, Fidelity, MeasureSettings
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench.measure import ContentionMeter, MemorySampler, time_runs, usable_cpus
from edgebench.bench.stats import summarize, topk_accuracy
from edgebench.targets import probe
from edgebench.targets.monitor import DeviceMonitor, MonitorSettings, energy_per_inference_mj
from edgebench.targets.version import source_digest

__all__ = ["CellSpec", "accuracy_and_fidelity", "evaluate", "main", "run_cell"]


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
        # the device build stage, before anything is sampled: its time is not the cell's
        built = device_build.ensure(backend, spec)
        if built is not None:
            artifact = Path(built.path)
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

        result.evidence = _evidence(session, avail.version, prepared, built)
        result.warmup_runs, result.warmup_s = timed.warmup_runs, timed.warmup_s
        result.samples_ns = timed.samples_ns
        result.latency = summarize(timed.samples_ns, spec.batch)
        result.memory = sampler.stats()
        result.memory_timeline = sampler.timeline
        result.accuracy, result.fidelity = accuracy_and_fidelity(logits, labels, reference)
        if report is not None:
            result.device = report.to_dict()
            result.energy_mj_per_inference = energy_per_inference_mj(report, result.latency.mean_ms / 1000, spec.batch)
        result.flags = _flags(result, timed.stopped_by_cap, settings)
    except Exception as exc:  # one cell's failure is data, never the end of the run
        result = CellResult.failed(_one_line(exc), traceback=traceback.format_exc(limit=8))
    result.worker_wall_s = time.perf_counter() - started
    return result


def _evidence(session: Any, version: str | None, prepared: Any, built: Any) -> Evidence:
    """The session's evidence, with what the worker knows itself: the shape timed, the device build."""
    ev = session.evidence()
    ev.version = ev.version or version
    shape = getattr(prepared, "shape", None)
    if ev.input_shape is None and shape is not None:
        ev.input_shape = [int(d) for d in shape]
    ev.build = built.facts if built is not None else None
    return ev


def _monitor(spec: CellSpec) -> Any:
    if spec.monitor is None:
        return None
    return DeviceMonitor(MonitorSettings(**spec.monitor))


def _mark(monitor: Any, phase: str) -> None:
    if monitor is not None:
        monitor.mark(phase)


def _load(backend: Any, artifact: Path, spec: CellSpec) -> Any:
    options = {**spec.options, "batch": spec.batch}
    if options.get("threads") is None:  # a remote cell with no thread count uses every CPU the device gives it
        options["threads"] = usable_cpus()
    try:
        return backend.load(artifact, spec.precision, options)
    except Exception as exc:
        raise RuntimeError(f"{artifact}: {spec.backend} could not load it ({_one_line(exc)}); re-export it or check the file") from exc


def variance_flag(cov: float, settings: MeasureSettings) -> Flag | None:
    """``high-variance`` when the samples' CoV is above the suite's ``cov_warn``."""
    return Flag("high-variance", f"high variance: CoV {cov:.1%} > {settings.cov_warn:.0%}") if cov > settings.cov_warn else None


def _flags(result: CellResult, cap: str | None, settings: MeasureSettings) -> list[Flag]:
    out = []
    if result.latency is not None and (high := variance_flag(result.latency.cov, settings)):
        out.append(high)
    if cap:
        out.append(Flag("measurement-capped", f"measurement {cap}"))
    device = result.device or {}
    if device.get("throttled"):
        out.append(Flag("throttled", "throttled: " + "; ".join(device.get("throttle_reasons") or ["the device throttled"])))
    cool = device.get("cooldown") or {}
    if cool.get("reached") is False:
        out.append(Flag("cooldown-not-reached", f"cool-down: still {cool.get('end_c')} C after {cool.get('waited_s', 0):.0f} s (limit {cool.get('limit_c')} C)"))
    c = result.contention
    if c is not None and c.contended:
        stolen = f" ({c.steal_share:.0%} stolen by the hypervisor)" if c.steal_share else ""
        out.append(Flag("contended", f"contended: other processes used {c.other_cpu_share:.0%} of the CPU while measuring{stolen}"))
    return out


def _build_command(spec: CellSpec) -> dict[str, Any]:
    try:
        backend = backends.get(spec.backend)
        avail = backend.availability()
        if not avail.available:
            return {"built": False, "error": f"{spec.backend}: {avail.reason}"}
        return device_build.build_payload(backend, spec)
    except Exception as exc:  # the reason goes back as data, like a cell's failure
        return {"built": False, "error": _one_line(exc)}


def _one_line(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError) or not str(exc) else exc)


def probe_payload(state_only: bool = False) -> dict[str, Any]:
    """The fingerprint with the device's state now and the edgebench source digest (targets/version.py)."""
    if state_only:
        return probe.device_state()
    return {**probe.fingerprint(), "edgebench_source": source_digest(), "device_state": probe.device_state()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgebench-worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure one cell")
    run.add_argument("spec", type=Path)
    run.add_argument("--out", type=Path, help="where to write the result JSON (default: stdout)")
    build = sub.add_parser("build", help="run the cell's device build step into the target's build cache")
    build.add_argument("spec", type=Path)
    build.add_argument("--out", type=Path, help="where to write the build facts JSON (default: stdout)")
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
        payload = run_cell(spec).to_dict() if args.command == "run" else _build_command(spec)
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
