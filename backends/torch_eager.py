"""PyTorch eager on the CPU: the reference every other backend is compared with.

Artifact: ``model.pt`` (a state_dict, loaded with ``weights_only=True``) beside ``arch.json``, which
names the architecture factory and its arguments, so nothing is unpickled from a model file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends._model_files import ModelFileError, torchscript_load_error
from edgebench.backends.base import Artifact, Availability, Backend, Session, missing, register, version_of
from edgebench.bench.contracts.errors import one_line
from edgebench.bench.contracts.evidence import Evidence
from edgebench.models.arch import build_module


class TorchSession(Session):
    def __init__(self, module: Any, torch: Any, threads: int) -> None:
        self._module = module
        self._torch = torch
        self._threads = threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._module(self._torch.from_numpy(batch)).numpy()

    def evidence(self) -> Evidence:
        torch = self._torch
        return Evidence(
            runtime="torch eager", version=torch.__version__, device="cpu", threads=torch.get_num_threads(),
            input_layout="NCHW", input_dtype="float32",
            sparse_kernels=False,  # eager conv/linear run dense whatever the zeros
            details={"mkldnn_enabled": bool(torch.backends.mkldnn.is_available()),
                     "parallel_info": torch.__config__.parallel_info().splitlines()[:6]},
        )


@register
class TorchBackend(Backend):
    name = "torch"
    consumes = "torch"
    precisions = ("fp32",)
    install_hint = "pip install 'edgebench[prune]'"

    def availability(self) -> Availability:
        try:
            import torch
        except ImportError:
            return missing("torch", "prune")
        return Availability(True, version=torch.__version__)

    def export_availability(self) -> Availability:
        return self.availability()

    def export_versions(self) -> dict[str, str | None]:
        return {"torch": version_of("torch")}

    def export(self, model: Any, example: np.ndarray, precision: str, out_dir: Path, calibration: Any = None, options: Any = None) -> Artifact:
        import torch

        out_dir.mkdir(parents=True, exist_ok=True)
        weights = out_dir / "model.pt"
        arch_file = out_dir / "arch.json"
        if model.arch.get("torchscript"):  # a user's TorchScript archive runs as it was given
            weights = out_dir / "model.ts"
            torch.jit.save(model.module, str(weights))
        else:
            torch.save(model.module.state_dict(), weights)
        arch_file.write_text(json.dumps(model.arch, indent=2, sort_keys=True))  # includes pruned widths
        return Artifact(path=weights, files=[weights, arch_file])

    def load(self, artifact: Path, precision: str, options: dict[str, Any]) -> Session:
        import torch

        threads = int(options.get("threads") or 1)
        torch.set_num_threads(threads)
        module, _ = load_cpu_module(artifact)
        return TorchSession(module, torch, threads)


def load_cpu_module(artifact: Path) -> tuple[Any, bool]:
    """The module of a ``torch`` artifact on the CPU, in eval mode, and whether it is a TorchScript archive.

    A state_dict is loaded into the architecture ``arch.json`` beside it names (nothing is unpickled)."""
    import torch

    arch_file = artifact.with_name("arch.json")
    if not arch_file.exists():
        raise FileNotFoundError(f"{arch_file}: missing architecture file beside {artifact.name}; re-export the model")
    arch = json.loads(arch_file.read_text())
    if arch.get("torchscript"):
        return load_torchscript(artifact).eval(), True
    module = build_module(arch)
    try:
        state = torch.load(artifact, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or corrupt file: say so, not the unpickler's words
        raise ModelFileError(artifact, f"not a loadable state_dict ({type(exc).__name__}: {one_line(exc, 200)}); re-export it") from None
    module.load_state_dict(state)
    return module.eval(), False


def load_torchscript(path: Path) -> Any:
    """``torch.jit.load`` on the CPU; a file that is not a TorchScript archive raises ModelFileError with the cause."""
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError from PytorchStreamReader, or the unpickler's own
        raise torchscript_load_error(path, exc) from None
