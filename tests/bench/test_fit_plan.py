"""bench/fit.py's decisions on their own: budgets, the granularity probe, the uniform match, the
step options and the interaction correction, the table key."""

from __future__ import annotations

import pytest

from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.contracts.fit import Group, LatencyPoint, LatencyTable, parse_budget
from edgebench.bench.fit import (
    FitOptions, Predictor, choose_granularity, group_granularity, process_spread, point_name, step_name, table_key, uniform_ratio,
    uniform_ratios_near, uniform_widths,
)
from edgebench.bench.fit_measure import Where, safe_name


@pytest.mark.parametrize("text, ms, factor", [("4ms", 4.0, None), ("400us", 0.4, None), ("0.5x", None, 0.5), (" 2.5 ms ", 2.5, None)])
def test_budgets_absolute_or_a_share_of_dense(text, ms, factor):
    b = parse_budget(text)
    assert (b.ms, b.factor) == (ms, factor)
    assert b.resolve(10.0) == pytest.approx(ms if ms is not None else 10.0 * factor)


@pytest.mark.parametrize("text", ["", "fast", "0ms", "-1ms", "1.5x", "4 seconds"])
def test_a_budget_that_means_nothing_is_one_line_naming_the_forms(text):
    with pytest.raises(ConfigError, match=r"--budget .*(4ms|below 1x)"):
        parse_budget(text)


def test_granularity_is_the_largest_multiple_whose_in_between_widths_are_never_faster():
    # in-between widths cost as much as the next multiple of 8 up: multiples of 8 (16 would lose 40 -> 48)
    lat = {32: 1.0, 36: 1.2, 40: 1.2, 44: 1.4, 48: 1.4, 52: 1.6, 56: 1.6, 60: 1.8, 64: 1.8}
    g, why = choose_granularity(lat, 64, (16, 8, 4), 0.03)
    assert g == 8 and "multiples of 8" in why


def test_granularity_falls_back_to_the_finest_and_names_the_width_that_was_faster():
    lat = {32: 1.0, 36: 1.05, 40: 1.5, 44: 1.2, 48: 1.6, 52: 1.7, 56: 1.8, 60: 1.9, 64: 2.0}
    g, why = choose_granularity(lat, 64, (16, 8, 4), 0.03)
    assert g == 4 and "faster than" in why


def test_one_noisy_width_does_not_refine_the_granularity():
    # 52 measured 9% under 56 (a process mode), every other in-between width is as slow as the next multiple of 8
    lat = {32: 1.0, 36: 1.2, 40: 1.2, 44: 1.4, 48: 1.4, 52: 1.46, 56: 1.6, 60: 1.8, 64: 1.8}
    assert choose_granularity(lat, 64, (16, 8, 4), 0.03)[0] == 8


def test_noise_within_the_tolerance_does_not_refine_the_granularity():
    lat = {32: 1.0, 36: 1.59, 40: 1.6, 44: 1.6, 48: 1.6, 52: 2.0, 56: 2.0, 60: 2.0, 64: 2.0}
    assert choose_granularity(lat, 64, (16, 8, 4), 0.03)[0] == 16


def test_uniform_ratio_is_the_least_pruning_within_three_percent_of_the_fitted_latency():
    grid = {"0.2": 0.9, "0.3": 0.8, "0.4": 0.62, "0.5": 0.55, "0.6": 0.5}
    assert uniform_ratio(grid, 0.61) == 0.4  # 0.62 <= 0.61 x 1.03
    assert uniform_ratio(grid, 0.3) == 0.6  # nothing reaches it: the fastest
    assert uniform_ratios_near(grid, 0.61) == [0.3, 0.4, 0.5] and uniform_ratios_near(grid, 0.3) == [0.5, 0.6]


def _table() -> LatencyTable:
    """Two groups (a: 16 wide, b: 32 wide); latencies made exactly 0.1 ms + 1e-5 ms per MAC unit of _macs."""
    full = {"a": 16, "b": 32}
    plans = [(None, 0, {}), ("a", 8, {"a": 8}), ("a", 4, {"a": 4}), ("b", 16, {"b": 16}), ("b", 8, {"b": 8}), ("*", 0, {"a": 4, "b": 8})]
    pts = [LatencyPoint(g, w, _truth(full, plan), 0.0, 100, 2, "k", [], plan) for g, w, plan in plans]
    return LatencyTable("key", "local", {}, "m", "mk", "onnxruntime", "1", "fp32", 1, None, 8, dense_ms=_truth(full, {}), points=pts,
                        uniform={"0.5": _truth(full, {"a": 8, "b": 16})}, uniform_widths={"0.5": {"a": 8, "b": 16}})


def _macs(widths: dict[str, int]) -> dict[str, float]:
    """One conv pair whose cost is the product of the two groups' widths (like a ResNet block), at 32x32."""
    w = {"a": 16, "b": 32, **widths}
    return {"32x32": float(w["a"] * w["b"])}


def _truth(full: dict[str, int], widths: dict[str, int]) -> float:
    return 0.1 + 1e-3 * _macs(widths)["32x32"]


def test_the_latency_model_fitted_on_the_table_predicts_joint_plans_with_their_interaction():
    table, full = _table(), {"a": 16, "b": 32}
    p = Predictor(table, full, _macs)
    assert p.summary()["intercept_ms"] == pytest.approx(0.1, abs=1e-6) and p.summary()["median_abs_residual"] == pytest.approx(0, abs=1e-6)
    # a plan never measured: both groups halfway; one-group savings would add, the product does not
    assert p.model_ms({"a": 12, "b": 24}) == pytest.approx(_truth(full, {"a": 12, "b": 24}))
    assert p.model_ms(full) == pytest.approx(table.dense_ms)


def test_a_prediction_is_anchored_on_the_last_measurement():
    table, full = _table(), {"a": 16, "b": 32}
    p = Predictor(table, full, _macs)
    # the current plan was modelled at m but measured 1.1 m: the next plan's model is scaled by 1.1
    now = {"a": 8, "b": 32}
    assert p.anchored({"a": 8, "b": 16}, now, 1.1 * p.model_ms(now)) == pytest.approx(1.1 * p.model_ms({"a": 8, "b": 16}))
    assert p.anchor(dict(full), table.dense_ms) == pytest.approx(1.0)


def test_options_are_the_models_change_from_the_current_plan_and_the_change_in_loss():
    table, full = _table(), {"a": 16, "b": 32}
    p = Predictor(table, full, _macs)
    costs = {("a", 8): 0.1, ("a", 4): 0.5, ("b", 16): 0.05, ("b", 8): 0.3}
    opts = p.options({"a": 8, "b": 32}, {"a": [4, 8], "b": [8, 16]}, costs)
    a = {o.width: o for o in opts["a"]}
    assert set(a) == {8, 4}  # never wider than now
    assert a[8].delta_ms == 0 and a[4].delta_ms == pytest.approx(_truth(full, {"a": 4}) - _truth(full, {"a": 8}))
    assert a[4].cost == pytest.approx(0.4)
    b = {o.width: o for o in opts["b"]}
    assert b[16].delta_ms == pytest.approx(_truth(full, {"a": 8, "b": 16}) - _truth(full, {"a": 8}))  # at the current a, not dense's


def test_table_key_changes_with_the_target_runtime_model_and_settings():
    where = Where("resnet20", "local", "onnxruntime", "fp32", 1)
    fp = {"target": "local", "cpu_model": "x", "backend_version": "1.20"}
    base = table_key(where, "mk", fp, FitOptions())
    assert base == table_key(where, "mk", dict(fp), FitOptions())
    assert base != table_key(where, "mk", {**fp, "backend_version": "1.21"}, FitOptions())
    assert base != table_key(where, "other", fp, FitOptions())
    assert base != table_key(Where("resnet20", "local", "onnxruntime", "fp32", 8), "mk", fp, FitOptions())
    assert base != table_key(where, "mk", fp, FitOptions(fractions=(0.5,)))


def test_names_are_cell_key_safe_and_steps_are_named_by_their_widths():
    assert "/" not in point_name("layers.3.conv1", 24) and point_name("a/b c", 4) == "lut-a_b_c-4"
    assert step_name(1, {"a": 8, "b": 16}) == step_name(1, {"b": 16, "a": 8}) != step_name(1, {"a": 8, "b": 8})
    assert safe_name("fit-resnet20-0.5x") == "fit-resnet20-0.5x"


def test_a_group_too_narrow_for_the_measured_granularity_gets_the_largest_finer_one():
    assert group_granularity(64, 16, (16, 8, 4)) == 16
    assert group_granularity(32, 16, (16, 8, 4)) == 16
    assert group_granularity(16, 16, (16, 8, 4)) == 8  # 16-channel groups can still halve
    assert group_granularity(16, 4, (16, 8, 4)) == 4  # never coarser than measured
    assert group_granularity(6, 8, (16, 8, 4)) == 4


def test_dense_processes_far_apart_warn_that_the_table_is_rough_and_name_the_fix():
    table = _table()
    table.dense_process_p50_ms = [0.41, 0.71, 0.45]
    assert "1.73x" in process_spread(table) and "--threads 1" in process_spread(table)
    table.dense_process_p50_ms = [0.75, 0.84]
    assert process_spread(table) == ""


def test_uniform_widths_keep_one_share_of_every_group_snapped_to_its_granularity():
    groups = [Group("stem", 16), Group("inner", 32), Group("wide", 64)]
    assert uniform_widths(groups, 0.5, 16, (16, 8, 4)) == {"stem": 8, "inner": 16, "wide": 32}
    assert uniform_widths(groups, 0.3, 8, (16, 8, 4)) == {"stem": 8, "inner": 24, "wide": 48}  # 11.2 -> 8, 22.4 -> 24, 44.8 -> 48
    assert uniform_widths(groups, 0.05, 8, (16, 8, 4)) == {}  # nothing narrower at that granularity


def test_a_fitted_model_with_nan_outputs_is_never_a_fit():
    from edgebench.bench.contracts.fit import FitResult, Measured
    from edgebench.bench.fit import status_of

    ok = Measured("fit", 0.3, 0.29, 0.31, 0.4, None, "k", "r", 6, ["nan-outputs"])
    r = FitResult("f", "m", "local", "onnxruntime", "fp32", 1, "0.5x", 0.4, "fitted", fitted=ok,
                  dense=Measured("dense", 0.8, 0.79, 0.81, 0.9, 0.98, "d", "r", 6), max_accuracy_drop_pp=1.0)
    assert status_of(r) == "invalid-outputs"
    ok.flags = []
    assert status_of(r) == "fitted"
