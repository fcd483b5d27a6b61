"""models/fit.py: channel groups, pruning to exact per-group widths, candidates, sensitivity, the
allocation (knapsack vs brute force, greedy) and the ``channel_widths`` recipe method."""

from __future__ import annotations

import contextlib
import io
import itertools
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgebench.bench.contracts.errors import ConfigError
from edgebench.models import fit, nets, pruning, recipes
from edgebench.models.fit import Option


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


EX32 = torch.zeros(1, 3, 32, 32)
EX16 = torch.zeros(1, 3, 16, 16)


def resnet20(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nets.resnet20()
    for bn in m.modules():  # trained-looking BN scales: distinct, so rankings have no ties
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.data.uniform_(0.2, 1.5)
    return m.eval()


# -- groups ---------------------------------------------------------------------------------------------

def test_resnet20_groups():
    groups = fit.channel_groups(resnet20(), EX32)
    assert [g.name for g in groups] == ["stem.0", *[f"layers.{i}.conv1" for i in range(3)], "layers.3.conv1",
                                        "layers.3.shortcut.0", "layers.4.conv1", "layers.5.conv1", "layers.6.conv1",
                                        "layers.6.shortcut.0", "layers.7.conv1", "layers.8.conv1"]
    by = {g.name: g for g in groups}
    assert by["stem.0"].width == 16 and by["stem.0"].layers == ["layers.0.conv2", "layers.1.conv2", "layers.2.conv2", "stem.0"]
    assert by["layers.3.shortcut.0"].width == 32
    assert by["layers.3.shortcut.0"].layers == ["layers.3.conv2", "layers.3.shortcut.0", "layers.4.conv2", "layers.5.conv2"]
    assert by["layers.6.shortcut.0"].width == 64
    assert by["layers.7.conv1"].layers == ["layers.7.conv1"] and by["layers.7.conv1"].width == 64
    assert not any("fc" in l for g in groups for l in g.layers)  # the classifier keeps its outputs


def test_small_cnn_groups_and_classifier():
    torch.manual_seed(0)
    m = nets.small_cnn().eval()
    groups = fit.channel_groups(m, EX16, classifier=m.fc)
    assert [(g.name, g.width, g.layers) for g in groups] == [
        ("features.0.0", 16, ["features.0.0"]), ("features.1.0", 32, ["features.1.0"]), ("features.2.0", 64, ["features.2.0"])]


def test_mobilenetv2_depthwise_couples_with_producer():
    m = nets.mobilenetv2(10, 0.25, small_input=True).eval()
    groups = fit.channel_groups(m, EX32)
    depthwise = [n for n, l in m.named_modules() if isinstance(l, nn.Conv2d) and l.groups > 1]
    assert depthwise
    for dw in depthwise:
        (g,) = [g for g in groups if dw in g.layers]  # in exactly one group ...
        producer = dw.rsplit(".", 1)[0] + ".0"
        if producer != dw:  # ... with the 1x1 expand conv that feeds it (t=1 blocks have none)
            assert producer in g.layers, (dw, g)
    assert not any(l.startswith("classifier") for g in groups for l in g.layers)
    assert fit.current_widths(m, EX32) == {g.name: g.width for g in groups}


# -- prune_to_widths ------------------------------------------------------------------------------------

def _export_and_run(module: nn.Module, path) -> None:
    """Export like backends/ort.py does and check onnxruntime agrees with torch."""
    import onnxruntime as ort

    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=True, external_data=False,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), input_names=["input"], output_names=["logits"])
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, module(x).numpy(), rtol=1e-4, atol=1e-4)


def test_prune_to_widths_invariant_and_onnx(tmp_path):
    m = resnet20()
    request = {"stem.0": 8, "layers.3.shortcut.0": 12, "layers.6.shortcut.0": 40, "layers.1.conv1": 5, "layers.8.conv1": 1}
    before = fit.current_widths(m, EX32)
    fit.prune_to_widths(m, EX32, request)
    assert fit.current_widths(m, EX32) == {**before, **request}
    assert m(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    report = pruning.prune_report(m)
    assert report["method"] == "channel_widths"
    assert report["widths"]["stem.0"] == [16, 8] and report["widths"]["layers.0.conv1"] == [16, 16]
    assert report["macs_after"] < report["macs_before"] and report["params_after"] < report["params_before"]
    _export_and_run(m, tmp_path / "m.onnx")


def test_prune_to_widths_mobilenet_names_stable():
    m = nets.mobilenetv2(10, 0.25, small_input=True).eval()
    request = {g.name: max(1, g.width // 2) for g in fit.channel_groups(m, EX32)}
    fit.prune_to_widths(m, EX32, request, importance="l1")
    assert fit.current_widths(m, EX32) == request
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_prune_keeps_the_most_important_channel():
    torch.manual_seed(0)
    m = nets.small_cnn().eval()
    conv = m.features[0][0]
    conv.weight.data[5] *= 100.0
    star = conv.weight.data[5].clone()
    conv.weight.data[9] = 0.0
    fit.prune_to_widths(m, EX16, {"features.0.0": 15})
    assert not any(torch.equal(w, torch.zeros_like(w)) for w in conv.weight.data)  # the zero channel went first
    fit.prune_to_widths(m, EX16, {"features.0.0": 1})
    assert torch.equal(conv.weight.data[0], star)


@pytest.mark.parametrize("widths, match", [
    ({"nope": 4}, r"unknown channel group 'nope'; known groups: stem.0, layers.0.conv1"),
    ({"stem.0": 17}, r"width 17 is more than its current width 16"),
    ({"stem.0": 0}, r"width must be an integer >= 1, got 0"),
])
def test_prune_to_widths_errors(widths, match):
    m = resnet20()
    with pytest.raises(ValueError, match=match):
        fit.prune_to_widths(m, EX32, widths)
    assert fit.current_widths(m, EX32)["stem.0"] == 16  # nothing pruned


def test_prune_to_widths_unknown_importance():
    with pytest.raises(ValueError, match="unknown importance 'fpgm'"):
        fit.prune_to_widths(resnet20(), EX32, {"stem.0": 8}, importance="fpgm")


# -- candidates, holdout, sensitivity -------------------------------------------------------------------

@pytest.mark.parametrize("width, g, want", [
    (64, 8, [16, 32, 48]), (16, 8, [8]), (16, 16, []), (8, 16, []), (10, 4, [4, 8]), (16, 1, [4, 8, 12]), (32, 16, [16]),
])
def test_candidate_widths(width, g, want):
    assert fit.candidate_widths(width, g) == want


def test_candidate_widths_fractions():
    assert fit.candidate_widths(64, 4, fractions=(0.9, 0.1, 0.1, 0.99)) == [8, 56]


def test_holdout_split():
    train, hold = fit.holdout_split(100, 0.2, seed=3)
    assert len(hold) == 20 and len(train) == 80
    assert sorted(np.concatenate([train, hold]).tolist()) == list(range(100))
    again = fit.holdout_split(100, 0.2, seed=3)
    assert np.array_equal(again[1], hold)
    assert not np.array_equal(fit.holdout_split(100, 0.2, seed=4)[1], hold)
    with pytest.raises(ValueError):
        fit.holdout_split(100, 1.0)


def test_recalibrate_bn_is_the_input_mean():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)).eval()
    x = np.random.default_rng(0).normal(2.0, 1.0, (32, 3, 8, 8)).astype(np.float32)
    fit.recalibrate_bn(m, x, batch_size=8)
    with torch.no_grad():
        want = m[0](torch.from_numpy(x)).mean((0, 2, 3))
    torch.testing.assert_close(m[1].running_mean, want, rtol=1e-4, atol=1e-5)
    assert m[1].momentum == 0.1 and not m.training and not m[1].training


def _data(n: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


def test_sensitivity_rows_deterministic_and_dense_untouched():
    m = resnet20()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    groups = [g for g in fit.channel_groups(m, EX32) if g.name in ("stem.0", "layers.7.conv1")]
    cands = {"stem.0": [4, 8], "layers.7.conv1": [16]}
    x, y = _data()
    rows = fit.sensitivity(m, EX32, groups, cands, x, y, batch_size=16)
    assert [(r.group, r.width) for r in rows] == [("stem.0", 4), ("stem.0", 8), ("layers.7.conv1", 16)]
    assert rows == fit.sensitivity(m, EX32, groups, cands, x, y, batch_size=16)
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    # each row is the dense model pruned at that one group, scored against the dense model
    loss0, top0 = fit.evaluate(m, x, y)
    clone = fit.prune_to_widths(resnet20(), EX32, {"stem.0": 4})
    loss, top = fit.evaluate(clone, x, y)
    assert rows[0].loss_increase == pytest.approx(loss - loss0, abs=1e-6)
    assert rows[0].top1_drop_pp == pytest.approx((top0 - top) * 100)


def test_sensitivity_recalibrates_on_recalib_x():
    m = resnet20()
    groups = [g for g in fit.channel_groups(m, EX32) if g.name == "layers.3.shortcut.0"]
    x, y = _data()
    rx, _ = _data(32, seed=1)
    plain = fit.sensitivity(m, EX32, groups, {"layers.3.shortcut.0": [8]}, x, y)
    recal = fit.sensitivity(m, EX32, groups, {"layers.3.shortcut.0": [8]}, x, y, recalib_x=rx, batch_size=16)
    clone = fit.recalibrate_bn(fit.prune_to_widths(resnet20(), EX32, {"layers.3.shortcut.0": 8}), rx, 16)
    assert recal[0].loss_increase == pytest.approx(fit.evaluate(clone, x, y)[0] - fit.evaluate(m, x, y)[0], abs=1e-6)
    assert recal[0].loss_increase != pytest.approx(plain[0].loss_increase)


def test_sensitivity_maps_the_classifier_into_each_copy():
    torch.manual_seed(0)
    m = nets.small_cnn().eval()
    groups = fit.channel_groups(m, EX16, classifier=m.fc)
    x, y = _data(16)
    rows = fit.sensitivity(m, EX16, groups[:1], {"features.0.0": [8]}, x[:, :, :16, :16], y, classifier=m.fc)
    assert len(rows) == 1 and m.fc.in_features == 64


# -- allocation -----------------------------------------------------------------------------------------

def _table(rng: random.Random, groups: int, grid: bool, monotonic: bool = True) -> dict[str, list[Option]]:
    """Random options: narrower widths save more (monotonic) and cost more; deltas on a 0.01 ms grid."""
    out = {}
    for g in range(groups):
        k = rng.randint(1, 3)
        widths = sorted(rng.sample(range(1, 16), k), reverse=True)
        deltas = sorted((-rng.randint(1, 200) / 100 if grid else -rng.uniform(0.01, 2.0)) for _ in widths)[::-1]
        if not monotonic:
            rng.shuffle(deltas)
        costs = sorted(rng.uniform(0, 1) for _ in widths)
        out[f"g{g}"] = [Option(16, 0.0, 0.0)] + [Option(w, d, c) for w, d, c in zip(widths, deltas, costs)]
    return out


def _brute(base: float, options: dict[str, list[Option]], budget: float, slack: float = 0.0) -> float:
    best = float("inf")
    for combo in itertools.product(*options.values()):
        if base + sum(o.delta_ms for o in combo) <= budget - slack + 1e-9:
            best = min(best, sum(o.cost for o in combo))
    return best


def test_knapsack_is_optimal_vs_brute_force():
    rng = random.Random(0)
    for _ in range(40):
        opts = _table(rng, rng.randint(2, 4), grid=True, monotonic=rng.random() < 0.5)
        fastest = sum(min(o.delta_ms for o in os) for os in opts.values())
        budget = round(10.0 + fastest * rng.uniform(0.1, 0.9), 2)
        plan = fit.plan_knapsack(10.0, opts, budget, resolution_ms=0.01)
        assert plan.feasible and plan.predicted_ms <= budget + 1e-9
        assert plan.predicted_cost == pytest.approx(_brute(10.0, opts, budget))
        chosen = [next(o for o in opts[n] if o.width == w) for n, w in plan.widths.items()]
        assert plan.predicted_ms == pytest.approx(10.0 + sum(o.delta_ms for o in chosen))


def test_knapsack_default_resolution_is_within_its_discretisation():
    rng = random.Random(1)
    for _ in range(30):
        opts = _table(rng, 4, grid=False)
        fastest = sum(min(o.delta_ms for o in os) for os in opts.values())
        budget = 10.0 + fastest * rng.uniform(0.1, 0.9)
        plan = fit.plan_knapsack(10.0, opts, budget)
        res = (10.0 - budget) / 4000
        assert plan.feasible and plan.predicted_ms <= budget + 1e-9
        assert _brute(10.0, opts, budget) - 1e-9 <= plan.predicted_cost <= _brute(10.0, opts, budget, slack=5 * res) + 1e-9


def test_greedy_feasible_and_never_better_than_knapsack():
    rng = random.Random(2)
    for _ in range(40):
        opts = _table(rng, rng.randint(2, 5), grid=True)
        fastest = sum(min(o.delta_ms for o in os) for os in opts.values())
        budget = round(10.0 + fastest * rng.uniform(0.1, 0.95), 2)
        greedy = fit.plan_greedy(10.0, opts, budget, iterations=rng.randint(1, 10))
        knap = fit.plan_knapsack(10.0, opts, budget, resolution_ms=0.01)
        assert greedy.method == "greedy" and knap.method == "knapsack"
        assert greedy.feasible and greedy.predicted_ms <= budget + 1e-9
        assert greedy.predicted_cost >= knap.predicted_cost - 1e-9


def test_greedy_takes_the_widest_option_meeting_the_cut():
    opts = {"a": [Option(8, -1.0, 0.1), Option(4, -3.0, 0.9)], "b": [Option(8, -1.0, 0.3)]}
    plan = fit.plan_greedy(10.0, opts, 8.0, iterations=2, current={"a": 16, "b": 16})
    # cut 1 ms per iteration: a@8 (the widest of a's that meets it) costs less than b@8; then b@8
    # (extra cost 0.3) beats a@4 (extra 0.8)
    assert plan.widths == {"a": 8, "b": 8} and plan.predicted_ms == pytest.approx(8.0)
    assert plan.predicted_cost == pytest.approx(0.4) and plan.feasible


@pytest.mark.parametrize("planner", [fit.plan_knapsack, fit.plan_greedy])
def test_infeasible_budget_gives_the_fastest_plan(planner):
    opts = {"a": [Option(8, -1.0, 0.1), Option(4, -2.0, 0.3)], "b": [Option(8, -0.5, 0.2), Option(4, -0.4, 0.1)]}
    plan = planner(10.0, opts, 5.0, current={"a": 16, "b": 16})
    assert not plan.feasible
    assert plan.widths == {"a": 4, "b": 8} and plan.predicted_ms == pytest.approx(7.5)


@pytest.mark.parametrize("planner", [fit.plan_knapsack, fit.plan_greedy])
def test_positive_delta_option_is_never_chosen(planner):
    opts = {"a": [Option(8, +0.5, 0.0), Option(4, -0.2, 5.0)], "b": [Option(8, -1.0, 1.0)]}
    plan = planner(10.0, opts, 9.0, current={"a": 16, "b": 16})
    assert plan.widths == {"a": 16, "b": 8} and plan.feasible and plan.predicted_cost == pytest.approx(1.0)


def test_budget_already_met_keeps_everything():
    opts = {"a": [Option(8, -1.0, 0.1)]}
    for planner in (fit.plan_knapsack, fit.plan_greedy):
        plan = planner(10.0, opts, 12.0, current={"a": 16})
        assert plan.widths == {"a": 16} and plan.predicted_cost == 0 and plan.feasible
    assert fit.plan_knapsack(10.0, opts, 12.0).widths == {}  # keep width unknown: the group is left out


# -- the channel_widths recipe method -------------------------------------------------------------------

def _recipe(steps, schedule=None, **params):
    data = {"name": "fitted", "method": "channel_widths", "params": {"steps": steps, **params}}
    if schedule:
        data["schedule"] = schedule
    return recipes.parse(data, "fitted.yaml")


@pytest.mark.parametrize("steps, schedule, match", [
    ([{"stem.0": 8}, {"stem.0": 4}], None, r"fitted.yaml: params.steps: a one_shot schedule takes exactly one step, got 2"),
    ([{"stem.0": 8}, {"stem.0": 4}], {"kind": "iterative", "steps": 3}, r"lists 2 steps but schedule.steps is 3"),
    ([{"stem.0": 8}, {"stem.0": 12}], {"kind": "iterative", "steps": 2}, r"params.steps\[1\].stem.0: width 12 widens the group .* narrowed to 8"),
    ([], None, r"fitted.yaml: params.steps"),
    ([{"stem.0": 0}], None, r"fitted.yaml: params.steps"),
])
def test_channel_widths_parse_errors(steps, schedule, match):
    with pytest.raises(ConfigError, match=match) as exc:
        _recipe(steps, schedule)
    assert "\n" not in str(exc.value)


def test_channel_widths_rejects_agp_and_bad_importance():
    with pytest.raises(ConfigError, match="does not support schedule kind agp"):
        _recipe([{"a": 1}, {"a": 1}], {"kind": "agp", "steps": 2})
    with pytest.raises(ConfigError, match="importance"):
        _recipe([{"a": 1}], importance="fpgm")


def test_channel_widths_apply_in_steps():
    r = _recipe([{"stem.0": 12, "layers.6.conv1": 48}, {"stem.0": 8, "layers.6.conv1": 32, "layers.0.conv1": 4}],
                {"kind": "iterative", "steps": 2, "epochs_per_step": 2})
    calls = []
    seen = []

    def finetune(module, **kw):
        calls.append(kw)
        seen.append(fit.current_widths(module, EX32))
        return module

    ctx = recipes.PruneContext(finetune=finetune, example=EX32, batches=lambda n: iter(()))
    m = recipes.apply(r, resnet20(), ctx)
    got = fit.current_widths(m, EX32)
    assert (got["stem.0"], got["layers.6.conv1"], got["layers.0.conv1"], got["layers.3.shortcut.0"]) == (8, 32, 4, 32)
    assert calls == [{"epochs": 2}, {}]  # between the steps, then the recipe's fine-tune
    assert seen[0]["stem.0"] == 12 and seen[0]["layers.6.conv1"] == 48  # the first step's widths when tuned
    report = pruning.prune_report(m)
    assert report["method"] == "channel_widths" and len(report["steps"]) == 2
    assert report["steps"][0]["stem.0"] == [16, 12] and report["steps"][1]["stem.0"] == [12, 8]
    assert report["widths"]["stem.0"] == [16, 8] and report["widths"]["layers.0.conv1"] == [16, 4]
    assert all(a >= b for a, b in report["widths"].values())  # monotonic


def test_greedy_falls_back_to_the_best_saving_per_cost():
    opts = {"a": [Option(8, -0.6, 0.1)], "b": [Option(8, -1.2, 0.6)], "c": [Option(8, -1.0, 0.2)]}
    plan = fit.plan_greedy(10.0, opts, 8.5, iterations=1, current={"a": 16, "b": 16, "c": 16})
    # no group alone cuts 1.5 ms: a (6 ms per unit cost) first; then c meets the rest cheaper than b
    assert plan.widths == {"a": 8, "b": 16, "c": 8} and plan.predicted_cost == pytest.approx(0.3)


def test_numpy_integer_widths_are_accepted():
    m = fit.prune_to_widths(resnet20(), EX32, {"stem.0": np.int64(8)})
    assert fit.current_widths(m, EX32)["stem.0"] == 8
    with pytest.raises(ValueError, match="integer >= 1"):
        fit.prune_to_widths(resnet20(), EX32, {"stem.0": 8.0})
