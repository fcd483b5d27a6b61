"""Suite configs: YAML, validated at the boundary, expanded into a matrix of cells.

A cell is model x recipe x backend x precision x batch size x target. Every error names the file,
the key and the fix in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgebench.bench.errors import ConfigError, from_validation_error, load_yaml
from edgebench.bench.results import MeasureSettings

DEFAULT_SUITE = Path(__file__).parent / "suites" / "default.yaml"
KNOWN_TARGETS = ("local",)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackendRef(Strict):
    name: str
    threads: int | None = Field(None, ge=1, le=1024)


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


class Suite(Strict):
    name: str = "custom"
    description: str = ""
    models: list[str] = Field(..., min_length=1)
    recipes: list[str] = Field(["dense"], min_length=1)
    backends: list[BackendRef] = Field(..., min_length=1)
    precisions: list[str] = Field(["fp32"], min_length=1)
    batch_sizes: list[int] = Field([1], min_length=1)
    targets: list[str] = Field(["local"], min_length=1)
    threads: int | None = Field(None, ge=1, le=1024, description="default intra-op threads for every backend")
    measure: Measure = Field(default_factory=Measure)
    cell_timeout_s: float = Field(300.0, gt=0)

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

    def cells(self) -> list[Cell]:
        """The full matrix, in a stable order (targets outermost so a board's cells run together)."""
        s = self.suite
        default_threads = s.threads or _default_threads()
        out = []
        for target in s.targets:
            for model in s.models:
                for recipe in self.recipes:
                    for ref in s.backend_refs():
                        for precision in s.precisions:
                            for batch in s.batch_sizes:
                                opts = {"threads": ref.threads or default_threads}
                                out.append(Cell(model, recipe, ref.name, precision, batch, target, opts))
        return out

    def measure_settings(self) -> MeasureSettings:
        return MeasureSettings(**self.suite.measure.model_dump())


def _default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _reject_repeats(suite: Suite, source: Path) -> None:
    """Each axis value once: a repeated one would give two cells with the same key."""
    axes = {
        "models": suite.models, "backends": [b.name for b in suite.backends], "precisions": suite.precisions,
        "batch_sizes": suite.batch_sizes, "targets": suite.targets,
    }
    for key, values in axes.items():
        seen: set[Any] = set()
        for i, value in enumerate(values):
            if value in seen:
                hint = "; to compare thread counts, run the suite once per setting and compare the runs" if key == "backends" else ""
                raise ConfigError(f"{source}: {key}[{i}]: {value!r} is listed twice; list each value once{hint}")
            seen.add(value)


def load_suite(path: Path | None = None) -> LoadedSuite:
    """Read, validate and resolve a suite (the built-in default when ``path`` is None)."""
    from edgebench.backends import base
    from edgebench.models import recipes, zoo

    source = Path(path) if path is not None else DEFAULT_SUITE
    data = load_yaml(source)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(source, exc, {"": list(Suite.model_fields), "measure": list(Measure.model_fields), "backends": list(BackendRef.model_fields)}) from None
    _reject_repeats(suite, source)

    for i, name in enumerate(suite.models):
        if name not in zoo.ZOO:
            raise ConfigError(f"{source}: models[{i}]: unknown model {name!r}; built-in models: {', '.join(sorted(zoo.ZOO))}")
    for i, ref in enumerate(suite.backend_refs()):
        if ref.name not in base.names():
            raise ConfigError(f"{source}: backends[{i}]: unknown backend {ref.name!r}; known backends: {', '.join(base.names())}")
    for i, target in enumerate(suite.targets):
        if target not in KNOWN_TARGETS:
            raise ConfigError(f"{source}: targets[{i}]: unknown target {target!r}; available targets: {', '.join(KNOWN_TARGETS)}")
    resolved = []
    for i, ref in enumerate(suite.recipes):
        try:
            resolved.append(recipes.load(ref, base_dir=source.parent))
        except ConfigError as exc:
            raise ConfigError(f"{source}: recipes[{i}]: {exc}") from None
    names = [r.name for r in resolved]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: recipes: two recipes are both named {dupes[0]!r}; give each recipe a unique name")
    return LoadedSuite(suite, source, source.read_text(), resolved)
