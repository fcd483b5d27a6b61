"""Shared fixtures: the real small_cnn artifacts (built once per session), short measurement floors,
suite files in tmp folders, and an EDGEBENCH_HOME that never points into the repository."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgebench.bench.results import MeasureSettings

@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory):
    """Anything that falls back on EDGEBENCH_HOME writes into a tmp folder, never ./edgebench-results."""
    home = tmp_path_factory.mktemp("edgebench-home")
    old = os.environ.get("EDGEBENCH_HOME")
    os.environ["EDGEBENCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("EDGEBENCH_HOME", None)
    else:
        os.environ["EDGEBENCH_HOME"] = old


@dataclass
class Built:
    """The session's real artifacts: the trained dense small_cnn and its torch and ONNX exports."""

    cache_root: Path
    dense_dir: Path
    ort_path: Path
    torch_path: Path
    dense_facts: dict[str, Any]
    ort_facts: dict[str, Any]
    torch_facts: dict[str, Any]
    log: list[str] = field(default_factory=list)
    counters: Any = None

    @property
    def eval_npz(self) -> Path:
        return self.dense_dir / "eval.npz"

    def eval_data(self) -> dict[str, np.ndarray]:
        with np.load(self.eval_npz) as d:
            return {k: d[k] for k in d.files}

    def module(self):
        """A fresh PyTorch module with the trained dense weights."""
        import torch

        from edgebench.backends.torch_eager import build_module

        m = build_module(json.loads((self.dense_dir / "arch.json").read_text()))
        m.load_state_dict(torch.load(self.dense_dir / "model.pt", weights_only=True))
        return m.eval()


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    import torch

    from edgebench.models import recipes
    from edgebench.models.cache import Cache
    from edgebench.models.prepare import Preparer

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("artifact-cache")
    log: list[str] = []
    prep = Preparer(Cache(root), log=log.append)
    dense_recipe = recipes.load("dense")
    ort = prep.artifact("small_cnn", dense_recipe, "onnxruntime", "fp32")
    tor = prep.artifact("small_cnn", dense_recipe, "torch", "fp32")
    dense = prep.dense("small_cnn")
    torch.set_num_threads(threads)  # export checks load sessions that set torch's thread count
    return Built(
        cache_root=root,
        dense_dir=dense.dir,
        ort_path=ort.dir / ort.manifest["facts"]["artifact"],
        torch_path=tor.dir / tor.manifest["facts"]["artifact"],
        dense_facts=dense.manifest["facts"],
        ort_facts=ort.manifest["facts"],
        torch_facts=tor.manifest["facts"],
        log=log,
        counters=prep.counters,
    )


@pytest.fixture
def fast_measure() -> MeasureSettings:
    return MeasureSettings(warmup_runs=2, warmup_seconds=0.0, min_runs=10, min_seconds=0.05)


@pytest.fixture
def restore_torch_threads():
    """Backends set torch's global thread count on load; put it back after the test."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def write_suite(tmp_path: Path):
    """write_suite(name, mapping_or_text, folder=None) -> path of a suite (or recipe) YAML in tmp."""

    def write(name: str, content: dict[str, Any] | str, folder: Path | None = None) -> Path:
        folder = folder or tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write
