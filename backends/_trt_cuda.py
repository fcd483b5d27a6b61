"""CUDA buffers, streams and events for the TensorRT backend: PyCUDA where it is installed, else
cuda-python (``cuda.bindings``), behind one small interface so the session does not care which.

Which one ran is recorded in the evidence (``buffers``). Host buffers are pinned (page-locked), so the
copies are real asynchronous DMA, as trtexec's. CUDA graphs are captured through cuda-python only.

Never run on a GPU by its authors yet: CI and the development machine have none.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and the error."""


def open_cuda() -> Any:
    """The first CUDA binding that imports: PyCUDA (the design's), else cuda-python; ImportError names both."""
    try:
        return PyCuda()
    except ImportError:
        pass
    try:
        return CudaBindings()
    except ImportError:
        raise ImportError("neither PyCUDA nor cuda-python is installed: pip install cuda-python (or pycuda) on the target") from None


class PyCuda:
    """PyCUDA: its autoinit context on device 0."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.autoinit  # noqa: F401  (creates the context)
        import pycuda.driver as cuda

        self.cuda = cuda
        self._keep: list[Any] = []

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def malloc(self, nbytes: int) -> int:
        alloc = self.cuda.mem_alloc(max(int(nbytes), 1))
        self._keep.append(alloc)  # freed with the session
        return int(alloc)

    def stream(self) -> Any:
        return self.cuda.Stream()

    def handle(self, stream: Any) -> int:
        return int(stream.handle)

    def htod(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.cuda.memcpy_htod_async(dst, src, stream)

    def dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, stream)

    def event(self) -> Any:
        return self.cuda.Event()

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def wait(self, event: Any) -> None:
        event.synchronize()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(start.time_till(end))

    def mem_info(self) -> tuple[int, int]:
        free, total = self.cuda.mem_get_info()
        return int(free), int(total)

    def graph(self, stream: Any, launch: Any) -> Any:
        raise NotImplementedError("cuda_graph needs cuda-python (cuda.bindings); PyCUDA is the binding here")


class CudaBindings:
    """cuda-python's runtime API (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.8)."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]
        self.rt = cudart
        self._device: list[int] = []
        self._host: list[int] = []

    def _call(self, name: str, *args: Any) -> Any:
        out = getattr(self.rt, name)(*args)
        err, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        if int(err) != 0:
            raise CudaError(f"{name} failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = int(self._call("cudaMallocHost", nbytes))
        self._host.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def malloc(self, nbytes: int) -> int:
        ptr = int(self._call("cudaMalloc", max(int(nbytes), 1)))
        self._device.append(ptr)
        return ptr

    def stream(self) -> Any:
        return self._call("cudaStreamCreate")

    def handle(self, stream: Any) -> int:
        return int(stream)

    def htod(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self._call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def dtoh(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self._call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    def event(self) -> Any:
        return self._call("cudaEventCreate")

    def record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", event, stream)

    def wait(self, event: Any) -> None:
        self._call("cudaEventSynchronize", event)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call("cudaEventElapsedTime", start, end))

    def mem_info(self) -> tuple[int, int]:
        free, total = self._call("cudaMemGetInfo")
        return int(free), int(total)

    def graph(self, stream: Any, launch: Any) -> Any:
        """Capture ``launch()`` (the engine's enqueue on ``stream``) into an instantiated CUDA graph."""
        self._call("cudaStreamBeginCapture", stream, self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal)
        launch()
        g = self._call("cudaStreamEndCapture", stream)
        return self._call("cudaGraphInstantiate", g, 0)

    def launch_graph(self, graph: Any, stream: Any) -> None:
        self._call("cudaGraphLaunch", graph, stream)


def device_info() -> tuple[int, str | None, str | None]:
    """(device count, device 0's name, its compute capability "major.minor") without a TensorRT import;
    (0, None, None) when no binding can see a device."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count == 0:
            return 0, None, None
        err, props = cudart.cudaGetDeviceProperties(0)
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return int(count), name, f"{props.major}.{props.minor}"
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return 0, None, None
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return int(cuda.Device.count()), str(dev.name()), f"{major}.{minor}"
    except Exception:  # no pycuda, or no driver: no device this backend can use
        return 0, None, None
