"""torch-cuda without a GPU: availability, the 2:4 conversion plan on the installed torch's own rules,
per-layer kernel attribution (the profiler ranges run for real on the CPU), the sparse verdicts and the
self-timed loop. What needs a GPU (conversion, CUDA events, the profiled kernels) is not run here."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

torch = pytest.importorskip("torch")

from edgebench.backends import _cuda_profile, _semi_structured, base  # noqa: E402
from edgebench.backends.torch_cuda import TorchCudaBackend, sparse_layers, sparse_verdict  # noqa: E402
from edgebench.bench.contracts.results import MeasureSettings  # noqa: E402
from edgebench.bench.measure import time_runs  # noqa: E402
from edgebench.models.nets import wide_mlp  # noqa: E402
from edgebench.models.pruning import nm_mask  # noqa: E402

RULES = _semi_structured.installed_rules(torch)
AMPERE = (8, 0)


def pruned_mlp(hidden: int = 64, num_classes: int = 10, with_conv: bool = False) -> torch.nn.Module:
    """A small wide_mlp with every Linear pruned 2:4 by the recipe's own mask (models/pruning.py)."""
    torch.manual_seed(0)
    m = wide_mlp(num_classes=num_classes, in_features=3 * 4 * 4, hidden=hidden, depth=2)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.mul_(nm_mask(mod.weight, 2, 4).to(mod.weight.dtype))
    if with_conv:
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), m)
    return m


def by_name(plan: list[_semi_structured.LayerPlan]) -> dict[str, _semi_structured.LayerPlan]:
    return {p.name: p for p in plan}


def test_registered_with_its_precisions_and_says_why_it_cannot_run_here():
    assert "torch-cuda" in base.names()
    b = base.get("torch-cuda")
    assert b.consumes == "torch" and b.precisions == ("fp32", "fp16", "bf16")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    avail = b.availability()
    assert not avail.available and avail.reason == "no CUDA device (torch.cuda.is_available() is False)"
    assert b.export_availability().available  # the host writes the state_dict without a GPU


def test_rules_are_read_from_the_installed_torch():
    # cuSPARSELt takes no fp32 weights in this torch; CUTLASS does (its own class's table)
    assert "float32" not in RULES["cusparselt"] and "float32" in RULES["cutlass"]
    assert RULES["cusparselt"]["float16"] == (torch.sparse.SparseSemiStructuredTensorCUSPARSELT._DTYPE_SHAPE_CONSTRAINTS[torch.float16].sparse_min_rows,
                                              torch.sparse.SparseSemiStructuredTensorCUSPARSELT._DTYPE_SHAPE_CONSTRAINTS[torch.float16].sparse_min_cols)
    assert _semi_structured.implementation(RULES, "fp16", cusparselt=True) == ("cusparselt", "")
    assert _semi_structured.implementation(RULES, "fp32", cusparselt=True) == ("cutlass", "")
    assert _semi_structured.implementation(RULES, "fp16", cusparselt=False) == ("cutlass", "")
    # torch's CUTLASS 2:4 kernels run on compute capability 8.x only: fp32 on a Hopper GPU has no implementation
    impl, why = _semi_structured.implementation(RULES, "fp32", cusparselt=True, capability=(9, 0))
    assert impl is None and "compute capability 8.x only (this GPU is 9.0" in why
    assert _semi_structured.implementation(RULES, "fp16", cusparselt=True, capability=(9, 0)) == ("cusparselt", "")
    assert _semi_structured.implementation(RULES, "fp32", cusparselt=True, capability=(8, 7)) == ("cutlass", "")  # Jetson Orin


def test_plan_converts_2_4_linears_and_says_why_each_other_layer_stays_dense():
    plan = by_name(_semi_structured.plan(pruned_mlp(with_conv=True), "fp16", RULES, True, AMPERE))
    hidden = [p for n, p in plan.items() if n.startswith("1.features")]
    assert len(hidden) == 2 and all(p.convert and p.implementation == "cusparselt" for p in hidden)
    head = plan["1.classifier"]  # 10 x 64: 10 rows is not a multiple of cuSPARSELt's 16 for fp16
    assert not head.convert and "10x64 is not a multiple of cusparselt's 16x16" in head.reason
    conv = plan["0"]
    assert conv.op == "conv2d" and not conv.convert and "aten.convolution" in conv.reason


def test_a_weight_that_is_not_2_4_is_never_converted():
    m = pruned_mlp()
    with torch.no_grad():
        m.features[1].weight[0, :4] = 1.0  # one group of four with four non-zeros
    plan = by_name(_semi_structured.plan(m, "fp16", RULES, True, AMPERE))
    layer = plan["features.1"]
    assert not layer.convert and "not 2:4 (1 of" in layer.reason
    dense = by_name(_semi_structured.plan(wide_mlp(num_classes=16, in_features=48, hidden=64), "fp16", RULES, True, AMPERE))
    assert not any(p.convert for p in dense.values())  # an unpruned model: nothing is 2:4


def test_shape_rules_follow_the_dtype_and_old_gpus_convert_nothing():
    m = pruned_mlp(hidden=48)  # 48 rows: a multiple of cuSPARSELt's 16 (fp16), not of CUTLASS's 32 (fp32)
    fp16 = by_name(_semi_structured.plan(m, "fp16", RULES, True, AMPERE))
    fp32 = by_name(_semi_structured.plan(m, "fp32", RULES, True, AMPERE))
    assert fp16["features.3"].convert
    assert not fp32["features.3"].convert and "cutlass's 32x32 minimum for fp32" in fp32["features.3"].reason
    turing = _semi_structured.plan(m, "fp16", RULES, True, (7, 5))
    assert not any(p.convert for p in turing) and "compute capability 8.0+, this GPU is 7.5" in turing[1].reason


def test_sparse_off_and_torchscript_leave_every_layer_dense(monkeypatch):
    from edgebench.backends import torch_cuda

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: AMPERE)
    m = pruned_mlp()
    assert any(p.convert for p in torch_cuda.conversion_plan(torch, m, "fp16", None, {}, False))
    off = torch_cuda.conversion_plan(torch, m, "fp16", None, {"sparse": False}, False)
    assert not any(p.convert for p in off) and {p.reason for p in off} == {"sparse: off"}
    ts = torch_cuda.conversion_plan(torch, m, "fp16", None, {}, True)
    assert not any(p.convert for p in ts)


# -- which kernels each layer ran --------------------------------------------------------------

@dataclass
class Kernel:
    name: str
    duration: float


@dataclass
class Event:
    """The three attributes of torch's FunctionEvent that kernel_records reads."""

    name: str
    cpu_parent: Event | None = None
    kernels: list[Kernel] = field(default_factory=list)


def test_the_layer_ranges_really_enclose_each_layers_ops_in_the_profiler():
    m = pruned_mlp()
    remove = _cuda_profile.layer_ranges(m, torch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        m(torch.zeros(2, 3, 4, 4))
    remove()
    linear_ops = [e for e in prof.events() if e.name == "aten::linear"]
    assert len(linear_ops) == 3
    assert [_cuda_profile._layer_of(e) for e in linear_ops] == ["features.1", "features.3", "classifier"]
    assert not m.features[1]._forward_pre_hooks  # the hooks are gone after the pass


def test_kernels_are_attributed_to_their_layer_and_a_layer_with_dense_kernels_is_named():
    layer = Event(_cuda_profile.RANGE_PREFIX + "fc1")
    other = Event(_cuda_profile.RANGE_PREFIX + "fc2")
    events = [Event("aten::addmm", cpu_parent=Event("aten::linear", cpu_parent=layer), kernels=[Kernel(SPARSE, 40.0)]),
              Event("aten::addmm", cpu_parent=other, kernels=[Kernel(DENSE, 30.0)]),
              Event("aten::relu", kernels=[Kernel(ELEMENTWISE, 2.0)]),
              Event(layer.name, kernels=[Kernel(layer.name, 45.0)])]  # the range's own GPU annotation is not a kernel
    records = _cuda_profile.kernel_records(events)
    assert [(r.layer, r.name) for r in records] == [("fc1", SPARSE), ("fc2", DENSE), (None, ELEMENTWISE)]
    plan = [{"name": "fc1", "op": "linear"}, {"name": "fc2", "op": "linear"}]
    summary = _cuda_profile.summarize(records, plan, "fp16", runs=2, attributed=True)
    fc1, fc2 = summary.layers
    assert fc1.sparse is True and fc1.kernel == SPARSE and fc1.time_ms == pytest.approx(0.02)
    assert fc2.sparse is False and fc2.kernel == DENSE
    assert sparse_layers(plan, summary) == {"converted": 2, "sparse_ran": 1, "dense_ran": ["fc2"], "unknown": []}
    assert sparse_verdict(plan, summary) is True
    assert sparse_verdict([], summary) is False  # nothing converted: every layer ran dense by construction
    assert summary.by_op == {"linear": {"sparse-gemm": 1, "gemm": 1}}


def test_an_unknown_cusparselt_kernel_is_unknown_never_dense():
    new_name = "sm90_xmma_someday_gemm_f16_kernel_cusparselt"  # made up: a future cuSPARSELt name the rules do not know
    assert _cuda_kernels.classify(new_name).library == "cuSPARSELt" and not _cuda_kernels.is_sparse(new_name)
    assert _cuda_profile.layer_sparse([new_name]) is None
    assert _cuda_profile.layer_sparse([DENSE, ELEMENTWISE]) is False
    assert _cuda_profile.layer_sparse([SPARSE, ELEMENTWISE]) is True
    assert _cuda_profile.layer_sparse([]) is None


def test_without_attribution_the_verdict_comes_from_the_whole_models_kernels():
    records = [_cuda_profile.KernelRecord(None, DENSE, 30.0)]
    summary = _cuda_profile.summarize(records, [{"name": "fc1", "op": "linear"}], "fp16", runs=1, attributed=False)
    assert summary.layers == [] and sparse_verdict([{"name": "fc1"}], summary) is False
    assert sparse_layers([{"name": "fc1"}], summary)["sparse_ran"] is None


# -- the loop times with the session's own clock -----------------------------------------------

def test_a_self_timed_session_supplies_its_own_samples():
    own = iter(range(1000, 10**6, 1000))
    settings = MeasureSettings(warmup_runs=2, warmup_seconds=0, min_runs=5, min_seconds=0)
    timed = time_runs(lambda: next(own), settings, self_timed=True)
    assert timed.warmup_runs == 2 and timed.samples_ns[:5] == [3000, 4000, 5000, 6000, 7000]


def test_the_backend_options_are_the_suites_to_set():
    assert {"sparse", "compile", "cuda_graph", "tf32", "profile_runs"} <= set(TorchCudaBackend.options)


# Kernel names for the attribution tests: recorded names from the committed fixtures (tests/backends/data/,
# each file with its source), never names written for the test.
from pathlib import Path  # noqa: E402

from edgebench.backends import _cuda_kernels  # noqa: E402


def recorded() -> list[str]:
    files = sorted((Path(__file__).parent / "data").glob("cuda_kernels_*.txt"))
    return [line.strip() for f in files for line in f.read_text().splitlines() if line.strip() and not line.startswith("#")]


SPARSE = next(n for n in recorded() if _cuda_kernels.classify(n).kind == "sparse-gemm")
DENSE = next(n for n in recorded() if _cuda_kernels.classify(n).kind == "gemm")
ELEMENTWISE = next(n for n in recorded() if _cuda_kernels.classify(n).kind == "elementwise")


# -- the session's bookkeeping, on the CPU with host-clock stand-ins for CUDA events ------------------

class HostEvent:
    """Stands in for torch.cuda.Event on the CPU: record() reads the host clock (the work already ran)."""

    def __init__(self, enable_timing: bool = False) -> None:
        self.t = None

    def record(self, stream=None) -> None:
        import time

        self.t = time.perf_counter_ns()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: HostEvent) -> float:
        return (end.t - self.t) / 1e6


@pytest.fixture
def cpu_session(monkeypatch):
    """A CudaSession whose "device" is the CPU: events, streams and pinned memory replaced by host stand-ins,
    so the timing split, the recorded phases and the evaluation path run for real without a GPU."""
    from edgebench.backends import torch_cuda

    monkeypatch.setattr(torch.cuda, "Event", HostEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, **k: real_empty(*a, **k))

    def make(precision: str = "fp32"):
        m = pruned_mlp().to(dtype=getattr(torch, torch_cuda.TORCH_DTYPES[precision])).eval()
        plan = _semi_structured.plan(pruned_mlp(), precision, RULES, True, AMPERE)
        return torch_cuda.CudaSession(torch, m, torch.device("cpu"), precision, plan, {}, False), m
    return make


def test_the_session_records_every_phase_of_the_timed_runs_only(cpu_session):
    import numpy as np

    session, module = cpu_session("fp32")
    batch = np.random.default_rng(0).standard_normal((4, 3, 4, 4)).astype(np.float32)
    prepared = session.prepare_input(batch)
    settings = MeasureSettings(warmup_runs=3, warmup_seconds=0, min_runs=10, min_seconds=0)
    timed = time_runs(lambda: session.run_timed(prepared), settings, self_timed=True)
    phases = session.phase_samples(len(timed.samples_ns))
    assert set(phases) == {"end_to_end", "h2d", "compute", "d2h", "enqueue"}
    assert phases["end_to_end"] == timed.samples_ns and all(len(v) == 10 for v in phases.values())
    assert all(e >= c for e, c in zip(phases["end_to_end"], phases["compute"]))
    # a profiled run keeps no phases: they would land among the timed ones
    session._run_on_stream(prepared, record=False)
    assert session.phase_samples(10) == phases
    want = module(torch.from_numpy(batch)).detach().numpy()
    assert np.allclose(session.run_prepared(prepared), want, atol=1e-6)
    assert np.allclose(session.run(batch), want, atol=1e-6)


def test_half_precision_casts_on_the_device_and_returns_float32(cpu_session):
    import numpy as np

    session, module = cpu_session("bf16")
    batch = np.ones((2, 3, 4, 4), dtype=np.float32)
    out = session.run(batch)
    assert out.dtype == np.float32
    want = module(torch.from_numpy(batch).to(torch.bfloat16)).float().detach().numpy()
    assert np.allclose(out, want)
