"""Suite configs (bench/config.py, bench/errors.py): one-line errors and the cell matrix."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from edgebench.bench.config import load_suite
from edgebench.bench.contracts.errors import ConfigError, EdgebenchError
from edgebench.models import recipes

VALID = {"name": "t", "models": ["small_cnn"], "backends": ["torch"]}


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    msg = str(info.value)
    assert isinstance(info.value, EdgebenchError)
    return msg


def assert_one_line(msg: str) -> None:
    assert "\n" not in msg.strip(), f"expected one line, got:\n{msg}"


# -- unknown keys --------------------------------------------------------------------------------

def test_unknown_top_level_key_is_one_line_with_suggestion(write_suite):
    path = write_suite("suite.yaml", {**VALID, "batch_size": [1]})
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg
    assert "batch_size:" in msg
    assert "did you mean 'batch_sizes'?" in msg


def test_typo_of_a_required_key_names_the_typo_first(write_suite):
    path = write_suite("suite.yaml", {"models": ["small_cnn"], "backend": ["torch"]})
    msg = config_error(path)
    first = msg.splitlines()[0]
    assert str(path) in first and "backend:" in first and "did you mean 'backends'?" in first


def test_unknown_key_without_close_match_lists_allowed_keys(write_suite):
    path = write_suite("suite.yaml", {**VALID, "colour": "red"})
    msg = config_error(path)
    assert_one_line(msg)
    assert "colour" in msg
    for key in ("models", "backends", "batch_sizes", "measure"):
        assert key in msg


def test_unknown_nested_measure_key_suggests(write_suite):
    path = write_suite("suite.yaml", {**VALID, "measure": {"min_runz": 3}})
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg and "measure.min_runz" in msg and "did you mean 'min_runs'?" in msg


def test_unknown_key_in_backend_mapping_is_one_line_with_suggestion(write_suite):
    path = write_suite("suite.yaml", {"models": ["small_cnn"], "backends": [{"name": "onnxruntime", "threds": 2}]})
    msg = config_error(path)
    assert_one_line(msg)
    assert "backends[0].threds" in msg
    assert "did you mean 'threads'?" in msg


# -- YAML syntax and files -------------------------------------------------------------------------

def test_tab_indentation_names_file_line_and_column(write_suite):
    path = write_suite("suite.yaml", "models: [small_cnn]\n\tbackends: [torch]\n")
    msg = config_error(path)
    assert_one_line(msg)
    # the tab is the first character of the second line
    assert msg.startswith(f"{path}:2:1:")
    assert "invalid YAML" in msg


def test_reserved_character_names_its_column(write_suite):
    #                              123456789012
    text = "name: x\nmodels: [small_cnn]\nbackends: [@torch]\n"
    path = write_suite("suite.yaml", text)
    msg = config_error(path)
    assert_one_line(msg)
    assert msg.startswith(f"{path}:3:12:")


def test_missing_suite_file(tmp_path):
    path = tmp_path / "nope" / "suite.yaml"
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg and "not found" in msg


def test_top_level_must_be_a_mapping(write_suite):
    path = write_suite("suite.yaml", "- small_cnn\n- torch\n")
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg and "mapping" in msg


# -- unknown names ---------------------------------------------------------------------------------

def test_unknown_model_names_index_and_choices(write_suite):
    path = write_suite("suite.yaml", {**VALID, "models": ["small_cnn", "resnet9000"]})
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg and "models[1]" in msg and "'resnet9000'" in msg and "small_cnn" in msg


def test_unknown_backend_names_index_and_choices(write_suite):
    path = write_suite("suite.yaml", {**VALID, "backends": ["torch", {"name": "tflite", "threads": 2}]})
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg and "backends[1]" in msg and "'tflite'" in msg
    assert "onnxruntime" in msg and "torch" in msg


def test_unknown_target_names_index_and_choices(write_suite):
    path = write_suite("suite.yaml", {**VALID, "targets": ["local", "pi5"]})
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg and "targets[1]" in msg and "'pi5'" in msg and "local" in msg


def test_unknown_recipe_names_index_and_builtins(write_suite):
    path = write_suite("suite.yaml", {**VALID, "recipes": ["dense", "magic-90"]})
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg and "recipes[1]" in msg and "magic-90" in msg
    for name in recipes.builtin_names():
        assert name in msg


@pytest.mark.parametrize("sizes", [[0], [1, 0], [-4]])
def test_batch_size_below_one_rejected(write_suite, sizes):
    path = write_suite("suite.yaml", {**VALID, "batch_sizes": sizes})
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg and "batch_sizes" in msg


def test_duplicate_recipe_names_rejected(write_suite, tmp_path):
    write_suite("mine.yaml", {"name": "dense", "method": "dense"})
    path = write_suite("suite.yaml", {**VALID, "recipes": ["dense", "mine.yaml"]})
    msg = config_error(path)
    assert_one_line(msg)
    assert "'dense'" in msg


# -- broken recipe files -----------------------------------------------------------------------

BROKEN_RECIPES = {
    "unknown method": ({"name": "r", "method": "snip", "params": {}}, ["method", "'snip'", "dense", "magnitude_unstructured"]),
    "sparsity out of range": ({"name": "r", "method": "magnitude_unstructured", "params": {"sparsity": 1.5}}, ["params.sparsity"]),
    "unknown params key": ({"name": "r", "method": "magnitude_unstructured", "params": {"sparsity": 0.5, "scoop": "layer"}},
                           ["params.scoop", "did you mean 'scope'?"]),
    "unknown finetune key": ({"name": "r", "method": "magnitude_unstructured", "params": {"sparsity": 0.5}, "finetune": {"epoch": 2}},
                             ["finetune.epoch", "did you mean 'epochs'?"]),
    "params for dense": ({"name": "r", "method": "dense", "params": {"sparsity": 0.5}}, ["params.sparsity", "unknown key"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN_RECIPES))
def test_broken_recipe_in_suite_names_recipe_file(write_suite, tmp_path, case):
    data, needles = BROKEN_RECIPES[case]
    recipe = write_suite("broken.yaml", data, folder=tmp_path / "suites")
    suite = write_suite("suite.yaml", {**VALID, "recipes": ["dense", "broken.yaml"]}, folder=tmp_path / "suites")
    # the recipe path is relative to the suite's folder, not to the working directory
    assert Path.cwd() != suite.parent
    msg = config_error(suite)
    assert_one_line(msg)
    assert str(suite) in msg and "recipes[1]" in msg and str(recipe) in msg
    for needle in needles:
        assert needle in msg


@pytest.mark.parametrize("case", sorted(BROKEN_RECIPES))
def test_broken_recipe_loaded_directly(write_suite, case):
    data, needles = BROKEN_RECIPES[case]
    path = write_suite("broken.yaml", data)
    with pytest.raises(ConfigError) as info:
        recipes.load(str(path))
    msg = str(info.value)
    assert_one_line(msg)
    assert msg.startswith(str(path))
    for needle in needles:
        assert needle in msg


def test_recipe_missing_sparsity_is_named(write_suite):
    path = write_suite("r.yaml", {"name": "r", "method": "magnitude_unstructured", "params": {"scope": "layer"}})
    with pytest.raises(ConfigError, match=r"params\.sparsity: required key is missing"):
        recipes.load(str(path))


# -- the matrix ------------------------------------------------------------------------------------

def test_matrix_is_the_full_product_with_unique_keys(write_suite):
    spec = {
        "name": "m",
        "models": ["small_cnn"],
        "recipes": ["dense", "l1-unstructured-50", "l1-unstructured-80"],
        "backends": ["torch", {"name": "onnxruntime", "threads": 3}],
        "precisions": ["fp32", "int8"],
        "batch_sizes": [1, 4, 8],
        "targets": ["local"],
        "threads": 2,
    }
    loaded = load_suite(write_suite("suite.yaml", spec))
    cells = loaded.cells()
    assert len(cells) == 1 * 3 * 2 * 2 * 3 * 1
    keys = [c.key for c in cells]
    assert len(set(keys)) == len(keys)
    coords = {(c.model, c.recipe.name, c.backend, c.precision, c.batch, c.target) for c in cells}
    assert coords == set(itertools.product(["small_cnn"], spec["recipes"], ["torch", "onnxruntime"], ["fp32", "int8"], [1, 4, 8], ["local"]))
    for c in cells:
        assert c.options["threads"] == (3 if c.backend == "onnxruntime" else 2)
        assert c.key == f"{c.model}/{c.recipe.name}/{c.backend}/{c.precision}/b{c.batch}/{c.target}"
    # recipes are resolved to validated objects
    by_name = {c.recipe.name: c.recipe for c in cells}
    assert by_name["l1-unstructured-80"].params["sparsity"] == pytest.approx(0.8)


def test_default_threads_are_the_usable_cpus(write_suite):
    loaded = load_suite(write_suite("suite.yaml", {**VALID, "backends": ["torch", {"name": "onnxruntime", "threads": 1}]}))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = {c.backend: c.options["threads"] for c in loaded.cells()}
    assert threads == {"torch": usable, "onnxruntime": 1}


def test_measure_settings_come_from_the_suite(write_suite):
    loaded = load_suite(write_suite("suite.yaml", {**VALID, "measure": {"min_runs": 7, "min_seconds": 0.25}}))
    m = loaded.measure_settings()
    assert (m.min_runs, m.min_seconds) == (7, 0.25)
    assert m.warmup_runs == 10  # untouched fields keep their defaults


def test_builtin_default_suite_loads():
    loaded = load_suite(None)
    assert loaded.suite.name == "default"
    assert loaded.source.exists()
    s = loaded.suite
    per_backend = sum(len(b.precisions or s.precisions) for b in s.backends)
    assert len(loaded.cells()) == len(s.models) * len(s.recipes) * per_backend * len(s.batch_sizes) * len(s.targets)
    # the Pi path: LiteRT fp32 and int8 and ONNX Runtime int8 for every model of the default suite
    got = {(c.backend, c.precision) for c in loaded.cells()}
    assert {("litert", "fp32"), ("litert", "int8"), ("onnxruntime", "int8")} <= got


def test_backend_precisions_and_options_shape_the_matrix(write_suite):
    path = write_suite("suite.yaml", {**VALID, "backends": ["torch", {"name": "litert", "precisions": ["fp32", "int8"], "options": {"xnnpack": False}}],
                                      "precisions": ["fp32"], "batch_sizes": [1, 4]})
    cells = load_suite(path).cells()
    assert sorted((c.backend, c.precision, c.batch) for c in cells) == [
        ("litert", "fp32", 1), ("litert", "fp32", 4), ("litert", "int8", 1), ("litert", "int8", 4), ("torch", "fp32", 1), ("torch", "fp32", 4)]
    assert all(c.options["xnnpack"] is False for c in cells if c.backend == "litert")
    assert all("xnnpack" not in c.options for c in cells if c.backend == "torch")


def test_unknown_backend_option_names_the_known_ones(write_suite):
    path = write_suite("suite.yaml", {**VALID, "backends": [{"name": "litert", "options": {"sparsee": True}}]})
    msg = config_error(path)
    assert_one_line(msg)
    assert "backends[0].options.sparsee" in msg and "did you mean 'sparse'?" in msg and "xnnpack" in msg


def test_precision_listed_twice_for_a_backend_is_an_error(write_suite):
    path = write_suite("suite.yaml", {**VALID, "backends": [{"name": "onnxruntime", "precisions": ["int8", "int8"]}]})
    assert "backends[0].precisions" in config_error(path)


@pytest.mark.parametrize("extra", [
    {"backends": ["onnxruntime", {"name": "onnxruntime", "threads": 1}]},
    {"batch_sizes": [1, 1]},
], ids=["backend-twice", "batch-twice"])
def test_duplicate_axis_values_never_give_duplicate_cell_keys(write_suite, extra):
    path = write_suite("suite.yaml", {**VALID, **extra})
    try:
        loaded = load_suite(path)
    except ConfigError as exc:  # rejecting the suite is a fine answer too
        assert str(path) in str(exc)
        return
    keys = [c.key for c in loaded.cells()]
    assert len(keys) == len(set(keys)), f"duplicate cell keys: {keys}"


# -- one definition of each thing ------------------------------------------------------------------

def test_measure_is_generated_from_measure_settings():
    """The suite's ``measure:`` model has exactly MeasureSettings' fields, defaults, bounds and docs."""
    import dataclasses

    from edgebench.bench.config import Measure
    from edgebench.bench.contracts.results import MeasureSettings
    from edgebench.bench.contracts.strict import Strict

    settings = {f.name: f for f in dataclasses.fields(MeasureSettings)}
    assert list(Measure.model_fields) == list(settings) and issubclass(Measure, Strict)
    assert MeasureSettings(**Measure().model_dump()) == MeasureSettings()
    schema = Measure.model_json_schema()["properties"]
    names = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum"}
    for name, f in settings.items():
        limits = {k: v for k, v in f.metadata.items() if k in names}
        assert limits, name  # every setting is bounded
        assert {names[k]: v for k, v in limits.items()} == {k: schema[name][k] for k in names.values() if k in schema[name]}
        assert schema[name].get("description") == (f.metadata.get("doc") or None)


@pytest.mark.parametrize("measure, needle", [
    ({"min_runs": 0}, "measure.min_runs: Input should be greater than or equal to 1"),
    ({"processes": 51}, "measure.processes: Input should be less than or equal to 50"),
    ({"contention_threshold": 0}, "measure.contention_threshold: Input should be greater than 0"),
    ({"max_seconds": 0}, "measure.max_seconds: Input should be greater than 0"),
    ({"min_runs": 2.5}, "measure.min_runs: Input should be a valid integer"),
])
def test_bad_measure_values_are_one_line(write_suite, measure, needle):
    path = write_suite("suite.yaml", {**VALID, "measure": measure})
    msg = config_error(path)
    assert_one_line(msg)
    assert msg.startswith(f"{path}: {needle}")


def test_cell_identity(write_suite):
    from edgebench.bench.contracts.identity import CellId

    [cell] = load_suite(write_suite("suite.yaml", VALID)).cells()
    assert cell.id == CellId("small_cnn", "dense", "torch", "fp32", 1, "local")
    assert cell.key == cell.id.key == "small_cnn/dense/torch/fp32/b1/local"
    assert CellId.parse(cell.key) == cell.id


def test_builtin_suites_have_a_description_line():
    from edgebench.bench.config import SUITES, builtin_suites

    suites = builtin_suites()
    assert sorted(suites) == sorted(p.stem for p in SUITES.glob("*.yaml")) and "default" in suites
    assert all(text and "\n" not in text for text in suites.values())
    assert suites["default"] == load_suite(None).suite.description


def test_a_tflite_user_model_is_resolved_like_onnx(write_suite, tmp_path):
    (tmp_path / "net.tflite").write_bytes(b"TFL3")
    path = write_suite("suite.yaml", {**VALID, "models": [{"name": "theirs", "tflite": "net.tflite", "input_size": 96}], "backends": ["litert"]})
    entry = load_suite(path).user_models["theirs"]
    assert entry.tflite == str((tmp_path / "net.tflite").resolve())
    assert entry.onnx is None and entry.torchscript is None
    assert entry.train_epochs == 0 and entry.input_size == 96


@pytest.mark.parametrize("model", [
    {"name": "x", "tflite": "net.tflite", "onnx": "net.onnx"},
    {"name": "x", "tflite": "net.tflite", "factory": "m:f"},
])
def test_a_tflite_user_model_is_one_of_four(write_suite, tmp_path, model):
    for name in ("net.tflite", "net.onnx"):
        (tmp_path / name).write_bytes(b"x")
    msg = config_error(write_suite("suite.yaml", {**VALID, "models": [model]}))
    assert_one_line(msg)
    assert "models[0]: give exactly one of factory" in msg and "tflite (a .tflite file)" in msg


def test_a_missing_tflite_file_is_named(write_suite, tmp_path):
    msg = config_error(write_suite("suite.yaml", {**VALID, "models": [{"name": "x", "tflite": "nope.tflite"}]}))
    assert_one_line(msg)
    assert "models[0].tflite" in msg and "nope.tflite not found" in msg


# -- checks at load: a timeout no worker could meet; a suite that would measure nothing -----------------

@pytest.mark.parametrize("measure, timeout, floor", [
    ({"warmup_seconds": 0.5, "min_seconds": 2.0}, 1, "2.5 s"),
    ({"warmup_seconds": 1.0, "min_seconds": 8.0, "processes": 4}, 2.5, "3 s"),  # each process: full warm-up, 1/4 of min_seconds
])
def test_a_cell_timeout_shorter_than_the_measurement_floors_is_refused(write_suite, measure, timeout, floor):
    path = write_suite("suite.yaml", {**VALID, "measure": measure, "cell_timeout_s": timeout})
    msg = config_error(path)
    assert_one_line(msg)
    assert msg.startswith(f"{path}: cell_timeout_s: {timeout:g} s is shorter than the {floor}")
    assert "measure.warmup_seconds" in msg and "raise cell_timeout_s to at least" in msg


def test_a_cell_timeout_that_covers_the_floors_is_accepted(write_suite):
    # 3 processes x (0.5 s warm-up + 2/3 s) exceed 2 s in all, but each process has its own timeout
    path = write_suite("suite.yaml", {**VALID, "measure": {"warmup_seconds": 0.5, "min_seconds": 2.0, "processes": 3}, "cell_timeout_s": 2})
    assert load_suite(path).suite.cell_timeout_s == 2


def test_check_something_measured_lists_the_reasons_of_an_all_skipped_run(tmp_path):
    from edgebench.bench.config import check_something_measured

    check_something_measured(tmp_path / "s.yaml", [("skipped", "a"), ("ok", None)])  # one cell measured: fine
    check_something_measured(tmp_path / "s.yaml", [("skipped", "a"), ("failed", "b")])  # a failure is exit 1, not 2
    with pytest.raises(ConfigError) as info:
        check_something_measured(tmp_path / "s.yaml", [("skipped", "litert: not installed")] * 2 + [("skipped", "torch supports fp32")])
    msg = str(info.value)
    assert_one_line(msg)
    assert msg.startswith(f"{tmp_path / 's.yaml'}: every one of the 3 cells was skipped, nothing was measured")
    assert "litert: not installed (2 cells); torch supports fp32 (1 cell)" in msg


def test_a_run_whose_every_cell_is_skipped_is_a_configuration_error(write_suite, tmp_path):
    from edgebench.bench.runner import Paths, Runner

    # torch has no int8: both cells are impossible combinations, skipped before anything is built
    path = write_suite("suite.yaml", {**VALID, "precisions": ["int8"], "batch_sizes": [1, 8]})
    runner = Runner(Paths(tmp_path / "home"), log=lambda _: None)
    with pytest.raises(ConfigError) as info:
        runner.run(load_suite(path))
    assert "every one of the 2 cells was skipped" in str(info.value) and "torch supports precisions fp32, not int8 (2 cells)" in str(info.value)
    (run,) = runner.store.runs()
    assert run.status == "finished"  # the skipped cells are stored with their reasons
    assert [c.status for c in runner.store.cells(run.id, with_samples=False)] == ["skipped", "skipped"]


# -- fits: (edgebench fit as a suite entry) ---------------------------------------------------------

def test_a_fits_entry_with_a_budget_that_is_no_latency_is_one_line_naming_it(write_suite):
    path = write_suite("suite.yaml", {**VALID, "fits": [{"model": "small_cnn", "budget": "fast"}]})
    msg = config_error(path)
    assert_one_line(msg)
    assert str(path) in msg and "fits[0].budget" in msg.replace("fits.0.budget", "fits[0].budget") and "0.5x" in msg


def test_a_fits_entry_is_read_with_its_defaults(write_suite):
    loaded = load_suite(write_suite("suite.yaml", {**VALID, "fits": [{"model": "small_cnn", "budget": "0.5x"}]}))
    entry = loaded.suite.fits[0]
    assert (entry.backend, entry.precision, entry.batch, entry.steps, entry.quick) == ("onnxruntime", "fp32", 1, 3, False)
