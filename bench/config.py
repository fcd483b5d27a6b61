"""Suite configs: YAML, validated at the boundary, expanded into a matrix of cells.

A cell is model x recipe x backend x precision x batch size x target. Every error names the file,
the key and the fix in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgebench.bench.errors import ConfigError, from_validation_error, load_yaml
from edgebench.bench.measure import usable_cpus
from edgebench.bench.results import MeasureSettings

SUITES = Path(__file__).parent / "suites"
DEFAULT_SUITE = SUITES / "default.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendRef(Strict):
    """A backend in a suite: ``- onnxruntime`` or ``{name: litert, threads: 2, precisions: [fp32, int8], options: {...}}``."""

    name: str
    threads: int | None = Field(None, ge=1, le=1024)
    precisions: list[str] | None = Field(None, min_length=1, description="this backend's precisions (default: the suite's)")
    options: dict[str, Any] = Field(default_factory=dict, description="backend-specific options (edgebench list backends)")


class UserModel(Strict):
    """A model of the user's: ``factory`` (+ optional ``weights`` state_dict), or a plain ``onnx`` file."""

    name: str
    factory: str | None = Field(None, description="'package.module:callable' returning an nn.Module")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = Field(None, description="state_dict saved with torch.save(model.state_dict(), path)")
    onnx: str | None = Field(None, description="a plain ONNX file: latency and fidelity on onnxruntime, no pruning")
    torchscript: str | None = Field(None, description="a TorchScript archive: torch and onnxruntime, no pruning")
    dataset: str = Field("digits", description="built-in name, or a path to an .npz or an ImageFolder directory")
    input_size: int = Field(32, ge=8, le=4096)
    train_epochs: int | None = Field(None, ge=0, description="[default: 0 with weights or onnx, 10 otherwise]")
    lr: float = Field(0.05, gt=0)


class Sweep(Strict):
    """One recipe, one parameter, many values: ``{recipe: l1-unstructured-50, param: sparsity, values: [...]}``."""

    recipe: str
    param: str
    values: list[float] = Field(..., min_length=1)


class SweepRef(Strict):
    sweep: Sweep


class Measure(Strict):
    """Warm-up and measurement floors; defaults follow trtexec / benchmark_model practice."""

    warmup_runs: int = Field(10, ge=0)
    warmup_seconds: float = Field(0.5, ge=0)
    min_runs: int = Field(100, ge=1)
    min_seconds: float = Field(2.0, ge=0)
    max_runs: int = Field(100_000, ge=1)
    max_seconds: float = Field(60.0, gt=0)
    cov_warn: float = Field(0.05, gt=0)
    contention_threshold: float = Field(0.05, gt=0, le=1)
    rss_interval_s: float = Field(0.01, gt=0)
    uss_interval_s: float = Field(0.1, gt=0)
    processes: int = Field(1, ge=1, le=50, description="worker processes per cell, each with the full warm-up and 1/N of the floors; "
                                                        "samples pooled, so one process's mode (layout, placement) does not decide a run")


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

    def model_names(self) -> list[str]:
        return [m if isinstance(m, str) else m.name for m in self.models]

    @field_validator("backends", mode="before")
    @classmethod
    def _names_are_refs(cls, v: Any) -> Any:
        # `- torch` is shorthand for `- {name: torch}`; one type keeps error locations plain.
        return [{"name": b} if isinstance(b, str) else b for b in v] if isinstance(v, list) else v

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
    recipe: Any
    backend: str
    precision: str
    batch: int
    target: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.recipe.name}/{self.backend}/{self.precision}/b{self.batch}/{self.target}"


@dataclass
class LoadedSuite:
    suite: Suite
    source: Path
    text: str
    recipes: list[Any]
    user_models: dict[str, Any] = field(default_factory=dict)  # name -> zoo.ZooEntry
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
    import sys

    if str(folder.resolve()) not in sys.path:
        sys.path.append(str(folder.resolve()))


def _user_model(m: UserModel, source: Path, key: str) -> Any:
    """Check a user model's fields and files now, so a typo fails before anything is trained."""
    import importlib

    from edgebench.models import data, zoo

    if sum(x is not None for x in (m.factory, m.onnx, m.torchscript)) != 1:
        raise ConfigError(f"{source}: {key}: give exactly one of factory (a PyTorch model), torchscript (an archive) or onnx (a plain ONNX file)")
    if m.name in zoo.ZOO:
        raise ConfigError(f"{source}: {key}.name: {m.name!r} is a built-in model; give yours another name")

    def resolve(p: str | None, what: str) -> str | None:
        if p is None:
            return None
        path = Path(p) if Path(p).is_absolute() else source.parent / p
        if not path.exists():
            raise ConfigError(f"{source}: {key}.{what}: {path} not found; check the path (relative paths start at the suite's folder)")
        return str(path.resolve())

    weights, onnx, script = resolve(m.weights, "weights"), resolve(m.onnx, "onnx"), resolve(m.torchscript, "torchscript")
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
    epochs = m.train_epochs if m.train_epochs is not None else (0 if (weights or onnx or script) else 10)
    return zoo.ZooEntry(m.factory or "", dataset, m.input_size, dict(m.kwargs), train_epochs=epochs, lr=m.lr, weights=weights, onnx=onnx, torchscript=script)


def _check_backend_ref(backend: Any, ref: BackendRef, source: Path, key: str) -> None:
    """Options the backend knows, each precision once; an unsupported precision is a skipped cell, not an error."""
    import difflib

    for name in ref.options:
        if name not in backend.options:
            known = ", ".join(backend.options) or "none"
            close = difflib.get_close_matches(name, list(backend.options), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{source}: {key}.options.{name}: {backend.name} has no option {name!r}; {hint}its options: {known}")
    if ref.precisions and len(set(ref.precisions)) != len(ref.precisions):
        raise ConfigError(f"{source}: {key}.precisions: a precision is listed twice; list each once")


def builtin_suites() -> list[str]:
    return sorted(p.stem for p in SUITES.glob("*.yaml"))


def _suite_path(path: Path | None) -> Path:
    """A path as given, or a built-in suite by name (``edgebench run sweep``)."""
    if path is None:
        return DEFAULT_SUITE
    path = Path(path)
    if not path.exists() and path.suffix == "" and (SUITES / f"{path.name}.yaml").exists():
        return SUITES / f"{path.name}.yaml"
    return path


def _expand_sweep(sweep: Sweep, source: Path) -> list[Any]:
    """One recipe per value, named ``BASE@PARAM=VALUE``; a value of 0 is the dense model itself."""
    from edgebench.models import recipes

    base = recipes.load(sweep.recipe, base_dir=source.parent)
    if sweep.param not in recipes.METHODS[base.method].params.model_fields:
        known = ", ".join(recipes.METHODS[base.method].params.model_fields)
        raise ConfigError(f"{sweep.recipe}: sweep.param: {base.method} has no parameter {sweep.param!r}; its parameters: {known}")
    out = []
    for value in sweep.values:
        if value == 0:
            continue  # the dense reference row is the 0% point of every curve
        data = base.model_dump()
        data["name"] = f"{base.name.rsplit('-', 1)[0] if base.name[-1].isdigit() else base.name}@{sweep.param}={value:g}"
        data["params"] = {**data["params"], sweep.param: value}
        out.append(recipes.parse(data, f"{sweep.recipe} (sweep {sweep.param}={value:g})"))
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


def load_suite(path: Path | None = None, targets: list[str] | None = None, targets_file: Path | None = None,
               extra_profiles: list[dict[str, Any]] | None = None) -> LoadedSuite:
    """Read, validate and resolve a suite (the built-in default when ``path`` is None).

    ``targets`` replaces the suite's target list (``edgebench run --target``); profiles come from the
    built-ins, ``targets_file`` (or $EDGEBENCH_TARGETS, ~/.config/edgebench/targets.yaml) and the
    suite's ``target_profiles``.
    """
    from edgebench.backends import base
    from edgebench.models import recipes, zoo
    from edgebench.targets.profiles import load_profiles

    source = _suite_path(path)
    data = load_yaml(source)
    _importable_from(source.parent)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        known = {"": list(Suite.model_fields), "measure": list(Measure.model_fields), "backends": list(BackendRef.model_fields), "models": list(UserModel.model_fields)}
        raise from_validation_error(source, exc, known) from None
    _reject_repeats(suite, source)

    user_models = {}
    for i, model in enumerate(suite.models):
        if isinstance(model, UserModel):
            user_models[model.name] = _user_model(model, source, f"models[{i}]")
        elif model not in zoo.ZOO:
            raise ConfigError(f"{source}: models[{i}]: unknown model {model!r}; built-in models: {', '.join(sorted(zoo.ZOO))}, or a mapping with name and factory (or onnx)")
    for i, ref in enumerate(suite.backend_refs()):
        if ref.name not in base.names():
            raise ConfigError(f"{source}: backends[{i}]: unknown backend {ref.name!r}; known backends: {', '.join(base.names())}")
        _check_backend_ref(base.get(ref.name), ref, source, f"backends[{i}]")
    profiles = load_profiles(targets_file, suite.target_profiles + list(extra_profiles or []), f"{source}: target_profiles")
    if targets:
        suite.targets = list(dict.fromkeys(targets))
    resolved_profiles = {}
    for i, target in enumerate(suite.targets):
        try:
            resolved_profiles[target] = profiles.get(target)
        except ConfigError as exc:
            raise ConfigError(f"{source}: targets[{i}]: {exc}" if not targets else str(exc)) from None
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
    return LoadedSuite(suite, source, source.read_text(), resolved, user_models, resolved_profiles)
