"""Classify CUDA kernel names from a torch.profiler pass: which ran a 2:4 sparse GEMM, which ran dense.

The torch-cuda backend profiles a short pass and reads the CUDA kernel names
(``prof.events()`` with ``device_type == CUDA``); :func:`classify` turns each name into a
:class:`KernelClass` so the report can say "sparse kernels ran in k of n converted layers".

Every rule below comes from names seen in real traces or from the library source that names the
kernel; the recorded names live in ``tests/backends/data/cuda_kernels_*.txt`` with their source.
The one hard rule: a dense kernel is never called sparse (a false "sparse kernels ran" is the worst
outcome), so the sparse patterns are narrow, and a name that merely contains "sparse" (cuSPARSE
CSR/COO kernels such as ``cusparse::csrmv_v3_kernel``, sputnik, embedding/index kernels, the
cuSPARSELt compression kernels) is not 2:4. Unknown names are ``other`` with no library.

Standard library only: it runs wherever the profiler output is read.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

KINDS = ("sparse-gemm", "gemm", "conv", "elementwise", "reduction", "copy", "other")

# 2:4 sparse tensor-core kernels, each pattern with the evidence for it:
_SPARSE = re.compile(
    "|".join((
        # cuSPARSELt: sm80_xmma_sparse_gemm_..._sptensor16x8x32_execute_kernel_5x_cusparselt (torch.profiler,
        # RTX 5090 and GB10, Mariiagrm/Triton_Benchmark_NVIDIA_AMD); a public script quotes libcusparseLt
        # 0.4.0.7's symbol sm80_xmma_sparse_gemm_i8i8_..._execute_split_k_kernel_cusparse; nsys-parsing scripts
        # match sm86_xmma_sparse_gemm. The arch prefix varies, so only "xmma_sparse_" is required; PyTorch's
        # TensorBoard plugin lists "xmma_sparse_gemm" and "xmma_sparse_conv" as sparse tensor-core kernels
        # (pytorch/kineto tb_plugin/torch_tb_profiler/profiler/tensor_core.py). A sparse conv counts as sparse-gemm.
        r"xmma_sparse_(?:gemm|conv)",
        # CUTLASS 2.x library names: cutlass_tensorop_h16832spgemm_..., ..._s16816tf32spgemm_... (NVIDIA/cutlass#103).
        # The MMA shape digits right before "spgemm" keep cuSPARSE's SpGEMM (sparse x sparse CSR) out.
        r"cutlass\w*?\d(?:tf32)?spgemm",
        # CUTLASS 3.x library names use the op class "sptensorop" (cutlass3x_sm100_sptensorop_spgemm_..., CUTLASS
        # library generator OpcodeClassNames: SparseTensorOp -> 'sptensorop').
        r"cutlass3x_sm\d+\w*_sptensorop",
        # CUTLASS C++ templates (demangled names): PyTorch's _sparse_semi_structured_mm (_FORCE_CUTLASS) builds
        # cutlass::gemm::device::SparseGemmWithVisitor, whose kernel is cutlass::gemm::kernel::
        # SparseGemmWithEpilogueVisitor over threadblock::SparseMmaMultistage (aten/src/ATen/native/sparse/cuda/
        # SparseSemiStructuredOps.cu, cutlass/gemm/kernel/default_gemm_sparse_with_visitor.h); CUTLASS 3.x sparse
        # mainloops are MainloopSm90TmaGmmaWarpSpecializedSparse / Sm100.../Sm120...Sparse (dispatch_policy.hpp).
        # No recorded trace of these was found: derived from the source identifiers, not from a printed name.
        r"cutlass::gemm::kernel::Sparse", r"cutlass::gemm::threadblock::SparseMma",
        r"cutlass::gemm::Mainloop\w*Sparse",
    ))
)

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in (
        # Kineto activity names "Memcpy HtoD (Pageable -> Device)", "Memcpy DtoH (Device -> Pinned)", "Memset
        # (Device)"; nvprof "[CUDA memcpy DtoD]"; cuDNN's layout transposes nchwToNhwcKernel / nhwcToNchwKernel
        # (pytorch#81940, #90204) move data without math.
        ("copy", r"^(?:\[CUDA )?mem(?:cpy|set)|nchwToNhwc|nhwcToNchw"),
        # Inductor (torch.compile) kernels are named by kind first: triton_poi_ pointwise, triton_red_/triton_per_
        # reductions, triton_tem_ templates (mm/bmm/conv); the rest of the name lists the fused ATen ops
        # (triton_poi_fused_convolution_0 is a pointwise kernel), so the prefix decides.
        ("elementwise", r"^triton_poi_"),
        ("reduction", r"^triton_(?:red|per)_"),
        ("conv", r"^triton_tem_\w*conv"),
        ("gemm", r"^triton_tem_"),
        # cuDNN/CUTLASS convolutions contain "gemm" (implicit GEMM), so they come before gemm:
        # sm80_xmma_fprop_implicit_gemm_..., sm75_xmma_fprop_... (pytorch#81940, #90204), conv2d_grouped_direct_kernel,
        # wgrad2d_grouped_direct_kernel (pytorch#34977), *scudnn* and *cudnn* conv kernels, CUTLASS ..._fprop_...
        ("conv", r"xmma_(?:fprop|dgrad|wgrad)|implicit_convolve|convolve_|conv\dd_|grad\dd_|scudnn|s884cudnn"
                 r"|fprop|dgrad|wgrad|ImplicitGemmConvolution|cutlass_cudnn|cutlass__5x_cudnn"),
        # at::native::reduce_kernel<...>, reduce_1Block_kernel<..., cublasGemvT... (vllm-omni#553), cuBLAS split-K
        # reduction splitKreduce_kernel, softmax_warp_forward: reductions, checked before gemm so a GEMV/split-K
        # helper is not counted as a dense GEMM.
        ("reduction", r"reduce_|softmax|ReduceSplitK"),
        # cuBLAS ampere_bf16_s16816gemm_..., sm80_xmma_gemm_..., nvjet_sm121_hsh_mma_..., nvjet_tst_...
        # (sglang#22353), gemv kernels; CUTLASS void cutlass::Kernel2<cutlass_80_tensorop_f16_s16816gemm_...>.
        ("gemm", r"gemm|gemv|nvjet_"),
        # void at::native::vectorized_elementwise_kernel<4, ...>, at::native::elementwise_kernel<128, 4, ...>.
        ("elementwise", r"elementwise_kernel|PointwiseApply"),
    )
)

# Library by name, first match wins. cuBLAS ships CUTLASS-built kernels (cutlass::Kernel2<cutlass_80_...>);
# "CUTLASS" names the kernel's code family, not the API that launched it.
_LIBRARIES = (
    ("cuSPARSELt", r"cusparselt|_kernel_cusparse$"), ("triton", r"^triton_"),
    # sm80_xmma_fprop_implicit_gemm_... carries no "cudnn" but is cuDNN's (PyTorch reaches convs through cuDNN).
    ("cuDNN", r"cudnn|xmma_(?:fprop|dgrad|wgrad)"),
    ("CUTLASS", r"cutlass"), ("cuBLAS", r"cublas|^(?:ampere|volta|turing|maxwell|sm\d+)_|nvjet_|gemv|splitKreduce"),
    ("PyTorch", r"at::native::|at::cuda::|\bc10::"),
)
_LIBRARY_RULES = tuple((name, re.compile(p, re.IGNORECASE)) for name, p in _LIBRARIES)


@dataclass(frozen=True)
class KernelClass:
    """What a CUDA kernel name says: its kind (one of :data:`KINDS`), its library, and whether it is 2:4 sparse."""

    kind: str
    library: str | None
    sparse: bool


def _library(name: str) -> str | None:
    return next((lib for lib, rx in _LIBRARY_RULES if rx.search(name)), None)


def classify(name: str) -> KernelClass:
    """Classify one kernel name as printed by torch.profiler, nsys or nvprof (truncated names are fine)."""
    name = name.strip()
    if _SPARSE.search(name):
        return KernelClass("sparse-gemm", _library(name) or ("CUTLASS" if "cutlass" in name.lower() else None), True)
    kind = next((k for k, rx in _RULES if rx.search(name)), "other")
    return KernelClass(kind, _library(name), False)


def is_sparse(name: str) -> bool:
    """True only for a 2:4 (semi-structured) sparse tensor-core kernel."""
    return classify(name).sparse


def summarize(names: Iterable[str]) -> dict[str, int]:
    """Kernel count per kind, every kind of :data:`KINDS` present (0 when none ran), in that order."""
    counts = Counter(classify(n).kind for n in names)
    return {kind: counts.get(kind, 0) for kind in KINDS}
