"""PyTorch on an NVIDIA GPU (``torch-cuda``): fp32, fp16 and bf16, with real 2:4 sparse kernels.

The artifact is the reference backend's (``model.pt`` + ``arch.json``, written by the same export), so
the host needs no GPU; everything GPU-specific happens at load, on the target:

- the weights are cast to the precision (inputs and outputs stay float32 on the host, as every backend's);
  ``fp32`` means IEEE fp32: TF32 is off unless the ``tf32`` option turns it on;
- Linear weights that are exactly 2:4 become torch's semi-structured sparse tensors (cuSPARSELt, or
  CUTLASS), by the installed torch's own dtype and shape rules; the plan, with the reason for every
  layer left dense, is part of the evidence (backends/_semi_structured.py);
- optionally ``torch.compile`` and a CUDA graph of the model.

Timing: CUDA events on the session's stream around the host-to-device copy, the model and the
device-to-host copy, one synchronise per run; the cell's samples are end-to-end (first event to last),
with GPU compute, the copies and the host's enqueue time kept apart (contracts/results.py
``DeviceTiming``). A short torch.profiler pass after the timed runs records which kernels each layer ran
(backends/_cuda_profile.py), so "2:4 ran sparse kernels" is read from kernel names, never assumed.

Never run on a GPU by its authors yet (README says so): CI and the development machine have none.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends import _cuda_profile, _semi_structured
from edgebench.backends._gpu_timing import Phases
from edgebench.backends.base import Availability, Session, register
from edgebench.backends.torch_eager import TorchBackend, load_cpu_module
from edgebench.bench.contracts.evidence import Evidence
from edgebench.bench.contracts.results import GpuMemory

MIB = 1024 * 1024
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
GRAPH_WARMUP = 3  # eager runs on a side stream before capture, as torch's CUDA graph notes ask


class CudaSession(Session):
    """A model on one CUDA device; times itself with CUDA events (``own_clock``)."""

    own_clock = True

    def __init__(self, torch: Any, module: Any, device: Any, precision: str, plan: list[_semi_structured.LayerPlan],
                 options: dict[str, Any], torchscript: bool) -> None:
        self._torch, self._module, self._device, self.precision = torch, module, device, precision
        self._dtype = getattr(torch, TORCH_DTYPES[precision])
        self._plan, self._options, self._torchscript = plan, options, torchscript
        self.compiled = bool(options.get("compile"))
        self.cuda_graph = bool(options.get("cuda_graph"))
        self._call = torch.compile(module) if self.compiled else module
        self._stream = torch.cuda.current_stream(device)
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        self._phases = Phases()
        self._graph: Any = None
        self._prepared: Any = None

    # -- the model on device tensors ------------------------------------------------------------
    def _forward(self, x: Any) -> Any:
        out = self._call(x if self._dtype == self._torch.float32 else x.to(self._dtype))
        return out if out.dtype == self._torch.float32 else out.float()

    def _capture(self, static_in: Any) -> None:
        """Capture the model on ``static_in`` into a CUDA graph (after warm-up runs on a side stream)."""
        torch = self._torch
        side = torch.cuda.Stream(self._device)
        side.wait_stream(self._stream)
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(GRAPH_WARMUP):
                self._forward(static_in)
        self._stream.wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), torch.inference_mode():
            self._static_out = self._forward(static_in)

    def _model(self, x_dev: Any) -> Any:
        if self._graph is not None and tuple(x_dev.shape) == tuple(self._static_in.shape):
            if x_dev.data_ptr() != self._static_in.data_ptr():
                self._static_in.copy_(x_dev)
            self._graph.replay()
            return self._static_out
        with self._torch.inference_mode():
            return self._forward(x_dev)

    # -- the Session protocol -------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device)
        out = self._model(x)
        return out.cpu().numpy()

    def prepare_input(self, batch: np.ndarray) -> Any:
        """The batch in pinned host memory, with its device buffer and a pinned output buffer (and the
        CUDA graph, captured on that buffer), all made once before the timed loop."""
        torch = self._torch
        host_in = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).pin_memory()
        self._static_in = torch.empty(host_in.shape, dtype=torch.float32, device=self._device)
        self._static_in.copy_(host_in)
        if self.cuda_graph:
            self._capture(self._static_in)
        out = self._model(self._static_in)
        host_out = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
        self._prepared = (host_in, host_out)
        return self._prepared

    def run_prepared(self, prepared: Any) -> Any:
        self.run_timed(prepared)
        return prepared[1].numpy()

    def run_timed(self, prepared: Any) -> int:
        return self._run_on_stream(prepared, record=True)

    def _run_on_stream(self, prepared: Any, record: bool) -> int:
        """One run between CUDA events; ``record``: keep its phases (the profiled pass keeps none)."""
        host_in, host_out = prepared
        start, copied, computed, done = self._events
        t0 = time.perf_counter_ns()
        start.record(self._stream)
        self._static_in.copy_(host_in, non_blocking=True)
        copied.record(self._stream)
        out = self._model(self._static_in)
        computed.record(self._stream)
        host_out.copy_(out, non_blocking=True)
        done.record(self._stream)
        enqueue = time.perf_counter_ns() - t0
        done.synchronize()
        return self._phases.add(start.elapsed_time(done), start.elapsed_time(copied), copied.elapsed_time(computed),
                                computed.elapsed_time(done), enqueue, record)

    def phase_samples(self, runs: int) -> dict[str, list[int]]:
        return self._phases.last(runs)

    def gpu_memory(self) -> GpuMemory:
        torch = self._torch
        used, total, _ = device_memory(torch, self._device)
        return GpuMemory(allocated_peak_mib=torch.cuda.max_memory_allocated(self._device) / MIB,
                         reserved_peak_mib=torch.cuda.max_memory_reserved(self._device) / MIB,
                         weights_mib=module_bytes(self._module) / MIB, device_used_mib=used, device_total_mib=total)

    def evidence(self) -> Evidence:
        torch = self._torch
        plan = [p.to_dict() for p in self._plan]
        converted = [p for p in plan if p["convert"]]
        attributed = not (self.compiled or self.cuda_graph)
        runs = int(self._options.get("profile_runs") or 3)
        summary = (_cuda_profile.profile(lambda: self._run_on_stream(self._prepared, record=False), self._module, torch, plan, self.precision,
                                         runs=runs, attributed=attributed) if self._prepared is not None and runs > 0 else None)
        props = torch.cuda.get_device_properties(self._device)
        _, _, mem_source = device_memory(torch, self._device)
        return Evidence(
            runtime="torch cuda", version=torch.__version__, device=props.name, threads=torch.get_num_threads(),
            providers=[p for p in (f"CUDA {torch.version.cuda}", _cusparselt(torch), _cudnn(torch)) if p],
            input_layout="NCHW", input_dtype="float32", sparse_weights=len(converted),
            sparse_kernels=sparse_verdict(converted, summary),
            layers=summary.layers if summary else [],
            details={"compute_capability": f"{props.major}.{props.minor}", "precision": TORCH_DTYPES[self.precision],
                     "compile": self.compiled, "cuda_graph": self.cuda_graph, "tf32": bool(self._options.get("tf32")),
                     "torchscript": self._torchscript, "conversion": plan,
                     "sparse_layers": sparse_layers(converted, summary), "device_memory_source": mem_source,
                     "profile": None if summary is None else {"runs": summary.runs, "attributed": summary.attributed,
                                                               "kernel_kinds": summary.kinds, "by_layer_type": summary.by_op,
                                                               "kernels": summary.kernels[:20]}},
        )


def sparse_layers(converted: list[dict[str, Any]], summary: _cuda_profile.ProfileSummary | None) -> dict[str, Any]:
    """How many converted layers ran a sparse kernel (None where the profile cannot attribute kernels
    to layers), with the names of those that ran known dense kernels and of those whose kernels were not
    recognised (never counted either way)."""
    if summary is None or not summary.attributed:
        return {"converted": len(converted), "sparse_ran": None, "dense_ran": []}
    ran = {layer.name: layer.sparse for layer in summary.layers}
    return {"converted": len(converted), "sparse_ran": sum(1 for p in converted if ran.get(p["name"])),
            "dense_ran": [p["name"] for p in converted if ran.get(p["name"]) is False],
            "unknown": [p["name"] for p in converted if ran.get(p["name"]) is None]}


def sparse_verdict(converted: list[dict[str, Any]], summary: _cuda_profile.ProfileSummary | None) -> bool | None:
    """Any sparse kernel ran: False when nothing was converted (every layer dense), else read from the
    profiled kernels (None: not profiled)."""
    if not converted:
        return False
    if summary is None:
        return None
    return summary.kinds.get("sparse-gemm", 0) > 0


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers as they sit on the GPU (2:4 tensors: their packed
    values and metadata)."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        parts = [getattr(t, a, None) for a in ("packed", "meta", "packed_t", "meta_t", "compressed_swizzled_bitmask")]
        parts = [p for p in parts if p is not None]
        total += sum(p.numel() * p.element_size() for p in parts) if parts else t.numel() * t.element_size()
    return total


def device_memory(torch: Any, device: Any) -> tuple[float | None, float | None, str]:
    """(used MiB, total MiB, source) for the whole device: NVML where nvidia-ml-py is installed (matched by
    the GPU's UUID), else cudaMemGetInfo through torch."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByUUID("GPU-" + str(torch.cuda.get_device_properties(device).uuid))
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return info.used / MIB, info.total / MIB, "nvml"
    except Exception:  # no pynvml, no NVML library, or a UUID NVML does not know: the CUDA runtime's view
        free, total = torch.cuda.mem_get_info(device)
        return (total - free) / MIB, total / MIB, "cudaMemGetInfo"


def _cusparselt(torch: Any) -> str | None:
    try:
        return f"cuSPARSELt {torch.backends.cusparselt.version()}" if torch.backends.cusparselt.is_available() else None
    except AttributeError:
        return None


def _cudnn(torch: Any) -> str | None:
    return f"cuDNN {torch.backends.cudnn.version()}" if torch.backends.cudnn.is_available() else None


@register
class TorchCudaBackend(TorchBackend):
    """PyTorch on a CUDA GPU; the artifact is the ``torch`` backend's, built into a GPU model at load."""

    name = "torch-cuda"
    consumes = "torch"
    precisions = ("fp32", "fp16", "bf16")
    install_hint = "a CUDA build of torch on the target (the desktop-gpu and Jetson profiles use the board's own)"
    options = {
        "sparse": "auto (default): Linear weights that are exactly 2:4 run as torch's semi-structured sparse tensors; "
                  "off: every layer dense",
        "compile": "torch.compile the model at load (default false)",
        "cuda_graph": "capture the model in a CUDA graph at the timed batch size and replay it (default false)",
        "tf32": "let fp32 convs and matmuls use TF32 tensor cores (default false: fp32 is IEEE fp32)",
        "device": "CUDA device index (default 0)",
        "profile_runs": "runs in the profiled pass that records each layer's kernels (default 3; 0: no profile)",
    }

    def availability(self) -> Availability:
        try:
            import torch
        except ImportError:
            return Availability(False, "torch is not installed; install a CUDA build of torch on the target")
        if not torch.cuda.is_available():
            return Availability(False, "no CUDA device (torch.cuda.is_available() is False)", version=torch.__version__)
        return Availability(True, version=torch.__version__)

    def export_availability(self) -> Availability:
        return TorchBackend.availability(self)  # the host writes the state_dict: torch, no GPU

    def load(self, artifact: Path, precision: str, options: dict[str, Any]) -> Session:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(self.availability().reason)
        torch.set_num_threads(int(options.get("threads") or 1))
        device = torch.device("cuda", int(options.get("device") or 0))
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(options.get("tf32"))
        torch.cuda.reset_peak_memory_stats(device)
        module, torchscript = load_cpu_module(artifact)
        plan = conversion_plan(torch, module, precision, device, options, torchscript)
        module = module.to(device=device, dtype=getattr(torch, TORCH_DTYPES[precision])).eval()
        _semi_structured.convert(module, plan)
        return CudaSession(torch, module, device, precision, plan, options, torchscript)


def conversion_plan(torch: Any, module: Any, precision: str, device: Any, options: dict[str, Any],
                    torchscript: bool) -> list[_semi_structured.LayerPlan]:
    """The 2:4 plan for this model on this GPU (every layer dense, with the reason, when ``sparse: off``
    or for a TorchScript archive, whose weights are not swapped)."""
    plan = _semi_structured.plan(module, precision, _semi_structured.installed_rules(torch), _cusparselt(torch) is not None,
                                 torch.cuda.get_device_capability(device))
    off = ("sparse: off" if str(options.get("sparse", "auto")).lower() in ("off", "false", "0")
           else "a TorchScript archive runs as given" if torchscript else "")
    for layer in plan if off else []:
        layer.convert, layer.implementation, layer.reason = False, None, off
    return plan
