"""Suite configs: YAML, validated at the boundary, expanded into a matrix of cells.

A cell is model x recipe x backend x precision x batch size x target. Every error names the file,
the key and the fix in one line.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import importlib
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, create_model, field_validator

from edgebench.backends import base
from edgebench.bench.contracts.errors import ConfigError, from_validation_error, load_yaml
from edgebench.bench.contracts.fit import parse_budget
from edgebench.bench.contracts.identity import CellId
from edgebench.bench.contracts.results import MeasureSettings
from edgebench.bench.contracts.strict import Strict
from edgebench.bench.measure import usable_cpus
from edgebench.models import data, recipes, zoo
from edgebench.models import robustness as robustness_lib
from edgebench.targets.profiles import load_profiles

SUITES = Path(__file__).parent / "suites"
DEFAULT_SUITE = SUITES / "default.yaml"


class BackendRef(Strict):
    """A backend in a suite: ``- onnxruntime`` or ``{name: litert, threads: 2, precisions: [fp32, int8], options: {...}}``."""

    name: str
    threads: int | None = Field(None, ge=1, le=1024)
    precisions: list[str] | None = Field(None, min_length=1, description="this backend's precisions (default: the suite's)")
    options: dict[str, Any] = Field(default_factory=dict, description="backend-specific options (edgebench list backends)")


class UserModel(Strict):
    """A model of the user's: ``factory`` (+ optional ``weights`` state_dict), or a ready ``onnx``,
    ``torchscript`` or ``tflite`` file (exactly one of the four)."""

    name: str
    factory: str | None = Field(None, description="'package.module:callable' returning an nn.Module")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = Field(None, description="state_dict saved with torch.save(model.state_dict(), path)")
    onnx: str | None = Field(None, description="a plain ONNX file: latency and fidelity on onnxruntime, no pruning")
    torchscript: str | None = Field(None, description="a TorchScript archive: torch and onnxruntime, no pruning")
    tflite: str | None = Field(None, description="a .tflite file: runs on litert; no pruning")
    dataset: str = Field("digits", description="built-in name, or a path to an .npz or an ImageFolder directory")
    input_size: int = Field(32, ge=8, le=4096, description="the input side for models with dynamic dimensions or built-in datasets")
    train_epochs: int | None = Field(None, ge=0, description="[default: 0 with weights, onnx, torchscript or tflite, 10 otherwise]")
    lr: float = Field(0.05, gt=0)

    def files(self) -> dict[str, str | None]:
        """The ready-made model files, by field name (at most one is set)."""
        return {"onnx": self.onnx, "torchscript": self.torchscript, "tflite": self.tflite}


class Sweep(Strict):
    """One recipe, one parameter, many values: ``{recipe: l1-unstructured-50, param: sparsity, values: [...]}``."""

    recipe: str
    param: str
    values: list[float] = Field(..., min_length=1)


class SweepRef(Strict):
    sweep: Sweep


def _settings_model(settings: type, name: str) -> type[Strict]:
    """A strict pydantic model with the fields of the dataclass ``settings``: each field's type, default,
    and the bounds and description its ``metadata`` carries ({"doc", "ge", "gt", "le"})."""
    hints = typing.get_type_hints(settings)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        limits = {k: v for k, v in f.metadata.items() if k in ("ge", "gt", "le")}
        fields[f.name] = (hints[f.name], Field(f.default, description=f.metadata.get("doc") or None, **limits))
    return create_model(name, __base__=Strict, __doc__=settings.__doc__, __module__=__name__, **fields)


# A suite's ``measure:`` block: generated from MeasureSettings, the one definition of each setting.
Measure = _settings_model(MeasureSettings, "Measure")


class FitEntry(Strict):
    """``fits:`` in a suite: ``edgebench run`` fits MODEL to BUDGET on each of the suite's targets first
    (bench/fit.py; a stored lookup table is reused) and measures the fitted recipe like the others."""

    model: str
    budget: str = Field(..., description="4ms, 400us or a share of the dense p50 such as 0.5x")
    backend: str = "onnxruntime"
    precision: str = "fp32"
    batch: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1, le=1024)
    steps: int = Field(3, ge=1, le=10)
    epochs_per_step: int = Field(1, ge=0, le=1000)
    finetune_epochs: int = Field(3, ge=0, le=1000)
    max_accuracy_drop: float | None = Field(1.0, ge=0)
    quick: bool = Field(False, description="short measurements (edgebench fit --quick): for trying, not for decisions")

    @field_validator("budget")
    @classmethod
    def _budget(cls, v: str) -> str:
        try:
            parse_budget(v)
        except ConfigError:
            raise ValueError(f"{v!r} is not a budget: give a latency (4ms, 400us) or a share of the dense p50 (0.5x)") from None
        return v


class RobustnessBlock(Strict):
    """``robustness:`` in a suite: ``true`` for the defaults, or which corruptions, severities and FGSM budgets
    (models/robustness.py). Evaluated on the host with PyTorch at fp32, once per (model, recipe)."""

    corruptions: list[str] = Field(default_factory=lambda: list(robustness_lib.CORRUPTIONS), min_length=1)
    severities: list[int] = Field(default_factory=lambda: list(robustness_lib.SEVERITIES), min_length=1)
    fgsm_eps: list[float] = Field(default_factory=lambda: list(robustness_lib.FGSM_EPS), description="pixel units: 0.0314 or '8/255'")
    seed: int = Field(0, ge=0)

    @field_validator("corruptions")
    @classmethod
    def _known_corruptions(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in robustness_lib.CORRUPTIONS:
                close = difflib.get_close_matches(name, robustness_lib.CORRUPTIONS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown corruption {name!r}; {hint}known: {', '.join(robustness_lib.CORRUPTIONS)}")
        if len(set(v)) != len(v):
            raise ValueError("a corruption is listed twice; list each once")
        return v

    @field_validator("severities")
    @classmethod
    def _known_severities(cls, v: list[int]) -> list[int]:
        if any(s not in robustness_lib.SEVERITIES for s in v) or len(set(v)) != len(v):
            raise ValueError(f"severities are {', '.join(map(str, robustness_lib.SEVERITIES))}, each at most once; got {v}")
        return v

    @field_validator("fgsm_eps", mode="before")
    @classmethod
    def _eps(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for e in v:
            if isinstance(e, str) and e.count("/") == 1:  # '8/255': the way the literature writes it
                num, den = e.split("/")
                try:
                    e = float(num) / float(den)
                except (ValueError, ZeroDivisionError):
                    raise ValueError(f"{e!r} is not a number or a fraction such as '8/255'") from None
            if isinstance(e, (int, float)) and not isinstance(e, bool) and not 0 <= e <= 1:
                raise ValueError(f"eps {e:g} is outside the pixel range [0, 1]; eps is a fraction of it: 8/255 is 0.0314 (write '8/255')")
            out.append(e)
        return out


class Suite(Strict):
    name: str = "custom"
    description: str = ""
    models: list[str | UserModel] = Field(..., min_length=1)
    recipes: list[str | SweepRef] = Field(["dense"], min_length=1)
    backends: list[BackendRef] = Field(..., min_length=1)
    precisions: list[str] = Field(["fp32"], min_length=1)
    batch_sizes: list[int] = Field([1], min_length=1)
    targets: list[str] = Field(["local"], min_length=1, description="target profile names (edgebench target list)")
    target_profiles: list[dict[str, Any]] = Field(default_factory=list, description="this suite's own target profiles (targets/profiles.py)")
    threads: int | None = Field(None, ge=1, le=1024, description="default intra-op threads for every backend")
    measure: Measure = Field(default_factory=Measure)
    cell_timeout_s: float = Field(300.0, gt=0)
    fits: list[FitEntry] = Field(default_factory=list, description="models fitted to a latency budget before the cells (edgebench fit)")
    robustness: RobustnessBlock | None = Field(None, description="accuracy under corruptions and FGSM per (model, recipe), PyTorch fp32 on the host: true or {corruptions, severities, fgsm_eps, seed}")

    def model_names(self) -> list[str]:
        return [m if isinstance(m, str) else m.name for m in self.models]

    @field_validator("backends", mode="before")
    @classmethod
    def _names_are_refs(cls, v: Any) -> Any:
        # `- torch` is shorthand for `- {name: torch}`; one type keeps error locations plain.
        return [{"name": b} if isinstance(b, str) else b for b in v] if isinstance(v, list) else v

    @field_validator("robustness", mode="before")
    @classmethod
    def _robustness_switch(cls, v: Any) -> Any:
        # `robustness: true` is the defaults, `false` (or nothing) is off
        if v is not None and not isinstance(v, (bool, dict)):
            raise ValueError("give true, false or a mapping with corruptions, severities, fgsm_eps and seed")
        return {} if v is True else (None if v is False else v)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("batch sizes must be >= 1")
        return v

    def backend_refs(self) -> list[BackendRef]:
        return list(self.backends)


@dataclass
class Cell:
    """One measurement to make. ``recipe`` is the validated recipe object."""

    model: str
    recipe: recipes.Recipe
    backend: str
    precision: str
    batch: int
    target: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> CellId:
        """Which cell this is (the recipe by its name)."""
        return CellId(self.model, self.recipe.name, self.backend, self.precision, self.batch, self.target)

    @property
    def key(self) -> str:
        """``model/recipe/backend/precision/bN/target``."""
        return self.id.key


@dataclass
class LoadedSuite:
    suite: Suite
    source: Path
    text: str
    recipes: list[recipes.Recipe]
    user_models: dict[str, zoo.ZooEntry] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)  # target name -> targets.profiles.TargetProfile

    def cells(self) -> list[Cell]:
        """The full matrix, in a stable order (targets outermost so a board's cells run together)."""
        s = self.suite
        out = []
        for target in s.targets:
            profile = self.profiles.get(target)
            # A board's own CPU count is not the host's: remote cells without a thread count get the
            # profile's, else the worker uses every CPU the device gives it.
            local = profile is None or profile.is_local
            default_threads = s.threads or (profile.threads if profile else None) or (usable_cpus() if local else None)
            for model in s.model_names():
                for recipe in self.recipes:
                    for ref in s.backend_refs():
                        for precision in ref.precisions or s.precisions:
                            for batch in s.batch_sizes:
                                opts = {"threads": ref.threads or default_threads, **ref.options}
                                out.append(Cell(model, recipe, ref.name, precision, batch, target, opts))
        return out

    def measure_settings(self) -> MeasureSettings:
        return MeasureSettings(**self.suite.measure.model_dump())


def _importable_from(folder: Path) -> None:
    """User factories may live beside the suite; the worker gets the same path (runner.py)."""
    if str(folder.resolve()) not in sys.path:
        sys.path.append(str(folder.resolve()))


def _user_model(m: UserModel, source: Path, key: str) -> zoo.ZooEntry:
    """Check a user model's fields and files now, so a typo fails before anything is trained."""
    if sum(x is not None for x in (m.factory, *m.files().values())) != 1:
        raise ConfigError(f"{source}: {key}: give exactly one of factory (a PyTorch model), torchscript (an archive), "
                          "onnx (a plain ONNX file) or tflite (a .tflite file)")
    if m.name in zoo.MODELS:
        raise ConfigError(f"{source}: {key}.name: {m.name!r} is a built-in model; give yours another name")

    def resolve(p: str | None, what: str) -> str | None:
        if p is None:
            return None
        path = Path(p) if Path(p).is_absolute() else source.parent / p
        if not path.exists():
            raise ConfigError(f"{source}: {key}.{what}: {path} not found; check the path (relative paths start at the suite's folder)")
        return str(path.resolve())

    weights = resolve(m.weights, "weights")
    files = {what: resolve(path, what) for what, path in m.files().items()}
    dataset = m.dataset if m.dataset in data.DATASETS else resolve(m.dataset, "dataset")
    if m.factory is not None:
        module_name, _, attr = m.factory.partition(":")
        if not attr:
            raise ConfigError(f"{source}: {key}.factory: {m.factory!r} is not 'package.module:callable'")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{source}: {key}.factory: cannot import {m.factory} ({exc}); install the package or put it beside the suite") from None
        if not callable(fn):
            raise ConfigError(f"{source}: {key}.factory: {m.factory} is not callable")
    ready = weights is not None or any(files.values())
    epochs = m.train_epochs if m.train_epochs is not None else (0 if ready else 10)
    return zoo.ZooEntry(m.factory or "", dataset, m.input_size, dict(m.kwargs), train_epochs=epochs, lr=m.lr, weights=weights, **files)


def _check_backend_ref(backend: base.Backend, ref: BackendRef, source: Path, key: str) -> None:
    """Options the backend knows, each precision once; an unsupported precision is a skipped cell, not an error."""
    for name in ref.options:
        if name not in backend.options:
            known = ", ".join(backend.options) or "none"
            close = difflib.get_close_matches(name, list(backend.options), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{source}: {key}.options.{name}: {backend.name} has no option {name!r}; {hint}its options: {known}")
    if ref.precisions and len(set(ref.precisions)) != len(ref.precisions):
        raise ConfigError(f"{source}: {key}.precisions: a precision is listed twice; list each once")


def builtin_suites() -> dict[str, str]:
    """The built-in suites (``edgebench run NAME``), each with its description line, by name."""
    out = {}
    for path in sorted(SUITES.glob("*.yaml")):
        description = load_yaml(path).get("description", "")
        out[path.stem] = str(description).strip().splitlines()[0] if description else ""
    return out


def _suite_path(path: Path | None) -> Path:
    """A path as given, or a built-in suite by name (``edgebench run sweep``)."""
    if path is None:
        return DEFAULT_SUITE
    path = Path(path)
    if not path.exists() and path.suffix == "" and (SUITES / f"{path.name}.yaml").exists():
        return SUITES / f"{path.name}.yaml"
    return path


def _expand_sweep(sweep: Sweep, source: Path) -> list[recipes.Recipe]:
    """One recipe per value, named ``BASE@PARAM=VALUE``; a value of 0 is the dense model itself."""
    base_recipe = recipes.load(sweep.recipe, base_dir=source.parent)
    params = recipes.METHODS.get(base_recipe.method).params.model_fields
    if sweep.param not in params:
        known = ", ".join(params)
        raise ConfigError(f"{sweep.recipe}: sweep.param: {base_recipe.method} has no parameter {sweep.param!r}; its parameters: {known}")
    out = []
    for value in sweep.values:
        if value == 0:
            continue  # the dense reference row is the 0% point of every curve
        point = base_recipe.model_dump()
        stem = base_recipe.name.rsplit("-", 1)[0] if base_recipe.name[-1].isdigit() else base_recipe.name
        point["name"] = f"{stem}@{sweep.param}={value:g}"
        point["params"] = {**point["params"], sweep.param: value}
        out.append(recipes.parse(point, f"{sweep.recipe} (sweep {sweep.param}={value:g})"))
    return out


def _reject_repeats(suite: Suite, source: Path) -> None:
    """Each axis value once: a repeated one would give two cells with the same key."""
    axes = {
        "models": suite.model_names(), "backends": [b.name for b in suite.backends], "precisions": suite.precisions,
        "batch_sizes": suite.batch_sizes, "targets": suite.targets,
    }
    for key, values in axes.items():
        seen: set[Any] = set()
        for i, value in enumerate(values):
            if value in seen:
                hint = "; to compare thread counts, run the suite once per setting and compare the runs" if key == "backends" else ""
                raise ConfigError(f"{source}: {key}[{i}]: {value!r} is listed twice; list each value once{hint}")
            seen.add(value)


def _check_timeout(suite: Suite, source: Path) -> None:
    """A ``cell_timeout_s`` no worker process could meet: each process warms up fully and measures
    1/N of ``min_seconds`` (bench/board.py ``per_process``), under the timeout of its own. Only the
    clearly impossible is refused: loading the model and the quiet gate's wait (at most ``quiet_wait_s``,
    nothing on a quiet machine) come on top of this floor."""
    m = suite.measure
    processes = max(1, m.processes)
    floor = m.warmup_seconds + m.min_seconds / processes
    if suite.cell_timeout_s >= floor:
        return
    per = f" / processes {processes}" if processes > 1 else ""
    raise ConfigError(f"{source}: cell_timeout_s: {suite.cell_timeout_s:g} s is shorter than the {floor:g} s each worker process needs "
                      f"to reach the measurement floors (measure.warmup_seconds {m.warmup_seconds:g} + measure.min_seconds {m.min_seconds:g}{per}), "
                      f"before the model is even loaded; raise cell_timeout_s to at least {math.ceil(floor) + 30} or lower those floors")


def check_something_measured(source: Path, outcomes: list[tuple[str, str | None]]) -> None:
    """A run whose every cell was skipped measured nothing: a configuration error listing why.

    ``outcomes`` is each cell's (status, reason); a run with any cell ok or failed passes."""
    if not outcomes or any(status != "skipped" for status, _ in outcomes):
        return
    reasons = collections.Counter(reason or "no reason given" for _, reason in outcomes)
    shown = [f"{reason} ({n} cell{'s' if n > 1 else ''})" for reason, n in reasons.most_common(3)]
    more = f"; and {len(reasons) - 3} more reasons" if len(reasons) > 3 else ""
    raise ConfigError(f"{source}: every one of the {len(outcomes)} cells was skipped, nothing was measured: {'; '.join(shown)}{more}; "
                      "install the missing backends (edgebench list backends) or choose combinations that can run")


def load_suite(path: Path | None = None, targets: list[str] | None = None, targets_file: Path | None = None,
               extra_profiles: list[dict[str, Any]] | None = None) -> LoadedSuite:
    """Read, validate and resolve a suite (the built-in default when ``path`` is None).

    ``targets`` replaces the suite's target list (``edgebench run --target``); profiles come from the
    built-ins, ``targets_file`` (or $EDGEBENCH_TARGETS, ~/.config/edgebench/targets.yaml) and the
    suite's ``target_profiles``.
    """
    source = _suite_path(path)
    raw = load_yaml(source)
    _importable_from(source.parent)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        known = {"": list(Suite.model_fields), "measure": list(Measure.model_fields), "backends": list(BackendRef.model_fields), "models": list(UserModel.model_fields),
                 "robustness": list(RobustnessBlock.model_fields)}
        raise from_validation_error(source, exc, known) from None
    _reject_repeats(suite, source)
    _check_timeout(suite, source)
    user_models = _resolve_models(suite, source)
    _check_backends(suite, source)
    profiles = _resolve_targets(suite, source, targets, targets_file, extra_profiles)
    return LoadedSuite(suite, source, source.read_text(), _resolve_recipes(suite, source), user_models, profiles)


def _resolve_models(suite: Suite, source: Path) -> dict[str, zoo.ZooEntry]:
    """Built-in model names must exist; the user's models become zoo entries (name -> entry)."""
    user_models = {}
    for i, model in enumerate(suite.models):
        if isinstance(model, UserModel):
            user_models[model.name] = _user_model(model, source, f"models[{i}]")
        elif model not in zoo.MODELS:
            raise ConfigError(f"{source}: models[{i}]: unknown model {model!r}; built-in models: {', '.join(zoo.MODELS.names())}, "
                              "or a mapping with name and factory (or onnx, torchscript, tflite)")
    return user_models


def _check_backends(suite: Suite, source: Path) -> None:
    for i, ref in enumerate(suite.backend_refs()):
        if ref.name not in base.names():
            raise ConfigError(f"{source}: backends[{i}]: unknown backend {ref.name!r}; known backends: {', '.join(base.names())}")
        _check_backend_ref(base.get(ref.name), ref, source, f"backends[{i}]")


def _resolve_targets(suite: Suite, source: Path, targets: list[str] | None, targets_file: Path | None,
                     extra_profiles: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Each target's profile (``targets`` replaces the suite's list first)."""
    profiles = load_profiles(targets_file, suite.target_profiles + list(extra_profiles or []), f"{source}: target_profiles")
    if targets:
        suite.targets = list(dict.fromkeys(targets))
    resolved = {}
    for i, target in enumerate(suite.targets):
        try:
            resolved[target] = profiles.get(target)
        except ConfigError as exc:
            raise ConfigError(f"{source}: targets[{i}]: {exc}" if not targets else str(exc)) from None
    return resolved


def _resolve_recipes(suite: Suite, source: Path) -> list[recipes.Recipe]:
    """Every recipe validated (sweeps expanded), each name once."""
    resolved = []
    for i, ref in enumerate(suite.recipes):
        try:
            if isinstance(ref, SweepRef):
                resolved.extend(_expand_sweep(ref.sweep, source))
            else:
                resolved.append(recipes.load(ref, base_dir=source.parent))
        except ConfigError as exc:
            raise ConfigError(f"{source}: recipes[{i}]: {exc}") from None
    names = [r.name for r in resolved]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: recipes: two recipes are both named {dupes[0]!r}; give each recipe a unique name")
    return resolved
