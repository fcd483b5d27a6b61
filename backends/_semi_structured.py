"""Which layers of a 2:4-pruned model torch's semi-structured sparse tensors can take, and the conversion.

``torch.sparse.to_sparse_semi_structured`` compresses a 2-D weight into cuSPARSELt's (or CUTLASS's)
2:4 format; the tensor subclass then dispatches ``aten.linear``/``mm``/``addmm`` to a sparse GEMM
(torch/sparse/_semi_structured_ops.py). So in this torch only ``nn.Linear`` weights qualify: a conv runs
``aten.convolution``, which the subclass does not implement. The shape and dtype rules are read from
the installed torch's own classes (``_DTYPE_SHAPE_CONSTRAINTS``: a weight's rows and columns must each be
a multiple of the backend's minimum for that dtype), never copied here, so a new torch brings its rules.

The compressor does not check the pattern: a weight that is not 2:4 would be compressed wrongly and
give wrong outputs silently, so :func:`plan` checks every group of four along the input dimension
itself and converts only weights that are exactly 2:4 (at most two non-zeros per group).

:func:`plan` runs anywhere (CPU tensors; tests run it here); :func:`convert` needs a CUDA device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: compute capability the sparse tensor cores (and torch's 2:4 kernels) need: Ampere, sm_80
MIN_CAPABILITY = (8, 0)
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class LayerPlan:
    """One Conv2d/Linear of the model: converted to a 2:4 sparse tensor or left dense, and why."""

    name: str
    op: str                      # "linear", "conv2d"
    shape: list[int]             # the weight's shape
    convert: bool
    implementation: str | None   # "cusparselt" or "cutlass" for converted layers
    reason: str                  # why it is left dense ("" when converted)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def installed_rules(torch: Any) -> dict[str, dict[str, tuple[int, int]]]:
    """Per implementation ("cusparselt", "cutlass"), per dtype name, the weight's (min rows, min cols)
    from the installed torch's classes (its sparse_min_rows/sparse_min_cols)."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for impl, cls in (("cusparselt", torch.sparse.SparseSemiStructuredTensorCUSPARSELT),
                      ("cutlass", torch.sparse.SparseSemiStructuredTensorCUTLASS)):
        out[impl] = {str(dt).removeprefix("torch."): (int(c.sparse_min_rows), int(c.sparse_min_cols))
                     for dt, c in cls._DTYPE_SHAPE_CONSTRAINTS.items()}
    return out


def implementation(rules: dict[str, dict[str, tuple[int, int]]], precision: str, cusparselt: bool,
                   capability: tuple[int, int] | None = None) -> tuple[str | None, str]:
    """The implementation that takes ``precision``'s dtype: cuSPARSELt where torch has it and it takes the
    dtype (torch's default), else CUTLASS, whose kernels torch builds for compute capability 8.x only
    (ATen's sparse_semi_structured ops refuse other GPUs: "Supported only on GPUs with compute capability
    8.x", seen on sm_90 and sm_120); (None, why) when neither can."""
    dtype = DTYPES.get(precision, precision)
    if cusparselt and dtype in rules.get("cusparselt", {}):
        return "cusparselt", ""
    lt = "cuSPARSELt takes " + (", ".join(rules.get("cusparselt", {})) if cusparselt else "nothing here (torch has no cuSPARSELt)")
    if dtype not in rules.get("cutlass", {}):
        return None, f"torch's semi-structured tensors take no {dtype} weights ({lt})"
    if capability is not None and capability[0] != 8:
        return None, (f"{dtype} 2:4 needs torch's CUTLASS kernels, built for compute capability 8.x only (this GPU is "
                      f"{capability[0]}.{capability[1]}; {lt})")
    return "cutlass", ""


def is_2_4(weight: Any) -> tuple[bool, str]:
    """Whether every group of four consecutive input-dimension weights has at most two non-zeros."""
    w = weight.detach().reshape(weight.shape[0], -1)
    if w.shape[1] % 4:
        return False, f"input dimension {w.shape[1]} is not a multiple of 4"
    groups = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
    over = int((groups > 2).sum())
    if over:
        return False, f"weights are not 2:4 ({over} of {groups.numel()} groups of 4 have more than 2 non-zeros)"
    return True, ""


def plan(module: Any, precision: str, rules: dict[str, dict[str, tuple[int, int]]], cusparselt: bool,
         capability: tuple[int, int] | None) -> list[LayerPlan]:
    """Every Conv2d and Linear of ``module`` with the decision for ``precision`` on a GPU of ``capability``."""
    import torch

    impl, no_impl = implementation(rules, precision, cusparselt, capability)
    old_gpu = (f"2:4 sparse tensor cores need compute capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}+, this GPU is "
               f"{capability[0]}.{capability[1]}") if capability is not None and tuple(capability) < MIN_CAPABILITY else ""
    out = []
    for name, mod in module.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            k = "x".join(str(v) for v in mod.kernel_size)
            out.append(LayerPlan(name, "conv2d", list(mod.weight.shape), False, None,
                                 f"a {k} conv runs aten.convolution; torch's semi-structured tensors dispatch only linear/mm/addmm"))
        elif isinstance(mod, torch.nn.Linear):
            out.append(_linear_plan(name, mod.weight, precision, impl, no_impl or old_gpu, rules))
    return out


def _linear_plan(name: str, weight: Any, precision: str, impl: str | None, blocked: str, rules: dict[str, dict[str, tuple[int, int]]]) -> LayerPlan:
    shape = list(weight.shape)
    if blocked or impl is None:
        return LayerPlan(name, "linear", shape, False, None, blocked)
    ok, why = is_2_4(weight)
    if not ok:
        return LayerPlan(name, "linear", shape, False, None, why)
    rows, cols = rules[impl][DTYPES.get(precision, precision)]
    m, n = shape
    if m < rows or m % rows or n < cols or n % cols:
        return LayerPlan(name, "linear", shape, False, None,
                         f"shape {m}x{n} is not a multiple of {impl}'s {rows}x{cols} minimum for {precision}")
    return LayerPlan(name, "linear", shape, True, impl, "")


def convert(module: Any, layers: list[LayerPlan]) -> int:
    """Replace the weights of the planned layers (on the GPU, in their final dtype) by 2:4 sparse tensors;
    returns how many were converted."""
    import torch
    from torch.sparse import SparseSemiStructuredTensorCUTLASS, to_sparse_semi_structured

    mods = dict(module.named_modules())
    done = 0
    for layer in layers:
        if not layer.convert:
            continue
        mod = mods[layer.name]
        dense = mod.weight.detach().contiguous()
        # to_sparse_semi_structured picks cuSPARSELt; CUTLASS is taken by its own class (fp32, or no cuSPARSELt)
        sparse = to_sparse_semi_structured(dense) if layer.implementation == "cusparselt" else SparseSemiStructuredTensorCUTLASS.from_dense(dense)
        mod.weight = torch.nn.Parameter(sparse, requires_grad=False)
        done += 1
    return done
