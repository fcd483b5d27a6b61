"""Pruning recipes: small YAML documents, validated, applied to a trained model.

A recipe names a ``method`` with its ``params``, an optional ``schedule`` (one-shot, iterative or
AGP), an optional ``finetune`` (with optional distillation), an optional ``quantize`` request for the
export step, and a ``seed``. The same recipe on the same model, data and seed gives the same
checkpoint, cached by content hash. A method is a :class:`Method` subclass declared with
``@METHODS.register`` (its name, params model and schedule kinds: the one place :func:`parse`
validates against); the algorithms live in ``models/pruning.py`` (the training-heavy ones and the
gradient criteria in ``models/pruning_train.py``); the built-in library is
``models/recipes/*.yaml`` and users pass a path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from edgebench.bench.contracts.errors import ConfigError, from_validation_error, load_yaml
from edgebench.bench.contracts.registry import Registry
from edgebench.bench.contracts.strict import Strict

LIBRARY = Path(__file__).parent / "recipes"
ALL_SCHEDULES = ("one_shot", "iterative", "agp")

class Distill(Strict):
    """Knowledge distillation from the dense model during fine-tuning (Hinton et al.)."""

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)


class FineTune(Strict):
    epochs: int = Field(0, ge=0, le=1000)
    lr: float = Field(0.01, gt=0, le=10)
    distill: Distill | None = None


class Schedule(Strict):
    """How the target is reached: ``one_shot`` (one step), ``iterative`` (``steps`` equal increments)
    or ``agp`` (Zhu & Gupta's cubic ramp ``s_t = s_f (1 - (1 - t/n)^3)``), with ``epochs_per_step``
    fine-tuning epochs between steps; the recipe's ``finetune`` runs after the last step."""

    kind: Literal["one_shot", "iterative", "agp"] = "one_shot"
    steps: int = Field(1, ge=1, le=100)
    epochs_per_step: int = Field(0, ge=0, le=1000)

    @model_validator(mode="after")
    def _consistent(self) -> Schedule:
        if self.kind == "one_shot" and self.steps != 1:
            raise PydanticCustomError("schedule", "one_shot prunes in one step, got steps: {steps}; use kind: iterative or agp for several steps", {"steps": self.steps})
        if self.kind == "one_shot" and self.epochs_per_step:
            raise PydanticCustomError("schedule", "one_shot has no steps to fine-tune between; remove epochs_per_step (finetune.epochs runs after pruning)")
        if self.kind != "one_shot" and self.steps < 2:
            raise PydanticCustomError("schedule", "{kind} needs steps >= 2, got {steps}; set steps or use kind: one_shot", {"kind": self.kind, "steps": self.steps})
        return self


class Quantize(Strict):
    """Quantisation requested for the exported model (consumed by the export backends, not here).

    ``precision`` int8 or fp16; ``calibration`` how int8 activation ranges are chosen from the
    calibration subset (ignored for fp16, and for QAT, whose ranges are learned); ``qat``:
    quantisation-aware fine-tuning through PT2E fake-quant for ``epochs`` at ``lr`` after pruning,
    with the quantiser of each int8 backend, at its export step. No pruning method reads it.
    """

    precision: Literal["int8", "fp16"]
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    qat: bool = False
    epochs: int = Field(2, ge=1, le=1000, description="QAT fine-tuning epochs (qat: true only)")
    lr: float = Field(0.001, gt=0, le=10, description="QAT fine-tuning learning rate (qat: true only)")

    @model_validator(mode="after")
    def _qat_is_int8(self) -> Quantize:
        if self.qat and self.precision != "int8":
            raise PydanticCustomError("quantize", "qat trains int8 fake-quant; precision {precision} has nothing to train: set precision: int8 or remove qat", {"precision": self.precision})
        return self


class Recipe(Strict):
    name: str
    description: str = ""
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: Schedule = Field(default_factory=Schedule)
    finetune: FineTune = Field(default_factory=FineTune)
    quantize: Quantize | None = None
    seed: int = 0

    def identity(self) -> dict[str, Any]:
        """What determines the pruned checkpoint: not the description, not ``quantize`` (post-training
        quantisation and QAT both happen at each backend's export step, with that backend's quantiser,
        so a QAT recipe's pruned fp32 checkpoint holds the same weights as its PTQ twin's: the two
        differ only in ``name``, which stays in the key), and not a default one-shot
        schedule (so one-shot recipes keep the cache keys they had before schedules existed)."""
        out = self.model_dump(exclude={"description"})
        del out["quantize"]
        if self.schedule == Schedule():
            del out["schedule"]
        return out


@dataclass
class PruneContext:
    """What a pruning method may use besides the module and its params.

    ``finetune(module, epochs=None, lr=None, before_step=None, after_step=None)`` trains on the
    training split with the recipe's fine-tune settings (and its distillation teacher, if any) unless
    overridden; ``example`` is one input batch (a torch tensor) for tracing; ``batches(n)`` yields
    ``n`` (inputs, labels) training batches, e.g. for Taylor importance; ``classifier`` is the final
    layer, which keeps its output width (None: the last Linear). ``schedule`` is the recipe's
    :class:`Schedule`, filled in by :func:`apply`. ``rewind(epoch)`` returns the state_dict the dense
    model had after ``epoch`` epochs of its own training (same seed, same schedule: 0 is its
    initialisation), for weight rewinding (lottery tickets); None where the dense model was not
    trained here.
    """

    finetune: Callable[..., Any]
    example: Any
    batches: Callable[[int], Any]
    classifier: Any = None
    schedule: Schedule | None = None
    rewind: Callable[[int], Any] | None = None


class Method:
    """A pruning method. Subclass it, set ``name``, ``params`` (the Strict model of its ``params:``)
    and ``schedules`` (the schedule kinds it supports; it reads the steps from ``ctx.schedule``),
    implement :meth:`prune` and declare it with ``@METHODS.register``: nothing else lists methods."""

    name: ClassVar[str]
    params: ClassVar[type[Strict]]
    schedules: ClassVar[tuple[str, ...]] = ("one_shot",)

    def prune(self, module: Any, params: Any, ctx: PruneContext) -> Any:
        """Return the pruned ``module`` (structured methods shrink layers in place)."""
        raise NotImplementedError

    def expectations(self, params: Any) -> dict[str, Any]:
        """What the exported artifact must show, for the backend's artifact check (e.g.
        ``{"pattern": "2:4"}``: the pattern survived export). Default: nothing to check."""
        return {}

    def check(self, params: Any, schedule: Schedule) -> str | None:
        """A cross check of ``params`` against ``schedule`` that the params model alone cannot do:
        the problem as ``"key: what is wrong; the fix"`` (``parse`` adds the source), or None."""
        return None


METHODS: Registry[type[Method]] = Registry("method")


def prunable_layers(module: Any) -> list[tuple[Any, str]]:
    """Every Conv2d and Linear weight: what unstructured magnitude pruning may zero."""
    from torch import nn

    return [(m, "weight") for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# -- the methods: each its params model and its class, declared where it is defined ------------------
# (models/pruning.py imports torch, so each method imports it when it runs: recipes load without torch)


class DenseParams(Strict):
    pass


@METHODS.register
class Dense(Method):
    """The dense model itself: the reference every recipe is compared with."""

    name = "dense"
    params = DenseParams

    def prune(self, module: Any, params: DenseParams, ctx: PruneContext) -> Any:
        return module


class MagnitudeParams(Strict):
    sparsity: float = Field(..., ge=0.0, lt=1.0, description="share of weights set to zero")
    scope: Literal["global", "layer"] = "global"
    criterion: Literal["l1", "snip"] = Field("l1", description="l1: |w|; snip: SNIP connection sensitivity |w * dL/dw| on a few training batches, fresh at every step")


@METHODS.register
class MagnitudeUnstructured(Method):
    """Unstructured pruning (``torch.nn.utils.prune``) by |w| or SNIP sensitivity to the schedule's
    targets, fine-tuned under the masks, then made permanent."""

    name = "magnitude_unstructured"
    params = MagnitudeParams
    schedules = ALL_SCHEDULES

    def prune(self, module: Any, params: MagnitudeParams, ctx: PruneContext) -> Any:
        from edgebench.models import pruning, pruning_train

        scorer = pruning_train.snip_scorer(ctx) if params.criterion == "snip" else None
        return pruning.magnitude_unstructured(module, params.sparsity, params.scope, ctx.schedule, ctx, scorer=scorer, criterion=params.criterion)


class L1RegularizedParams(Strict):
    l1: float = Field(..., ge=0.0, le=1.0, description="lambda: loss + lambda * sum |w| over every conv and linear weight while training")
    epochs: int = Field(..., ge=1, le=1000, description="L1-regularised training epochs before thresholding")
    threshold: float = Field(1e-3, gt=0.0, lt=1.0, description="absolute |w| at or below which a weight is pruned after the L1 training")


@METHODS.register
class L1Regularized(Method):
    """Training with an L1 penalty on the weights, then an absolute magnitude threshold, then the
    fine-tune under the masks: the sparsity reached is the outcome (in the prune report)."""

    name = "l1_regularized"
    params = L1RegularizedParams

    def prune(self, module: Any, params: L1RegularizedParams, ctx: PruneContext) -> Any:
        from edgebench.models import pruning_train

        return pruning_train.l1_regularized(module, params.l1, params.epochs, params.threshold, ctx)


class LotteryParams(Strict):
    sparsity: float = Field(..., gt=0.0, lt=1.0, description="share of weights set to zero after the last round")
    rewind_epoch: int = Field(..., ge=0, le=1000, description="the dense training's epoch the surviving weights are rewound to each round (0: initialisation)")
    scope: Literal["global", "layer"] = "global"


@METHODS.register
class LotteryTicket(Method):
    """Iterative magnitude pruning with weight rewinding (Frankle et al. 2019): rounds are the
    schedule's steps, retraining between them ``schedule.epochs_per_step``, after the last the
    recipe's fine-tune. Needs a model trained here (``PruneContext.rewind``)."""

    name = "lottery_ticket"
    params = LotteryParams
    schedules = ALL_SCHEDULES

    def prune(self, module: Any, params: LotteryParams, ctx: PruneContext) -> Any:
        from edgebench.models import pruning_train

        return pruning_train.lottery_ticket(module, params.sparsity, params.rewind_epoch, params.scope, ctx.schedule, ctx)


class ChannelParams(Strict):
    ratio: float = Field(..., gt=0.0, lt=1.0, description="share of each layer's output channels removed (torch-pruning's pruning_ratio)")
    importance: Literal["l1", "l2", "fpgm", "taylor", "hessian"] = Field("l2", description="hessian: Optimal Brain Damage (torch-pruning's GroupHessianImportance, per-sample gradients)")
    global_: bool = Field(False, alias="global", description="rank channels across layers instead of within each layer")
    round_to: int | None = Field(None, ge=1, le=1024, description="keep channel counts multiples of this")


@METHODS.register
class Channel(Method):
    """Structured channel pruning on torch-pruning's dependency graph: the module shrinks."""

    name = "channel"
    params = ChannelParams
    schedules = ALL_SCHEDULES

    def prune(self, module: Any, params: ChannelParams, ctx: PruneContext) -> Any:
        from edgebench.models import pruning, pruning_train

        if params.importance == "hessian":
            return pruning_train.channel_hessian(module, params.ratio, params.global_, params.round_to, ctx.schedule, ctx)
        return pruning.channel(module, params.ratio, params.importance, params.global_, params.round_to, ctx.schedule, ctx)


class SemiStructuredParams(Strict):
    n: Literal[2] = 2
    m: Literal[4] = 4
    criterion: Literal["l1"] = "l1"


@METHODS.register
class SemiStructured(Method):
    """2:4 sparsity along the input channels of every eligible Conv2d/Linear (one-shot only)."""

    name = "semi_structured_2_4"
    params = SemiStructuredParams

    def prune(self, module: Any, params: SemiStructuredParams, ctx: PruneContext) -> Any:
        from edgebench.models import pruning

        return pruning.semi_structured(module, params.n, params.m, ctx)

    def expectations(self, params: SemiStructuredParams) -> dict[str, Any]:
        return {"pattern": f"{params.n}:{params.m}"}


class SlimmingParams(Strict):
    ratio: float = Field(..., gt=0.0, lt=1.0, description="share of channels removed, ranked by |BN scale|")
    l1: float = Field(1e-4, ge=0.0, le=1.0, description="L1 penalty on BatchNorm scales during sparsity training")
    epochs: int = Field(..., ge=0, le=1000, description="sparsity-regularised training epochs before pruning")
    global_: bool = Field(True, alias="global", description="one |gamma| threshold across layers (the paper's choice)")


@METHODS.register
class NetworkSlimming(Method):
    """Network slimming: L1 on BN scales while training, then remove the smallest-|gamma| channels."""

    name = "network_slimming"
    params = SlimmingParams
    schedules = ALL_SCHEDULES

    def prune(self, module: Any, params: SlimmingParams, ctx: PruneContext) -> Any:
        from edgebench.models import pruning

        return pruning.network_slimming(module, params.ratio, params.l1, params.epochs, params.global_, ctx.schedule, ctx)


class ChannelWidthsParams(Strict):
    steps: list[dict[str, Annotated[int, Field(ge=1)]]] = Field(..., min_length=1, description="per step: channel group -> kept width")
    importance: Literal["l1", "l2"] = "l2"


@METHODS.register
class ChannelWidths(Method):
    """Per-group widths reached in steps (what `edgebench fit` writes)."""

    name = "channel_widths"
    params = ChannelWidthsParams
    schedules = ("one_shot", "iterative")

    def check(self, params: ChannelWidthsParams, schedule: Schedule) -> str | None:
        n = len(params.steps)
        if schedule.kind == "one_shot" and n != 1:
            return f"params.steps: a one_shot schedule takes exactly one step, got {n}; use schedule kind: iterative with steps: {n}"
        if schedule.kind == "iterative" and schedule.steps != n:
            return f"params.steps: lists {n} steps but schedule.steps is {schedule.steps}; make them equal"
        narrowest: dict[str, int] = {}
        for i, step in enumerate(params.steps):
            for group, w in step.items():
                if w > narrowest.get(group, w):
                    return f"params.steps[{i}].{group}: width {w} widens the group an earlier step narrowed to {narrowest[group]}; widths may only shrink"
                narrowest[group] = min(w, narrowest.get(group, w))
        return None

    def prune(self, module: Any, params: ChannelWidthsParams, ctx: PruneContext) -> Any:
        from edgebench.models import fit

        return fit.channel_widths(module, params.steps, params.importance, ctx.schedule, ctx)


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


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def parse(data: dict[str, Any], source: str | Path) -> Recipe:
    """Validate a recipe mapping: its keys, schedule, quantize, method, the method's params and
    whether the method supports the schedule. Errors are one line naming ``source`` and the key."""
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        known = {"": _keys(Recipe), "finetune": _keys(FineTune), "finetune.distill": _keys(Distill),
                 "schedule": _keys(Schedule), "quantize": _keys(Quantize)}
        raise from_validation_error(source, exc, known) from None
    if recipe.method not in METHODS:
        raise ConfigError(f"{source}: method: unknown method {recipe.method!r}; choose one of: {', '.join(METHODS.names())}")
    m = METHODS.get(recipe.method)
    try:
        m.params.model_validate(recipe.params)
    except ValidationError as exc:
        raise from_validation_error(source, _prefixed(exc), {"params": _keys(m.params)}) from None
    if recipe.schedule.kind not in m.schedules:
        supported = ", ".join(m.schedules)
        fix = "remove schedule (one-shot is the default)" if m.schedules == ("one_shot",) else f"use one of: {supported}"
        raise ConfigError(f"{source}: schedule.kind: method {recipe.method!r} does not support schedule kind {recipe.schedule.kind} (supported: {supported}); {fix}")
    problem = m().check(m.params.model_validate(recipe.params), recipe.schedule)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    return recipe


class _prefixed:
    """A ValidationError view whose locations start with ``params``."""

    def __init__(self, exc: ValidationError) -> None:
        self._exc = exc

    def errors(self) -> list[dict[str, Any]]:
        return [{**e, "loc": ("params", *e["loc"])} for e in self._exc.errors()]


def expectations(recipe: Recipe) -> dict[str, Any]:
    """What ``recipe``'s method promises about the exported artifact (see :meth:`Method.expectations`)."""
    m = METHODS.get(recipe.method)
    return m().expectations(m.params.model_validate(recipe.params))


def apply(recipe: Recipe, module: Any, ctx: PruneContext) -> Any:
    """Apply ``recipe`` to ``module`` and return the pruned module (structured methods shrink layers
    in place). The method reads the recipe's schedule from ``ctx.schedule``."""
    m = METHODS.get(recipe.method)
    if recipe.schedule.kind not in m.schedules:
        raise ValueError(f"method {recipe.method!r} does not support schedule kind {recipe.schedule.kind}")
    return m().prune(module, m.params.model_validate(recipe.params), replace(ctx, schedule=recipe.schedule))
