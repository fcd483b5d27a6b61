"""QAT vs PTQ at a bit width where post-training quantisation hurts, evaluated on the host.

What it measures: for each model, the pruned fp32 checkpoint of a recipe (default channel-l2-50,
from an edgebench cache: run the recipe once first, or let this script prune it) is quantised with
torchao's x86 PT2E quantiser (uint8 per-tensor activations, symmetric per-channel weights) at
``--weight-bits`` bits (8 is what edgebench's ONNX Runtime int8 cells use; 4 is the harder setting
the issue asks for, set through the weight spec's quant_min/quant_max) two ways:

- PTQ: ``prepare_pt2e``, observers on the recipe's 128 calibration images, ``convert_pt2e``;
- QAT: ``prepare_qat_pt2e``, ``edgebench.models.qat.finetune`` (``--epochs`` at ``--lr``, seed 0), ``convert_pt2e``;
  weights fake-quantised through ``edgebench.models.qat.consistent_fake_quant`` (``--fused``: torchao's
  shipped FusedMovingAvgObsFakeQuantize, whose training-time weight scale is not the one convert_pt2e
  writes: 4-bit QAT then loses ~18 points at conversion).

Both converted graphs run in PyTorch (reference quantised ops) on the evaluation split; the table
gives fp32, PTQ and QAT top-1 and each one's top-1 agreement with the fp32 model. No runtime is
involved: this isolates what the quantiser and the training do from any kernel.

    python scripts/qat_vs_ptq.py --home /tmp/q/home --models small_cnn resnet20 --weight-bits 4 8
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np


def _quantizer(bits: int, is_qat: bool, fused: bool = False):
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer, get_default_x86_inductor_quantization_config

    from edgebench.models import qat as qat_lib

    config = get_default_x86_inductor_quantization_config(is_qat=is_qat)
    # The bit width goes into the spec, which the fake-quant and observer constructors read at prepare
    # (the prepared weight fake-quants do carry [-2^(b-1), 2^(b-1) - 1]).
    weight = dataclasses.replace(config.weight, quant_min=-(2 ** (bits - 1)), quant_max=2 ** (bits - 1) - 1)
    config = dataclasses.replace(config, weight=weight)
    if is_qat and not fused:
        config = qat_lib.consistent_fake_quant(config)
    return X86InductorQuantizer().set_global(config)


def _graph(module, example):
    import torch

    from edgebench.models import qat as qat_lib

    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(module.eval(), (torch.from_numpy(np.concatenate([example[:1]] * 2)),), dynamic_shapes=({0: batch},)).module()
    qat_lib.split_shared_module_calls(graph)  # ResNet's twice-called ReLU: the x86 annotator refuses it otherwise
    return graph


def ptq(module, data, bits: int):
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(_graph(module, data.x_test), _quantizer(bits, is_qat=False))
    with torch.no_grad():
        calib = data.calibration_subset()
        for i in range(0, len(calib), 32):
            prepared(torch.from_numpy(calib[i : i + 32]))
    return convert_pt2e(prepared)


def qat(module, data, bits: int, epochs: int, lr: float, fused: bool = False):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from edgebench.models import qat as qat_lib

    prepared = prepare_qat_pt2e(_graph(module, data.x_test), _quantizer(bits, is_qat=True, fused=fused))
    qat_lib.finetune(prepared, data, epochs, lr, seed=0)
    return convert_pt2e(prepared)


def _logits(module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(x[i : i + 256])).numpy() for i in range(0, len(x), 256)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="an edgebench home whose cache has (or will get) the pruned models")
    parser.add_argument("--models", nargs="+", default=["small_cnn", "resnet20"])
    parser.add_argument("--recipe", default="channel-l2-50")
    parser.add_argument("--weight-bits", nargs="+", type=int, default=[4])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--fused", action="store_true", help="QAT weights on torchao's FusedMovingAvgObsFakeQuantize as its x86 QAT "
                        "config ships (trains on a different weight grid than convert_pt2e writes); default: "
                        "edgebench.models.qat.consistent_fake_quant")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from edgebench.bench.prepare import Preparer
    from edgebench.models import recipes
    from edgebench.models.cache import Cache

    prep = Preparer(Cache(args.home / "cache"), log=lambda _: None)
    recipe = recipes.load(args.recipe)
    fq = "fused fake-quant (as shipped)" if args.fused else "consistent fake-quant"
    print(f"recipe {args.recipe}; QAT {args.epochs} epochs at lr {args.lr}, {fq}; weights per-channel symmetric, activations uint8")
    print("| model | weight bits | fp32 top-1 | PTQ top-1 | PTQ agreement | QAT top-1 | QAT agreement | QAT s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        spec = prep.spec(name)
        data = prep.dataset(spec.dataset, spec.input_size)
        entry = prep.pruned(name, recipe)
        ref = _logits(prep.module_of(entry), data.x_test).argmax(1)
        for bits in args.weight_bits:
            p = _logits(ptq(prep.module_of(entry), data, bits), data.x_test).argmax(1)
            t0 = time.perf_counter()
            q = _logits(qat(prep.module_of(entry), data, bits, args.epochs, args.lr, args.fused), data.x_test).argmax(1)
            took = time.perf_counter() - t0
            y = data.y_test
            print(f"| {name} | {bits} | {np.mean(ref == y):.2%} | {np.mean(p == y):.2%} | {np.mean(p == ref):.1%} | "
                  f"{np.mean(q == y):.2%} | {np.mean(q == ref):.1%} | {took:.0f} |", flush=True)


if __name__ == "__main__":
    main()
