"""Layer-wise sensitivity: each channel group (or each Conv2d/Linear layer) pruned alone, no fine-tune.

One computation serves both users:

* ``edgebench fit`` (bench/fit.py): per channel group, the loss of each candidate width, what its
  knapsack adds up.
* ``edgebench sensitivity MODEL`` (:func:`scan`): accuracy vs per-layer ratio, for people choosing
  per-layer ratios by hand (or checking which layers a uniform ratio hurts).

:func:`compute` is that one function: the held-out slice of the TRAINING split (20%, seed 0: never the
evaluation split, which only ever gets a separate, labelled column), BatchNorm statistics re-estimated
on 512 other training images, in-process or one Ray task per unit, cached by content hash. Its cache key
is the fit's key from before the scan existed when called with the fit's settings (options at the
fit's values are left out of the key), so a fit's cached sensitivity stays a hit.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.contracts.fit import Group
from edgebench.bench.contracts.registry import UnknownName
from edgebench.bench.executor import check_executor, sensitivity_on_ray
from edgebench.bench.prepare import Preparer
from edgebench.models.cache import Cache

SENSITIVITY_VERSION = 1  # bump when what a row means changes (the cache key then changes)
HOLDOUT = (0.2, 0)       # share of the training split held out to score on, and its seed
RECALIB_IMAGES = 512     # training images (not held out) the BatchNorm statistics are re-estimated on
DEFAULT_RATIOS = (0.25, 0.5, 0.75, 0.9)
# the fit's values: an option at its fit value stays out of the cache key (the fit's key is unchanged)
_FIT_VALUES = {"kind": "channel", "importance": "l2", "eval_split": False}


@dataclass
class Computed:
    """What :func:`compute` found or computed: one row per (unit, width) (``models.fit.Score``)."""

    rows: list[Any]
    hit: bool
    key: str
    holdout_images: int
    eval_images: int = 0
    dense: dict[str, float] = field(default_factory=dict)  # holdout_loss, holdout_top1 (0-1), eval_top1 (with the eval split)
    compute_s: float | None = None  # how long the computation took when it ran (a hit reports the original's)


def compute(cache: Cache, dense_key: str, module: Any, example: Any, groups: list[Group], candidates: dict[str, list[int]], data: Any, *,
            kind: str = "channel", importance: str = "l2", recalibrate_bn: bool = True, eval_split: bool = False,
            executor: str = "inprocess", ray_address: str | None = None, log: Callable[[str], None] = print,
            on_row: Callable[[Any], None] | None = None) -> Computed:
    """Each unit of ``groups`` pruned alone to each of its ``candidates`` widths on the dense ``module``
    (``models.fit.scores``): loss increase and top-1 drop on the held-out training slice, with
    ``eval_split`` the evaluation split's top-1 too. Cached under kind ``sensitivity``; ``executor``
    "ray": one task per unit, the same rows (``on_row`` progress is in-process only)."""
    if executor != "inprocess":
        check_executor(executor)
    payload: dict[str, Any] = {"dense": dense_key, "candidates": {g: sorted(ws) for g, ws in candidates.items()},
                               "holdout": list(HOLDOUT), "recalibrate_bn": recalibrate_bn, "version": SENSITIVITY_VERSION}
    options = {"kind": kind, "importance": importance, "eval_split": eval_split}
    payload.update({k: v for k, v in options.items() if v != _FIT_VALUES[k]})

    def build(out: Path) -> dict[str, Any]:
        return _build(module, example, groups, candidates, data, options, recalibrate_bn, executor, ray_address, log, on_row)

    entry = cache.get_or_build("sensitivity", payload, build)
    facts = entry.manifest["facts"]
    from edgebench.models.fit import Score

    names = {f.name for f in dataclasses.fields(Score)}
    rows = [Score(**{k: v for k, v in s.items() if k in names}) for s in facts["sensitivity"]]
    return Computed(rows, entry.hit, entry.key, int(facts["holdout_images"]), int(facts.get("eval_images", 0)),
                    dict(facts.get("dense") or {}), facts.get("compute_s"))


def _build(module: Any, example: Any, groups: list[Group], candidates: dict[str, list[int]], data: Any, options: dict[str, Any],
           recalibrate_bn: bool, executor: str, ray_address: str | None, log: Callable[[str], None],
           on_row: Callable[[Any], None] | None) -> dict[str, Any]:
    from edgebench.models import fit as fitlib

    t0 = time.perf_counter()
    train_idx, hold = fitlib.holdout_split(len(data.x_train), *HOLDOUT)
    x, y = data.x_train[hold], data.y_train[hold]
    recalib = data.x_train[train_idx][:RECALIB_IMAGES] if recalibrate_bn else None
    kw: dict[str, Any] = {"kind": options["kind"], "importance": options["importance"]}
    if options["eval_split"]:
        kw.update(eval_x=data.x_test, eval_y=data.y_test)
    if executor != "inprocess":  # one task per unit: the same rows (tests/bench/test_executor.py)
        rows = sensitivity_on_ray(module, example, groups, candidates, x, y, recalib_x=recalib, address=ray_address, log=log, options=kw)
    else:
        rows = fitlib.scores(module, example, groups, candidates, x, y, recalib_x=recalib, on_row=on_row, **kw)
    loss, top1 = fitlib.evaluate(module, x, y)
    dense = {"holdout_loss": loss, "holdout_top1": top1}
    if options["eval_split"]:
        dense["eval_top1"] = fitlib.evaluate(module, data.x_test, data.y_test)[1]
    return {"sensitivity": [dataclasses.asdict(r) for r in rows], "holdout_images": int(len(hold)),
            "eval_images": int(len(data.x_test)) if options["eval_split"] else 0, "dense": dense,
            "compute_s": time.perf_counter() - t0}


# -- the scan: `edgebench sensitivity MODEL` -----------------------------------------------------------

@dataclass
class ScanUnit:
    """What one line of the scan prunes: a channel group (``total`` channels, the layers that shrink with
    it) or one Conv2d/Linear layer (``total`` weights)."""

    name: str
    total: int
    layers: list[str] = field(default_factory=list)


@dataclass
class ScanPoint:
    """``unit`` pruned alone by ``ratio`` (keeping ``kept`` channels or weights), no fine-tune: scored on
    the held-out slice of the TRAINING split (what ranks the units) and, separately, on the evaluation
    split (reported only)."""

    unit: str
    ratio: float
    kept: int
    loss_increase: float
    top1_drop_pp: float          # held-out training slice, percentage points vs the dense model
    holdout_top1: float          # 0-1
    eval_top1: float | None = None  # evaluation split, 0-1


@dataclass
class ScanResult:
    """A sensitivity scan of one model: every unit at every ratio, and how it was made."""

    model: str
    kind: str                    # "channel" | "unstructured"
    importance: str              # channel ranking (l1/l2); "magnitude" for unstructured
    recalibrate_bn: bool
    ratios: list[float]
    units: list[ScanUnit]
    points: list[ScanPoint]
    dense_holdout_top1: float
    dense_holdout_loss: float
    dense_eval_top1: float | None
    holdout_images: int
    eval_images: int
    dense_key: str
    key: str                     # the sensitivity cache entry
    reused: bool
    compute_s: float | None      # the computation's time (a reused scan: when it was computed)
    seconds: float = 0.0         # this call, dense model lookup included
    executor: str = "inprocess"
    created_at: str = ""

    def point(self, unit: str, ratio: float) -> ScanPoint | None:
        return next((p for p in self.points if p.unit == unit and p.ratio == ratio), None)

    def ranking(self) -> list[tuple[str, float, float]]:
        """(unit, mean top-1 drop pp, mean loss increase) over the scanned ratios, most sensitive first
        (ties on top-1, which saturates, broken by the loss)."""
        out = []
        for u in self.units:
            pts = [p for p in self.points if p.unit == u.name]
            if pts:
                out.append((u.name, float(np.mean([p.top1_drop_pp for p in pts])), float(np.mean([p.loss_increase for p in pts]))))
        return sorted(out, key=lambda t: (-t[1], -t[2], t[0]))


def scan_to_data(result: ScanResult) -> dict[str, Any]:
    """The scan as JSON-able data (sensitivity.json)."""
    return dataclasses.asdict(result)


def scan_from_data(data: dict[str, Any]) -> ScanResult:
    """A :class:`ScanResult` back from :func:`scan_to_data` output."""
    kw = {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(ScanResult)}}
    kw["units"] = [ScanUnit(**u) for u in kw.get("units", [])]
    kw["points"] = [ScanPoint(**p) for p in kw.get("points", [])]
    return ScanResult(**kw)


@dataclass
class ScanOptions:
    """How ``edgebench sensitivity`` scans (the command's options)."""

    ratios: tuple[float, ...] = DEFAULT_RATIOS
    kind: str = "channel"
    importance: str = "l2"
    recalibrate_bn: bool = True
    executor: str = "inprocess"
    ray_address: str | None = None


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0.25,0.5"`` -> (0.25, 0.5): each the share of a unit's channels (or weights) removed, in [0, 1),
    sorted, duplicates dropped. A bad one is a one-line ConfigError naming it and the form."""
    out = set()
    for tok in (t.strip() for t in text.split(",")):
        try:
            r = float(tok)
        except ValueError:
            r = float("nan")
        if not (0.0 <= r < 1.0):
            raise ConfigError(f"--ratios: {tok!r} is not a ratio in [0, 1) (the share of each layer's channels or weights removed); "
                              "give comma-separated ratios, e.g. --ratios 0.25,0.5,0.75,0.9")
        out.add(r)
    return tuple(sorted(out))


def scan(preparer: Preparer, model: str, opts: ScanOptions, log: Callable[[str], None] = print,
         on_start: Callable[[int], None] | None = None, on_row: Callable[[Any], None] | None = None) -> ScanResult:
    """Scan ``model`` (a zoo model or one of ``preparer.models``): its dense model trained or taken from
    the cache, each unit pruned alone at each ratio (:func:`compute`). ``on_start(n)``: the number of
    rows to compute, before the first; ``on_row``: each row (progress). ConfigError (one line) for an
    unknown model, a given file, a latency-only model, a bad kind or importance."""
    import torch

    from edgebench.models import fit as fitlib

    t0 = time.perf_counter()
    _check_options(opts)
    data = _labelled_data(preparer, model)
    entry = preparer.dense(model)
    module = preparer.module_of(entry)
    example = torch.from_numpy(data.x_test[:1])
    groups = fitlib.channel_groups(module, example) if opts.kind == "channel" else fitlib.layer_units(module)
    if not groups:
        raise ConfigError(f"sensitivity {model}: no prunable {'channel group' if opts.kind == 'channel' else 'Conv2d/Linear layer'} "
                          "(every layer is the classifier or fixed)" + ("; try --kind unstructured" if opts.kind == "channel" else ""))
    kept = {g.name: {r: fitlib.kept_at(g.width, r) for r in opts.ratios} for g in groups}
    candidates = {g: sorted(set(by.values())) for g, by in kept.items()}
    if on_start is not None:
        on_start(sum(len(ws) for ws in candidates.values()))
    got = compute(preparer.cache, entry.key, module, example, groups, candidates, data, kind=opts.kind, importance=opts.importance,
                  recalibrate_bn=opts.recalibrate_bn, eval_split=True, executor=opts.executor, ray_address=opts.ray_address,
                  log=log, on_row=on_row)
    rows = {(s.group, s.width): s for s in got.rows}
    dense_top1 = got.dense["holdout_top1"]
    points = [ScanPoint(g, r, w, rows[(g, w)].loss_increase, rows[(g, w)].top1_drop_pp, dense_top1 - rows[(g, w)].top1_drop_pp / 100.0,
                        rows[(g, w)].eval_top1) for g, by in kept.items() for r, w in by.items()]
    return ScanResult(model, opts.kind, opts.importance if opts.kind == "channel" else "magnitude", opts.recalibrate_bn, list(opts.ratios),
                      [ScanUnit(g.name, g.width, list(g.layers)) for g in groups], points, dense_top1, got.dense["holdout_loss"],
                      got.dense.get("eval_top1"), got.holdout_images, got.eval_images, entry.key, got.key, got.hit, got.compute_s,
                      time.perf_counter() - t0, opts.executor, datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _check_options(opts: ScanOptions) -> None:
    from edgebench.models.fit import IMPORTANCES, KINDS

    if opts.kind not in KINDS:
        raise ConfigError(f"--kind: unknown kind {opts.kind!r}; choose one of: {', '.join(KINDS)}")
    if opts.importance not in IMPORTANCES:
        raise ConfigError(f"--importance: unknown importance {opts.importance!r}; choose one of: {', '.join(IMPORTANCES)}")
    if not opts.ratios:
        raise ConfigError("--ratios: give at least one ratio in [0, 1), e.g. --ratios 0.25,0.5,0.75,0.9")
    check_executor(opts.executor)


def _labelled_data(preparer: Preparer, model: str) -> Any:
    """The model's dataset, or a one-line ConfigError when it cannot be scanned."""
    try:
        spec = preparer.spec(model)
    except UnknownName as exc:
        raise ConfigError(f"sensitivity: {exc.args[0]} (a model of your own: --suite FILE naming it)") from None
    if spec.given() is not None or spec.torchscript:
        raise ConfigError(f"sensitivity {model}: needs a PyTorch model to prune (a zoo model or a factory), not a given file")
    data = preparer.dataset(spec.dataset, spec.input_size)
    if not data.has_labels:
        raise ConfigError(f"sensitivity {model}: a latency-only model (dataset {spec.dataset!r} has no labels) cannot be scanned: "
                          "there is no accuracy to lose; scan a model trained on a labelled dataset (e.g. small_cnn, resnet20)")
    return data


def report_name(result: ScanResult) -> str:
    """The default report folder's name: model, kind and the cache key (other ratios: another folder)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"sensitivity-{result.model}-{result.kind}-{result.key[:8]}")
