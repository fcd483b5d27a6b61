"""reports/compare.py: the per-metric rules on synthetic samples (no timing of this machine is asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.bench.contracts.flags import Flag
from edgebench.reports import compare as cmp
from tests_support import ar1_samples, cell_with

TH = cmp.Thresholds()


def test_blocks_keep_measurement_order_and_bounds():
    x = np.arange(1000, dtype=float)
    bs = cmp.blocks(x)
    assert len(bs) == cmp.MAX_BLOCKS and np.array_equal(np.concatenate(bs), x)  # contiguous, in order
    assert len(cmp.blocks(np.arange(55.0))) == 5 and cmp.blocks(np.arange(9.0)) == []


def test_a_clear_slowdown_is_a_regression_with_its_numbers():
    base, head = ar1_samples(0.5, 3000, seed=1), ar1_samples(0.6, 3000, seed=2)
    mv = cmp.latency_verdict(base, head, TH, key="k")
    assert mv.verdict == cmp.REGRESSED
    assert mv.ratio == pytest.approx(1.2, rel=0.02)
    assert 1 + TH.min_effect < mv.ci_low < mv.ratio < mv.ci_high
    assert mv.p_value < 1e-6
    assert "20.0% slower" in mv.reason or "slower" in mv.reason


def test_a_clear_speedup_is_an_improvement():
    mv = cmp.latency_verdict(ar1_samples(0.6, 3000, seed=3), ar1_samples(0.45, 3000, seed=4), TH, key="k")
    assert mv.verdict == cmp.IMPROVED and mv.ci_high < 1 - TH.min_effect


def test_same_distribution_is_unchanged():
    mv = cmp.latency_verdict(ar1_samples(0.5, 3000, seed=5), ar1_samples(0.5, 3000, seed=6), TH, key="k")
    assert mv.verdict == cmp.UNCHANGED
    assert 1 - TH.min_effect < mv.ci_low <= mv.ci_high < 1 + TH.min_effect


def test_a_significant_change_smaller_than_the_minimum_effect_is_not_a_regression():
    mv = cmp.latency_verdict(ar1_samples(0.5, 20000, seed=7, sd=0.01), ar1_samples(0.51, 20000, seed=8, sd=0.01), TH, key="k")
    assert mv.p_value < TH.alpha
    assert mv.verdict in (cmp.UNCHANGED, cmp.INCONCLUSIVE) and mv.verdict != cmp.REGRESSED


def test_autocorrelated_samples_do_not_fake_significance():
    # Same level, strongly autocorrelated noise (bursts, as on a busy board). A plain Mann-Whitney U on all
    # 5000 samples calls most pairs different; on block medians the p-value stays close to calibrated.
    from scipy import stats

    th = cmp.Thresholds(prior_noise=0.0)
    naive = blocked = 0
    for seed in range(40):
        b, h = ar1_samples(0.5, 5000, seed=100 + seed, phi=0.98), ar1_samples(0.5, 5000, seed=200 + seed, phi=0.98)
        naive += stats.mannwhitneyu(h, b).pvalue < 0.01
        blocked += cmp.latency_verdict(b, h, th, key=str(seed)).p_value < 0.01
    assert naive >= 20  # the problem is real on this data
    assert blocked <= 4  # 1% nominal; a few are allowed, not most


def test_run_to_run_noise_from_history_raises_the_bar():
    base, head = ar1_samples(0.5, 3000, seed=9), ar1_samples(0.6, 3000, seed=10)  # +20%
    quiet = [0.5, 0.505, 0.498, 0.502, 0.5]
    noisy = [0.5, 0.8, 0.35, 0.6, 0.45, 0.7]  # this cell moves by tens of percent between runs
    assert cmp.latency_verdict(base, head, TH, "k", history_p50=quiet).verdict == cmp.REGRESSED
    mv = cmp.latency_verdict(base, head, TH, "k", history_p50=noisy)
    assert mv.verdict == cmp.INCONCLUSIVE and "run-to-run noise" in mv.reason and "from 6 earlier runs" in mv.reason
    bar, source = cmp.noise_bar(TH, [])
    assert "prior" in source and bar == pytest.approx(TH.noise_z * np.sqrt(2) * TH.prior_noise)
    bar_few, _ = cmp.noise_bar(TH, [0.5, 0.9])  # too few runs to trust: never below the prior
    assert bar_few >= bar


def test_with_history_the_step_is_measured_from_the_history_not_the_one_base_run():
    history = [0.50, 0.52, 0.49, 0.51, 0.50, 0.48, 0.53, 0.50]  # this cell's earlier runs (ms)
    fast_base = ar1_samples(0.40, 3000, seed=21)  # a base run that happened to land 20% fast
    same_as_usual = ar1_samples(0.50, 3000, seed=22)
    mv = cmp.latency_verdict(fast_base, same_as_usual, TH, "k", history_p50=history)
    assert mv.verdict == cmp.INCONCLUSIVE and "vs the median of 8 earlier runs" in mv.reason  # +25% vs base, 0% vs history
    slower = ar1_samples(0.65, 3000, seed=23)
    assert cmp.latency_verdict(fast_base, slower, TH, "k", history_p50=history).verdict == cmp.REGRESSED
    bar, source = cmp.noise_bar(TH, history)
    assert source == "from 8 earlier runs" and bar == pytest.approx(TH.noise_z * np.sqrt(1 + 1 / 8) * cmp.run_noise(history))


def test_contended_cells_are_inconclusive_never_regressed():
    base = cell_with(ar1_samples(0.5, 3000, seed=11))
    head = cell_with(ar1_samples(0.9, 3000, seed=12), contended=True)
    comp = cmp.compare_cell(base, head, TH)
    lat = comp.metric("latency")
    assert lat.verdict == cmp.INCONCLUSIVE and "contended" in lat.reason and "not judged" in lat.reason
    assert comp.verdict == cmp.INCONCLUSIVE
    judged = cmp.compare_cell(base, head, cmp.Thresholds(include_disturbed=True))
    assert judged.verdict == cmp.REGRESSED


def test_throttled_warning_is_a_disturbance():
    c = cell_with([1] * 100, flags=[Flag("throttled", "throttled: CPU at 600 MHz of 2400")])
    assert cmp.disturbance(c).startswith("throttled")


def test_too_few_samples_is_inconclusive():
    mv = cmp.latency_verdict([100] * 20, [200] * 20, TH, "k")
    assert mv.verdict == cmp.INCONCLUSIVE and "too few samples" in mv.reason


def test_accuracy_memory_and_size_thresholds():
    assert cmp.accuracy_verdict(0.98, 0.97, TH).verdict == cmp.REGRESSED  # -1 pt
    assert cmp.accuracy_verdict(0.98, 0.978, TH).verdict == cmp.UNCHANGED  # -0.2 pt within 0.5
    assert cmp.accuracy_verdict(0.95, 0.97, TH).verdict == cmp.IMPROVED
    assert cmp.threshold_verdict("memory", 100, 115, 0.10, 4, "MiB").verdict == cmp.REGRESSED
    assert cmp.threshold_verdict("memory", 20, 23, 0.10, 4, "MiB").verdict == cmp.UNCHANGED  # +15% but only 3 MiB
    assert cmp.threshold_verdict("size", 1000, 1030, 0.02, 0, "bytes").verdict == cmp.REGRESSED
    assert cmp.threshold_verdict("size", 1000, 900, 0.02, 0, "bytes").verdict == cmp.IMPROVED
    assert cmp.accuracy_verdict(None, 0.9, TH) is None


def test_cell_matching_failures_and_option_changes():
    base = [cell_with(ar1_samples(0.5, 500, seed=13), recipe="dense"), cell_with(ar1_samples(0.5, 500, seed=14), recipe="gone")]
    head = [cell_with(ar1_samples(0.5, 500, seed=15), recipe="dense", threads=1), cell_with([], recipe="new"),
            cell_with([], recipe="gone2")]
    head[2].status, head[2].error = "failed", "worker killed by SIGKILL"
    base.append(cell_with(ar1_samples(0.5, 500, seed=16), recipe="gone2"))
    by = {c.recipe: c for c in cmp.compare_cells(base, head, TH)}
    assert by["dense"].status == "compared" and "option threads: 2 -> 1" in by["dense"].notes
    assert by["new"].status == "only-in-head" and by["gone"].status == "only-in-base"
    assert by["gone2"].status == "failed-in-head" and by["gone2"].verdict == cmp.REGRESSED  # a cell that now fails is a regression


def test_a_night_where_every_cell_moved_both_ways_flags_none_but_one_cell_alone_is_flagged():
    from edgebench.bench.store import CellRecord

    def pair(i, base_ms, head_ms):
        b, h = cell_with(ar1_samples(base_ms, 2000, seed=100 + i)), cell_with(ar1_samples(head_ms, 2000, seed=200 + i))
        for c in (b, h):
            c.cell_key, c.recipe = f"m/r{i}/ort/fp32/b1/local", f"r{i}"
        return b, h

    noisy = [pair(0, 0.5, 0.65), pair(1, 0.5, 0.38), pair(2, 0.5, 0.62), pair(3, 0.5, 0.40), pair(4, 0.5, 0.6), pair(5, 0.5, 0.42)]
    assert cmp.pooled_noise(noisy)[0] > 0.1
    verdicts = [c.verdict for c in cmp.compare_cells([b for b, _ in noisy], [h for _, h in noisy], TH)]
    assert cmp.REGRESSED not in verdicts and cmp.IMPROVED not in verdicts
    quiet = [pair(i, 0.5, 0.5 * (1 + 0.01 * (-1) ** i)) for i in range(5)] + [pair(5, 0.5, 0.8)]
    out = {c.recipe: c.verdict for c in cmp.compare_cells([b for b, _ in quiet], [h for _, h in quiet], TH)}
    assert out["r5"] == cmp.REGRESSED and all(v != cmp.REGRESSED for k, v in out.items() if k != "r5")


def test_throttling_is_read_from_the_flag_code_and_the_device_report():
    c = cell_with([1] * 100, flags=[Flag("throttled", "CPU at 600 MHz of 2400 (cap)")])
    assert cmp.disturbance(c) == "CPU at 600 MHz of 2400 (cap)"
    assert cmp.disturbance(cell_with([1] * 100, flags=[Flag("other", "throttled, says a plugin")])) is None
    d = cell_with([1] * 100)
    d.result.device = {"throttled": True, "throttle_reasons": ["soft temperature limit"]}
    assert cmp.disturbance(d) == "throttled"


def test_cells_match_on_their_identity():
    from edgebench.bench.contracts.identity import CellId

    c = cell_with([1] * 100, recipe="r", batch=8, target="board")
    assert cmp.coordinates(c) == CellId("small_cnn", "r", "onnxruntime", "fp32", 8, "board")
    [comp] = cmp.compare_cells([c], [cell_with([1] * 100, recipe="other")], TH)[1:]
    assert comp.status == "only-in-base" and comp.id == cmp.coordinates(c) and comp.id.key == c.cell_key


# -- processes (issue 15) ------------------------------------------------------------------------

def process_cell(rng: np.random.Generator, level_ms: float, processes: int = 3, n: int = 600, between: float = 0.08) -> tuple[list[int], list[int]]:
    """A cell measured in ``processes`` worker processes, each in its own mode (sd ``between`` of log latency)."""
    parts = [ar1_samples(level_ms * float(np.exp(rng.normal(0, between))), n, seed=int(rng.integers(1 << 30))) for _ in range(processes)]
    return [v for p in parts for v in p], [n] * processes


def test_blocks_stay_inside_processes():
    x = np.concatenate([np.full(100, 1.0), np.full(100, 2.0), np.full(100, 3.0)])
    medians, counts = cmp.process_block_medians(x, [100, 100, 100])
    assert counts == [10, 10, 10] and list(medians) == [1.0] * 10 + [2.0] * 10 + [3.0] * 10  # no block mixes two processes
    assert cmp.process_block_medians(x, [])[1] == [] and cmp.process_block_medians(x, [150, 100])[1] == []  # counts must add up


def test_the_interval_resamples_processes_so_process_modes_do_not_look_like_a_change():
    # Nothing changed; each run's 3 processes sit in modes 8% apart. Blocks pooled across processes give
    # intervals that miss 1 in most pairs; resampling processes keeps 1 inside nearly always.
    rng = np.random.default_rng(30)
    th = cmp.Thresholds(prior_noise=0.0)
    plain = by_process = 0
    trials = 40
    for t in range(trials):
        (b, pb), (h, ph) = process_cell(rng, 0.5), process_cell(rng, 0.5)
        old = cmp.latency_verdict(b, h, th, key=str(t))
        plain += not (old.ci_low <= 1 <= old.ci_high)
        mv = cmp.latency_verdict(b, h, th, key=str(t), processes=(pb, ph))
        by_process += not (mv.ci_low <= 1 <= mv.ci_high)
        assert mv.verdict != cmp.REGRESSED and mv.verdict != cmp.IMPROVED
    assert plain >= trials // 4 and by_process <= 2


def test_a_real_slowdown_across_processes_is_still_a_regression():
    rng = np.random.default_rng(31)
    (b, pb), (h, ph) = process_cell(rng, 0.5, between=0.02), process_cell(rng, 0.8, between=0.02)
    mv = cmp.latency_verdict(b, h, TH, key="k", processes=(pb, ph))
    assert mv.verdict == cmp.REGRESSED and 1 + TH.min_effect < mv.ci_low < mv.ratio < mv.ci_high


def test_compare_cell_passes_each_sides_processes():
    rng = np.random.default_rng(32)
    (b, pb), (h, ph) = process_cell(rng, 0.5), process_cell(rng, 0.5)
    base, head = cell_with(b), cell_with(h)
    base.result.process_samples, head.result.process_samples = pb, ph
    th = cmp.Thresholds(prior_noise=0.0)
    lat = cmp.compare_cell(base, head, th).metric("latency")
    direct = cmp.latency_verdict(b, h, th, key=head.cell_key, processes=(pb, ph))
    plain = cmp.latency_verdict(b, h, th, key=head.cell_key)
    assert (lat.ci_low, lat.ci_high) == (direct.ci_low, direct.ci_high) != (plain.ci_low, plain.ci_high)
