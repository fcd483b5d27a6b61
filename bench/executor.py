"""``edgebench run --executor ray``: the host's prepare steps as Ray tasks.

The prepare pipeline (bench/prepare.py) is a graph: one dense training per model, one pruning and
fine-tuning per (model, recipe), one export per (model, recipe, backend, precision, export options),
an int8 export needing its fp32 artifact (its reference). :func:`plan` derives that graph from a run's
cells with the same calls ``Runner._prepare`` makes; :func:`prepare_on_ray` submits each step as a Ray
task whose arguments are the ObjectRefs of the steps it needs, so independent steps run in parallel.

Each task builds a :class:`Preparer` over the *same cache root* and calls the same method; what it
builds goes through the content-hash cache on a shared filesystem, not Ray's object store: artifacts
are files that the boards get copied (the object store would hold a second copy of every model and
export), the object store vanishes with the cluster while the cache must outlive it (the next run's
hits), and a cache directory on NFS is what a team already has. Every node therefore sees the cache
at the same absolute path and has the same edgebench installed. Tasks return only small
:class:`StepResult` records: the cache entry (hit or built) or the step's error, its counters and
its log lines. The driver seeds its own Preparer with them, so the in-process pass that follows is all
lookups; a step that failed fails its cells with the same error and is not retried (the
``Preparer._once`` rule), the exception's type kept (``NotApplicable``: skipped, others: failed).
"""

from __future__ import annotations

import contextlib
import copyreg
import json
import logging
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgebench.backends import base as backends
from edgebench.bench.config import Cell
from edgebench.bench.contracts.errors import ConfigError, one_line
from edgebench.bench.contracts.files import CannotWrite
from edgebench.bench.prepare import Counters, Preparer
from edgebench.models.cache import Cache, Entry

EXECUTORS = ("inprocess", "ray")
INSTALL_HINT = "pip install 'edgebench[fleet]'"

Key = tuple[Any, ...]  # a Preparer._once key: ("dense", model) / ("pruned", ...) / ("artifact", ...)


@dataclass(frozen=True)
class Step:
    """One prepare step: which Preparer method with which arguments, and the steps it needs."""

    key: Key
    model: str
    recipe: Any = None  # a models.recipes.Recipe (pruned and artifact steps)
    backend: str | None = None
    precision: str | None = None
    options: tuple[tuple[str, Any], ...] = ()  # the backend's export options, sorted
    needs: tuple[Key, ...] = ()  # keys whose results the method will ask for (seeded on the worker)
    threads: int = 1  # torch intra-op threads the in-process run would have used for this step

    @property
    def kind(self) -> str:
        return self.key[0]

    @property
    def what(self) -> str:
        """The step in words, for errors: ``artifact small_cnn dense onnxruntime int8``."""
        parts = [self.kind, self.model, getattr(self.recipe, "name", None), self.backend, self.precision]
        return " ".join(p for p in parts if p)


@dataclass
class Plan:
    """The steps in the order the in-process run would take them, and the keys answered by another
    step's result (the dense recipe's "pruned" model is the dense model itself)."""

    steps: list[Step] = field(default_factory=list)
    aliases: dict[Key, Key] = field(default_factory=dict)


@dataclass
class StepResult:
    """What a task sends back: the step's cache entry or its error, what it counted and logged."""

    key: Key
    entry: Entry | None
    error: Exception | None
    counters: Counters = field(default_factory=Counters)
    log: list[str] = field(default_factory=list)
    seconds: float = 0.0


# -- the keys: the same tuples Preparer.dense / pruned / artifact give _once ---------------------------
def dense_key(model: str) -> Key:
    return ("dense", model)


def pruned_key(model: str, recipe: Any) -> Key:
    return ("pruned", model, recipe.model_dump_json())


def artifact_key(model: str, recipe: Any, backend: str, precision: str, options: dict[str, Any]) -> Key:
    return ("artifact", model, recipe.model_dump_json(), backend, precision, json.dumps(dict(sorted(options.items()))))


def check_executor(name: str) -> None:
    """Refuse an unknown executor, or ``ray`` where Ray is not installed: one line (exit 2)."""
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r}: unknown executor; use one of {', '.join(EXECUTORS)}")
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(f"--executor ray: Ray is not installed in this environment; {INSTALL_HINT}") from None


# -- planning --------------------------------------------------------------------------------------
def plan(cells: list[Cell], preparer: Preparer, threads: int) -> Plan:
    """The step graph of ``cells``: the calls ``Runner._prepare`` makes, each step once.

    ``threads`` is torch's intra-op thread count in the driver: every in-process step trains and exports
    on it (artifact_checks gives it back after each check). Training on 1 and on 2 threads is not
    bit-identical (different reduction orders) and a Ray worker starts with 1, so each task sets the
    driver's count: the same files come out either way (on the same kind of CPU).
    """
    out, seen = Plan(), set()

    def add(step: Step) -> None:
        if step.key in seen or step.key in out.aliases:
            return
        seen.add(step.key)
        out.steps.append(replace(step, threads=threads))

    for cell in cells:
        if _skipped_before_prepare(cell, preparer):
            continue
        d = dense_key(cell.model)
        add(Step(d, cell.model))
        p = pruned_key(cell.model, cell.recipe)
        if cell.recipe.method == "dense":
            out.aliases[p] = d
        else:
            add(Step(p, cell.model, cell.recipe, needs=(d,)))
        backend = backends.get(cell.backend)
        options = {k: v for k, v in cell.options.items() if k in backend.export_options}
        needs = (p, d)
        if cell.precision != "fp32":  # _artifact builds its reference, the fp32 artifact, first
            ref = artifact_key(cell.model, cell.recipe, cell.backend, "fp32", options)
            add(Step(ref, cell.model, cell.recipe, cell.backend, "fp32", tuple(sorted(options.items())), needs))
            needs = (p, d, ref)
        key = artifact_key(cell.model, cell.recipe, cell.backend, cell.precision, options)
        add(Step(key, cell.model, cell.recipe, cell.backend, cell.precision, tuple(sorted(options.items())), needs))
    return out


def _skipped_before_prepare(cell: Cell, preparer: Preparer) -> bool:
    """Runner._prepare's checks before it calls the Preparer: such a cell needs no step."""
    backend = backends.get(cell.backend)
    if backend.unsupported(cell.precision) is not None:
        return True
    avail = backend.export_availability() if preparer.spec(cell.model).given() is None else None
    return avail is not None and not avail.available


# -- the task (runs on a Ray worker) ---------------------------------------------------------------
def run_step(step: Step, cache_root: str, models: dict[str, Any], pythonpath: list[str], *upstream: StepResult) -> StepResult:
    """Build one step with a fresh Preparer over the shared cache, its inputs seeded from ``upstream``
    (one result per ``step.needs``, an error too: the method then raises it as in-process)."""
    import torch

    for folder in pythonpath:  # user factories beside the suite, as the driver imports them
        if folder not in sys.path:
            sys.path.append(folder)
    # A Ray worker starts torch on 1 thread (OMP_NUM_THREADS=1) and runs many tasks: set the driver's count every time.
    torch.set_num_threads(step.threads)
    lines: list[str] = []
    prep = Preparer(Cache(Path(cache_root)), log=lines.append, models=models)
    for key, result in zip(step.needs, upstream):
        prep._done[key] = result.entry if result.error is None else result.error  # type: ignore[assignment]
    t0 = time.perf_counter()
    try:
        entry, error = _call(prep, step), None
    except Exception as exc:
        entry, error = None, portable(exc)
    return StepResult(step.key, entry, error, prep.counters, lines, time.perf_counter() - t0)


def _call(prep: Preparer, step: Step) -> Entry:
    if step.kind == "dense":
        return prep.dense(step.model)
    if step.kind == "pruned":
        return prep.pruned(step.model, step.recipe)
    return prep.artifact(step.model, step.recipe, step.backend, step.precision, dict(step.options))


class RemoteStepError(Exception):
    """Stands for a step's exception that cannot be pickled back to the driver; it keeps the original
    class name (the cell's failure text names it) and message."""


_STAND_INS: dict[str, type[RemoteStepError]] = {}


def _stand_in(type_name: str, message: str) -> RemoteStepError:
    if type_name not in _STAND_INS:
        _STAND_INS[type_name] = type(type_name, (RemoteStepError,), {"__reduce__": lambda self: (_stand_in, (type_name, str(self)))})
    return _STAND_INS[type_name](message)


def portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling (NotApplicable, ConfigError, OSError...), else a stand-in with
    its class name and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return _stand_in(type(exc).__name__, str(exc))


# CannotWrite's __init__ takes (path, reason), not its message: pickle it by those.
copyreg.pickle(CannotWrite, lambda e: (CannotWrite, (e.path, e.reason)))


# -- the driver ------------------------------------------------------------------------------------
def prepare_elsewhere(executor: str, cells: list[Cell], preparer: Preparer, address: str | None = None,
                      pythonpath: list[str] | None = None, log: Callable[[str], None] | None = None, progress: Any = None) -> None:
    """Runner._prepare_all's hook for an executor other than ``inprocess``: refuse an unknown one
    (one line, exit 2), else run the steps there so the in-process pass only looks them up."""
    check_executor(executor)
    if executor == "ray":
        prepare_on_ray(cells, preparer, address, pythonpath, log, progress)


def prepare_on_ray(cells: list[Cell], preparer: Preparer, address: str | None = None, pythonpath: list[str] | None = None,
                   log: Callable[[str], None] | None = None, progress: Any = None, num_cpus: int | None = None) -> Plan:
    """Run the prepare steps of ``cells`` as Ray tasks and seed ``preparer`` with their outcomes and
    counters. ``address``: an existing cluster (``auto``, ``ray://...``); None starts a local instance
    (``num_cpus``: its size), which is shut down afterwards (also on Ctrl-C, which cancels the tasks).
    ``log`` (default: the preparer's) gets the steps' lines as they finish."""
    check_executor("ray")
    log = log or preparer.log
    import ray
    import torch

    steps = plan(cells, preparer, torch.get_num_threads())
    if not steps.steps:  # every cell is skipped before preparing (or a resumed run has none left): no cluster needed
        return steps
    with _session(ray, address, num_cpus, log):
        _run(ray, steps, preparer, pythonpath or [], log, progress)
    return steps


@contextlib.contextmanager
def _session(ray: Any, address: str | None, num_cpus: int | None, log: Callable[[str], None]) -> Iterator[None]:
    """Ray for the ``with`` body: the running instance, else one started here (``address``: a cluster to
    connect to) and shut down after it: a local instance would otherwise idle beside the cells being timed."""
    started = not ray.is_initialized()
    if started:
        _start(ray, address, num_cpus, log)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _cpus_for(ray: Any, threads: int) -> int:
    """Ray CPUs a task training on ``threads`` torch threads reserves: that many, capped at the largest node so
    it is never unschedulable. Reserving one would let two 2-thread tasks share a 2-CPU node on 4 threads, each
    at half speed (measured: the prepare took 2x the in-process time)."""
    largest = max((n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")), default=1)
    return int(max(1, min(threads, largest)))


def _start(ray: Any, address: str | None, num_cpus: int | None, log: Callable[[str], None]) -> None:
    t0 = time.perf_counter()
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)  # a local instance: its start-up notes are noise
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"--ray-address {address}: cannot connect to a Ray cluster there ({one_line(exc, 200)}); start one (ray start --head) or omit --ray-address") from None
    cpus = int(ray.cluster_resources().get("CPU", 0))
    log(f"ray: {'connected to ' + address if address else 'started a local instance'} ({cpus} CPUs) in {time.perf_counter() - t0:.1f}s")


def _run(ray: Any, steps: Plan, preparer: Preparer, pythonpath: list[str], log: Callable[[str], None], progress: Any) -> None:
    task = ray.remote(max_retries=1)(run_step)  # retried once only if its node is lost, never for an error
    root = str(Path(preparer.cache.root).resolve())
    models_ref = ray.put(dict(preparer.models))
    refs: dict[Key, Any] = {}
    by_ref: dict[Any, Step] = {}
    for step in steps.steps:
        needs = [refs[steps.aliases.get(k, k)] for k in step.needs]
        refs[step.key] = task.options(num_cpus=_cpus_for(ray, step.threads)).remote(step, root, models_ref, pythonpath, *needs)
        by_ref[refs[step.key]] = step
    for alias, target in steps.aliases.items():
        refs[alias] = refs[target]
    bar = progress.add_task("preparing (ray)", total=len(steps.steps)) if progress else None
    t0 = time.perf_counter()
    pending = list(by_ref)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                _seed(preparer, _result(ray, ref, by_ref[ref]), log)
                if progress:
                    progress.advance(bar)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if progress:
            progress.remove_task(bar)
    for alias, target in steps.aliases.items():
        preparer._done[alias] = preparer._done[target]
    log(f"ray: {len(steps.steps)} prepare steps in {time.perf_counter() - t0:.1f}s")


def _result(ray: Any, ref: Any, step: Step) -> StepResult:
    """The task's result; a task Ray could not run (its worker died, its node was lost) fails its step."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        return StepResult(step.key, None, RuntimeError(f"the Ray task for {step.what} did not finish ({one_line(exc, 300)})"))


def _seed(preparer: Preparer, result: StepResult, log: Callable[[str], None]) -> None:
    """The driver's Preparer takes the step as done (Preparer._once's table), counted and logged as in-process."""
    preparer._done[result.key] = result.entry if result.error is None else result.error  # type: ignore[assignment]
    for f in fields(Counters):
        setattr(preparer.counters, f.name, getattr(preparer.counters, f.name) + getattr(result.counters, f.name))
    for line in result.log:
        log(line)


# -- edgebench fit / sensitivity: the sensitivity of each channel group (or layer) as its own task -----
def group_sensitivity(module: Any, example: Any, groups: list[Any], candidates: dict[str, list[int]], x: Any, y: Any,
                      recalib_x: Any, threads: int, options: dict[str, Any] | None = None) -> list[Any]:
    """One task's share of ``models.fit.sensitivity`` (``options`` None) or of ``models.fit.scores``
    with ``options`` (kind, importance, eval split): the same call for some of the units. It seeds
    torch itself and each (unit, width) works on its own copy of the dense model, so a unit's rows
    do not depend on which units came before it; the driver's thread count keeps the bits the same."""
    import torch

    from edgebench.models import fit as fitlib

    torch.set_num_threads(threads)
    if options is None:
        return fitlib.sensitivity(module, example, groups, candidates, x, y, recalib_x=recalib_x)
    return fitlib.scores(module, example, groups, candidates, x, y, recalib_x=recalib_x, **options)


def sensitivity_on_ray(module: Any, example: Any, groups: list[Any], candidates: dict[str, list[int]], x: Any, y: Any,
                       recalib_x: Any = None, address: str | None = None, log: Callable[[str], None] = print,
                       options: dict[str, Any] | None = None) -> list[Any]:
    """``models.fit.sensitivity`` (or ``models.fit.scores`` with ``options``) with one Ray task per
    group or layer (the rows in the same order); a local instance is started and shut down when none
    is running (``address``: an existing cluster)."""
    check_executor("ray")
    import ray
    import torch

    with _session(ray, address, None, log):
        threads = torch.get_num_threads()
        task = ray.remote(num_cpus=_cpus_for(ray, threads), max_retries=1)(group_sensitivity)
        shared = [ray.put(v) for v in (module, example, x, y, recalib_x)]
        opts = ray.put(options)  # the eval split travels once, not once per task
        refs = [task.remote(shared[0], shared[1], [g], {g.name: candidates.get(g.name, [])}, *shared[2:], threads, opts)
                for g in groups if candidates.get(g.name)]
        try:
            return [row for rows in ray.get(refs) for row in rows]
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
