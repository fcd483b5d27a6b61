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
from edgebench.backends._model_files import ModelFileError
from edgebench.bench import device_build
from edgebench.bench.contracts.errors import one_line
from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.flags import Flag
from edgebench.bench.contracts.results import Accuracy, CellResult, DeviceTiming, Fidelity, LatencyStats, MeasureSettings
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench.measure import ContentionMeter, MemorySampler, time_runs, usable_cpus, wait_for_quiet
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


def nonfinite(values: Any) -> int:
    """How many of a runtime's output values are NaN or Inf (0 for outputs that are not numeric arrays)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def accuracy_and_fidelity(logits: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None,
                          reference_name: str = "", independent: bool = True) -> tuple[Accuracy | None, Fidelity | None]:
    """Top-1/top-5 against ``labels`` and agreement with ``reference`` (named ``reference_name``).

    Non-finite logits give neither (the caller flags ``nan-outputs``): a NaN row's argmax is an index
    like any other, so a top-1 or an agreement computed from it would pass as a real number."""
    classes = logits.shape[1]
    if nonfinite(logits):
        return None, None
    acc = None
    if labels is not None:
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(f"the evaluation labels are {labels.min()}..{labels.max()} but the model has {classes} outputs; "
                             "use a dataset whose labels are 0..outputs-1 (or a model with one output per class)")
        acc = Accuracy(n=int(len(labels)), top1=topk_accuracy(logits, labels, 1), top5=topk_accuracy(logits, labels, 5) if classes > 5 else None)
    if reference is None or nonfinite(reference):
        return acc, None
    diff = np.abs(logits - reference)
    fid = Fidelity(
        top1_agreement=float(np.mean(logits.argmax(1) == reference.argmax(1))),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        reference=reference_name,
        independent=independent,
    )
    return acc, fid


def nan_flag(evaluated: int, timed: int, total: int) -> Flag | None:
    """``nan-outputs`` with the counts of non-finite values, in evaluation and in the timed run's output."""
    if not evaluated and not timed:
        return None
    where = [f"{evaluated} of {total} evaluation output values"] if evaluated else []
    where += [f"{timed} in the timed run's output"] if timed else []
    return Flag("nan-outputs", f"nan outputs: {' and '.join(where)} are NaN/Inf; accuracy and fidelity are not valid")


def reference_of(data: Any, spec: CellSpec) -> tuple[str, bool]:
    """The eval file's name for its reference logits and whether they are independent of this cell.

    Not independent: the reference is the cell's own given file (``reference_given``) run by the same
    backend at fp32, i.e. the same file on the same runtime compared with itself."""
    files = set(data.files)
    name = str(data["reference_name"]) if "reference_name" in files else ""
    ref_backend = str(data["reference_backend"]) if "reference_backend" in files else ""
    given = bool(data["reference_given"]) if "reference_given" in files else False
    same = given and ref_backend == spec.backend and spec.precision == "fp32"
    return name, not same


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
            first_out = session.run_prepared(prepared)
            result.first_inference_s = time.perf_counter() - t0
            timed_nonfinite = nonfinite(first_out)  # the timed loop runs this same input: its output, checked once

            meter = ContentionMeter(settings.contention_threshold)
            # the quiet gate: here, on the target, right before timing (bounded by quiet_wait_s)
            gate = wait_for_quiet(settings.contention_threshold, settings.quiet_wait_s)
            _mark(monitor, "measure")
            meter.start()
            if session.own_clock:  # a GPU session: CUDA events time the work, not the host's view of a launch
                timed = time_runs(lambda: session.run_timed(prepared), settings, self_timed=True)
            else:
                timed = time_runs(lambda: session.run_prepared(prepared), settings)
            result.contention = meter.stop()
            result.contention.quiet_wait_s, result.contention.quiet = gate.waited_s, gate.quiet
            _mark(monitor, "evaluate")
            logits = evaluate(session, inputs, spec.batch)
        finally:
            sampler.stop()
            report = monitor.stop() if monitor else None

        result.evidence = _evidence(session, avail.version, prepared, built)
        result.warmup_runs, result.warmup_s = timed.warmup_runs, timed.warmup_s
        result.samples_ns = timed.samples_ns
        result.latency = summarize(timed.samples_ns, spec.batch)
        result.device_timing = device_timing(session.phase_samples(len(timed.samples_ns)), spec.batch, bool(getattr(session, "cuda_graph", False)))
        result.gpu_memory = session.gpu_memory()
        result.memory = sampler.stats()
        result.memory_timeline = sampler.timeline
        result.accuracy, result.fidelity = accuracy_and_fidelity(logits, labels, reference, *reference_of(data, spec))
        if report is not None:
            result.device = report.to_dict()
            result.energy_mj_per_inference = energy_per_inference_mj(report, result.latency.mean_ms / 1000, spec.batch)
        result.flags = _flags(result, timed.stopped_by_cap, settings)
        if bad := nan_flag(nonfinite(logits), timed_nonfinite, int(logits.size)):
            result.flags.append(bad)  # accuracy None with this flag: failed, never ranked (not latency-only)
    except Exception as exc:  # one cell's failure is data, never the end of the run
        result = CellResult.failed(_one_line(exc), traceback=traceback.format_exc(limit=8))
        traceback.print_exc(file=sys.stderr)  # whole, into the cell's stderr file: the failure may be in the user's code
    result.worker_wall_s = time.perf_counter() - started
    return result


def device_timing(phases: dict[str, list[int]], batch: int, cuda_graph: bool = False) -> DeviceTiming | None:
    """The time split of a GPU session's timed runs (contracts/results.py ``DeviceTiming``), or None."""
    if not phases or not all(phases.values()):
        return None
    return DeviceTiming(clock="cuda-events", samples_ns=phases, phases={k: summarize(v, batch) for k, v in phases.items()},
                        cuda_graph=cuda_graph)


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
    except ModelFileError as exc:  # the backend named the cause (not a model file, an unknown op) and the fix
        raise RuntimeError(f"{artifact}: {exc.reason}") from exc
    except Exception as exc:
        raise RuntimeError(f"{artifact}: {spec.backend} could not load it ({_one_line(exc)}); re-export it or check the file") from exc


def variance_flag(latency: LatencyStats, settings: MeasureSettings) -> Flag | None:
    """``high-variance`` when IQR/median is above the suite's ``dispersion_warn``, or the CoV above its
    ``cov_warn`` where a suite sets one. The text carries both ratios and the outlier counts."""
    ratio = latency.iqr_ratio
    robust = ratio is not None and ratio > settings.dispersion_warn
    by_cov = settings.cov_warn > 0 and latency.cov > settings.cov_warn
    if not (robust or by_cov):
        return None
    if robust:
        why, also = f"IQR/median {ratio:.1%} > {settings.dispersion_warn:.0%}", f"CoV {latency.cov:.1%}"
    else:
        why, also = f"CoV {latency.cov:.1%} > cov_warn {settings.cov_warn:.0%}", f"IQR/median {ratio:.1%}" if ratio is not None else ""
    outliers = (f"outliers: {latency.stddev_outliers} beyond 1 std, {latency.iqr_outliers} beyond 1.5 IQR"
                if latency.outliers is not None else "")
    return Flag("high-variance", f"high variance: {why}" + (f" ({'; '.join(p for p in (also, outliers) if p)})" if also or outliers else ""))


def launch_flag(timing: DeviceTiming | None) -> Flag | None:
    """``launch-bound`` when launching the work took the host about as long as the GPU took to run it."""
    if timing is None or not timing.launch_bound:
        return None
    enq, comp = timing.phases["enqueue"].p50_ms, timing.phases["compute"].p50_ms
    return Flag("launch-bound", f"launch-bound: enqueue {enq:.3f} ms vs GPU compute {comp:.3f} ms (median): the GPU waits on the CPU's "
                                "launches; try cuda_graph or compile, or a larger batch")


def _flags(result: CellResult, cap: str | None, settings: MeasureSettings) -> list[Flag]:
    out = []
    if result.latency is not None and (high := variance_flag(result.latency, settings)):
        out.append(high)
    if cap:
        out.append(Flag("measurement-capped", f"measurement {cap}"))
    if (launch := launch_flag(result.device_timing)) is not None:
        out.append(launch)
    device = result.device or {}
    if device.get("throttled"):
        out.append(Flag("throttled", "throttled: " + "; ".join(device.get("throttle_reasons") or ["the device throttled"])))
    cool = device.get("cooldown") or {}
    if cool.get("reached") is False:
        out.append(Flag("cooldown-not-reached", f"cool-down: still {cool.get('end_c')} C after {cool.get('waited_s', 0):.0f} s (limit {cool.get('limit_c')} C)"))
    c = result.contention
    if c is not None and c.contended:
        stolen = f" ({c.steal_share:.0%} stolen by the hypervisor)" if c.steal_share else ""
        gate = f" (not quiet after waiting {c.quiet_wait_s:.1f} s)" if c.quiet is False else ""
        out.append(Flag("contended", f"contended: other processes used {c.other_cpu_share:.0%} of the CPU while measuring{stolen}{gate}"))
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
