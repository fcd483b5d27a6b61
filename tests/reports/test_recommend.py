"""The recommendation (reports/recommend.py): constraints, exclusions with reasons, ties vs wins."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import ok_cell, samples_ns

from edgebench.bench.contracts.errors import EdgebenchError
from edgebench.bench.contracts.results import CellResult
from edgebench.bench.store import CellRecord, RunRecord
from edgebench.reports import tables
from edgebench.reports.recommend import Constraints, format_text, parse_memory, recommend, same_computation
from edgebench.reports.tables import RunReport, rows_for

RUN = RunRecord("r1", "unit", "/x/unit.yaml", "", "finished", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))


def report_of(cells: list[CellRecord]) -> RunReport:
    with_samples = [c for c in cells if c.result and c.result.samples_ns]
    return RunReport(RUN, {}, rows_for(cells), {c.cell_key: list(c.result.samples_ns) for c in with_samples},
                     process_samples={c.cell_key: list(c.result.process_samples) for c in with_samples if c.result.process_samples})


def one(report: RunReport, target: str = "local", **constraints):
    [rec] = recommend(report, target, Constraints(**constraints))
    return rec


def test_identical_distributions_on_two_backends_tie():
    s = samples_ns(1.0, 500, seed=1)
    cells = [ok_cell("m", "dense", "A", 1, s, 0.9), ok_cell("m", "dense", "B", 1, list(s), 0.9)]
    rec = one(report_of(cells))
    assert rec.verdict == "tie"
    assert {c.row.cell_key for c in rec.tied} == {"m/dense/A/fp32/b1/local", "m/dense/B/fp32/b1/local"}
    assert rec.headline().startswith("tie between 2:")
    ci = rec.runner_up.vs_best[0]
    assert ci.includes_one and ci.ratio == pytest.approx(1.0)
    assert rec.margin() is None  # nobody outside the tie to beat
    assert "TIE" in format_text([rec])


def test_clearly_separated_is_a_win_with_the_right_margin():
    cells = [ok_cell("m", "dense", "slow", 1, samples_ns(2.0, 400, seed=1), 0.9),
             ok_cell("m", "dense", "fast", 1, samples_ns(1.0, 400, seed=2), 0.9)]
    rec = one(report_of(cells))
    assert rec.verdict == "win" and rec.best.row.backend == "fast" and rec.runner_up.row.backend == "slow"
    factor, ci = rec.margin()
    assert factor == pytest.approx(2.0, rel=0.05) and 1 < ci.low <= factor <= ci.high
    assert [c.statistic for c in rec.runner_up.vs_best] == ["p90", "median"]
    assert all(c.separated for c in rec.runner_up.vs_best)
    text = format_text([rec])
    assert "best: dense / fast / fp32 / batch 1" in text
    assert f"verdict: WIN; {factor:.2f}x lower p90 than the runner-up (dense / slow / fp32 / batch 1), 95% CI {ci.low:.2f}-{ci.high:.2f}x" in text


def test_runs_of_the_same_computation_tie_even_when_the_interval_excludes_one():
    # dense and unstructured-50 on one backend: zeros run dense; this run happened to time them apart.
    cells = [ok_cell("m", "dense", "A", 1, samples_ns(1.10, 400, seed=1), 0.9),
             ok_cell("m", "sparse-50", "A", 1, samples_ns(1.00, 400, seed=2), 0.9, sparsity=0.5)]
    rows = rows_for(cells)
    assert same_computation(rows[0], rows[1])
    rec = one(report_of(cells))
    assert rec.runner_up.vs_best[0].separated  # statistically apart in this run...
    assert rec.verdict == "tie" and rec.runner_up.same_compute  # ...but physically the same work
    assert any("same computation" in n for n in rec.notes)
    assert any("highest top-1 is dense / A" in n for n in rec.notes)  # the tie-break prefers the reference


def test_channel_pruned_model_is_not_the_same_computation():
    cells = [ok_cell("m", "dense", "A", 1, samples_ns(2.0, 300, seed=1), 0.9),
             ok_cell("m", "channel-50", "A", 1, samples_ns(1.0, 300, seed=2), 0.895, params=12000, macs=1_400_000)]
    rec = one(report_of(cells))
    assert rec.verdict == "win" and rec.best.row.recipe == "channel-50"
    assert rec.best.drop_pts == pytest.approx(0.5)


def test_exclusions_and_their_reasons():
    cells = [
        ok_cell("m", "dense", "A", 1, samples_ns(2.0, 200, seed=1), 0.90, rss=100),
        ok_cell("m", "lossy", "A", 1, samples_ns(0.5, 200, seed=2), 0.85, rss=100, params=100, macs=100),
        ok_cell("m", "big", "A", 1, samples_ns(0.6, 200, seed=3), 0.90, rss=900, params=100, macs=100),
        ok_cell("m", "ok-1", "A", 1, samples_ns(1.0, 200, seed=4), 0.895, rss=100, params=100, macs=100),
        CellRecord("m/dense/B/fp32/b1/local", "m", "dense", "B", "fp32", 1, "local", "failed", error="worker killed by SIGKILL",
                   result=CellResult.failed("worker killed by SIGKILL")),
        CellRecord("m/dense/A/int8/b1/local", "m", "dense", "A", "int8", 1, "local", "skipped", error="A supports fp32, not int8"),
    ]
    rec = one(report_of(cells), max_accuracy_drop_pts=1.0, max_memory_mib=parse_memory("512MiB"))
    assert rec.best.row.recipe == "ok-1" and rec.verdict == "win"
    why = {e.row.cell_key: e.reason for e in rec.excluded}
    assert "5.00 pts below dense on A (90.00%); limit 1 pts" in why["m/lossy/A/fp32/b1/local"]
    assert why["m/big/A/fp32/b1/local"] == "peak RSS 900 MiB over the limit of 512 MiB"
    assert why["m/dense/B/fp32/b1/local"] == "failed: worker killed by SIGKILL"
    assert why["m/dense/A/int8/b1/local"] == "skipped: A supports fp32, not int8"
    text = format_text([rec])
    assert "excluded:" in text and "peak RSS 900 MiB over the limit of 512 MiB" in text
    # loosen the accuracy limit and the lossy cell wins
    assert one(report_of(cells), max_accuracy_drop_pts=None).best.row.recipe == "lossy"


def test_accuracy_drop_counts_against_fp32_dense_of_the_same_backend():
    cells = [ok_cell("m", "dense", "A", 1, samples_ns(2.0, 200, seed=1), 0.90),
             ok_cell("m", "dense", "A", 1, samples_ns(1.0, 200, seed=2), 0.87, precision="int8", params=1, macs=1)]
    rec = one(report_of(cells))
    assert rec.best.row.precision == "fp32"
    assert "3.00 pts below dense on A fp32" in rec.excluded[0].reason


def test_energy_without_a_sampler_says_so():
    cells = [ok_cell("m", "dense", "A", 1, samples_ns(1.0, 100, seed=1), 0.9)]
    rec = one(report_of(cells), objective="energy")
    assert rec.verdict == "none" and rec.best is None
    assert rec.excluded[0].reason == "no energy measurement: target local has no energy sampler"
    assert any("no energy sampler" in n for n in rec.notes)
    assert format_text([rec]).splitlines()[2].startswith("no recommendation:")


def test_throughput_compares_per_item_across_batch_sizes():
    # batch 8 takes 8x as long per batch: the same throughput, a tie; at 4x it wins by 2x.
    s1 = samples_ns(1.0, 400, seed=1)
    tie = [ok_cell("m", "dense", "A", 1, s1, 0.9), ok_cell("m", "dense", "A", 8, [v * 8 for v in samples_ns(1.0, 400, seed=2)], 0.9)]
    assert one(report_of(tie), objective="throughput").verdict == "tie"
    win = [ok_cell("m", "dense", "A", 1, s1, 0.9), ok_cell("m", "dense", "A", 8, samples_ns(4.0, 400, seed=2), 0.9)]
    rec = one(report_of(win), objective="throughput")
    assert rec.verdict == "win" and rec.best.row.batch == 8
    assert rec.margin()[0] == pytest.approx(2.0, rel=0.05)
    assert [c.statistic for c in rec.runner_up.vs_best] == ["mean", "median"]


def test_size_objective_and_batch_filter():
    cells = [ok_cell("m", "dense", "A", 1, samples_ns(1.0, 100, seed=1), 0.9, size=2000),
             ok_cell("m", "dense", "B", 1, samples_ns(1.0, 100, seed=2), 0.9, size=1000),
             ok_cell("m", "dense", "B", 8, samples_ns(5.0, 100, seed=3), 0.9, size=1000)]
    rec = one(report_of(cells), objective="size", batch=1)
    assert rec.verdict == "win" and rec.best.row.backend == "B" and rec.margin()[0] == pytest.approx(2.0)
    assert any("only batch 1 was asked for" in e.reason for e in rec.excluded)


def test_unknown_target_or_objective_is_an_error():
    report = report_of([ok_cell("m", "dense", "A", 1, samples_ns(1.0, 50, seed=1), 0.9)])
    with pytest.raises(EdgebenchError, match="no target 'board'; its targets: local"):
        recommend(report, "board")
    with pytest.raises(EdgebenchError, match="--objective"):
        recommend(report, "local", Constraints(objective="speed"))


@pytest.mark.parametrize("text, mib", [("512MiB", 512), ("512MB", 512e6 / 2**20), ("1.5GiB", 1536), ("300", 300), ("2048 KiB", 2), ("1gb", 1e9 / 2**20)])
def test_parse_memory(text, mib):
    assert parse_memory(text) == pytest.approx(mib)


@pytest.mark.parametrize("bad", ["", "MB", "12XB", "-5MB", "1.2.3GB"])
def test_parse_memory_rejects(bad):
    with pytest.raises(EdgebenchError, match="--max-memory"):
        parse_memory(bad)


def test_default_suite_shaped_run(default_store):
    report = tables.load(default_store.store, "latest", with_samples=True)
    rec = one(report)
    assert rec.verdict == "tie"
    assert {c.row.cell_key for c in rec.tied} == {"small_cnn/dense/onnxruntime/fp32/b1/local", "small_cnn/l1-unstructured-50/onnxruntime/fp32/b1/local"}
    assert all(c.row.backend == "onnxruntime" and c.row.batch == 1 for c in rec.tied)
    # the tie beats everything else clearly; l1-unstructured-80 is out on accuracy
    factor, ci = rec.margin()
    assert rec.margin_over().row.backend == "torch" and factor == pytest.approx(3.0, rel=0.1) and ci.low > 1
    assert sum("1.50 pts below dense" in e.reason for e in rec.excluded) == 4


def test_exclusions_say_why_as_a_kind_not_only_in_words():
    from edgebench.reports.recommend import Why

    cells = [
        ok_cell("m", "dense", "A", 1, samples_ns(2.0, 200, seed=1), 0.90, rss=100),
        ok_cell("m", "lossy", "A", 1, samples_ns(0.5, 200, seed=2), 0.85, rss=100, params=100, macs=100),
        ok_cell("m", "big", "A", 1, samples_ns(0.6, 200, seed=3), 0.90, rss=900, params=100, macs=100),
        ok_cell("m", "dense", "A", 8, samples_ns(0.6, 200, seed=4), 0.90, rss=100),
        CellRecord("m/dense/B/fp32/b1/local", "m", "dense", "B", "fp32", 1, "local", "failed", error="boom", result=CellResult.failed("boom")),
    ]
    rec = one(report_of(cells), max_memory_mib=512, batch=1)
    why = {e.row.cell_key: e.why for e in rec.excluded}
    assert why == {"m/lossy/A/fp32/b1/local": Why.ACCURACY_DROP, "m/big/A/fp32/b1/local": Why.MEMORY,
                   "m/dense/A/fp32/b8/local": Why.OTHER_BATCH, "m/dense/B/fp32/b1/local": Why.NOT_MEASURED}
    energy = one(report_of(cells[:1]), objective="energy")
    assert [e.why for e in energy.excluded] == [Why.NO_OBJECTIVE]


def test_a_reference_on_another_backend_is_said_so():
    cells = [ok_cell("m", "dense", "A", 1, samples_ns(2.0, 200, seed=1), 0.90),
             ok_cell("m", "sparse-50", "B", 1, samples_ns(1.0, 200, seed=2), 0.895, sparsity=0.5, params=100, macs=100)]
    rec = one(report_of(cells))
    assert rec.best.row.backend == "B" and rec.best.reference_elsewhere and rec.best.reference_row.backend == "A"
    assert any(n.startswith("accuracy drop of the best measured against dense on A (no dense B cell ran)") for n in rec.notes)
    assert not rec.runner_up.reference_elsewhere  # the dense cell is its own reference


def test_measurement_warnings_are_found_by_code():
    from edgebench.bench.contracts.flags import Flag

    cells = [ok_cell("m", "dense", "A", 1, samples_ns(2.0, 200, seed=1), 0.90),
             ok_cell("m", "dense", "B", 1, samples_ns(1.0, 200, seed=2), 0.90,
                     flags=(Flag("high-variance", "high variance: CoV 9.0% > 5%"), Flag("other", "contended-looking text, not a code")))]
    rec = one(report_of(cells))
    [note] = [n for n in rec.notes if n.startswith("measurement warnings")]
    assert "high variance" in note and "contended" not in note


# -- issue 15: the tie rule with processes, disagreeing statistics, excluded cells ---------------

def test_cells_of_one_process_are_not_enough_to_call_a_small_win():
    # 1.3x apart, beyond doubt within each process, but one process each: a process's mode can do that
    cells = [ok_cell("m", "dense", "slow", 1, samples_ns(1.3, 400, seed=1), 0.9, processes=1),
             ok_cell("m", "dense", "fast", 1, samples_ns(1.0, 400, seed=2), 0.9, processes=1)]
    rec = one(report_of(cells))
    assert rec.verdict == "tie" and rec.best.row.backend == "fast"
    assert all(ci.separated and not ci.decisive for ci in rec.runner_up.vs_best)
    assert rec.runner_up.tie_reason.startswith("not enough processes to call a win (1/1 worker processes")
    assert any("measured in fewer than 2 worker processes" in n and "measure.processes >= 2" in n for n in rec.notes)
    assert "tie (not enough processes to call a win" in format_text([rec])
    # one side measured in 3 processes is not enough either
    cells[0] = ok_cell("m", "dense", "slow", 1, samples_ns(1.3, 400, seed=1), 0.9, processes=3)
    assert one(report_of(cells)).verdict == "tie"


def test_one_process_still_decides_a_margin_beyond_any_process_mode():
    from edgebench.reports.ties import ONE_PROCESS_MARGIN

    cells = [ok_cell("m", "dense", "slow", 1, samples_ns(3.0, 400, seed=1), 0.9, processes=1),
             ok_cell("m", "dense", "fast", 1, samples_ns(1.0, 400, seed=2), 0.9, processes=1)]
    rec = one(report_of(cells))
    assert rec.verdict == "win" and all(ci.low > ONE_PROCESS_MARGIN and not ci.decisive for ci in rec.runner_up.vs_best)
    cells[0] = ok_cell("m", "dense", "slow", 1, samples_ns(1.8, 400, seed=1), 0.9, processes=1)  # 1.8x: a process mode can
    assert one(report_of(cells)).verdict == "tie"


def test_between_process_variance_makes_an_a_a_pair_a_tie():
    # Two backends timing the same distribution, each in 3 processes whose modes differ by ~10%: pooled as
    # independent samples they "differ" (intervals of +-1%), resampling processes they do not.
    import numpy as np

    from edgebench.reports import stats

    rng = np.random.default_rng(3)
    modes = {"A": [1.0, 1.12, 0.95], "B": [1.2, 1.05, 1.1]}
    cells = [ok_cell("m", "dense", b, 1, [v for mode in modes[b] for v in samples_ns(mode, 400, seed=int(rng.integers(1e6)))], 0.9,
                     params=100 if b == "A" else 200, macs=100 if b == "A" else 200) for b in modes]
    rec = one(report_of(cells))
    assert rec.verdict == "tie" and not rec.runner_up.same_compute
    assert all(ci.decisive for ci in rec.runner_up.vs_best) and not all(ci.separated for ci in rec.runner_up.vs_best)
    a, b = (report_of(cells).samples[c.cell_key] for c in cells)
    assert not stats.pooled_compare(a, b, "median").includes_one  # the old rule called this a win


def test_the_tie_rule_is_one_text_in_every_output(default_store):
    from edgebench.reports import render
    from edgebench.reports.recommend import OBJECTIVES, tie_rule

    report = tables.load(default_store.store, "latest", with_samples=True)
    rec = one(report)
    rule = tie_rule(OBJECTIVES["p90"])
    assert "wholly above 1" in rule and "at least 2 processes" in rule
    assert rec.to_dict()["tie_rule"] == rule
    assert f"note: tie rule: {rule}" in format_text([rec])
    assert f"Tie rule: {rule}." in render.markdown(report, render.recommendations(report))
    assert "A tie means the bootstrap interval of the latency ratio includes 1" not in render.markdown(report, render.recommendations(report))


def test_p90_and_median_pointing_different_ways_is_a_tie_and_said_so():
    import numpy as np

    # "narrow": tight around 1.0 ms (lower p90); "tailed": a lower median (0.9 ms) but a long tail (higher p90)
    rng = np.random.default_rng(4)
    narrow = [int(v) for v in rng.lognormal(np.log(1.0e6), 0.02, 1200)]
    tailed = [int(v) for v in np.where(rng.random(1200) < 0.3, rng.lognormal(np.log(1.6e6), 0.05, 1200), rng.lognormal(np.log(0.9e6), 0.02, 1200))]
    cells = [ok_cell("m", "dense", "narrow", 1, narrow, 0.9), ok_cell("m", "dense", "tailed", 1, tailed, 0.9, params=1, macs=1)]
    rec = one(report_of(cells))
    assert rec.best.row.backend == "narrow" and rec.verdict == "tie"
    p90, median = rec.runner_up.vs_best
    assert p90.separated and median.below
    assert "median interval below 1 (the statistics point different ways)" in rec.runner_up.tie_reason
    [note] = [n for n in rec.notes if "point different ways for" in n]
    assert "dense / tailed / fp32 / batch 1" in note and "p90 " in note and "median " in note


def test_contended_and_nan_output_cells_are_excluded_never_ranked():
    from edgebench.bench.contracts.flags import Flag
    from edgebench.reports.recommend import Why

    cells = [ok_cell("m", "dense", "A", 1, samples_ns(2.0, 200, seed=1), 0.90),
             ok_cell("m", "dense", "busy", 1, samples_ns(0.5, 200, seed=2), 0.90, contended=True),
             ok_cell("m", "dense", "nan", 1, samples_ns(0.4, 200, seed=3), 0.90, size=10,
                     flags=(Flag("nan-outputs", "nan outputs: 40 non-finite values"),))]
    rec = one(report_of(cells))
    assert rec.best.row.backend == "A" and rec.verdict == "sole"
    why = {e.row.backend: e for e in rec.excluded}
    assert why["busy"].why is Why.CONTENDED and why["busy"].reason.startswith("measured while other processes used the CPU (contended")
    assert why["nan"].why is Why.INVALID and "nan-outputs" in why["nan"].reason and "never ranked" in why["nan"].reason
    assert "excluded:" in format_text([rec]) and "never ranked" in format_text([rec])
    size = one(report_of(cells), objective="size")  # contention does not touch the size; invalid outputs do
    assert {c.row.backend for c in size.candidates} == {"A", "busy"}
    assert [e.row.backend for e in size.excluded] == ["nan"]
    busy = one(report_of(cells[1:2]))  # nothing left: say why
    assert busy.verdict == "none" and any("contended" in n and "idle machine" in n for n in busy.notes)


def test_process_boundaries_round_trip_through_the_store(tmp_path):
    from conftest import finish, new_run

    store = new_run(tmp_path, "20261124-090000-0p0p")
    cells = [ok_cell("m", "dense", "A", 1, samples_ns(1.0, 301, seed=1), 0.9, processes=3),
             ok_cell("m", "dense", "B", 1, samples_ns(1.0, 300, seed=2), 0.9, processes=1)]
    finish(store, "20261124-090000-0p0p", cells)
    [a, b] = store.cells("20261124-090000-0p0p", with_samples=True)
    assert a.result.process_samples == [101, 100, 100] and b.result.process_samples == []
    report = tables.load(store, "latest", with_samples=True)
    assert report.process_samples == {"m/dense/A/fp32/b1/local": [101, 100, 100]}
    assert tables.load(store, "latest").process_samples == {}  # only with the samples they describe


def test_comparison_text_keeps_equal_value_apart_from_no_interval():
    # an objective without a statistic (size) ties on equal value; a statistic without samples ties with its reason
    from edgebench.reports.recommend import EQUAL_VALUE, Candidate, comparison_text

    def cand(**kw):
        return Candidate(row=None, value=1.0, drop_pts=None, reference="", rank=2, **kw)

    assert comparison_text(cand(tied=True, tie_reason=EQUAL_VALUE)) == "tie: equal value"
    assert comparison_text(cand(tied=True, tie_reason="no stored samples to resample")) == "tie (no stored samples to resample): no interval"
    assert comparison_text(cand()) == "worse (point estimate, no interval)"
