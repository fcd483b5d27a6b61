"""reports/sensitivity.py: the scan's tables, summary and plot from a hand-built result (no torch)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

from edgebench.bench.sensitivity import ScanPoint, ScanResult, ScanUnit, scan_from_data
from edgebench.reports import sensitivity as rep

DROPS = {"conv1": (2.0, 30.0), "conv2": (0.5, 4.0), "conv3": (1.0, 12.0), "fc": (0.0, 0.25)}  # (ratio 0.5, ratio 0.9) drops, pp


def result(units: dict[str, tuple[float, float]] = DROPS, kind: str = "channel") -> ScanResult:
    pts = []
    for name, drops in units.items():
        for ratio, drop in zip((0.5, 0.9), drops):
            pts.append(ScanPoint(name, ratio, 16 if ratio == 0.5 else 3, drop / 50, drop, 0.98 - drop / 100, 0.97 - drop / 90))
    return ScanResult("small_cnn", kind, "l2", True, [0.5, 0.9], [ScanUnit(n, 32, [n, f"{n}.x"]) for n in units], pts,
                      0.98, 0.05, 0.97, 287, 360, "densekey0123456789", "scankey0123456789", False, 12.5, 13.0)


def test_the_table_is_unit_by_ratio_top1_drop_with_the_kept_width():
    md = rep.sensitivity_markdown(result())
    table = md.split("## Top-1 drop (held-out training slice, percentage points)")[1].split("## ")[0]
    assert "| group \\ ratio | 0.5 | 0.9 |" in table
    assert "| conv1 (32 channels) | 2.00 (kept 16) | 30.00 (kept 3) |" in table
    assert "| fc (32 channels) | 0.00 (kept 16) | 0.25 (kept 3) |" in table
    loss = md.split("## Loss increase")[1].split("## ")[0]
    assert "| conv1 (32 channels) | +0.0400 | +0.6000 |" in loss


def test_the_most_and_least_sensitive_units_are_named_by_mean_drop():
    md = rep.sensitivity_markdown(result())
    most = next(line for line in md.splitlines() if line.startswith("- most sensitive: "))
    least = next(line for line in md.splitlines() if line.startswith("- least sensitive: "))
    assert most.startswith("- most sensitive: conv1 (16.00 pp") and "conv3 (6.50 pp" in most and "fc" not in most
    assert least.startswith("- least sensitive: fc (0.12 pp") and "conv2 (2.25 pp" in least and "conv1" not in least
    ranks = md.split("## Units, most sensitive first")[1]
    assert [re.match(r"\| (\d) \| (\w+)", l).groups() for l in ranks.splitlines() if re.match(r"\| \d", l)] == \
        [("1", "conv1"), ("2", "conv3"), ("3", "conv2"), ("4", "fc")]


def test_few_units_are_never_both_most_and_least_sensitive():
    assert rep.extremes([("a", 3, 0), ("b", 2, 0), ("c", 1, 0)]) == ([("a", 3, 0)], [("c", 1, 0)])
    assert rep.extremes([("a", 3, 0)]) == ([("a", 3, 0)], [])
    assert rep.extremes([]) == ([], [])


def test_the_eval_split_is_its_own_table_labelled_reported_only():
    md = rep.sensitivity_markdown(result())
    heading = next(line for line in md.splitlines() if line.startswith("## Evaluation-split top-1"))
    assert "reported only: not used to rank" in heading and "dense 97.00%" in heading
    assert "| conv1 (32 channels) | 94.78% | 63.67% |" in md.split(heading)[1]
    assert "held-out 20% of the TRAINING split, never the evaluation split" in md
    assert "dense model: top-1 98.00% on the held-out training slice (287 images), 97.00% on the evaluation split (360 images)" in md


def test_the_html_plots_one_line_per_unit_from_the_dense_point():
    html = rep.sensitivity_html(result())
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) == 2  # held-out slice and evaluation split
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
        assert svg.count('class="series"') == len(DROPS)
        assert svg.count('class="mark"') == 3 * len(DROPS)  # dense at ratio 0, then 0.5 and 0.9
    assert "conv1 at ratio 0.9: top-1 68.00%" in svgs[0] and "conv1 at ratio 0: top-1 98.00%" in svgs[0]
    assert "Top-1 drop (held-out training slice" in html and "<script" not in html


def test_more_units_than_colours_get_dashed_lines():
    many = {f"layer{i}": (1.0, 2.0) for i in range(14)}
    svg = rep.accuracy_chart(result(many), rep.Ids())
    assert svg.count('class="series"') == 14 and svg.count('stroke-dasharray="5 3"') >= 2


def test_the_report_files_round_trip_the_data(tmp_path):
    r = result(kind="unstructured")
    paths = rep.write_sensitivity_report(r, tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["sensitivity.html", "sensitivity.json", "sensitivity.md"]
    assert scan_from_data(json.loads(paths["json"].read_text())) == r
    md = paths["markdown"].read_text()
    assert md.startswith("# sensitivity: small_cnn, layers (unstructured, L1 magnitude) pruned alone") and "| layer \\ ratio |" in md
    assert "(32 weights)" in md
