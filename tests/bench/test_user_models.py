"""User models in a suite: a factory with a state_dict, an ImageFolder or .npz dataset, a plain ONNX file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgebench.bench.config import load_suite
from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.runner import Paths, Runner

FACTORY = textwrap.dedent('''
    import torch
    import torch.nn as nn

    def tiny(num_classes=3):
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    class NaNHead(nn.Module):
        """A model gone wrong: every logit is NaN (log of a negative number)."""

        def __init__(self, num_classes=3):
            super().__init__()
            self.body = tiny(num_classes)

        def forward(self, x):
            return torch.log(-torch.abs(self.body(x)) - 1.0)

    def nan_net(num_classes=3):
        return NaNHead(num_classes)
''')
MEASURE = {"warmup_runs": 2, "warmup_seconds": 0.0, "min_runs": 10, "min_seconds": 0.05}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: a factory module (own package name), weights, an .npz, an image folder, an ONNX file."""
    import torch
    from PIL import Image

    root = tmp_path_factory.mktemp("user")
    (root / "usernets_for_test.py").write_text(FACTORY)
    ns: dict = {}
    exec(FACTORY, ns)
    torch.manual_seed(0)
    model = ns["tiny"]()
    torch.save(model.state_dict(), root / "tiny.pt")
    torch.jit.save(torch.jit.script(model.eval()), str(root / "tiny.ts"))
    torch.jit.save(torch.jit.script(ns["tiny"](2).eval()), str(root / "two.ts"))  # 2 outputs for 3 classes
    torch.save(ns["tiny"](5).state_dict(), root / "five.pt")  # weights of a 5-class model
    torch.onnx.export(model.eval(), (torch.randn(1, 3, 32, 32),), str(root / "tiny.onnx"), dynamo=True, external_data=False)
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x=rng.standard_normal((30, 3, 32, 32)).astype(np.float32), y=np.arange(30) % 3)
    for c in ("cat", "dog", "owl"):
        (root / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray((rng.random((20, 24, 3)) * 255).astype("uint8")).save(root / "imgs" / c / f"{i}.png")
    return root


def write(project: Path, name: str, models: list, recipes=("dense", "l1-unstructured-50"), backends=("torch", "onnxruntime")) -> Path:
    path = project / name
    path.write_text(yaml.safe_dump({"name": name, "models": models, "recipes": list(recipes), "backends": list(backends),
                                    "measure": MEASURE, "cell_timeout_s": 120}))
    return path


def test_factory_weights_npz_imagefolder_and_onnx_run(project: Path, tmp_path: Path) -> None:
    suite = write(project, "all.yaml", [
        {"name": "mine", "factory": "usernets_for_test:tiny", "weights": "tiny.pt", "dataset": "data.npz"},
        {"name": "mine_imgs", "factory": "usernets_for_test:tiny", "dataset": "imgs", "train_epochs": 1},
        {"name": "theirs", "onnx": "tiny.onnx", "dataset": "data.npz"},
        {"name": "scripted", "torchscript": "tiny.ts", "dataset": "data.npz"},
    ])
    loaded = load_suite(suite)
    assert loaded.user_models["mine"].train_epochs == 0  # weights given: not retrained
    summary = Runner(Paths(home=tmp_path), log=lambda m: None).run(loaded)
    cells = {c.cell_key: c for c in Runner(Paths(home=tmp_path)).store.cells(summary.run_id, with_samples=False)}
    # the factory models run everywhere, pruned too; the plain ONNX model runs only as itself on onnxruntime
    for key in ("mine/dense/torch", "mine/l1-unstructured-50/onnxruntime", "mine_imgs/dense/onnxruntime", "theirs/dense/onnxruntime",
                "scripted/dense/torch", "scripted/dense/onnxruntime"):
        [cell] = [c for k, c in cells.items() if k.startswith(key)]
        assert cell.status == "ok", (key, cell.error)
        assert cell.result.accuracy is not None and cell.result.fidelity is not None
    skipped = {k: c.error for k, c in cells.items() if c.status == "skipped"}
    assert set(skipped) == {"theirs/dense/torch/fp32/b1/local", "theirs/l1-unstructured-50/torch/fp32/b1/local",
                            "theirs/l1-unstructured-50/onnxruntime/fp32/b1/local",
                            "scripted/l1-unstructured-50/torch/fp32/b1/local", "scripted/l1-unstructured-50/onnxruntime/fp32/b1/local"}
    assert all("factory and weights" in reason for reason in skipped.values())
    assert summary.cells_failed == 0
    # the loaded weights are the user's: the ONNX export of the same weights agrees with the torch cell
    mine = [c for k, c in cells.items() if k.startswith("mine/dense/onnxruntime")][0]
    assert mine.result.fidelity.max_abs_diff < 1e-4
    theirs = [c for k, c in cells.items() if k.startswith("theirs/dense/onnxruntime")][0]
    assert theirs.result.accuracy.top1 == pytest.approx(mine.result.accuracy.top1)
    # the TorchScript archive holds the same weights: same answers on both runtimes, export checked against it
    for key in ("scripted/dense/torch", "scripted/dense/onnxruntime"):
        cell = [c for k, c in cells.items() if k.startswith(key)][0]
        assert cell.result.accuracy.top1 == pytest.approx(mine.result.accuracy.top1)
        assert cell.facts["artifact"]["export_check"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("model, expected", [
    ({"name": "x", "factory": "usernets_for_test:tiny", "onnx": "tiny.onnx"}, "exactly one of factory"),
    ({"name": "x"}, "exactly one of factory"),
    ({"name": "x", "torchscript": "tiny.ts", "onnx": "tiny.onnx"}, "exactly one of factory"),
    ({"name": "x", "factory": "usernets_for_test:nope"}, "cannot import usernets_for_test:nope"),
    ({"name": "x", "factory": "usernets_for_test"}, "not 'package.module:callable'"),
    ({"name": "x", "factory": "usernets_for_test:tiny", "weights": "missing.pt"}, "missing.pt not found"),
    ({"name": "x", "factory": "usernets_for_test:tiny", "dataset": "nodata.npz"}, "nodata.npz not found"),
    ({"name": "small_cnn", "factory": "usernets_for_test:tiny"}, "is a built-in model"),
    ({"name": "x", "factory": "usernets_for_test:tiny", "wieghts": "tiny.pt"}, "did you mean 'weights'"),
])
def test_user_model_config_errors_are_one_line(project: Path, model: dict, expected: str) -> None:
    suite = write(project, "bad.yaml", [model])
    with pytest.raises(ConfigError) as err:
        load_suite(suite)
    msg = str(err.value)
    assert "\n" not in msg and str(suite) in msg and expected in msg, msg


def test_weights_that_do_not_fit_fail_the_cells_with_the_file_named(project: Path, tmp_path: Path) -> None:
    suite = write(project, "mismatch.yaml", [{"name": "wrong", "factory": "usernets_for_test:tiny", "kwargs": {"num_classes": 5},
                                               "weights": "tiny.pt", "dataset": "data.npz"}], recipes=["dense"], backends=["onnxruntime"])
    summary = Runner(Paths(home=tmp_path), log=lambda m: None).run(load_suite(suite))
    assert summary.cells_failed == 1
    assert "tiny.pt" in summary.failures[0] and "num_classes" in summary.failures[0]


def test_wrong_image_size_in_npz_names_the_file(project: Path) -> None:
    from edgebench.models import data

    with pytest.raises(ValueError, match=r"data\.npz.*32x32.*expects 64x64"):
        data.load(str(project / "data.npz"), 64)
    bad = project / "bad.npz"
    np.savez(bad, a=np.zeros(3))
    with pytest.raises(ValueError, match=r"bad\.npz: expected arrays x, y"):
        data.load(str(bad), 32)


def test_image_folder_is_loaded_resized_and_split(project: Path) -> None:
    from edgebench.models import data

    d = data.load(str(project / "imgs"), 32)
    assert d.num_classes == 3 and d.x_train.shape[1:] == (3, 32, 32)
    assert len(d.x_train) + len(d.x_test) == 12
    assert -1.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert set(d.y_test) == {0, 1, 2}  # stratified


def test_latency_only_zoo_model_has_no_accuracy(tmp_path: Path) -> None:
    """A 224x224 zoo model runs on synthetic inputs: latency and fidelity, no accuracy, and the report says so."""
    from edgebench.models.data import load

    d = load("synthetic", 224)
    assert not d.has_labels and d.x_test.shape[1:] == (3, 224, 224)


@pytest.mark.parametrize("model, expected", [
    ({"name": "ts", "torchscript": "two.ts", "dataset": "data.npz"}, r"two\.ts: the model has 2 outputs but .*data\.npz has 3 classes \(labels 0\.\.2\)"),
    ({"name": "wide", "factory": "usernets_for_test:tiny", "kwargs": {"num_classes": 5}, "weights": "five.pt", "dataset": "data.npz"},
     r"wide: the model has 5 outputs but .*data\.npz has 3 classes.*unrelated label sets"),
    ({"name": "few", "factory": "usernets_for_test:tiny", "kwargs": {"num_classes": 2}, "dataset": "data.npz"},
     r"few: the model has 2 outputs but .*data\.npz has 3 classes.*set num_classes in kwargs"),
])
def test_outputs_that_do_not_match_the_classes_are_refused_before_measuring(project: Path, tmp_path: Path, model: dict, expected: str) -> None:
    """Every model kind gets the output-count check (a TorchScript archive, weights given untrained, a factory)."""
    from edgebench.bench.prepare import Preparer
    from edgebench.models.cache import Cache

    loaded = load_suite(write(project, "classes.yaml", [model], recipes=["dense"], backends=["onnxruntime"]))
    preparer = Preparer(Cache(tmp_path / "cache"), log=lambda m: None, models=dict(loaded.user_models))
    with pytest.raises(ConfigError, match=expected) as err:
        preparer.dense(model["name"])
    assert "\n" not in str(err.value)


def test_a_factory_model_that_returns_nan_is_measured_but_its_accuracy_fails(project: Path, tmp_path: Path) -> None:
    suite = write(project, "nan.yaml", [{"name": "nan", "factory": "usernets_for_test:nan_net", "dataset": "data.npz", "train_epochs": 1}],
                  recipes=["dense"], backends=["torch", "onnxruntime"])
    log: list[str] = []
    summary = Runner(Paths(home=tmp_path), log=log.append).run(load_suite(suite))
    cells = Runner(Paths(home=tmp_path)).store.cells(summary.run_id, with_samples=False)
    assert {c.backend for c in cells} == {"torch", "onnxruntime"} and summary.cells_ok == len(cells)
    for cell in cells:
        assert cell.result.accuracy is None and cell.result.fidelity is None, cell.cell_key
        assert [f.code for f in cell.result.flags if f.code == "nan-outputs"] == ["nan-outputs"], cell.result.flags
    assert any("nan" in line and "NaN/Inf" in line for line in log)
