"""Host step: the robustness of each (model, recipe)'s PyTorch fp32 model, cached by content hash.

A suite's ``robustness:`` (bench/config.py) turns it on. For every (model, recipe) of the run, after the
pruned model exists, :class:`RobustnessStep` evaluates it and the dense model of the same model
(models/robustness.py: seeded corruptions and FGSM on the evaluation split) and puts the numbers and their
deltas against dense, in points, into each cell's ``facts["robustness"]``. Each evaluation is an entry of
the content-hash cache (``cache/robustness/KEY``: the pruned entry's key, the settings, the code version and
torch's), so a second run evaluates nothing. It is a property of the (model, recipe) measured with PyTorch at
fp32 on the host, not of the cell's runtime or precision, and every report labels it so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgebench.bench.contracts.errors import ConfigError, one_line
from edgebench.bench.contracts.files import CannotWrite
from edgebench.models import robustness as rob
from edgebench.models.cache import Entry

MEASURED_ON = "PyTorch fp32 on the host"


def points(value: float | None, reference: float | None) -> float | None:
    """``value - reference`` in percentage points (None when either is missing)."""
    return None if value is None or reference is None else (value - reference) * 100


@dataclass
class RobustnessFacts:
    """A (model, recipe)'s robustness and the dense model's, as a cell's ``facts["robustness"]`` holds them."""

    result: rob.RobustnessResult
    dense: rob.RobustnessResult
    settings: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # the cache entry of ``result``
    measured_on: str = MEASURED_ON

    @property
    def clean_delta_pts(self) -> float | None:
        return points(self.result.clean_top1, self.dense.clean_top1)

    @property
    def mean_corrupted_delta_pts(self) -> float | None:
        return points(self.result.mean_corrupted_top1, self.dense.mean_corrupted_top1)

    def corrupted_rows(self) -> list[dict[str, Any]]:
        """Each corruption x severity: its top-1 and its delta against dense's at the same corruption and severity."""
        ref = {(c.corruption, c.severity): c.top1 for c in self.dense.corrupted}
        return [{"corruption": c.corruption, "severity": c.severity, "top1": c.top1, "delta_pts": points(c.top1, ref.get((c.corruption, c.severity)))}
                for c in self.result.corrupted]

    def fgsm_rows(self) -> list[dict[str, Any]]:
        ref = {f.eps: f.top1 for f in self.dense.fgsm}
        return [{"eps": f.eps, "eps_255": round(f.eps * 255, 3), "top1": f.top1, "delta_pts": points(f.top1, ref.get(f.eps))} for f in self.result.fgsm]

    def to_dict(self) -> dict[str, Any]:
        """The facts as JSON data: the headline numbers flat, the detail per corruption and eps, both results whole."""
        return {"measured_on": self.measured_on, "settings": self.settings, "key": self.key, "n_images": self.result.n_images,
                "clean_top1": self.result.clean_top1, "clean_delta_pts": self.clean_delta_pts,
                "mean_corrupted_top1": self.result.mean_corrupted_top1, "mean_corrupted_delta_pts": self.mean_corrupted_delta_pts,
                "corrupted": self.corrupted_rows(), "fgsm": self.fgsm_rows(),
                "result": self.result.to_dict(), "dense": self.dense.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RobustnessFacts | None:
        """The facts back from a cell's ``facts["robustness"]``; None for a skipped evaluation or none at all."""
        if not d or "result" not in d:
            return None
        return cls(rob.RobustnessResult.from_dict(d["result"]), rob.RobustnessResult.from_dict(d["dense"]), dict(d.get("settings") or {}),
                   str(d.get("key", "")), str(d.get("measured_on", MEASURED_ON)))


def config_of(block: Any) -> rob.RobustnessConfig | None:
    """The suite's ``robustness:`` block (bench/config.py ``RobustnessBlock``, or None: off) as the evaluation's settings."""
    if block is None:
        return None
    return rob.RobustnessConfig(tuple(block.corruptions), tuple(block.severities), tuple(float(e) for e in block.fgsm_eps), block.seed)


class RobustnessStep:
    """Evaluates each (model, recipe) once per run through the cache; what ``Runner._prepare`` calls."""

    def __init__(self, preparer: Any, cfg: rob.RobustnessConfig, log: Callable[[str], None] = print) -> None:
        self.preparer = preparer
        self.cfg = cfg
        self.log = log
        self._results: dict[str, rob.RobustnessResult] = {}
        self._skipped: dict[str, dict[str, str]] = {}  # model or entry -> the note, said once

    def facts(self, model_name: str, recipe: Any) -> dict[str, Any]:
        """``facts["robustness"]`` of the cells of (``model_name``, ``recipe``): the numbers, or ``{"skipped": why}``."""
        why = self._not_applicable(model_name)
        if why is not None:
            return self._skip(model_name, f"robustness: {model_name}: {why}")
        try:
            dense = self._evaluate(model_name, "dense", self.preparer.dense(model_name))
            entry = self.preparer.pruned(model_name, recipe)
            result = self._evaluate(model_name, recipe.name, entry)
        except (ConfigError, CannotWrite):
            raise
        except Exception as exc:  # a model FGSM cannot differentiate through costs its robustness, not its cells
            return self._skip(f"{model_name}/{recipe.name}", f"robustness: {model_name}/{recipe.name}: not evaluated: {type(exc).__name__}: {one_line(exc, 300)}")
        return RobustnessFacts(result, dense, self.cfg.to_dict(), entry.key).to_dict()

    def _not_applicable(self, model_name: str) -> str | None:
        spec = self.preparer.spec(model_name)
        given = spec.given()
        if given is not None:
            return f"a given {given[0]} file has no PyTorch module to evaluate; skipped"
        data = self.preparer.dataset(spec.dataset, spec.input_size)
        if not data.has_labels:
            return "latency-only model (no labelled evaluation split); skipped"
        if not rob.in_pixel_range(data.x_test):
            return (f"its evaluation inputs lie outside [-1, 1], the pixel range the corruptions assume (pixels scaled as (p - 0.5) / 0.5, "
                    "models/data.py); skipped: scale the dataset that way to evaluate it")
        return None

    def _skip(self, key: str, note: str) -> dict[str, str]:
        if key not in self._skipped:
            self.log(note)
            self._skipped[key] = {"skipped": note}
        return self._skipped[key]

    def _evaluate(self, model_name: str, recipe_name: str, entry: Entry) -> rob.RobustnessResult:
        if entry.key in self._results:
            return self._results[entry.key]
        import torch

        spec = self.preparer.spec(model_name)
        data = self.preparer.dataset(spec.dataset, spec.input_size)
        payload = {"model": entry.key, "settings": self.cfg.to_dict(), "version": rob.VERSION, "torch": torch.__version__}

        def build(out: Any) -> dict[str, Any]:
            return rob.evaluate_robustness(self.preparer.module_of(entry), data, self.cfg).to_dict()

        done = self.preparer.cache.get_or_build("robustness", payload, build)
        result = rob.RobustnessResult.from_dict(done.manifest["facts"])
        self._results[entry.key] = result
        self.log(f"robustness {recipe_name} {model_name}: {'cached' if done.hit else 'evaluated'} ({MEASURED_ON}): {summary_text(result)}")
        return result


def summary_text(result: rob.RobustnessResult) -> str:
    """clean, mean corrupted and FGSM top-1 on one line."""
    parts = [f"clean {result.clean_top1:.1%}"]
    if result.mean_corrupted_top1 is not None:
        parts.append(f"mean corrupted {result.mean_corrupted_top1:.1%}")
    parts += [f"FGSM {f.eps * 255:g}/255 {f.top1:.1%}" for f in result.fgsm]
    return ", ".join(parts)
