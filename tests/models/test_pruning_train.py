"""The training-heavy pruning methods and gradient criteria (models/pruning_train.py): L1-regularised
training, lottery tickets with rewinding, SNIP and the Hessian (OBD) channel importance; their
invariants on tiny models, then (slow) the real replay of the dense training and every new built-in
recipe exported to torch, ONNX Runtime and LiteRT."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from edgebench.models import pruning, pruning_train, recipes
from test_pruning import FakeTrainer, assert_block_consistency, assert_clean, conv_linear, no_finetune_ctx, recipe, resnet, small_cnn

X32 = torch.zeros(1, 3, 32, 32)
NEW_BUILTINS = ["l1-regularized-1e-4", "lottery-ticket-80", "iterative-magnitude-80", "snip-unstructured-80", "channel-hessian-50"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


def zeros_share(module: nn.Module) -> float:
    ws = [l.weight.detach() for _, l in conv_linear(module)]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def masks_now(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: l.weight_mask.clone() for n, l in conv_linear(module) if prune.is_pruned(l)}


# -- L1-regularised training ---------------------------------------------------------------------------

def test_weight_l1_subgradient_adds_sign_times_lambda_to_conv_and_linear_only():
    m = nn.Sequential(nn.Linear(3, 1, bias=True), nn.BatchNorm1d(1))
    m[0].weight.data = torch.tensor([[0.5, -0.2, 0.0]])
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    pruning_train.weight_l1_subgradient(0.1)(m)
    assert m[0].weight.grad.tolist() == [pytest.approx([1.1, 0.9, 1.0])]
    assert m[0].bias.grad.tolist() == [1.0] and m[1].weight.grad.tolist() == [1.0]  # not penalised


def test_l1_regularized_sparsity_grows_with_lambda_and_is_what_the_weights_show():
    reached = {}
    for lam in (0.0, 0.02):
        m = small_cnn(2)
        masks = {}
        trainer = FakeTrainer(size=32, steps_per_epoch=4, on_call=lambda mod: masks.update(masks_now(mod)))
        recipes.apply(recipe("l1_regularized", {"l1": lam, "epochs": 2, "threshold": 5e-3}, epochs=1), m, trainer.ctx(X32))
        # the L1 training (with its hook), then the plain fine-tune under the masks
        assert [c["epochs"] for c in trainer.calls] == [2, None]
        assert trainer.calls[0]["before_step"] is not None and trainer.calls[1]["before_step"] is None
        rep = pruning.prune_report(m)
        assert rep["sparsity"] == pytest.approx(zeros_share(m))
        assert rep["threshold_kind"] == "absolute" and rep["share_below"]["0.01"] >= rep["share_below"]["0.001"]
        for name, layer in conv_linear(m):
            w = layer.weight.detach()
            assert rep["layers"][name]["sparsity"] == pytest.approx(float((w == 0).float().mean()))
            assert torch.equal(w == 0, masks[name] == 0)  # the threshold's mask held through the fine-tune
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert_clean(m)
        json.dumps(rep)
        reached[lam] = rep["sparsity"]
        assert rep["weight_l1_after_l1_training"] < rep["weight_l1_before"] or lam == 0
    assert reached[0.02] > reached[0.0] + 0.05


def test_l1_regularized_threshold_is_absolute_across_layers():
    m = small_cnn(3)
    with torch.no_grad():  # one layer with 100x larger weights: a relative threshold would prune it alike
        m.features[0][0].weight.mul_(100)
    recipes.apply(recipe("l1_regularized", {"l1": 0.0, "epochs": 1, "threshold": 2e-2}), m, no_finetune_ctx(X32))
    rep = pruning.prune_report(m)
    assert rep["layers"]["features.0.0"]["sparsity"] < 0.01 < rep["layers"]["features.1.0"]["sparsity"]
    for _, layer in conv_linear(m):  # every survivor is above the threshold, every pruned one was at or below it
        w = layer.weight.detach()
        assert bool((w[w != 0].abs() > 2e-2).all())


# -- lottery tickets ------------------------------------------------------------------------------------------

class Rewinder:
    """A ``ctx.rewind`` that returns a fixed checkpoint and records the epochs asked for."""

    def __init__(self, state: dict) -> None:
        self.state, self.asked = copy.deepcopy(state), []

    def __call__(self, epoch: int) -> dict:
        self.asked.append(epoch)
        return copy.deepcopy(self.state)


@pytest.mark.parametrize("kind", ["iterative", "agp"])
def test_lottery_rewinds_survivors_each_round_and_keeps_the_masks(kind):
    checkpoint = small_cnn(11).state_dict()  # "epoch 1" of the dense training: other weights than the trained ones
    m = small_cnn(12)
    trained = {n: l.weight.detach().clone() for n, l in conv_linear(m)}
    seen = []  # per fine-tune call: the masks and whether the survivors are the checkpoint's weights

    def record(module):
        masks = masks_now(module)
        rewound = all(torch.equal(l.weight_orig.detach() * masks[n], checkpoint[f"{n}.weight"] * masks[n]) for n, l in conv_linear(module))
        bn = next(b for b in module.modules() if isinstance(b, nn.BatchNorm2d))
        seen.append((masks, rewound, bn.running_mean.clone()))

    trainer = FakeTrainer(size=32, on_call=record)
    ctx = trainer.ctx(X32)
    ctx.rewind = Rewinder(checkpoint)
    r = recipe("lottery_ticket", {"sparsity": 0.8, "rewind_epoch": 1}, {"kind": kind, "steps": 3, "epochs_per_step": 1}, epochs=1)
    recipes.apply(r, m, ctx)
    assert ctx.rewind.asked == [1]  # replayed once for every round
    assert [c["epochs"] for c in trainer.calls] == [1, 1, None]
    targets = pruning.schedule_targets(0.8, r.schedule)
    total = sum(w.numel() for w in trained.values())
    for (masks, rewound, running_mean), target in zip(seen, targets):
        assert rewound  # every round starts from the rewind checkpoint's weights under the new mask
        assert abs(sum(int((mk == 0).sum()) for mk in masks.values()) - round(target * total)) <= 1
        first_bn = next(k for k in checkpoint if k.endswith("running_mean"))
        assert torch.equal(running_mean, checkpoint[first_bn])  # buffers rewound too
    for (a, _, _), (b, _, _) in zip(seen, seen[1:]):  # a pruned weight stays pruned
        assert all(bool((b[n][a[n] == 0] == 0).all()) for n in a)
    # round 1 prunes by the *trained* weights' magnitude, not the checkpoint's
    expected = pruning.score_masks([w.abs() for w in trained.values()], targets[0], "global")
    assert all(torch.equal(seen[0][0][n], e) for n, e in zip(trained, expected))
    for name, layer in conv_linear(m):  # the last mask held through the final fine-tune
        assert torch.equal(layer.weight.detach() == 0, seen[-1][0][name] == 0)
    rep = pruning.prune_report(m)
    assert rep["sparsity"] == pytest.approx(zeros_share(m)) and abs(rep["sparsity"] - 0.8) < 1e-4
    assert rep["rewind_epoch"] == 1 and rep["targets"] == pytest.approx(targets)
    assert_clean(m)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_lottery_without_a_training_to_rewind_to_is_one_line():
    with pytest.raises(ValueError, match=r"^lottery_ticket rewinds to the dense model's own training.*use magnitude_unstructured") as exc:
        recipes.apply(recipe("lottery_ticket", {"sparsity": 0.5, "rewind_epoch": 0}), small_cnn(), no_finetune_ctx(X32))
    assert "\n" not in str(exc.value)


def test_lottery_rewind_epoch_past_the_training_names_the_param():
    def rewind(epoch):
        raise ValueError(f"rewind epoch {epoch} is outside tiny's training (0..6 epochs)")

    ctx = no_finetune_ctx(X32)
    ctx.rewind = rewind
    with pytest.raises(ValueError, match=r"^lottery_ticket params\.rewind_epoch: rewind epoch 9 is outside tiny's training \(0\.\.6 epochs\); set rewind_epoch within it$"):
        recipes.apply(recipe("lottery_ticket", {"sparsity": 0.5, "rewind_epoch": 9}), small_cnn(), ctx)


def test_lottery_and_its_twin_differ_only_by_rewinding():
    """No rewinding to a different checkpoint (rewind = the trained weights) and no training: the
    lottery ticket is exactly iterative magnitude pruning."""
    a, b = small_cnn(13), small_cnn(13)
    ctx = no_finetune_ctx(X32)
    ctx.rewind = Rewinder(a.state_dict())
    sched = {"kind": "iterative", "steps": 3}
    recipes.apply(recipe("lottery_ticket", {"sparsity": 0.7, "rewind_epoch": 0}, sched), a, ctx)
    recipes.apply(recipe("magnitude_unstructured", {"sparsity": 0.7}, sched), b, no_finetune_ctx(X32))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# -- SNIP -------------------------------------------------------------------------------------------------------

def test_snip_scores_are_w_times_grad_and_pruned_weights_score_lowest():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])
    ref = copy.deepcopy(m)
    (nn.functional.cross_entropy(ref(x), y) * 2).backward()  # two identical batches: the summed loss
    layers = [m[0], m[2]]
    scores = pruning_train.snip_scores(m, layers, [(x, y), (x, y)])
    for s, r in zip(scores, [ref[0], ref[2]]):
        assert torch.allclose(s, (r.weight * r.weight.grad).abs().detach())
    assert all(p.grad is None for p in m.parameters())  # gradients cleared after scoring
    prune.custom_from_mask(m[0], "weight", torch.tensor([[0.0, 1, 1, 1]] * 3))
    scores = pruning_train.snip_scores(m, layers, [(x, y)])
    assert scores[0][:, 0].tolist() == [-1.0] * 3 and bool((scores[0][:, 1:] >= 0).all())


def test_snip_prunes_large_weights_the_loss_does_not_need():
    """Input feature 0 is always zero: its weights are large but have no gradient. SNIP prunes them
    first; |w| keeps them."""
    def model():
        torch.manual_seed(1)
        m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        m[0].weight.data[:, 0] = 5.0
        return m

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=gen)
    x[:, 0] = 0
    data = (x, torch.randint(0, 3, (16,), generator=gen))
    ctx = recipes.PruneContext(finetune=lambda mod, **kw: mod, example=x[:1], batches=lambda n: iter([data] * n))
    snip, l1 = model(), model()
    recipes.apply(recipe("magnitude_unstructured", {"sparsity": 0.25, "criterion": "snip"}), snip, ctx)
    recipes.apply(recipe("magnitude_unstructured", {"sparsity": 0.25}), l1, ctx)
    assert bool((snip[0].weight[:, 0] == 0).all()) and bool((l1[0].weight[:, 0] != 0).all())
    assert pruning.prune_report(snip)["criterion"] == "snip"


@pytest.mark.parametrize("kind", ["one_shot", "iterative", "agp"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_snip_schedules_hit_each_target_and_keep_pruned_weights(kind, scope):
    seen = []
    trainer = FakeTrainer(size=32, on_call=lambda mod: seen.append(masks_now(mod)))
    m = small_cnn(14)
    sched = None if kind == "one_shot" else {"kind": kind, "steps": 3, "epochs_per_step": 1}
    r = recipe("magnitude_unstructured", {"sparsity": 0.75, "scope": scope, "criterion": "snip"}, sched, epochs=1)
    recipes.apply(r, m, trainer.ctx(X32))
    targets = pruning.schedule_targets(0.75, r.schedule)
    for masks, target in zip(seen, targets):
        if scope == "global":
            total = sum(mk.numel() for mk in masks.values())
            assert abs(sum(int((mk == 0).sum()) for mk in masks.values()) - round(target * total)) <= 1
        else:
            assert all(int((mk == 0).sum()) == round(target * mk.numel()) for mk in masks.values())
    for a, b in zip(seen, seen[1:]):
        assert all(bool((b[n][a[n] == 0] == 0).all()) for n in a)
    for name, layer in conv_linear(m):
        assert torch.equal(layer.weight.detach() == 0, seen[-1][name] == 0)
    assert_clean(m)


def test_snip_needs_batches():
    ctx = recipes.PruneContext(finetune=lambda m, **kw: m, example=X32, batches=lambda n: iter(()))
    with pytest.raises(ValueError, match="snip criterion needs training batches"):
        recipes.apply(recipe("magnitude_unstructured", {"sparsity": 0.5, "criterion": "snip"}), small_cnn(), ctx)


# -- Hessian (OBD) channel importance ----------------------------------------------------------------------

def per_sample_grads(n: int = 3):
    torch.manual_seed(0)
    m = nn.Linear(3, 2)
    grads = []
    imp = pruning_train.hessian_importance()
    for i in range(n):
        m.zero_grad()
        m(torch.randn(1, 3)).sum().backward()
        grads.append(m.weight.grad.clone())
        imp.accumulate_grad(m)
    return m, imp, grads


def test_hessian_accumulates_the_mean_squared_gradient_of_every_sample():
    m, imp, grads = per_sample_grads()
    assert imp._counter[m.weight] == 3
    assert torch.allclose(imp._accu_grad[m.weight] / imp._counter[m.weight], torch.stack(grads).pow(2).mean(0))


def test_torch_pruning_accumulate_grad_still_keeps_only_the_last_sample():
    """Why hessian_importance overrides accumulate_grad. When this fails, torch-pruning fixed it:
    drop the override in pruning_train.hessian_importance."""
    import torch_pruning as tp

    m, _, grads = per_sample_grads()
    lib = tp.importance.GroupHessianImportance()
    for g in grads:
        m.weight.grad = g.clone()
        lib.accumulate_grad(m)
    assert lib._counter[m.weight] == 1 and torch.equal(lib._accu_grad[m.weight], grads[-1].pow(2))


def test_hessian_prunes_large_channels_the_loss_does_not_see():
    """Two first-stage channels with 10x weights whose outputs the next layer ignores: OBD scores them
    zero (no curvature) and removes them; L2 magnitude keeps them."""
    def model():
        m = small_cnn(15)
        with torch.no_grad():
            m.features[0][0].weight[[2, 7]] *= 10
            m.features[1][0].weight[:, [2, 7]] = 0
        return m

    big = model().features[0][0].weight.detach()[[2, 7]].clone()
    ctx = no_finetune_ctx(X32)
    ctx.batches = lambda n: FakeBatches(n)
    kept = {}
    for imp in ("hessian", "l2"):
        m = model()
        recipes.apply(recipe("channel", {"ratio": 0.25, "importance": imp}), m, ctx)
        w = m.features[0][0].weight.detach()
        kept[imp] = any(torch.equal(w[i], big[j]) for i in range(w.shape[0]) for j in range(2))
        assert m.features[0][0].out_channels == 12 and m(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert kept == {"hessian": False, "l2": True}


def FakeBatches(n: int, size: int = 32):
    gen = torch.Generator().manual_seed(n)
    for _ in range(n):
        yield torch.randn(4, 3, size, size, generator=gen), torch.randint(0, 10, (4,), generator=gen)


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("global_", [False, True])
def test_hessian_channel_pruning_on_residual_and_depthwise(depthwise, global_):
    m = resnet(depthwise)
    fed = []
    ctx = FakeTrainer().ctx()
    batches = ctx.batches
    ctx.batches = lambda n: (fed.append(n), batches(n))[1]
    recipes.apply(recipe("channel", {"ratio": 0.5, "importance": "hessian", "global": global_}, {"kind": "iterative", "steps": 2, "epochs_per_step": 1}), m, ctx)
    assert fed == [pruning_train.HESSIAN_BATCHES] * 2  # fresh per-sample gradients before every step
    assert_block_consistency(m)
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    rep = pruning.prune_report(m)
    assert rep["importance"] == "hessian" and rep["params_after"] < 0.6 * rep["params_before"]


def test_hessian_needs_batches():
    ctx = recipes.PruneContext(finetune=lambda m, **kw: m, example=torch.zeros(1, 3, 16, 16), batches=lambda n: iter(()))
    with pytest.raises(ValueError, match="hessian importance needs training batches"):
        recipes.apply(recipe("channel", {"ratio": 0.5, "importance": "hessian"}), resnet(), ctx)


# -- the real pipeline: rewinding replays the dense training; every new recipe exports ------------------------

@pytest.fixture(scope="module")
def tiny_prep(tmp_path_factory):
    """A Preparer with ``tiny``: the small CNN trained 1 epoch on digits (a few seconds)."""
    from edgebench.bench.prepare import Preparer
    from edgebench.models import zoo
    from edgebench.models.cache import Cache

    tiny = zoo.ZooEntry("edgebench.models.zoo:small_cnn", "digits", 32, {"num_classes": 10}, train_epochs=1, lr=0.05)
    threads = torch.get_num_threads()
    prep = Preparer(Cache(tmp_path_factory.mktemp("m-cache")), log=lambda s: None, models={"tiny": tiny})
    prep.dense("tiny")
    yield prep
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_rewind_replays_the_dense_training_exactly(tiny_prep):
    from edgebench.models.arch import build_module
    from edgebench.models import train

    dense = tiny_prep.dense("tiny")
    trained = tiny_prep.module_of(dense).state_dict()
    data = tiny_prep.dataset("digits", 32)
    ctx = tiny_prep._context(recipes.load("lottery-ticket-80"), data, dense, "tiny")
    replayed = ctx.rewind(1)  # all of its 1 epoch
    assert trained.keys() == replayed.keys()
    assert all(torch.equal(trained[k], replayed[k]) for k in trained)
    train.seed_everything(0)
    init = build_module(tiny_prep.spec("tiny").arch()).state_dict()
    assert all(torch.equal(init[k], v) for k, v in ctx.rewind(0).items())
    with pytest.raises(ValueError, match="outside tiny's training"):
        ctx.rewind(2)


def short(name: str) -> recipes.Recipe:
    """The built-in recipe with one epoch wherever it trains: the same code paths, seconds not minutes."""
    data = recipes.load(name).model_dump(exclude={"quantize"}, by_alias=True)
    data["finetune"]["epochs"] = 1
    if data["schedule"]["kind"] != "one_shot":
        data["schedule"].update(steps=2, epochs_per_step=1)
    if "epochs" in data["params"]:
        data["params"]["epochs"] = 1
    if data["method"] == "lottery_ticket":
        data["params"]["rewind_epoch"] = 0
    return recipes.parse(data, f"<{name}>")


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_BUILTINS)
def test_new_recipes_prune_and_export_to_every_backend(tiny_prep, name):
    from edgebench import backends

    r = short(name)
    entry = tiny_prep.pruned("tiny", r)
    facts = entry.manifest["facts"]
    rep = facts["prune_report"]
    module = tiny_prep.module_of(entry)
    assert module(X32).shape == (1, 10)
    if r.method == "channel":
        assert rep["importance"] == "hessian" and facts["params"] < tiny_prep.dense("tiny").manifest["facts"]["params"]
    else:
        got = zeros_share(module)
        if "sparsity" in rep:
            assert rep["sparsity"] == pytest.approx(got)  # what the report says is what the weights show
        assert got == pytest.approx(0.8, abs=1e-4) if "80" in name else got > 0
    for backend in ("torch", "onnxruntime", "litert"):
        if not backends.get(backend).export_availability().available:
            continue
        art = tiny_prep.artifact("tiny", r, backend, "fp32")
        check = art.manifest["facts"]["export_check"]
        assert check.get("ok") is True, (backend, check)
