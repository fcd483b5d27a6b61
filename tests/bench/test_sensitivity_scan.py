"""bench/sensitivity.py: the layer-wise sensitivity scan on the real trained small_cnn (the session's
cached dense model), the computation it shares with `edgebench fit`, its cache, and the command's
one-line errors; one end-to-end run of `edgebench sensitivity` (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgebench.bench import sensitivity as sens
from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.prepare import Preparer
from edgebench.models.cache import Cache, content_key

RATIOS = (0.0, 0.5, 0.9)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convs on a shared 2-core machine: one intra-op thread is much faster than two."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def home(built, tmp_path_factory):
    """A cache holding the session's trained small_cnn, and nothing of the scan yet."""
    root = tmp_path_factory.mktemp("scan")
    shutil.copytree(built.cache_root, root / "cache")
    return root


def preparer(home: Path) -> Preparer:
    return Preparer(Cache(home / "cache"), log=lambda m: None)


@pytest.fixture(scope="module")
def channel(home, one_thread):
    rows = []
    result = sens.scan(preparer(home), "small_cnn", sens.ScanOptions(ratios=RATIOS), log=lambda m: None, on_row=rows.append)
    return result, rows


def test_group_names_are_fits_channel_groups(channel, built):
    import torch

    from edgebench.models import data as datasets
    from edgebench.models import fit as fitlib

    result, _ = channel
    example = torch.from_numpy(datasets.load("digits", 32).x_test[:1])
    groups = fitlib.channel_groups(built.module(), example)
    assert [(u.name, u.total, u.layers) for u in result.units] == [(g.name, g.width, g.layers) for g in groups]
    assert {(p.unit, p.ratio) for p in result.points} == {(g.name, r) for g in groups for r in RATIOS}


def test_a_ratio_that_removes_nothing_costs_about_nothing(channel):
    result, _ = channel
    for u in result.units:
        p = result.point(u.name, 0.0)
        assert p.kept == u.total
        assert abs(p.top1_drop_pp) < 1.5 and abs(p.loss_increase) < 0.05  # BN statistics re-estimated: not bit-exact
        assert p.holdout_top1 == pytest.approx(result.dense_holdout_top1 - p.top1_drop_pp / 100)


def test_more_pruning_costs_more(channel):
    result, _ = channel
    for u in result.units:
        p0, p5, p9 = (result.point(u.name, r) for r in RATIOS)
        assert p9.kept < p5.kept < p0.kept
        assert p9.loss_increase > p5.loss_increase > p0.loss_increase
        assert p9.top1_drop_pp >= p5.top1_drop_pp - 2.0  # top-1 is noisier than the loss on 287 images
    assert result.ranking()[0][1] > result.ranking()[-1][1]


def test_the_eval_split_is_reported_beside_never_ranked_on(channel, built):
    result, rows = channel
    assert result.dense_eval_top1 == pytest.approx(built.dense_facts["top1_torch"])  # the real evaluation split
    assert result.eval_images == len(built.eval_data()["labels"]) and result.holdout_images < 400
    assert all(p.eval_top1 is not None and 0 <= p.eval_top1 <= 1 for p in result.points)
    assert len(rows) == len(result.points)  # progress: one call per computed row


def test_a_second_scan_is_a_cache_hit_with_the_same_points(channel, home):
    first, _ = channel
    again = sens.scan(preparer(home), "small_cnn", sens.ScanOptions(ratios=RATIOS), log=lambda m: None)
    assert not first.reused and again.reused and again.key == first.key
    assert again.points == first.points and again.compute_s == first.compute_s
    other = sens.scan(preparer(home), "small_cnn", sens.ScanOptions(ratios=(0.5,), recalibrate_bn=False), log=lambda m: None)
    assert not other.reused and other.key != first.key


def test_fit_and_the_scan_share_one_computation(channel, home, built, tmp_path):
    """The fit's rows at the scan's widths are the scan's held-out numbers, bit for bit."""
    from edgebench.bench.contracts.fit import Group
    from edgebench.bench.fit import Fitter
    from edgebench.bench.runner import Paths
    from edgebench.models import data as datasets

    result, _ = channel
    data = datasets.load("digits", 32)
    module = built.module()
    groups = [Group(u.name, u.total, u.layers) for u in result.units]
    widths = {u.name: [result.point(u.name, 0.5).kept] for u in result.units}
    dense = preparer(home).dense("small_cnn")
    rows, reused = Fitter(Paths(tmp_path), log=lambda m: None)._sensitivity(dense, module, groups, widths, data)
    assert not reused and len(rows) == len(result.units)
    for row in rows:
        p = result.point(row.group, 0.5)
        assert (row.width, row.loss_increase, row.top1_drop_pp) == (p.kept, p.loss_increase, p.top1_drop_pp)


def test_the_fits_cache_key_is_the_one_from_before_the_scan(built, tmp_path):
    import torch

    from edgebench.models import data as datasets

    data = datasets.load("digits", 32)
    got = sens.compute(Cache(tmp_path), "dense-key", built.module(), torch.from_numpy(data.x_test[:1]), [], {}, data, log=lambda m: None)
    assert got.key == content_key({"dense": "dense-key", "candidates": {}, "holdout": [0.2, 0], "recalibrate_bn": True, "version": 1})
    scan_key = sens.compute(Cache(tmp_path), "dense-key", built.module(), torch.from_numpy(data.x_test[:1]), [], {}, data,
                            eval_split=True, log=lambda m: None).key
    assert scan_key != got.key


def test_unstructured_scans_every_conv_and_linear_layer(home, one_thread, built):
    from edgebench.models import fit as fitlib

    result = sens.scan(preparer(home), "small_cnn", sens.ScanOptions(ratios=(0.5,), kind="unstructured"), log=lambda m: None)
    counts = fitlib.weight_counts(built.module())
    assert [u.name for u in result.units] == list(counts) and "fc" in counts  # the classifier too: zeroing weights keeps its outputs
    assert result.importance == "magnitude"
    for p in result.points:
        assert p.kept == counts[p.unit] - round(counts[p.unit] * 0.5)


def test_prune_layer_weights_keeps_the_largest_magnitudes():
    import torch

    layer = torch.nn.Linear(4, 2)
    layer.weight.data = torch.tensor([[0.1, -3.0, 0.2, 2.0], [-0.5, 0.05, 1.0, -0.3]])
    from edgebench.models import fit as fitlib

    fitlib.prune_layer_weights(layer, 3)
    assert layer.weight.data.tolist() == [[0.0, -3.0, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0]]
    assert fitlib.kept_at(16, 0.9) == 2 and fitlib.kept_at(16, 0.0) == 16 and fitlib.kept_at(3, 0.99) == 1


@pytest.mark.parametrize("text, bad", [("0.5,1", "'1'"), ("0.5,abc", "'abc'"), ("-0.1", "'-0.1'"), ("", "''")])
def test_a_bad_ratio_is_one_line_naming_it(text, bad):
    with pytest.raises(ConfigError, match=r"--ratios: " + bad.replace(".", r"\.") + " is not a ratio in \\[0, 1\\)") as info:
        sens.parse_ratios(text)
    assert "\n" not in str(info.value)


def test_ratios_are_sorted_and_unique():
    assert sens.parse_ratios("0.9, 0.25,0.5,0.25") == (0.25, 0.5, 0.9)


@pytest.mark.parametrize("model, opts, message", [
    ("no_such_model", {}, "unknown model 'no_such_model'"),
    ("resnet18_224", {}, "latency-only model"),
    ("small_cnn", {"kind": "filters"}, "--kind: unknown kind 'filters'"),
    ("small_cnn", {"importance": "hessian"}, "--importance: unknown importance 'hessian'"),
    ("small_cnn", {"executor": "dask"}, "unknown executor"),
])
def test_what_cannot_be_scanned_is_one_line(tmp_path, model, opts, message):
    with pytest.raises(ConfigError, match=message):
        sens.scan(preparer(tmp_path), model, sens.ScanOptions(**opts), log=lambda m: None)
    assert not (tmp_path / "cache" / "dense").exists()  # refused before anything was trained


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench.bench.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})


def test_the_command_exits_2_with_one_line(tmp_path):
    out = cli("sensitivity", "resnet18_224", "--home", str(tmp_path / "h"), cwd=tmp_path)
    assert out.returncode == 2 and "latency-only model" in out.stderr and "cannot be scanned" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = cli("sensitivity", "small_cnn", "--ratios", "0.5,1.5", "--home", str(tmp_path / "h"), cwd=tmp_path)
    assert out.returncode == 2 and "--ratios: '1.5'" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def user_suite(tmp_path: Path, model: dict) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "models": [model], "recipes": ["dense"], "backends": ["onnxruntime"]}))
    return path


def test_a_given_model_file_cannot_be_scanned(tmp_path, built):
    suite = user_suite(tmp_path, {"name": "theirs", "onnx": str(built.ort_path)})
    out = cli("sensitivity", "theirs", "--suite", str(suite), "--home", str(tmp_path / "h"), cwd=tmp_path)
    assert out.returncode == 2 and "sensitivity theirs: needs a PyTorch model to prune" in out.stderr, out.stderr


@pytest.mark.slow
def test_a_model_of_ones_own_from_a_suite(tmp_path, built):
    """--suite: a factory model with its weights (no training), scanned like a zoo model."""
    suite = user_suite(tmp_path, {"name": "mine", "factory": "edgebench.models.zoo:small_cnn", "kwargs": {"num_classes": 10},
                                  "weights": str(built.dense_dir / "model.pt")})
    out = cli("sensitivity", "mine", "--suite", str(suite), "--ratios", "0.5", "--kind", "unstructured", "--home", str(tmp_path / "h"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "sensitivity mine: 4 layers x 1 ratio, computed in" in out.stdout


@pytest.mark.slow
def test_the_real_command_on_small_cnn_with_two_ratios(home, tmp_path):
    h = tmp_path / "home"
    shutil.copytree(home / "cache" / "dense", h / "cache" / "dense")  # the trained dense model, no scan cached
    first = cli("sensitivity", "small_cnn", "--ratios", "0.5,0.9", "--home", str(h), cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "3 channel groups x 2 ratios, computed in" in first.stdout and "most sensitive: " in first.stdout
    table = Path(next(line.split(": ", 1)[1] for line in first.stdout.splitlines() if line.startswith("table: ")))
    assert table.parent.parent == h / "reports" and table.name == "sensitivity.md"
    md = table.read_text()
    assert "| group \\ ratio | 0.5 | 0.9 |" in md and "features.2.0 (64 channels)" in md
    data = json.loads((table.parent / "sensitivity.json").read_text())
    assert data["ratios"] == [0.5, 0.9] and len(data["points"]) == 6
    assert (table.parent / "sensitivity.html").read_text().count('class="series"') == 6  # 3 lines on each of the 2 plots
    again = cli("sensitivity", "small_cnn", "--ratios", "0.9,0.5", "--home", str(h), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert again.returncode == 0 and "reused from the cache" in again.stdout
    again_md = (tmp_path / "out" / "sensitivity.md").read_text()
    assert again_md[again_md.index("\n## "):] == md[md.index("\n## "):]  # the same tables from the cache


@pytest.mark.slow
def test_the_scan_on_ray_is_the_same_as_in_process(home, one_thread, tmp_path):
    """--executor ray: one task per layer, the same rows (eval split included) bit for bit."""
    pytest.importorskip("ray", reason="the fleet extra (ray) is not installed")
    opts = {"ratios": (0.5,), "kind": "unstructured"}
    local = sens.scan(preparer(home), "small_cnn", sens.ScanOptions(**opts), log=lambda m: None)
    shutil.copytree(home / "cache" / "dense", tmp_path / "cache" / "dense")
    remote = sens.scan(preparer(tmp_path), "small_cnn", sens.ScanOptions(**opts, executor="ray"), log=lambda m: None)
    assert not remote.reused and remote.key == local.key and remote.executor == "ray"
    assert remote.points == local.points
