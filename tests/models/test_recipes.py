"""Pruning recipes (models/recipes.py): the built-in library and what magnitude pruning does to a model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgebench.bench.contracts.errors import ConfigError
from edgebench.models import recipes, zoo
from edgebench.models.recipes import prunable_layers

EXPECTED_BUILTINS = {
    "dense", "l1-unstructured-50", "l1-unstructured-80", "l1-unstructured-layer-50", "l1-unstructured-90-agp",
    "channel-l2-50", "channel-fpgm-50", "channel-taylor-50", "channel-l2-50-kd", "semi-structured-2-4", "network-slimming-50",
    "l1-regularized-1e-4", "lottery-ticket-80", "iterative-magnitude-80", "snip-unstructured-80", "channel-hessian-50",
    "channel-l2-50-qat",
}


def ctx(finetune):
    """A PruneContext whose fine-tune is the test's function (called with the module only)."""
    import torch

    return recipes.PruneContext(finetune=lambda module, **kw: finetune(module), example=torch.zeros(1, 3, 32, 32), batches=lambda n: iter(()))


def fresh_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.small_cnn(num_classes=10).eval()


def recipe(sparsity: float, scope: str, epochs: int = 0) -> recipes.Recipe:
    return recipes.parse({"name": f"t-{scope}-{sparsity}", "method": "magnitude_unstructured",
                          "params": {"sparsity": sparsity, "scope": scope}, "finetune": {"epochs": epochs}}, "<test>")


def no_finetune(module):
    return module


def test_all_builtins_load():
    names = recipes.builtin_names()
    assert EXPECTED_BUILTINS <= set(names)
    for name in names:
        r = recipes.load(name)
        assert r.name == name
        assert r.method in recipes.METHODS
        # the method's params validate (load would have raised otherwise) and identity omits the prose
        assert "description" not in r.identity()
    assert recipes.load("l1-unstructured-80").params == {"sparsity": 0.8, "scope": "global"}
    assert recipes.load("l1-unstructured-layer-50").params["scope"] == "layer"
    agp = recipes.load("l1-unstructured-90-agp")
    assert (agp.schedule.kind, agp.schedule.steps, agp.schedule.epochs_per_step, agp.finetune.epochs) == ("agp", 4, 1, 3)
    assert agp.params == {"sparsity": 0.9, "scope": "global"}
    assert recipes.load("channel-l2-50").params == {"ratio": 0.5, "importance": "l2"}
    assert recipes.load("channel-l2-50").finetune.epochs == 5
    assert {recipes.load(f"channel-{k}-50").params["importance"] for k in ("l2", "fpgm", "taylor")} == {"l2", "fpgm", "taylor"}
    assert recipes.load("channel-l2-50-kd").finetune.distill == recipes.Distill(temperature=4.0, alpha=0.7)
    assert recipes.load("semi-structured-2-4").method == "semi_structured_2_4"
    assert recipes.load("network-slimming-50").params["ratio"] == 0.5
    # fine-tunes stay short: every built-in prunes ResNet-20 on digits in well under a minute
    for name in names:
        r = recipes.load(name)
        assert r.finetune.epochs + r.schedule.epochs_per_step * (r.schedule.steps - 1) + r.params.get("epochs", 0) <= 10, name


def test_new_method_builtins():
    assert recipes.load("l1-regularized-1e-4").params == {"l1": 1e-4, "epochs": 5, "threshold": 1e-3}
    assert recipes.load("snip-unstructured-80").params == {"sparsity": 0.8, "scope": "global", "criterion": "snip"}
    assert recipes.load("channel-hessian-50").params == {"ratio": 0.5, "importance": "hessian"}
    lottery, twin = recipes.load("lottery-ticket-80"), recipes.load("iterative-magnitude-80")
    assert (lottery.method, twin.method) == ("lottery_ticket", "magnitude_unstructured")
    assert lottery.params == {"sparsity": 0.8, "rewind_epoch": 1, "scope": "global"}
    # the comparison is fair: same final sparsity, same schedule, same training epochs and rate
    assert lottery.params["sparsity"] == twin.params["sparsity"]
    assert (lottery.schedule, lottery.finetune, lottery.seed) == (twin.schedule, twin.finetune, twin.seed)
    assert lottery.schedule.kind == "iterative" and lottery.schedule.steps == 4
    assert "criterion" not in recipes.load("l1-unstructured-80").params  # existing recipes keep their cache keys


def test_prunable_layers_are_every_conv_and_linear():
    m = fresh_model()
    layers = prunable_layers(m)
    assert [type(l).__name__ for l, _ in layers] == ["Conv2d", "Conv2d", "Conv2d", "Linear"]
    assert all(name == "weight" for _, name in layers)


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.33])
def test_global_sparsity_hits_target_and_prunes_smallest(sparsity):
    m = fresh_model()
    before = [l.weight.detach().clone() for l, _ in prunable_layers(m)]
    recipes.apply(recipe(sparsity, "global"), m, ctx(no_finetune))
    after = [l.weight.detach() for l, _ in prunable_layers(m)]
    total = sum(w.numel() for w in after)
    zeros = sum(int((w == 0).sum()) for w in after)
    assert abs(zeros - sparsity * total) <= len(after)
    # global L1: every weight removed is no larger in magnitude than every weight kept
    pruned = torch.cat([b[a == 0].abs().flatten() for a, b in zip(after, before)])
    kept = torch.cat([b[a != 0].abs().flatten() for a, b in zip(after, before)])
    assert pruned.max() <= kept.min()
    # kept weights are untouched without fine-tuning
    for a, b in zip(after, before):
        assert torch.equal(a[a != 0], b[a != 0])
    # layers end up with different sparsities (it is global, not per layer)
    per_layer = [float((w == 0).float().mean()) for w in after]
    assert max(per_layer) - min(per_layer) > 0.05


@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_layer_scope_hits_target_in_every_layer(sparsity):
    m = fresh_model(1)
    before = [l.weight.detach().clone() for l, _ in prunable_layers(m)]
    recipes.apply(recipe(sparsity, "layer"), m, ctx(no_finetune))
    for (layer, _), b in zip(prunable_layers(m), before):
        w = layer.weight.detach()
        zeros = int((w == 0).sum())
        assert abs(zeros - sparsity * w.numel()) <= 1, type(layer).__name__
        assert b[w == 0].abs().max() <= b[w != 0].abs().min()


def test_masks_are_made_permanent():
    m = fresh_model()
    clean_keys = set(fresh_model().state_dict())
    recipes.apply(recipe(0.5, "global"), m, ctx(no_finetune))
    names = {n for n, _ in m.named_parameters()} | {n for n, _ in m.named_buffers()}
    assert not any(n.endswith(("weight_orig", "weight_mask")) for n in names)
    for layer, _ in prunable_layers(m):
        assert len(layer._forward_pre_hooks) == 0
        assert isinstance(layer.weight, nn.Parameter)
    assert set(m.state_dict()) == clean_keys
    # it loads into a plain module, as the backends do
    fresh_model().load_state_dict(m.state_dict())


def test_finetune_keeps_pruned_weights_at_zero():
    m = fresh_model(2)
    seen = {}

    def finetune(module):
        layers = prunable_layers(module)
        seen["masks"] = [l.weight_mask.detach().clone() for l, _ in layers]
        seen["orig"] = [l.weight_orig.detach().clone() for l, _ in layers]
        gen = torch.Generator().manual_seed(0)
        opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        module.train()
        for _ in range(5):
            x = torch.randn(16, 3, 32, 32, generator=gen)
            y = torch.randint(0, 10, (16,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(module(x), y).backward()
            opt.step()
        module.eval()
        return module

    recipes.apply(recipe(0.6, "global", epochs=1), m, ctx(finetune))
    assert "masks" in seen, "the fine-tune function was not called"
    total = zeros = 0
    for (layer, _), mask, orig in zip(prunable_layers(m), seen["masks"], seen["orig"]):
        w = layer.weight.detach()
        assert torch.all(w[mask == 0] == 0)
        # training really moved the surviving weights
        assert not torch.allclose(w[mask == 1], orig[mask == 1])
        total += w.numel()
        zeros += int((w == 0).sum())
    assert abs(zeros - 0.6 * total) <= len(seen["masks"])


def test_dense_recipe_changes_nothing_and_does_not_finetune():
    m = fresh_model()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    called = []
    out = recipes.apply(recipes.load("dense"), m, ctx(lambda mod: called.append(mod)))
    assert out is m and called == []
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k])


def test_sparsity_of_one_is_rejected():
    with pytest.raises(ConfigError) as info:
        recipe(1.0, "global")
    assert str(info.value).startswith("<test>: params.sparsity")
    assert recipe(0.99, "global").params["sparsity"] == 0.99


# -- schema: schedule, quantize, distillation ------------------------------------------------------

def base(**extra):
    return {"name": "r", "method": "channel", "params": {"ratio": 0.5}, **extra}


def test_schedule_defaults_to_one_shot_and_round_trips():
    r = recipes.parse(base(), "<test>")
    assert r.schedule == recipes.Schedule(kind="one_shot", steps=1, epochs_per_step=0)
    agp = recipes.parse(base(schedule={"kind": "agp", "steps": 4, "epochs_per_step": 1}), "<test>")
    again = recipes.parse(agp.model_dump(), "<test>")
    assert again == agp and again.schedule.kind == "agp"


def test_distill_round_trips():
    r = recipes.parse(base(finetune={"epochs": 2, "distill": {"temperature": 3.0, "alpha": 0.25}}), "<test>")
    assert r.finetune.distill == recipes.Distill(temperature=3.0, alpha=0.25)
    assert recipes.parse(r.model_dump(), "<test>") == r
    assert r.identity()["finetune"]["distill"] == {"temperature": 3.0, "alpha": 0.25}  # part of the checkpoint key
    assert recipes.parse(base(finetune={"distill": {}}), "<test>").finetune.distill == recipes.Distill()


def test_quantize_is_validated_stored_and_not_part_of_the_pruned_identity():
    r = recipes.parse(base(quantize={"precision": "int8", "calibration": "entropy", "qat": True}), "<test>")
    assert r.quantize == recipes.Quantize(precision="int8", calibration="entropy", qat=True)
    assert recipes.parse(r.model_dump(), "<test>") == r
    assert recipes.parse(base(quantize={"precision": "fp16"}), "<test>").quantize.calibration == "minmax"
    assert recipes.parse(base(), "<test>").quantize is None
    ptq = recipes.parse(base(quantize={"precision": "int8"}), "<test>")
    assert "quantize" not in ptq.identity()  # post-training: applied at export, same pruned checkpoint
    assert ptq.identity() == recipes.parse(base(), "<test>").identity()
    assert "quantize" not in r.identity()  # QAT runs at each backend's export: PTQ and QAT twins share the pruned checkpoint


def test_identity_of_one_shot_recipes_is_unchanged_by_the_schedule_field():
    """A recipe without a schedule keeps the identity (cache key) it had before schedules existed."""
    r = recipes.load("l1-unstructured-50")
    assert r.identity() == {"name": "l1-unstructured-50", "method": "magnitude_unstructured",
                            "params": {"sparsity": 0.5, "scope": "global"},
                            "finetune": {"epochs": 2, "lr": 0.01, "distill": None}, "seed": 0}
    assert "schedule" in recipes.load("l1-unstructured-90-agp").identity()


def test_methods_and_schedules():
    assert {"dense", "magnitude_unstructured", "channel", "semi_structured_2_4", "network_slimming"} <= set(recipes.METHODS)
    assert recipes.METHODS["semi_structured_2_4"].schedules == ("one_shot",)
    for name in ("magnitude_unstructured", "channel", "network_slimming"):
        assert set(recipes.METHODS[name].schedules) == {"one_shot", "iterative", "agp"}
    p = recipes.parse(base(params={"ratio": 0.3, "importance": "taylor", "global": True, "round_to": 8}), "<test>")
    assert p.params["global"] is True
    assert recipes.ChannelParams.model_validate(p.params).global_ is True


# -- broken recipe files: one line naming the file, the key and the fix ---------------------------------

BROKEN = {
    "unknown schedule kind": (base(schedule={"kind": "cubic", "steps": 3}), ["schedule.kind", "'one_shot', 'iterative' or 'agp'"]),
    "agp for 2:4": ({"name": "r", "method": "semi_structured_2_4", "schedule": {"kind": "agp", "steps": 4}},
                    ["schedule.kind", "'semi_structured_2_4' does not support schedule kind agp", "remove schedule"]),
    "ratio 1.5": (base(params={"ratio": 1.5}), ["params.ratio", "less than 1"]),
    "unknown key in quantize": (base(quantize={"precision": "int8", "calib": "minmax"}), ["quantize.calib", "did you mean 'calibration'"]),
    "bad precision": (base(quantize={"precision": "int4"}), ["quantize.precision", "'int8' or 'fp16'"]),
    "one_shot with steps": (base(schedule={"kind": "one_shot", "steps": 3}), ["schedule:", "use kind: iterative or agp"]),
    "agp with one step": (base(schedule={"kind": "agp"}), ["schedule:", "agp needs steps >= 2"]),
    "epochs_per_step for one_shot": (base(schedule={"epochs_per_step": 2}), ["schedule:", "remove epochs_per_step"]),
    "schedule typo": (base(schedule={"kind": "agp", "step": 3}), ["schedule.step", "did you mean 'steps'"]),
    "unknown importance": (base(params={"ratio": 0.5, "importance": "l3"}), ["params.importance", "'l1', 'l2', 'fpgm', 'taylor' or 'hessian'"]),
    "unknown criterion": ({"name": "r", "method": "magnitude_unstructured", "params": {"sparsity": 0.5, "criterion": "grasp"}},
                          ["params.criterion", "'l1' or 'snip'"]),
    "lottery without rewind_epoch": ({"name": "r", "method": "lottery_ticket", "params": {"sparsity": 0.8}}, ["params.rewind_epoch", "required key is missing"]),
    "lottery rewind_epoch negative": ({"name": "r", "method": "lottery_ticket", "params": {"sparsity": 0.8, "rewind_epoch": -1}}, ["params.rewind_epoch"]),
    "lottery typo": ({"name": "r", "method": "lottery_ticket", "params": {"sparsity": 0.8, "rewind_epoch": 1, "scop": "layer"}}, ["params.scop", "did you mean 'scope'"]),
    "l1_regularized without training": ({"name": "r", "method": "l1_regularized", "params": {"l1": 1e-4, "epochs": 0}}, ["params.epochs", "greater than or equal to 1"]),
    "l1_regularized threshold typo": ({"name": "r", "method": "l1_regularized", "params": {"l1": 1e-4, "epochs": 5, "treshold": 0.01}},
                                      ["params.treshold", "did you mean 'threshold'"]),
    "l1_regularized schedule": ({"name": "r", "method": "l1_regularized", "params": {"l1": 1e-4, "epochs": 5}, "schedule": {"kind": "agp", "steps": 3}},
                                ["schedule.kind", "'l1_regularized' does not support schedule kind agp", "remove schedule"]),
    "global_ spelled the python way": (base(params={"ratio": 0.5, "global_": True}), ["params.global_", "did you mean 'global'"]),
    "2:4 with n=3": ({"name": "r", "method": "semi_structured_2_4", "params": {"n": 3}}, ["params.n"]),
    "slimming without epochs": ({"name": "r", "method": "network_slimming", "params": {"ratio": 0.5}}, ["params.epochs", "required key is missing"]),
    "distill typo": (base(finetune={"distill": {"temp": 2}}), ["finetune.distill.temp", "allowed keys: temperature, alpha"]),
    "schedule not a mapping": (base(schedule="agp"), ["schedule"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_recipe_file_gives_one_line(tmp_path, case):
    import yaml

    data, needles = BROKEN[case]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        recipes.load(str(path))
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{path}: "), msg
    for needle in needles:
        assert needle in msg, msg
