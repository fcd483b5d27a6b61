"""QAT int8 export (a recipe's ``quantize: {qat: true}``) on ONNX Runtime and LiteRT: the artifact runs,
is int8 by the runtime's own evidence, differs from the post-training artifact, agrees with fp32;
and at the prepare level, a QAT recipe's int8 artifact is built with the QAT fine-tune under its own
cache key while its PTQ twin's is calibrated after training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgebench.backends import base
from edgebench.backends.base import Calibration
from edgebench.bench.prepare import Preparer
from edgebench.models import data as datasets
from edgebench.models import recipes, zoo
from edgebench.models.cache import Cache

pytest.importorskip("torchao")


def _qat_calibration(images: np.ndarray) -> Calibration:
    """QAT on 128 training images, 1 epoch (2 steps): the export path, not the accuracy, is under test."""
    from edgebench.models import qat

    data = datasets.digits(32)
    tiny = dataclasses.replace(data, x_train=data.x_train[:128], y_train=data.y_train[:128])
    return Calibration(images, qat=lambda prepared: qat.finetune(prepared, tiny, epochs=1, lr=0.01).facts())


def _agreement(session, reference, inputs: np.ndarray) -> float:
    from edgebench.bench.worker import evaluate

    return float(np.mean(evaluate(session, inputs, 8).argmax(1) == evaluate(reference, inputs, 8).argmax(1)))


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory):
    """Per backend: the QAT and the PTQ int8 artifact of the dense small_cnn, and its fp32 artifact."""
    images = np.load(built.dense_dir / "calibration.npy")
    inputs = built.eval_data()["inputs"][:1]
    out = {}
    for name in ("onnxruntime", "litert"):
        backend = base.get(name)
        if not backend.export_availability().available or not backend.availability().available:
            continue
        root = tmp_path_factory.mktemp(name)
        out[name] = {kind: backend.export(zoo.PreparedModel(built.module(), {}), inputs, precision, root / kind, calibration)
                     for kind, precision, calibration in (("qat", "int8", _qat_calibration(images)), ("ptq", "int8", Calibration(images)),
                                                          ("fp32", "fp32", None))}
    return out


def _artifacts(exported, name):
    if name not in exported:
        pytest.skip(f"{name} export or runtime not installed here")
    return exported[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnxruntime", "litert"])
def test_qat_artifact_is_int8_differs_from_ptq_and_agrees_with_fp32(exported, built, name):
    arts = _artifacts(exported, name)
    qat, ptq = arts["qat"], arts["ptq"]
    q = qat.facts["quantization"]
    assert q["kind"] == "QAT (PT2E fake-quant, 1 epochs)" and q["qat"]["steps"] == 2 and q["weights"] == "int8 symmetric per-channel"
    assert "calibration_images" not in q  # its ranges were learned, not calibrated
    assert qat.path.read_bytes() != ptq.path.read_bytes()
    backend = base.get(name)
    session = backend.load(qat.path, "int8", {"threads": 1, "batch": 8})
    inputs = built.eval_data()["inputs"]
    agreement = _agreement(session, backend.load(arts["fp32"].path, "fp32", {"threads": 1, "batch": 8}), inputs)
    print(f"{name}: QAT int8 top-1 agreement with fp32 {agreement:.1%} on {len(inputs)} eval images")
    assert agreement >= 0.9
    if name == "onnxruntime":  # the optimiser fused the QDQ pairs into int8 kernels, as for PTQ
        assert qat.facts["optimized_ops"].get("QLinearConv", 0) >= 3 and "Conv" not in qat.facts["optimized_ops"]
        assert q["activations"] == "uint8 per-tensor" and q["quantizer"] == "torchao X86InductorQuantizer"
    else:  # full-integer: int8 input, no float islands (no QUANTIZE/DEQUANTIZE inside the graph)
        assert session.evidence().input_dtype == "int8"
        ops = backend_ops(qat.path)
        assert ops.get("CONV_2D", 0) >= 3 and "DEQUANTIZE" not in ops and "QUANTIZE" not in ops


def backend_ops(path):
    from edgebench.backends.litert import tflite_ops

    return tflite_ops(path)


class _Recorder:
    """Stands in for a backend's int8 export: records what it was given and writes the fp32 artifact
    (the QAT itself is covered above; here only what the preparer asks for is under test)."""

    def __init__(self, real):
        self.real = real
        self.seen: list[Calibration | None] = []

    def __call__(self, backend, model, example, precision, out_dir, calibration=None, options=None):
        if precision == "int8":
            self.seen.append(calibration)
            return self.real(backend, model, example, "fp32", out_dir, None, options)
        return self.real(backend, model, example, precision, out_dir, calibration, options)


def test_prepare_builds_qat_int8_for_a_qat_recipe_and_ptq_for_its_twin(built, tmp_path, monkeypatch):
    import shutil

    from edgebench.backends.ort import OrtBackend

    recorder = _Recorder(OrtBackend.export)
    monkeypatch.setattr(OrtBackend, "export", lambda self, *a, **k: recorder(self, *a, **k))
    # the session's trained dense models, but none of the artifacts other tests exported into its cache:
    # every export below must really run for the recorder to see its calibration
    shutil.copytree(built.cache_root / "dense", tmp_path / "cache" / "dense")
    prep = Preparer(Cache(tmp_path / "cache"), log=lambda _: None)
    # the dense model with QAT int8 (no pruning to wait for: the export step is under test)
    qat_recipe = recipes.load("dense").model_copy(update={"quantize": recipes.Quantize(precision="int8", qat=True)})
    # its PTQ twin: the same recipe with post-training int8
    twin = qat_recipe.model_copy(update={"quantize": qat_recipe.quantize.model_copy(update={"qat": False})})
    q = prep.artifact("small_cnn", qat_recipe, "onnxruntime", "int8")
    p = prep.artifact("small_cnn", twin, "onnxruntime", "int8")
    qat_cal, ptq_cal = recorder.seen
    assert qat_cal is not None and qat_cal.qat is not None and len(qat_cal.data) == 128
    assert ptq_cal is not None and ptq_cal.qat is None
    assert q.key != p.key  # QAT and PTQ artifacts never share a cache entry
    assert prep.artifact("small_cnn", qat_recipe, "onnxruntime", "fp32").key == prep.artifact("small_cnn", twin, "onnxruntime", "fp32").key
    # the QAT settings are in the key: another lr is another artifact
    other = qat_recipe.model_copy(update={"quantize": qat_recipe.quantize.model_copy(update={"lr": 0.002})})
    assert prep.artifact("small_cnn", other, "onnxruntime", "int8").key not in (q.key, p.key)
    assert len(recorder.seen) == 3 and recorder.seen[2].qat is not None


def test_builtin_qat_recipe_is_channel_l2_50_with_qat_int8():
    qat_recipe, ptq = recipes.load("channel-l2-50-qat"), recipes.load("channel-l2-50")
    assert qat_recipe.quantize.precision == "int8" and qat_recipe.quantize.qat
    assert qat_recipe.quantize.epochs == 2 and qat_recipe.quantize.lr == 0.001
    same = {k: v for k, v in qat_recipe.identity().items() if k != "name"}
    assert same == {k: v for k, v in ptq.identity().items() if k != "name"}  # the same pruning: only int8 differs


def test_litert_refuses_qat_of_a_residual_model_before_training_and_the_preparer_skips_it(tmp_path, monkeypatch):
    """litert-torch's QAT graph of ResNet-20 crashes libtorch in its first backward (the process dies):
    the backend refuses a model with residual adds before training, and the preparer skips the cell."""
    from edgebench.bench.prepare import NotApplicable
    from edgebench.models.nets import resnet20

    backend = base.get("litert")
    if not backend.export_availability().available:
        pytest.skip("litert-torch not installed here")

    def never(_prepared):
        raise AssertionError("QAT must not start on a residual model")

    example = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(NotImplementedError, match="residual adds .*onnxruntime"):
        backend.export(zoo.PreparedModel(resnet20().eval(), {}), example, "int8", tmp_path / "r20", Calibration(example, qat=never))

    # the preparer turns a backend's NotImplementedError from export into a skip that names the model
    monkeypatch.setattr(type(backend), "export", lambda *a, **k: (_ for _ in ()).throw(NotImplementedError("not for this one")))
    prep = Preparer(Cache(tmp_path / "cache"), log=lambda _: None)
    with pytest.raises(NotApplicable, match="small_cnn: not for this one"):
        prep.artifact("small_cnn", recipes.load("dense"), "litert", "fp32")
