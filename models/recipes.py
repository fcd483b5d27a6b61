"""Pruning recipes: small YAML documents, validated, applied to a trained model.

A recipe names a ``method`` with its ``params``, an optional ``finetune`` and a ``seed``. The same
recipe on the same model, data and seed gives the same checkpoint, cached by content hash. Methods
register with :func:`method`; the built-in library is ``models/recipes/*.yaml`` and users pass a path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgebench.bench.errors import ConfigError, from_validation_error, load_yaml

LIBRARY = Path(__file__).parent / "recipes"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distill(Strict):
    """Knowledge distillation from the dense model during fine-tuning (Hinton et al.)."""

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)


class FineTune(Strict):
    epochs: int = Field(0, ge=0, le=1000)
    lr: float = Field(0.01, gt=0, le=10)
    distill: Distill | None = None


class Recipe(Strict):
    name: str
    description: str = ""
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    finetune: FineTune = Field(default_factory=FineTune)
    seed: int = 0

    def identity(self) -> dict[str, Any]:
        """What determines the pruned checkpoint (the description does not)."""
        return self.model_dump(exclude={"description"})


class DenseParams(Strict):
    pass


class MagnitudeParams(Strict):
    sparsity: float = Field(..., ge=0.0, lt=1.0, description="share of weights set to zero")
    scope: Literal["global", "layer"] = "global"
    criterion: Literal["l1"] = "l1"


@dataclass
class PruneContext:
    """What a pruning method may use besides the module and its params.

    ``finetune(module, epochs=None, lr=None, before_step=None, after_step=None)`` trains on the
    training split with the recipe's fine-tune settings (and its distillation teacher, if any) unless
    overridden; ``example`` is one input batch (a torch tensor) for tracing; ``batches(n)`` yields
    ``n`` (inputs, labels) training batches, e.g. for Taylor importance; ``classifier`` is the final
    layer, which keeps its output width.
    """

    finetune: Callable[..., Any]
    example: Any
    batches: Callable[[int], Any]
    classifier: Any = None


@dataclass(frozen=True)
class Method:
    params: type[Strict]
    apply: Callable[[Any, Any, PruneContext], Any]  # (module, params, context) -> pruned module


METHODS: dict[str, Method] = {}


def method(name: str, params: type[Strict]) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        METHODS[name] = Method(params, fn)
        return fn

    return deco


def prunable_layers(module: Any) -> list[tuple[Any, str]]:
    """Every Conv2d and Linear weight: what unstructured magnitude pruning may zero."""
    from torch import nn

    return [(m, "weight") for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@method("dense", DenseParams)
def _dense(module: Any, params: DenseParams, ctx: PruneContext) -> Any:
    return module


@method("magnitude_unstructured", MagnitudeParams)
def _magnitude(module: Any, params: MagnitudeParams, ctx: PruneContext) -> Any:
    """L1 magnitude pruning (``torch.nn.utils.prune``), fine-tuned under the mask, then made permanent."""
    from torch.nn.utils import prune

    layers = prunable_layers(module)
    if params.scope == "global":
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=params.sparsity)
    else:
        for layer, name in layers:
            prune.l1_unstructured(layer, name, amount=params.sparsity)
    ctx.finetune(module)  # the masks' forward pre-hooks keep pruned weights at zero while training
    for layer, name in layers:
        prune.remove(layer, name)
    return module


def builtin_names() -> list[str]:
    return sorted(p.stem for p in LIBRARY.glob("*.yaml"))


def load(ref: str, base_dir: Path | None = None) -> Recipe:
    """A recipe by built-in name or by path (relative paths resolve against ``base_dir``)."""
    builtin = LIBRARY / f"{ref}.yaml"
    if builtin.exists() and "/" not in ref:
        path = builtin
    else:
        path = Path(ref) if base_dir is None or Path(ref).is_absolute() else base_dir / ref
        if not path.exists():
            raise ConfigError(f"{path}: recipe not found; use a built-in name ({', '.join(builtin_names())}) or a path to a recipe YAML")
    return parse(load_yaml(path), path)


def parse(data: dict[str, Any], source: str | Path) -> Recipe:
    """Validate a recipe mapping, including its method's params."""
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(source, exc, {"": list(Recipe.model_fields), "finetune": list(FineTune.model_fields)}) from None
    m = METHODS.get(recipe.method)
    if m is None:
        raise ConfigError(f"{source}: method: unknown method {recipe.method!r}; choose one of: {', '.join(sorted(METHODS))}")
    try:
        m.params.model_validate(recipe.params)
    except ValidationError as exc:
        raise from_validation_error(source, _prefixed(exc), {"params": list(m.params.model_fields)}) from None
    return recipe


class _prefixed:
    """A ValidationError view whose locations start with ``params``."""

    def __init__(self, exc: ValidationError) -> None:
        self._exc = exc

    def errors(self) -> list[dict[str, Any]]:
        return [{**e, "loc": ("params", *e["loc"])} for e in self._exc.errors()]


def apply(recipe: Recipe, module: Any, ctx: PruneContext) -> Any:
    """Apply ``recipe`` to ``module`` and return the pruned module (structured methods replace layers)."""
    m = METHODS[recipe.method]
    return m.apply(module, m.params.model_validate(recipe.params), ctx)
