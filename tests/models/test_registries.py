"""The models package's plugin families (pruning methods, the zoo, datasets) on the one registry
idiom, a method added by one registered class, and the light modules importing no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgebench.bench.contracts.errors import ConfigError
from edgebench.bench.contracts.registry import Registry, UnknownName
from edgebench.bench.contracts.strict import Strict
from edgebench.models import data, recipes, zoo


def test_families_are_registries():
    assert isinstance(recipes.METHODS, Registry) and isinstance(zoo.MODELS, Registry) and isinstance(data.DATASETS, Registry)
    assert zoo.ZOO is zoo.MODELS  # the name the CLI and the suite config read
    assert recipes.METHODS.names() == ["channel", "channel_widths", "dense", "l1_regularized", "lottery_ticket", "magnitude_unstructured", "network_slimming",
                                       "semi_structured_2_4"]
    assert zoo.MODELS.names() == ["efficientnet_b0_224", "efficientnet_b0_32", "mobilenetv2_224", "mobilenetv2_32", "mobilenetv3_small_224",
                                   "mobilenetv3_small_32", "resnet18_224", "resnet20", "small_cnn", "wide_mlp"]
    assert data.DATASETS.names() == ["digits", "synthetic"]
    assert data.DATASETS["digits"] is data.digits and recipes.METHODS["dense"] is recipes.Dense


def test_recipes_use_the_contracts_strict_base():
    assert issubclass(recipes.Recipe, Strict) and recipes.Strict is Strict
    for _, method in recipes.METHODS.items():
        assert issubclass(method, recipes.Method) and issubclass(method.params, Strict)


def test_unknown_names_are_key_errors_listing_the_known_ones():
    with pytest.raises(UnknownName, match="unknown model 'small_cn'; built-in models: .*small_cnn"):
        zoo.entry("small_cn")
    with pytest.raises(KeyError, match="unknown dataset 'imagenet'; built-in datasets: digits, synthetic, or a path"):
        data.load("imagenet")
    with pytest.raises(ConfigError, match="method: unknown method 'snip'; choose one of: channel, channel_widths, dense"):
        recipes.parse({"name": "r", "method": "snip"}, "<test>")


def test_zoo_entries_and_their_factories():
    e = zoo.entry("small_cnn")
    assert e.arch() == {"factory": "edgebench.models.zoo:small_cnn", "kwargs": {"num_classes": 10}}
    assert (e.onnx, e.torchscript, e.tflite) == (None, None, None)
    assert zoo.ZooEntry("", "digits", 32, tflite="m.tflite").tflite == "m.tflite"
    assert not hasattr(e, "accuracy_bearing")
    with pytest.raises(AttributeError, match="no_such_net"):
        zoo.no_such_net  # noqa: B018


@pytest.fixture
def methods(monkeypatch):
    """A copy of the method registry that the test may add to."""
    copy: Registry[type[recipes.Method]] = Registry("method")
    for name, method in recipes.METHODS.items():
        copy.add(name, method)
    monkeypatch.setattr(recipes, "METHODS", copy)
    return copy


def test_a_method_is_one_registered_class(methods):
    class HalveParams(Strict):
        factor: float = 0.5

    @methods.register
    class Halve(recipes.Method):
        """Scales every weight: enough to see that parse and apply find it and pass its params."""

        name = "halve"
        params = HalveParams
        schedules = ("one_shot", "iterative")

        def prune(self, module, params, ctx):
            module["w"] *= params.factor
            return module

    r = recipes.parse({"name": "h", "method": "halve", "params": {"factor": 0.25}, "schedule": {"kind": "iterative", "steps": 2}}, "<test>")
    ctx = recipes.PruneContext(finetune=lambda m, **kw: m, example=None, batches=lambda n: iter(()))
    assert recipes.apply(r, {"w": 8.0}, ctx) == {"w": 2.0}
    with pytest.raises(ConfigError, match=r"params\.factr"):
        recipes.parse({"name": "h", "method": "halve", "params": {"factr": 1}}, "<test>")
    with pytest.raises(ConfigError, match="'halve' does not support schedule kind agp"):
        recipes.parse({"name": "h", "method": "halve", "schedule": {"kind": "agp", "steps": 3}}, "<test>")


def test_light_modules_import_no_torch():
    """The CLI's ``list`` and the suite config read these on machines without torch."""
    code = ("import json, sys\n"
            "import edgebench.models.recipes, edgebench.models.zoo, edgebench.models.data, edgebench.models.arch, edgebench.models.cache\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torch_pruning', 'sklearn', 'onnx', 'scipy'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == []
