"""Pruning recipes (models/recipes.py): the built-in library and what magnitude pruning does to a model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgebench.bench.errors import ConfigError
from edgebench.models import recipes, zoo
from edgebench.models.recipes import prunable_layers

EXPECTED_BUILTINS = {"dense", "l1-unstructured-50", "l1-unstructured-80", "l1-unstructured-layer-50"}


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
