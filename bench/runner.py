"""Host orchestration: prepare artifacts, run each cell in its own worker process, store results.

A cell's crash, hang or out-of-memory kill fails that cell with its reason; the run goes on and
every finished cell is already in the store.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgebench.backends import base as backends
from edgebench.bench.board import Board
from edgebench.bench.config import Cell, LoadedSuite, check_something_measured
from edgebench.bench.contracts.errors import ConfigError, one_line
from edgebench.bench.contracts.files import CannotWrite, cannot_write, is_disk_error
from edgebench.bench.contracts.results import MeasureSettings
from edgebench.bench.contracts.spec import CellSpec
from edgebench.bench.contracts.version import __version__
from edgebench.bench.executor import prepare_elsewhere
from edgebench.bench.prepare import NotApplicable, Preparer
from edgebench.bench.robustness import RobustnessStep, config_of
from edgebench.bench.store import CONFIRMATION, CellRecord, RunRecord, Store, now
from edgebench.models import recipes as recipe_lib
from edgebench.models.cache import Cache
from edgebench.targets.probe import git_commit


@dataclass
class Paths:
    """Where a run keeps things: the store, the build cache, reports and per-cell worker files."""

    home: Path
    store: str | None = None

    @property
    def store_location(self) -> str:
        return self.store or str(self.home / "edgebench.sqlite")

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    @property
    def device_builds(self) -> Path:
        """The local target's build cache for artifacts built where they run (bench/device_build.py)."""
        return self.cache / "device-builds"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def cells_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id / "cells"


def new_run_id() -> str:
    # 4 random bytes: many boards may start runs in the same second against one team store
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


@dataclass
class RunSummary:
    run_id: str
    cells_ok: int = 0
    cells_failed: int = 0
    cells_skipped: int = 0
    trained: int = 0
    pruned: int = 0
    exported: int = 0
    cache_hits: int = 0
    wall_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    resumed_from: int | None = None  # cells already finished when a run was resumed
    copied_files: int = 0  # files sent to remote targets (0 when every one was already there)
    copied_bytes: int = 0
    targets: dict[str, Any] = field(default_factory=dict)  # name -> its profile as data (resume reuses them)
    confirm_of: str | None = None  # a re-measurement of some cells of this run (edgebench check --confirm)


@dataclass
class RunOptions:
    """How a run is carried out beyond what its suite says: the command line's choices."""

    executor: str = "inprocess"  # where the host-side prepare steps run: in this process, or "ray" (bench/executor.py)
    ray_address: str | None = None  # an existing Ray cluster ("auto", "ray://host:10001"); None starts a local one
    lease_timeout_s: float | None = None  # how long a board waits for its lease (bench/lease.py); None: as long as it takes


@dataclass
class Job:
    """A cell whose artifact is built and which only needs measuring on its target."""

    cell: Cell
    record: CellRecord
    spec: CellSpec  # host paths; the transport rewrites them to the device's
    index: int


class Runner:
    """Runs a loaded suite into a store: host-side preparation first, then each target's cells.

    Targets are measured in parallel, one cell at a time per target (a board is never shared between
    two of its own cells). ``run(..., resume=RUN_ID)`` re-measures only the cells of a stored run that
    did not finish ok or skipped.
    """

    def __init__(self, paths: Paths, log: Callable[[str], None] = print, progress: Any = None, options: RunOptions | None = None) -> None:
        self.paths = paths
        self.options = options or RunOptions()
        self.log = log
        self.progress = progress
        self.store = Store(paths.store_location)
        self.run_id: str | None = None
        self._pythonpath: list[str] = []
        self.previous_errors: dict[str, str] = {}  # a resumed run's failed cells: key -> their error
        self.robustness: RobustnessStep | None = None  # the suite's robustness evaluation (bench/robustness.py), when on

    def run(self, loaded: LoadedSuite, on_start: Callable[[subprocess.Popen], None] | None = None, resume: str | None = None,
            only: set[str] | None = None, confirm_of: str | None = None, run_status: str | None = None) -> RunSummary:
        """Run the suite's cells (``only``: just these cell keys) into a new run, or finish run ``resume``.

        ``confirm_of`` marks the new run as a re-measurement of that run's cells: it is stored with status
        ``confirmation``, which ``latest`` and the history leave out. ``run_status`` is the status a run that
        finishes gets instead of ``finished`` (``fit``: the measurements of ``edgebench fit``, also left out).
        """
        t0 = time.perf_counter()
        targets = {n: p.model_dump() for n, p in loaded.profiles.items()}
        run_id, kept = self._open_run(loaded, resume, targets)
        summary = RunSummary(run_id, resumed_from=len(kept) if resume else None, targets=targets, confirm_of=confirm_of)
        status = "failed"
        try:
            cells = [c for c in loaded.cells() if c.key not in kept and (only is None or c.key in only)]
            for note in quantize_notes(loaded.recipes, cells):
                self.log(note)
            preparer = Preparer(Cache(self.paths.cache), log=self.log, models=dict(loaded.user_models))
            robustness = config_of(loaded.suite.robustness)
            self.robustness = RobustnessStep(preparer, robustness, self.log) if robustness is not None else None
            self._pythonpath = [str(loaded.source.parent.resolve())] if loaded.user_models else []
            jobs = self._prepare_all(cells, preparer, loaded.measure_settings(), replace=bool(resume), summary=summary)
            c = preparer.counters
            summary.trained, summary.pruned, summary.exported, summary.cache_hits = c.trained, c.pruned, c.exported, c.cache_hits
            asyncio.run(self._measure_targets(loaded, jobs, loaded.suite.cell_timeout_s, summary, replace=bool(resume)))
            status = run_status or (CONFIRMATION if confirm_of else "finished")
            if resume is None and only is None:  # all skipped: nothing measured is a configuration error (exit 2)
                check_something_measured(loaded.source, [(c.status, c.error) for c in self.store.cells(run_id, with_samples=False)])
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except CannotWrite:
            status = "interrupted"  # nothing wrong with the cells: free space, then --resume finishes it
            raise
        except OSError as exc:
            if not is_disk_error(exc):
                raise
            status = "interrupted"
            raise cannot_write(exc, self.paths.home) from None
        finally:
            summary.wall_s = time.perf_counter() - t0
            self._finish(run_id, status, summary)
        return summary

    def _finish(self, run_id: str, status: str, summary: RunSummary) -> None:
        """Store the run's status and summary, its counts taken from the stored cells: a resumed run's
        cells of every attempt, not only the ones this attempt re-ran."""
        try:
            counts = self.store.cell_counts(run_id)
            summary.cells_ok, summary.cells_failed, summary.cells_skipped = (counts.get(k, 0) for k in ("ok", "failed", "skipped"))
            self.store.finish_run(run_id, status, asdict(summary))
        except CannotWrite as exc:  # the store's disk is full too: the run stays `running`; --resume still finishes it
            self.log(f"run {run_id}: could not record it as {status}: {exc}")

    # -- run bookkeeping -------------------------------------------------------------------
    def _open_run(self, loaded: LoadedSuite, resume: str | None, targets: dict[str, Any]) -> tuple[str, set[str]]:
        """A new run id, or the resumed run's id and the keys of its cells that need no re-run."""
        if resume is not None:
            run_id = self.run_id = self.store.resolve(resume)
            stored = self.store.cells(run_id, with_samples=False)
            kept = {c.cell_key for c in stored if c.status in ("ok", "skipped")}
            self.previous_errors = {c.cell_key: c.error for c in stored if c.cell_key not in kept and c.error}
            self.store.reopen_run(run_id)
            self.log(f"run {run_id}: resuming; {len(kept)} cells already finished are kept")
            return run_id, kept
        run_id = self.run_id = new_run_id()
        self.store.create_run(RunRecord(
            id=run_id, suite_name=loaded.suite.name, suite_source=str(loaded.source), suite_yaml=loaded.text,
            status="running", created_at=now(), edgebench_version=__version__,
            git_commit=git_commit(Path(__file__).resolve().parent.parent),
            summary={"targets": targets},
        ))
        self.log(f"run {run_id}: suite {loaded.suite.name!r} from {loaded.source}")
        return run_id, set()

    def save(self, record: CellRecord, summary: RunSummary, replace: bool) -> None:
        self.store.add_cell(self.run_id, record, replace=replace)
        self._tally(summary, record)

    # -- host side: build every artifact before any cell is timed --------------------------
    def _prepare_all(self, cells: list[Cell], preparer: Any, settings: MeasureSettings, replace: bool, summary: RunSummary) -> dict[str, list[Job]]:
        # Preparing (training, exporting) while a local cell is timed would contend with it, so the
        # host finishes its heavy work first.
        if self.options.executor != "inprocess":  # the steps run as tasks elsewhere first (bench/executor.py): the loop below finds them done
            prepare_elsewhere(self.options.executor, cells, preparer, self.options.ray_address, self._pythonpath, self.log, self.progress)
        jobs: dict[str, list[Job]] = {}
        task = self.progress.add_task("preparing", total=len(cells)) if self.progress else None
        for index, cell in enumerate(cells):
            outcome = self._prepare(cell, preparer, settings, index)
            if isinstance(outcome, Job):
                jobs.setdefault(cell.target, []).append(outcome)
            else:
                self.save(outcome, summary, replace)
            if self.progress:
                self.progress.advance(task)
        if self.progress:
            self.progress.remove_task(task)
        return jobs

    def _prepare(self, cell: Cell, preparer: Any, settings: MeasureSettings, index: int) -> Job | CellRecord:
        record = CellRecord(cell.key, cell.model, cell.recipe.name, cell.backend, cell.precision, cell.batch, cell.target,
                            status="skipped", options=dict(cell.options), started_at=now(), recipe_def=cell.recipe.model_dump(mode="json"))
        backend = backends.get(cell.backend)
        reason = backend.unsupported(cell.precision)
        # The host writes the portable artifact, so it needs the exporter; whether the runtime is
        # there is the target's question (its probe, asked per target by the board).
        avail = backend.export_availability() if preparer.spec(cell.model).given() is None else None
        if reason is None and avail is not None and not avail.available:
            reason = f"{cell.backend}: {avail.reason}"
        if reason is not None:
            return self._finished(record, "skipped", reason)
        try:
            dense = preparer.dense(cell.model)
            model = preparer.pruned(cell.model, cell.recipe)
            export_options = {k: v for k, v in cell.options.items() if k in backend.export_options}
            art = preparer.artifact(cell.model, cell.recipe, cell.backend, cell.precision, export_options)
        except NotApplicable as exc:
            return self._finished(record, "skipped", str(exc))
        except ConfigError:  # a bad file in the suite (not a model file, wrong class count): exit 2, one line
            raise
        except CannotWrite:  # a full disk stops the run (marked interrupted), it fails no cell
            raise
        except Exception as exc:  # a model the exporter cannot handle fails its cells, not the run
            if is_disk_error(exc):  # ...but a full cache disk is not the cell's fault: stop the run, one line
                raise cannot_write(exc, self.paths.cache) from None
            return self._finished(record, "failed", f"preparing the artifact failed: {type(exc).__name__}: {one_line(exc, 400)}")
        record.facts = {"model": model.manifest["facts"], "artifact": art.manifest["facts"], "dense_top1_torch": dense.manifest["facts"]["top1_torch"],
                        "model_key": model.key, "artifact_key": art.key}
        if self.robustness is not None:  # a property of (model, recipe) at PyTorch fp32: every cell of the pair carries the same facts
            record.facts["robustness"] = self.robustness.facts(cell.model, cell.recipe)
        spec = CellSpec(cell_key=cell.key, backend=cell.backend, precision=cell.precision,
                        artifact=str(art.dir / art.manifest["facts"]["artifact"]), batch=cell.batch,
                        eval_data=str(dense.dir / "eval.npz"), options=backend.cell_options(dict(cell.options), recipe_lib.expectations(cell.recipe)),
                        measure=settings)
        return Job(cell, record, spec, index)

    def _finished(self, record: CellRecord, status: str, reason: str | None) -> CellRecord:
        record.status, record.error, record.finished_at = status, reason, now()
        self.log(f"{record.cell_key}: {status}" + (f" - {reason}" if reason else ""))
        return record

    # -- device side: each target's cells, targets in parallel -----------------------------
    async def _measure_targets(self, loaded: LoadedSuite, jobs: dict[str, list[Job]], timeout_s: float, summary: RunSummary, replace: bool) -> None:
        boards = [Board(self, loaded.profiles[target], target_jobs, timeout_s, summary, replace) for target, target_jobs in jobs.items()]
        await asyncio.gather(*(b.run() for b in boards))
        for b in boards:
            summary.copied_files += b.transport.copied.files
            summary.copied_bytes += b.transport.copied.bytes

    def log_cell(self, record: CellRecord) -> None:
        lat = record.result.latency if record.result else None
        if record.status == "ok" and lat is not None:
            procs = f" in {record.result.processes} processes" if record.result.processes > 1 else ""
            self.log(f"{record.cell_key}: p50 {lat.p50_ms:.3f} ms, p90 {lat.p90_ms:.3f} ms ({lat.n} runs{procs})" + "".join(f"; {w}" for w in record.result.warnings))
        else:
            self.log(f"{record.cell_key}: {record.status} - {record.error}")

    @staticmethod
    def _tally(summary: RunSummary, record: CellRecord) -> None:
        if record.status == "ok":
            summary.cells_ok += 1
        elif record.status == "skipped":
            summary.cells_skipped += 1
        else:
            summary.cells_failed += 1
            summary.failures.append(f"{record.cell_key}: {record.error}")


def quantize_notes(recipes: list[Any], cells: list[Cell]) -> list[str]:
    """What a recipe's ``quantize`` block does in this run, said plainly.

    The suite's precisions decide which cells run; a recipe's ``quantize`` chooses how its int8
    cells are calibrated, or with ``qat`` that they are quantisation-aware trained at each int8
    backend's export, with that backend's quantiser (a backend without QAT, one whose
    ``qat_quantizer`` is unset, calibrates after training, and the note names it).
    """
    notes = []
    for recipe in recipes:
        q = getattr(recipe, "quantize", None)
        if q is None:
            continue
        measured = sorted({c.precision for c in cells if c.recipe is recipe})
        if q.precision not in measured:
            notes.append(f"recipe {recipe.name}: asks for {q.precision}, but this suite measures it at {', '.join(measured)}; "
                         f"add {q.precision} to the suite's precisions (or a backend's) to measure it")
        if q.qat:
            notes.extend(_qat_notes(recipe, q, {c.backend for c in cells if c.recipe is recipe and c.precision == "int8"}))
    return notes


def _qat_notes(recipe: Any, q: Any, int8_backends: set[str]) -> list[str]:
    """What ``qat: true`` does on each backend that measures the recipe at int8."""
    quantizers = {name: backends.get(name).qat_quantizer for name in sorted(int8_backends)}
    trained = [f"{name} ({quantizer})" for name, quantizer in quantizers.items() if quantizer]
    notes = []
    if trained:
        notes.append(f"recipe {recipe.name}: int8 is quantisation-aware trained at export on {', '.join(trained)}: PT2E fake-quant, "
                     f"{q.epochs} epochs at lr {q.lr} (seed {recipe.seed}) on the training split; its fp32 cells are the same pruned model "
                     "(a model given as a file, TorchScript or without labels has nothing to train: post-training calibration)")
    for name in (n for n, quantizer in quantizers.items() if not quantizer):
        notes.append(f"recipe {recipe.name}: {name} has no quantisation-aware training; its int8 is post-training ({q.calibration} calibration)")
    return notes
