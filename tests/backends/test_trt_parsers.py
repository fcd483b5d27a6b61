"""TensorRT layer-information and trtexec-log parsers on real recorded output (tests/backends/data/trt_*).

Every fixture carries its source (a ``# `` header, or a ``.source.txt`` beside a JSON file); the
values asserted here can be read in the fixture itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.backends import _trt_layers, _trtexec
from edgebench.backends._trt_layers import TrtLayer, layer_from_dict, parse_layer_info, precision_of, summary
from edgebench.backends._trtexec import decode_version, parse_log, parse_profile

DATA = Path(__file__).parent / "data"


def _text(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def _layers(name: str) -> dict[str, TrtLayer]:
    return {layer.name: layer for layer in parse_layer_info(_text(name))}


# ---- fixtures carry their source ----


@pytest.mark.parametrize("path", sorted(DATA.glob("trt_*.json")), ids=lambda p: p.name)
def test_every_json_fixture_has_a_source_sidecar(path):
    sidecar = path.with_name(path.stem + ".source.txt")
    assert sidecar.exists(), f"{path.name} needs {sidecar.name}"
    assert "source:" in sidecar.read_text() and "GPU:" in sidecar.read_text()


@pytest.mark.parametrize("path", sorted(DATA.glob("trt_*.txt")), ids=lambda p: p.name)
def test_every_text_fixture_states_its_source(path):
    if path.name.endswith(".source.txt"):
        return
    head = path.read_text().splitlines()[0]
    assert head.startswith("# source: "), path.name


# ---- layer information: FP16 engine (trex, A100) ----


def test_fp16_engine_layers_tactics_and_precision():
    layers = _layers("trt_trex_resnet_a100_fp16.json")
    first = layers["Conv_0 + Relu_1"]
    assert first.layer_type == "CaskConvolution"
    assert first.tactic == "trt_turing_cutlass_image_network_first_layer_hmma_fprop_f16f16f32_nhwc_nhwc_k64r7s7c4_stride2x2"
    assert (first.precision, first.sparse, first.weights, first.weights_type) == ("fp16", False, True, "Half")
    reformat = layers["Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1"]
    assert (reformat.layer_type, reformat.tactic, reformat.weights) == ("Reformat", None, False)
    assert reformat.precision == "fp16"  # first OUTPUT: "Channel major FP16 format where channel % 4 == 0"
    assert layers["MaxPool_2"].weights is False


def test_fp16_engine_summary():
    got = summary(parse_layer_info(_text("trt_trex_resnet_a100_fp16.json")))
    # 20 convolutions + the fc layer (a CaskConvolution) carry weights; no layer ran sparse.
    assert got["layers"] == 36 and got["weighted"] == 21 and got["sparse"] == 0
    assert got["by_precision"] == {"fp16": 35, "fp32": 1}


# ---- layer information: INT8 (explicit Q/DQ) engine ----


def test_qat_engine_runs_int8_convolutions():
    layers = _layers("trt_trex_resnet_a100_qat_int8.json")
    conv = layers["layer1.0.conv1.weight + QuantizeLinear_20 + Conv_22"]
    assert conv.precision == "int8" and conv.weights_type == "Int8"
    assert conv.tactic.startswith("sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32")
    # The first conv reads Int8 and writes FP32: output precision says fp32, the weights say Int8.
    stem = layers["conv1.weight + QuantizeLinear_7 + Conv_9"]
    assert (stem.precision, stem.weights_type) == ("fp32", "Int8")
    got = summary(list(layers.values()))
    assert got["by_precision"] == {"int8": 19, "fp32": 4, "fp16": 14}
    assert got["weighted"] == 21 and got["sparse"] == 0


def test_dict_input_is_accepted_like_text():
    data = json.loads(_text("trt_trex_resnet_a100_qat_int8.json"))
    assert parse_layer_info(data) == parse_layer_info(_text("trt_trex_resnet_a100_qat_int8.json"))


# ---- layer information: the 2:4 sparse INT8 layer of NVIDIA/TensorRT#4020 (fragments) ----


def _excerpt_parts() -> tuple[list[str], list[str]]:
    lines = _text("trt_layers_issue4020_sparse_int8_excerpt.txt").splitlines()
    one, two = lines.index("# part 1"), lines.index("# part 2")
    return lines[one + 1 : two], lines[two + 1 :]


def test_sparse_int8_layer_from_issue_4020():
    _, part2 = _excerpt_parts()
    # Part 2 is whole JSON members of one layer (ending with a comma): wrap them into an object.
    members = "\n".join(part2).rstrip().rstrip(",")
    layer = layer_from_dict(json.loads("{" + members + "}"))
    assert layer.sparse is True and layer.precision == "int8" and layer.weights is True
    assert layer.tactic == "sm80_xmma_fprop_avdt_sparse_int8int8_tilesize64x64x64_tapsperload3_threadspercta128_r3s3_u1v1_scalebias_relu"
    assert summary([layer])["sparse"] == 1


def test_tensorrt10_reformat_layer_from_issue_4020():
    part1, _ = _excerpt_parts()
    # The first layer object of part 1 is whole: from after '{"Layers": [{' to the line '},{'.
    body = part1[1 : part1.index("},{")]
    layer = layer_from_dict(json.loads("{" + "\n".join(body) + "}"))
    assert layer.layer_type == "Reformat" and layer.precision == "int8"  # "Row major Int8 format"
    assert layer.sparse is None and layer.weights is False  # no HasSparseWeights key on a Reformat


# ---- layer information: edge cases ----


@pytest.mark.parametrize(
    ("fmt", "want"),
    [
        ("Row major linear FP32", "fp32"),
        ("Two wide channel vectorized row major FP16 format", "fp16"),
        ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
        ("N/A due to dynamic shapes", None),
        ("", None),
        (None, None),
    ],
)
def test_precision_of_format_strings(fmt, want):
    assert precision_of(fmt) == want


def test_names_only_layer_information():
    # Default profiling verbosity: each entry of "Layers" is the layer's name only.
    got = parse_layer_info('{"Layers": ["Conv_0 + Relu_1", "MaxPool_2"], "Bindings": ["input.1"]}')
    assert got == [
        TrtLayer("Conv_0 + Relu_1", None, None, None, None, False),
        TrtLayer("MaxPool_2", None, None, None, None, False),
    ]
    assert summary(got) == {"layers": 2, "weighted": 0, "sparse": 0, "by_precision": {"unknown": 2}}


def test_missing_members_become_none():
    layer = layer_from_dict({"Name": "x", "LayerType": "CaskConvolution"})
    assert (layer.tactic, layer.precision, layer.sparse, layer.weights_type) == (None, None, None, None)
    assert layer.weights is True  # a convolution type carries weights even without a "Weights" member
    assert layer_from_dict({"Name": "y", "Weights": {"Type": "Half", "Count": 0}}).weights is False


def test_not_layer_information_is_refused():
    with pytest.raises(ValueError, match="'Layers'"):
        parse_layer_info('{"Bindings": []}')
    with pytest.raises(json.JSONDecodeError):
        parse_layer_info("not json")


# ---- trtexec logs ----


def test_tensorrt10_summary_with_three_percentiles():
    s = parse_log(_text("trt_log_trt10_issue4177.txt"))
    assert s.throughput_qps == 130.298
    assert s.latency_ms == {
        "min": 5.38672, "max": 13.3664, "mean": 7.60628, "median": 7.16092,
        "p90": 10.2996, "p95": 10.8698, "p99": 12.9675,
    }
    assert s.gpu_compute_ms["median"] == 7.14139 and s.gpu_compute_ms["p90"] == 10.2881
    assert s.enqueue_ms["p95"] == 11.7217
    assert s.h2d_ms["median"] == 0.00814819 and s.d2h_ms["p99"] == 0.0994873
    assert s.warnings == [] and s.version is None and s.device is None


def test_tensorrt10_16_enqueue_bound_warning_and_no_throughput_line():
    s = parse_log(_text("trt_log_trt10_16_rtx5070ti.txt"))
    assert s.throughput_qps is None  # the Throughput line is not in the fixture
    assert s.gpu_compute_ms["median"] == 140.855 and s.latency_ms["p90"] == 149.318
    assert s.warnings == [
        "Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be under-utilized."
        " If not already in use, --useCudaGraph (utilize CUDA graphs where possible) may increase the throughput."
    ]


def test_tensorrt8_summary_with_one_percentile():
    s = parse_log(_text("trt_log_trt8_4_issue2129.txt"))
    assert s.latency_ms == {"min": 2.55664, "max": 9.1418, "mean": 7.03175, "median": 7.40112, "p99": 7.92065}
    assert "p90" not in s.gpu_compute_ms and s.gpu_compute_ms["median"] == 7.29883
    assert s.throughput_qps == 546.168
    assert len(s.warnings) == 1 and s.warnings[0].startswith("Throughput may be bound by Enqueue Time")


def test_unstable_gpu_warning_and_zero_transfer_times():
    s = parse_log(_text("trt_log_trt8_yolov7_pr329.txt"))
    assert s.warnings[0].startswith("GPU compute time is unstable, with coefficient of variance = 2.10486%.")
    assert "--useSpinWait" in s.warnings[0]
    assert s.h2d_ms["median"] == 0.0 and s.d2h_ms == {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "p99": 0.0}
    assert s.gpu_compute_ms["p99"] == 1.55853


def test_tensorrt7_device_and_end_to_end_line_is_not_latency():
    s = parse_log(_text("trt_log_trt7_gtx1080ti_issue1221.txt"))
    assert s.device == "NVIDIA GeForce GTX 1080 Ti"
    assert s.latency_ms["median"] == 636.003 and s.latency_ms["p99"] == 638.123
    assert s.throughput_qps == 1.57184
    assert s.gpu_compute_ms == {}  # "Average on 10 runs - GPU latency" is a trace line, not the summary
    # In this run both lines hold the same values, so check the End-to-End line alone is not read as Latency.
    e2e = [line for line in _text("trt_log_trt7_gtx1080ti_issue1221.txt").splitlines() if "] End-to-End" in line]
    assert len(e2e) == 1 and parse_log(e2e[0]).latency_ms == {}


def test_banner_versions_and_a_log_without_summary():
    s = parse_log(_text("trt_log_trt10_3_orin_nx_banner.txt"))
    assert s.version == "10.3.0"
    assert (s.latency_ms, s.gpu_compute_ms, s.h2d_ms, s.d2h_ms, s.enqueue_ms) == ({}, {}, {}, {}, {})
    assert s.throughput_qps is None and s.warnings == [] and s.sparse_eligible == []
    assert parse_log(_text("trt_log_trt10_2_windows_issue4036.txt")).version == "10.2.0"


def test_tensorrt8_6_v100_whole_summary_with_banner():
    s = parse_log(_text("trt_log_trt8_6_v100_parakeet.txt"))
    assert s.version == "8.6.3"  # banner [TensorRT v8603]
    assert s.latency_ms["median"] == 105.593 and s.latency_ms["p90"] == 106.558
    assert s.gpu_compute_ms == {
        "min": 103.806, "max": 105.511, "mean": 104.457, "median": 104.337,
        "p90": 105.17, "p95": 105.42, "p99": 105.511,
    }
    assert s.throughput_qps == 9.56737 and s.warnings[0].startswith("Throughput may be bound by Enqueue Time")


def test_tensorrt8_0_end_to_end_line_differs_from_latency():
    s = parse_log(_text("trt_log_trt8_0_jetson_litec.txt"))
    assert s.version == "8.0.1"  # banner [TensorRT v8001]
    assert s.latency_ms == {"min": 67.2566, "max": 67.9812, "mean": 67.5408, "median": 67.4934, "p99": 67.9812}
    assert s.gpu_compute_ms["median"] == 66.9139 and s.enqueue_ms["median"] == 9.81689
    assert s.throughput_qps == 14.803 and s.warnings == []


@pytest.mark.parametrize(("packed", "want"), [("100300", "10.3.0"), ("100200", "10.2.0"), ("100001", "10.0.1"), ("8401", "8.4.1"), ("8601", "8.6.1"), ("8611", "8.6.11"), ("8001", "8.0.1")])
def test_decode_version(packed, want):
    assert decode_version(packed) == want


def test_sparsity_lines():
    s = parse_log(_text("trt_log_sparsity_devguide.txt"))
    assert s.sparse_eligible == ["conv1", "conv2", "conv3"] and s.sparse_picked == ["conv2", "conv3"]
    none = parse_log(_text("trt_log_sparsity_none_picked_issue1340.txt"))
    assert none.sparse_eligible == [] and none.sparse_picked == []


def test_fused_layer_names_keep_their_plus_signs():
    line = "[08/05/2024-12:06:54] [I] [TRT] (Sparsity) Layers eligible for sparse math: MatMul_401, Conv_619 + Relu_620, Conv_626"
    assert parse_log(line).sparse_eligible == ["MatMul_401", "Conv_619 + Relu_620", "Conv_626"]


def test_header_lines_are_skipped_and_empty_text_is_fine():
    assert parse_log("# source: [TensorRT v100300] Selected Device: fake\n") == _trtexec.TrtexecSummary()
    assert parse_log("") == _trtexec.TrtexecSummary()


# ---- trtexec --exportProfile ----


def test_export_profile_rows():
    rows = parse_profile(_text("trt_trex_resnet_a100_fp16_profile.json"))
    assert rows[0].name == "Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1"
    assert (rows[1].name, rows[1].average_ms, rows[1].median_ms, rows[1].percentage) == ("Conv_0 + Relu_1", 0.111616, 0.111616, 10.9768)
    # One row per engine layer: the same names as the layer information of that engine.
    assert [r.name for r in rows] == [layer.name for layer in parse_layer_info(_text("trt_trex_resnet_a100_fp16.json"))]


def test_modules_use_only_the_standard_library():
    import ast

    for module in (_trt_layers, _trtexec):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert imported <= {"__future__", "json", "re", "collections", "dataclasses", "typing"}, module.__name__
