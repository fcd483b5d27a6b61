"""The CUDA kernel-name classifier on kernel names recorded from real profiler output.

Each fixture tests/backends/data/cuda_kernels_*.txt names its source, GPU, torch and CUDA version in
``#`` lines; a ``# expect: <kind>`` line sets the kind the names below it must classify to.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebench.backends._cuda_kernels import KINDS, KernelClass, classify, is_sparse, summarize

DATA = Path(__file__).parent / "data"
FIXTURES = sorted(DATA.glob("cuda_kernels_*.txt"))


def _load(path: Path) -> list[tuple[str, str]]:
    """(expected kind, name) for every name line; '#' lines are comments or '# expect: <kind>'."""
    rows, expect = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect:"):
            expect = line.split(":", 1)[1].strip()
            assert expect in KINDS, f"{path.name}: unknown kind {expect!r}"
        elif line.strip() and not line.startswith("#"):
            assert expect is not None, f"{path.name}: name before any '# expect:' line"
            rows.append((expect, line))
    return rows


CASES = [pytest.param(kind, name, id=f"{p.stem}:{i}") for p in FIXTURES for i, (kind, name) in enumerate(_load(p))]


def test_fixtures_are_present_and_documented():
    assert len(FIXTURES) >= 8
    for path in FIXTURES:
        header = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
        for field in ("# source:", "# GPU:", "# torch:", "# CUDA:", "# read:"):
            assert any(line.startswith(field) for line in header), f"{path.name} lacks {field}"
        assert _load(path), f"{path.name} has no names"


def test_at_least_two_sources_record_sparse_names():
    sparse_sources = {p.name for p in FIXTURES if any(kind == "sparse-gemm" for kind, _ in _load(p))}
    assert len(sparse_sources) >= 2, sparse_sources


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_recorded_name_classifies_to_its_kind(kind: str, name: str):
    got = classify(name)
    assert got.kind == kind, name
    assert got.sparse is (kind == "sparse-gemm"), name
    assert is_sparse(name) is (kind == "sparse-gemm"), name


def test_recorded_dense_names_are_never_sparse():
    dense = [name for p in FIXTURES for kind, name in _load(p) if kind != "sparse-gemm"]
    assert len(dense) >= 20
    assert [n for n in dense if is_sparse(n)] == []


def test_libraries_of_recorded_names():
    assert classify("sm80_xmma_sparse_gemm_f16f16_f16f32_f32_tt_t_tilesize128x128x64_stage3_warpsize2x2x1_"
                    "sptensor16x8x32_execute_kernel_5x_cusparselt") == KernelClass("sparse-gemm", "cuSPARSELt", True)
    assert classify("cutlass_tensorop_h16832spgemm_256x128_64x3_nn_align8").library == "CUTLASS"
    assert classify("void cutlass::Kernel2<cutlass_80_tensorop_f16_s16816gemm_relu_f16_128x64_64x3_nn_align8>("
                    "cutlass_80_tensorop_f16_s16816gemm_relu_f16_128x64_64x3_nn_align8::Params)").library == "CUTLASS"
    assert classify("nvjet_sm121_hsh_mma_128x208x64_2_32x104x64_tmaAB_bz_NNNN").library == "cuBLAS"
    assert classify("ampere_bf16_s16816gemm_bf16_256x128_ldg8_f2f_stages_32x3_nn").library == "cuBLAS"
    assert classify("sm75_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwc...").library == "cuDNN"
    assert classify("void at::native::reduce_kernel<512, 1, at::native::R...").library == "PyTorch"
    assert classify("Memcpy DtoH (Device -> Pinned)") == KernelClass("copy", None, False)


@pytest.mark.parametrize("name", [
    # libcusparseLt 0.4.0.7 exports this kernel symbol (a public script that loads the library quotes it).
    "sm80_xmma_sparse_gemm_i8i8_i8i32_f32_tn_n_tilesize128x64x128_stage4_warpsize2x2x1_sptensor16x8x64_"
    "execute_split_k_kernel_cusparse",
    # The XMMA family prefix alone, as tools match it (kineto's tensor-core allow list; nsys prefixes).
    "sm86_xmma_sparse_gemm", "xmma_sparse_conv",
    # Source identifiers of CUTLASS sparse kernels (no recorded trace found): PyTorch's CUTLASS 2:4 path and
    # CUTLASS 3.x sparse mainloops / library names.
    "void cutlass::Kernel<cutlass::gemm::kernel::SparseGemmWithEpilogueVisitor<",
    "cutlass::gemm::threadblock::SparseMmaMultistage<",
    "cutlass::gemm::collective::CollectiveMma<cutlass::gemm::MainloopSm90TmaGmmaWarpSpecializedSparse<",
    "cutlass3x_sm100_sptensorop_spgemm_e4m3_e4m3_f32_f16_f16_128x64x128_1x1x1_0_tnn_align32_1sm",
])
def test_sparse_patterns_from_library_names(name: str):
    assert is_sparse(name)
    assert classify(name).kind == "sparse-gemm"


@pytest.mark.parametrize(("name", "kind"), [
    # "sparse" in other senses is not 2:4. Seen in public profiles: cuSPARSE's CSR SpMV (what torch.sparse CSR
    # runs on CUDA; NCU reports quote this demangled form), sputnik's unstructured SpMM (an nsys-parsing script
    # matches this prefix), an Inductor kernel of an embedding's backward.
    ("cusparse::csrmv_v3_kernel<std::integral_constant<bool, false>, long long, long long, float, float, float,"
     " float, void>", "other"),
    ("void sputnik::<unnamed>::Kernel", "other"),
    ("triton_poi_fused_embedding_dense_backward_26", "elementwise"),
    # Constructed (not recorded): a cuSPARSE-style SpGEMM name, "spgemm" without a CUTLASS MMA shape before it.
    ("void cusparse::spgemm_kernel<int, float>", "gemm"),
    # Inductor names list the fused ATen ops after the kind prefix (names from Inductor output code and a
    # torch.profiler table); the prefix decides, "convolution"/"addmm" in the rest does not.
    ("triton_poi_fused_convolution_0", "elementwise"),
    ("triton_red_fused_convolution_backward_4red_fused_convolution_backward_4", "reduction"),
    ("triton_per_fused__to_copy_add_addmm_native_layer_nor...", "reduction"),
    ("triton_tem_fused__to_copy_addmm_gelu_t_view_9", "gemm"),
    ("triton_tem_fused__to_copy_convolution_repeat_unsqueeze_view_2", "conv"),
    # Mangled and truncated forms still classify by what is left.
    ("_ZN7cutlass7Kernel2I66cutlass_80_tensorop_f16_s16816gemm_relu_f16_256x128_32x3_tn_align8EEvNT_6ParamsE", "gemm"),
    ("void splitKreduce_kernel<32, 16, int, __half, __half...", "reduction"),
    ("Memset (Device)", "copy"), ("memcpy32_post", "copy"),
    # Constructed: empty and unknown names.
    ("", "other"), ("some_custom_kernel", "other"),
])
def test_edge_cases_are_not_sparse(name: str, kind: str):
    got = classify(name)
    assert (got.kind, got.sparse) == (kind, False), name


def test_unknown_name_has_no_library():
    assert classify("some_custom_kernel") == KernelClass("other", None, False)


def test_summarize_counts_every_kind():
    names = [
        "sm80_xmma_sparse_gemm_f16f16_f16f32_f32_tt_t_tilesize128x128x64_stage3_warpsize2x2x1_sptensor16x8x32_"
        "execute_kernel_5x_cusparselt",
        "nvjet_tst_128x24_64x11_2x1_v_bz_TNT", "nvjet_tst_192x8_64x8_2x1_v_bz_TNT",
        "Memcpy DtoH (Device -> Pinned)", "void at::native::reduce_kernel<128, 4, at::native::R...",
    ]
    got = summarize(names)
    assert list(got) == list(KINDS)
    assert got == {"sparse-gemm": 1, "gemm": 2, "conv": 0, "elementwise": 0, "reduction": 1, "copy": 1, "other": 0}
    assert summarize([]) == dict.fromkeys(KINDS, 0)
