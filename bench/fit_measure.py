"""Measuring the models ``edgebench fit`` considers, on the target, with the normal machinery.

Every set of candidate models becomes a small suite (its recipes written as YAML beside it, in the
fit's folder) run by the :class:`~edgebench.bench.runner.Runner`: the same prepare cache, the same
worker, the same transports (local child or SSH), the quiet gate and the re-measuring of contended
cells, and a run in the store (status ``fit``, which ``latest`` and cell histories leave out) that
keeps every sample. A measurement whose timing cannot be trusted (``contended``, ``throttled``: the
flags with ``untrusted_timing``) is measured again in a new run, and never used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgebench.bench.config import load_suite
from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.contracts.files import atomic_write_text
from edgebench.bench.contracts.flags import CODES
from edgebench.bench.runner import Paths, Runner
from edgebench.bench.store import FIT, CellRecord
from edgebench.models import recipes as recipe_lib

REMEASURE_ROUNDS = 2  # new runs for measurements that stayed untrusted after the board's own re-measuring


class FitMeasurementError(EdgebenchError):
    """A candidate could not be measured (it failed, or stayed contended/throttled): one line, its cell."""


@dataclass
class Where:
    """What every measurement of one fit shares: model, target, backend, precision, batch."""

    model: str
    target: str
    backend: str
    precision: str
    batch: int
    targets_file: Path | None = None
    threads: int | None = None


def safe_name(text: str) -> str:
    """A recipe name usable in a cell key and a file name (no slashes or spaces)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


def widths_recipe(name: str, steps: list[dict[str, int]], description: str = "", epochs_per_step: int = 0,
                  finetune: dict[str, Any] | None = None, importance: str = "l2") -> recipe_lib.Recipe:
    """A ``channel_widths`` recipe: per step, each named group's kept channels."""
    schedule = {"kind": "iterative", "steps": len(steps), "epochs_per_step": epochs_per_step} if len(steps) > 1 else {}
    data: dict[str, Any] = {"name": name, "description": description, "method": "channel_widths",
                            "params": {"steps": steps, "importance": importance}, "finetune": finetune or {"epochs": 0}}
    if schedule:
        data["schedule"] = schedule
    return recipe_lib.parse(data, f"<fit recipe {name}>")


def write_recipe(recipe: recipe_lib.Recipe, path: Path) -> Path:
    """``recipe`` as YAML that :func:`recipes.load` reads back to the same recipe (same cache key)."""
    data = recipe.model_dump(mode="json", by_alias=True, exclude_none=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, width=120))
    return path


def untrusted(record: CellRecord) -> list[str]:
    """The codes of ``record``'s flags that make its timing untrustworthy (contended, throttled)."""
    flags = record.result.flags if record.result is not None else []
    return [f.code for f in flags if CODES[f.code].untrusted_timing] if flags else []


class Measurer:
    """Measures lists of recipes on one target; each call is one run (plus re-measuring runs)."""

    def __init__(self, paths: Paths, where: Where, folder: Path, log: Callable[[str], None], progress: Any = None) -> None:
        self.paths = paths
        self.where = where
        self.folder = folder
        self.log = log
        self.progress = progress
        self.runs: list[str] = []

    def measure(self, phase: str, recipes: list[recipe_lib.Recipe], settings: dict[str, Any]) -> dict[str, CellRecord]:
        """Each recipe's measured cell (status ok, timing trusted), by recipe name."""
        out: dict[str, CellRecord] = {}
        pending = list(recipes)
        for round_ in range(1 + REMEASURE_ROUNDS):
            if not pending:
                break
            label = phase if not round_ else f"{phase}-again{round_}"
            records = self._run(label, pending, settings)
            still = []
            for recipe in pending:
                rec = records.get(recipe.name)
                if rec is None or rec.status != "ok":
                    raise FitMeasurementError(self._failed(recipe.name, rec))
                if untrusted(rec):
                    still.append(recipe)
                    continue
                out[recipe.name] = rec
            if still:
                self.log(f"fit {phase}: {len(still)} measurement(s) untrusted ({', '.join(sorted({c for r in still for c in untrusted(records[r.name])}))}); "
                         "measuring them again")
            pending = still
        if pending:
            names = ", ".join(r.name for r in pending)
            raise FitMeasurementError(f"target {self.where.target} stayed busy or throttled: {names} could not be measured without "
                                      f"contention in {1 + REMEASURE_ROUNDS} runs ({', '.join(self.runs[-1 - REMEASURE_ROUNDS:])}); "
                                      "stop what else runs there and fit again (measured points are reused)")
        return out

    def _failed(self, name: str, rec: CellRecord | None) -> str:
        key = rec.cell_key if rec is not None else name
        why = rec.error if rec is not None else "no cell was stored"
        return f"{key}: {rec.status if rec else 'missing'} - {why}"

    def _run(self, label: str, recipes: list[recipe_lib.Recipe], settings: dict[str, Any]) -> dict[str, CellRecord]:
        w = self.where
        folder = self.folder / label
        refs = [str(write_recipe(r, folder / "recipes" / f"{r.name}.yaml")) for r in recipes]
        backend: dict[str, Any] = {"name": w.backend, "precisions": [w.precision]}
        if w.threads:
            backend["threads"] = w.threads
        suite = {"name": f"fit {label}: {w.model}", "models": [w.model], "recipes": refs, "backends": [backend],
                 "batch_sizes": [w.batch], "targets": [w.target], "measure": settings}
        path = folder / "suite.yaml"
        atomic_write_text(path, yaml.safe_dump(suite, sort_keys=False, width=120))
        loaded = load_suite(path, targets=[w.target], targets_file=w.targets_file)
        runner = Runner(self.paths, log=self.log, progress=self.progress)
        summary = runner.run(loaded, run_status=FIT)
        self.runs.append(summary.run_id)
        return {c.recipe: c for c in runner.store.cells(summary.run_id)}
