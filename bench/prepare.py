"""Host side: train the dense model, apply a recipe, export each backend's artifact. All cached.

Every step is keyed by the content of what determines it (architecture, data hash, schedule, seed,
recipe, library versions), so a second run of the same suite trains and exports nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends import base as backends
from edgebench.backends._model_files import ModelFileError, input_mismatch
from edgebench.backends.base import Calibration
from edgebench.backends.litert import custom_ops
from edgebench.backends.torch_eager import load_torchscript
from edgebench.bench.artifact_checks import check_against, check_export, check_text
from edgebench.bench.contracts.errors import ConfigError, one_line
from edgebench.bench.worker import evaluate
from edgebench.models import data as datasets
from edgebench.models import recipes as recipe_lib
from edgebench.models import zoo
from edgebench.models.arch import build_module, resized_layers
from edgebench.models.cache import Cache, Entry

# Bump when training, pruning or export code changes what a cached entry would contain.
PIPELINE_VERSION = 3  # 3: eval.npz names its reference (fidelity), outputs checked against the classes


class NotApplicable(ValueError):
    """This cell cannot exist for this model (e.g. pruning a plain ONNX file): skipped, not failed."""


@dataclass
class Counters:
    trained: int = 0
    pruned: int = 0
    exported: int = 0
    cache_hits: int = 0

    def note(self, entry: Entry, kind: str) -> None:
        if entry.hit:
            self.cache_hits += 1
        else:
            setattr(self, kind, getattr(self, kind) + 1)


def _versions(without_torch: bool = False) -> dict[str, str]:
    """The pipeline's version and, for steps that run PyTorch, torch's (a given file needs no torch)."""
    if without_torch:
        return {"pipeline": str(PIPELINE_VERSION)}
    import torch

    return {"torch": torch.__version__, "pipeline": str(PIPELINE_VERSION)}


def save_module(module: Any, arch: dict[str, Any], out: Path) -> None:
    """``model.pt`` (state_dict) and ``arch.json`` (factory, kwargs, widths changed by pruning)."""
    import torch

    base_arch = {k: v for k, v in arch.items() if k != "resized"}
    full = {**base_arch, "resized": resized_layers(module, build_module(base_arch))}
    torch.save(module.state_dict(), out / "model.pt")
    (out / "arch.json").write_text(json.dumps(full, sort_keys=True))


def model_facts(module: Any, example: np.ndarray) -> dict[str, Any]:
    """Parameters, non-zero parameters, sparsity and MACs of a PyTorch module."""
    import torch
    import torch_pruning as tp

    params = sum(p.numel() for p in module.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in module.parameters())
    weights = [m.weight for m, _ in recipe_lib.prunable_layers(module)]
    w_total = sum(w.numel() for w in weights)
    w_zero = sum(int((w == 0).sum()) for w in weights)
    macs, _ = tp.utils.count_ops_and_params(module, torch.from_numpy(example))
    return {
        "params": int(params),
        "nonzero_params": int(nonzero),
        "sparsity": 1 - nonzero / params if params else 0.0,
        "weight_sparsity": w_zero / w_total if w_total else 0.0,
        "macs": int(macs),
    }


@dataclass
class Preparer:
    """Builds (or finds in the cache) everything the cells of a suite need."""

    cache: Cache
    log: Callable[[str], None] = print
    counters: Counters = field(default_factory=Counters)
    models: dict[str, Any] = field(default_factory=dict)  # user models by name; the zoo otherwise
    _datasets: dict[tuple[str, int | None], datasets.Dataset] = field(default_factory=dict)
    _done: dict[tuple[Any, ...], Entry] = field(default_factory=dict)

    def spec(self, model_name: str) -> Any:
        """The model's spec: a user model given in the suite, else the built-in zoo entry."""
        return self.models.get(model_name) or zoo.entry(model_name)

    def _once(self, key: tuple[Any, ...], make: Callable[[], Entry]) -> Entry:
        """Each step runs (and is logged and counted) once per run, however many cells need it.

        A step that failed fails the same way for every later cell that needs it, without retrying
        (a conversion the converter cannot do takes as long to fail the second time)."""
        if key not in self._done:
            try:
                self._done[key] = make()
            except Exception as exc:
                self._done[key] = exc  # type: ignore[assignment]
        done = self._done[key]
        if isinstance(done, Exception):
            raise done
        return done

    def dataset(self, name: str, size: int | None = None) -> datasets.Dataset:
        if (name, size) not in self._datasets:
            self._datasets[(name, size)] = datasets.load(name, size)
        return self._datasets[(name, size)]

    def module_of(self, entry: Entry) -> Any:
        """The PyTorch module of a dense or pruned entry (eval mode)."""
        return self._module(entry)

    def _module(self, entry: Entry) -> Any:
        import torch

        arch = json.loads((entry.dir / "arch.json").read_text())
        if arch.get("torchscript"):
            return torch.jit.load(str(entry.dir / arch["torchscript"]), map_location="cpu").eval()
        module = build_module(arch)
        module.load_state_dict(torch.load(entry.dir / "model.pt", weights_only=True))
        return module.eval()

    def dense(self, model_name: str) -> Entry:
        """The trained dense model and the evaluation tensors (inputs, labels, dense logits)."""
        return self._once(("dense", model_name), lambda: self._dense(model_name))

    def pruned(self, model_name: str, recipe: recipe_lib.Recipe) -> Entry:
        """The dense model with ``recipe`` applied (the dense entry itself for the dense method)."""
        return self._once(("pruned", model_name, recipe.model_dump_json()), lambda: self._pruned(model_name, recipe))

    def artifact(self, model_name: str, recipe: recipe_lib.Recipe, backend_name: str, precision: str,
                 options: dict[str, Any] | None = None) -> Entry:
        """The backend's artifact for the pruned model, checked on the eval inputs: fp32 against
        PyTorch, other precisions against the same backend's fp32 artifact.

        ``options`` are the suite's values of the backend's ``export_options`` (e.g. litert ``sparse``)."""
        options = dict(sorted((options or {}).items()))
        key = ("artifact", model_name, recipe.model_dump_json(), backend_name, precision, json.dumps(options))
        return self._once(key, lambda: self._artifact(model_name, recipe, backend_name, precision, options))

    def _dense(self, model_name: str) -> Entry:
        from edgebench.models import train

        spec = self.spec(model_name)
        data = self.dataset(spec.dataset, spec.input_size)
        if spec.given() is not None:
            return self._dense_given(model_name, spec, data)
        if spec.torchscript:
            return self._dense_torchscript(model_name, spec, data)
        arch = spec.arch()
        payload = {
            "model": model_name, "arch": arch, "dataset": spec.dataset, "data_hash": data.content_hash(),
            "epochs": spec.train_epochs, "lr": spec.lr, "seed": 0, **_versions(),
            "weights": _file_hash(spec.weights) if spec.weights else None,
        }

        def build(out: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            train.seed_everything(0)
            module = build_module(arch)
            _check_input_shape(model_name, module, data)
            if spec.weights:
                _load_user_weights(module, Path(spec.weights))
                if not spec.train_epochs:  # not trained here: its outputs mean the classes it was trained for,
                    _check_input_shape(model_name, module, data, strict=True)  # so more than the data has is wrong too
            train.train(module, data, spec.train_epochs, spec.lr, seed=0)
            save_module(module, arch, out)
            np.save(out / "calibration.npy", data.calibration_subset())
            return {
                **_write_eval(out, data, train.logits(module, data.x_test), f"the dense PyTorch model ({model_name})", "torch"),
                "train_s": time.perf_counter() - t0,
                **model_facts(module, data.x_test[:1]),
                "effective_sparsity": 0.0,
                "macs_ratio": 1.0,
            }

        entry = self.cache.get_or_build("dense", payload, build)
        self.counters.note(entry, "trained")
        self._say(entry, f"dense {model_name}", "trained", _top1_text(entry))
        return entry

    def _pruned(self, model_name: str, recipe: recipe_lib.Recipe) -> Entry:
        from edgebench.models import train

        dense = self.dense(model_name)
        if recipe.method == "dense":
            return dense
        spec = self.spec(model_name)
        given = spec.given()
        if given is not None or spec.torchscript:
            kind = {"onnx": "an ONNX file", "tflite": "a .tflite file"}[given[0]] if given else "a TorchScript archive"
            raise NotApplicable(f"{given[1] if given else spec.torchscript}: recipe {recipe.name!r} needs the PyTorch module; give factory and weights for {model_name} instead of {kind}")
        data = self.dataset(spec.dataset, spec.input_size)
        payload = {"dense": dense.key, "recipe": recipe.identity(), **_versions()}

        def build(out: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            train.seed_everything(recipe.seed)
            module = self._module(dense)
            module = recipe_lib.apply(recipe, module, self._context(recipe, data, dense, model_name))
            save_module(module, json.loads((dense.dir / "arch.json").read_text()), out)
            facts = model_facts(module, data.x_test[:1])
            base = dense.manifest["facts"]
            return {
                "latency_only": not data.has_labels,
                "top1_torch": train.top1(module, data) if data.has_labels else None,
                "prune_s": time.perf_counter() - t0,
                **facts,
                # Against the dense model, so channel pruning (fewer params) and unstructured
                # pruning (zeroed params) sit on one axis.
                "effective_sparsity": 1 - facts["nonzero_params"] / base["params"],
                "macs_ratio": facts["macs"] / base["macs"],
                # what the method says it did: 2:4 eligible/ineligible layers, channel widths, BN scales
                "prune_report": getattr(module, "_edgebench_prune_report", None),
            }

        entry = self.cache.get_or_build("pruned", payload, build)
        self.counters.note(entry, "pruned")
        self._say(entry, f"{recipe.name} {model_name}", "pruned", _top1_text(entry))
        return entry

    def _artifact(self, model_name: str, recipe: recipe_lib.Recipe, backend_name: str, precision: str, options: dict[str, Any]) -> Entry:
        model = self.pruned(model_name, recipe)
        dense = self.dense(model_name)
        backend = backends.get(backend_name)
        calibration = self._calibration(dense, recipe, model_name) if precision == "int8" else None
        # Quantised artifacts are checked against the same backend's fp32 artifact (built first).
        reference = self.artifact(model_name, recipe, backend_name, "fp32", options) if precision != "fp32" else None
        given = self.spec(model_name).given() is not None
        if given:
            self._check_consumes(model_name, backend)
        # The exporter's versions, not the runtime's: the host need not have the runtime at all.
        payload = {"model": model.key, "backend": backend_name, "precision": precision, **_versions(given), "exporter": backend.export_versions(),
                   "export_version": backend.export_version, "calibration": calibration.method if calibration else None, "options": options}
        if calibration is not None and calibration.qat is not None:  # QAT and PTQ artifacts never share a key (PTQ keys unchanged)
            from edgebench.models.qat import QAT_VERSION

            payload["qat"] = {"epochs": recipe.quantize.epochs, "lr": recipe.quantize.lr, "seed": recipe.seed, "version": QAT_VERSION}

        def build(out: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            inputs = np.load(dense.dir / "eval.npz")["inputs"]
            if given:
                art, module = self._import(model_name, dense, backend, precision, out, inputs, calibration, options), None
            else:
                module = self._module(model)
                arch = json.loads((model.dir / "arch.json").read_text())
                try:
                    art = backend.export(zoo.PreparedModel(module, arch), inputs[:1], precision, out, calibration, options)
                except NotImplementedError as exc:  # the backend cannot build this artifact for this model: skipped, said why
                    raise NotApplicable(f"{model_name}: {exc}") from None
            export_s = time.perf_counter() - t0
            art.facts.update(backend.check_artifact(art, recipe_lib.expectations(recipe)))
            if reference is not None:
                check = check_against(backend, art.path, precision, reference, dense)
            elif module is not None:
                check = check_export(backend, art.path, precision, module, inputs)
            else:
                check = {"skipped": f"user {backend.consumes} file: it is its own reference"}
            return {"artifact": art.path.name, "files": [f.name for f in art.files], "size_bytes": art.size_bytes,
                    "export_s": export_s, "export_check": check, **art.facts}

        entry = self.cache.get_or_build("artifacts", payload, build)
        self.counters.note(entry, "exported")
        detail = check_text(entry.manifest["facts"]["export_check"])
        self._say(entry, f"{backend_name}/{precision} {recipe.name} {model_name}", "imported" if given else "exported", detail)
        return entry

    def _check_consumes(self, model_name: str, backend: Any) -> None:
        """A given file enters at the portable stage: only backends made from its kind run it."""
        kind, _ = self.spec(model_name).given()
        if backend.consumes != kind:
            runs_on = ", ".join(backends.consumers(kind)) or "no installed backend"
            raise NotApplicable(f"{model_name} is a given {kind} file: it runs on {runs_on}; give factory and weights to export it for {backend.name}")

    def _import(self, model_name: str, dense: Entry, backend: Any, precision: str, out: Path, inputs: np.ndarray,
                calibration: Calibration | None, options: dict[str, Any]) -> Any:
        src = dense.dir / dense.manifest["facts"]["given_file"]
        try:
            return backend.import_artifact(src, precision, out, inputs[:1], calibration, options)
        except NotImplementedError as exc:
            raise NotApplicable(f"{model_name}: {exc}") from None

    def _calibration(self, dense: Entry, recipe: recipe_lib.Recipe, model_name: str) -> Any:
        """The recipe's calibration subset (saved with the dense model) and its calibration method;
        for a QAT recipe also ``qat``, the fine-tune a backend runs on its PT2E-prepared module
        (models/qat.py: ``quantize.epochs`` at ``quantize.lr`` on the training split, the recipe's
        seed). No QAT where there is no PyTorch module to train (a given file, TorchScript) or no
        labels: those int8 cells are calibrated after training (the run's notes say so)."""
        path = dense.dir / "calibration.npy"
        if not path.exists():
            raise NotApplicable(f"{dense.dir}: no calibration images were saved for this model; int8 needs a model trained or imported by this edgebench")
        quantize = getattr(recipe, "quantize", None)
        calibration = Calibration(np.load(path), quantize.calibration if quantize is not None else "minmax")
        spec = self.spec(model_name)
        if quantize is None or not quantize.qat or spec.given() is not None or spec.torchscript:
            return calibration
        data = self.dataset(spec.dataset, spec.input_size)
        if not data.has_labels:
            return calibration

        def qat(module: Any) -> dict[str, Any]:
            from edgebench.models import qat as qat_lib

            return qat_lib.finetune(module, data, quantize.epochs, quantize.lr, seed=recipe.seed).facts()

        calibration.qat = qat
        return calibration

    def _dense_given(self, model_name: str, spec: Any, data: datasets.Dataset) -> Entry:
        """A user's ONNX or .tflite file: kept as given, its own outputs are the fidelity reference.

        The file is run on the host where its runtime is installed here, to check it accepts the
        dataset's inputs and to record its outputs; a file with custom operators is left to the
        target, whose runtime may resolve them (the cell fails there naming them if not)."""
        kind, path = spec.given()
        src = Path(path)
        payload = {"model": model_name, kind: _file_hash(src), "dataset": spec.dataset, "data_hash": data.content_hash(),
                   "pipeline": str(PIPELINE_VERSION), "calibration": True}

        def build(out: Path) -> dict[str, Any]:
            backends.copy_artifact(src, out)
            np.save(out / "calibration.npy", data.calibration_subset())  # int8 through the runtime's own quantiser
            reference, ran_by = _given_reference(out / src.name, kind, data)
            if reference is not None:  # a file this host cannot run is checked by the worker against the labels
                data.check_outputs(str(src), reference.shape[-1], strict=True)
            facts = _onnx_facts(out / src.name) if kind == "onnx" else {"params": None, "nonzero_params": None, "sparsity": None, "weight_sparsity": None,
                                                                            "macs": None, "effective_sparsity": 0.0, "macs_ratio": 1.0}
            named = f"the given {'ONNX' if kind == 'onnx' else '.tflite'} file {src.name} run by {ran_by} at fp32"
            return {"given_file": src.name, "given_kind": kind, **_write_eval(out, data, reference, named, ran_by, given=True), **facts}

        entry = self.cache.get_or_build("dense", payload, build)
        self.counters.note(entry, "trained")
        self._say(entry, f"{kind} {model_name}", "imported", _top1_text(entry))
        return entry

    def _dense_torchscript(self, model_name: str, spec: Any, data: datasets.Dataset) -> Entry:
        """A user's TorchScript archive: run as given (torch), exported by the TorchScript exporter (onnx)."""
        import shutil

        import torch

        from edgebench.models import train

        src = Path(spec.torchscript)
        payload = {"model": model_name, "torchscript": _file_hash(src), "dataset": spec.dataset, "data_hash": data.content_hash(), **_versions()}

        def build(out: Path) -> dict[str, Any]:
            try:
                module = load_torchscript(src).eval()
            except ModelFileError as exc:
                raise ConfigError(f"{src}: {exc.reason}") from None
            _check_input_shape(str(src), module, data, strict=True)
            shutil.copy2(src, out / "model.ts")
            np.save(out / "calibration.npy", data.calibration_subset())
            (out / "arch.json").write_text(json.dumps({"torchscript": "model.ts"}))
            params = sum(p.numel() for p in module.parameters())
            nonzero = sum(int(torch.count_nonzero(p)) for p in module.parameters())
            named = f"the given TorchScript archive {src.name} run by PyTorch"
            return {**_write_eval(out, data, train.logits(module, data.x_test), named, "torch", given=True), **_imported_counts(params, nonzero)}

        entry = self.cache.get_or_build("dense", payload, build)
        self.counters.note(entry, "trained")
        self._say(entry, f"torchscript {model_name}", "imported", _top1_text(entry))
        return entry

    def _context(self, recipe: recipe_lib.Recipe, data: datasets.Dataset, dense: Entry, model_name: str) -> recipe_lib.PruneContext:
        import torch

        from edgebench.models import train

        ft = recipe.finetune
        teacher = self._module(dense) if ft.distill is not None and data.has_labels else None

        def finetune(module: Any, epochs: int | None = None, lr: float | None = None, before_step: Any = None, after_step: Any = None) -> Any:
            if not data.has_labels:
                return module  # latency-only model: training on random labels would only add noise
            return train.train(
                module, data, ft.epochs if epochs is None else epochs, ft.lr if lr is None else lr, seed=recipe.seed,
                before_step=before_step, after_step=after_step, teacher=teacher,
                kd_temperature=ft.distill.temperature if ft.distill else 4.0, kd_alpha=ft.distill.alpha if ft.distill else 0.0,
            )

        def batches(n: int, batch_size: int = 64):
            gen = torch.Generator().manual_seed(recipe.seed)
            order = torch.randperm(len(data.x_train), generator=gen)
            for i in range(n):
                idx = order[(i * batch_size) % len(order):][:batch_size]
                yield torch.from_numpy(data.x_train[idx.numpy()]), torch.from_numpy(data.y_train[idx.numpy()])

        example = torch.from_numpy(data.x_test[:1])
        return recipe_lib.PruneContext(finetune=finetune, example=example, batches=batches, rewind=self._rewinder(model_name, data))

    def _rewinder(self, model_name: str, data: datasets.Dataset) -> Callable[[int], Any] | None:
        """``rewind(epoch)``: the dense model's weights after ``epoch`` epochs of its training, replayed
        exactly as :meth:`_dense` trains it (same seed, same cosine schedule, stopped early). None
        for a model not trained here (user weights, no labels): there is no trajectory to rewind to."""
        from edgebench.models import train

        spec = self.spec(model_name)
        if spec.weights or not spec.train_epochs or not data.has_labels:
            return None

        def rewind(epoch: int) -> Any:
            if not 0 <= epoch <= spec.train_epochs:
                raise ValueError(f"rewind epoch {epoch} is outside {model_name}'s training (0..{spec.train_epochs} epochs)")
            train.seed_everything(0)
            module = build_module(spec.arch())
            train.train(module, data, spec.train_epochs, spec.lr, seed=0, stop_after=epoch)
            return module.state_dict()

        return rewind

    def _say(self, entry: Entry, what: str, verb: str, detail: str) -> None:
        state = f"cached ({entry.key[:8]})" if entry.hit else f"{verb} ({entry.key[:8]})"
        self.log(f"{what}: {state}, {detail}")


def _given_reference(path: Path, kind: str, data: datasets.Dataset) -> tuple[np.ndarray | None, str]:
    """The given file's own logits on the evaluation inputs, run by the first backend of its kind
    that this host has, and that backend's name; (None, "") when none is installed here or it needs
    custom operators."""
    for name in backends.consumers(kind):
        backend = backends.get(name)
        if not backend.availability().available:
            continue
        if kind == "tflite" and custom_ops(path):
            return None, ""
        try:
            return evaluate(backend.load(path, "fp32", {"threads": 1, "batch": 1}), data.x_test, 1), name
        except ConfigError:
            raise
        except ModelFileError as exc:  # the runtime cannot take the file at all: its cause, not input_size advice
            raise ConfigError(str(exc)) from None
        except Exception as exc:
            raise ConfigError(_run_failure(path, name, data, exc)) from None
    return None, ""


def _run_failure(path: Path, runtime: str, data: datasets.Dataset, exc: Exception) -> str:
    """Why a given file that loaded failed on the evaluation inputs: the input it refuses, or its own error."""
    if input_mismatch(exc):
        return f"{path.name}: does not accept {data.name} inputs of shape {data.input_shape} ({one_line(exc, 300)}); set input_size or use matching data"
    return f"{path.name}: {runtime} loaded it but failed running it on {data.input_shape} inputs ({one_line(exc, 300)}); check the model"


def _file_hash(path: str | Path) -> str:
    import hashlib

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: file not found; check the path in the suite")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def _load_user_weights(module: Any, path: Path) -> None:
    """Load a user's state_dict; a TorchScript archive or a pickled model gets a one-line fix."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable state_dict ({type(exc).__name__}); save one with torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state_dict; save one with torch.save(model.state_dict(), path)")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{path}: does not fit the factory's model ({first}); check factory kwargs such as num_classes") from None


def _check_input_shape(model_name: str, module: Any, data: datasets.Dataset, strict: bool = False) -> None:
    """Fail early, naming the model and the data, when the images do not fit the model (and its
    outputs the dataset's classes: :meth:`Dataset.check_outputs`)."""
    import torch

    try:
        with torch.no_grad():
            out = module.eval()(torch.from_numpy(data.x_test[:1]))
    except Exception as exc:
        raise ValueError(f"{model_name}: the model does not accept {data.name} inputs of shape {data.input_shape} ({one_line(exc, 200)}); set input_size or use matching data") from None
    data.check_outputs(model_name, out.shape[-1], strict, fix="set num_classes in kwargs" if not strict else None)


def _onnx_facts(path: Path) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    return _imported_counts(int(sum(a.size for a in arrays)), int(sum(np.count_nonzero(a) for a in arrays)))


def _imported_counts(params: int, nonzero: int) -> dict[str, Any]:
    """Facts for a model given as a file: counted from its tensors, no MACs counter applies."""
    zeros = 1 - nonzero / params if params else 0.0
    return {"params": params, "nonzero_params": nonzero, "sparsity": zeros, "weight_sparsity": zeros,
            "macs": None, "effective_sparsity": 0.0, "macs_ratio": 1.0}


def _write_eval(out: Path, data: datasets.Dataset, reference: np.ndarray | None, reference_name: str = "",
                reference_backend: str = "", given: bool = False) -> dict[str, Any]:
    """``eval.npz`` (inputs, the reference logits where known, labels where there are any) and its facts.

    The reference is named (``reference_name``: what the worker's fidelity is measured against, and the
    backend that produced it), and ``given`` marks it as a user's file run as it is: that file's own fp32
    cell on the same backend then has no independent reference. Non-finite reference logits are not
    written (no fidelity can be measured against them); their count is a fact the host log shows."""
    labels = {"labels": data.y_test} if data.has_labels else {}  # no labels: latency only
    bad = int(reference.size - np.count_nonzero(np.isfinite(reference))) if reference is not None else 0
    usable = reference is not None and not bad
    logits = {"reference_logits": reference, "reference_name": np.array(reference_name), "reference_backend": np.array(reference_backend),
              "reference_given": np.array(given)} if usable else {}  # None: a given file this host cannot run
    np.savez(out / "eval.npz", inputs=data.x_test, **logits, **labels)
    facts: dict[str, Any] = {"latency_only": not data.has_labels, "top1_torch": None, "reference": reference_name if usable else None}
    if bad:
        facts["reference_nonfinite"] = bad
    elif usable and data.has_labels:
        facts["top1_torch"] = float(np.mean(reference.argmax(1) == data.y_test))
    return facts


def _top1_text(entry: Entry) -> str:
    facts = entry.manifest["facts"]
    if facts.get("reference_nonfinite"):
        return f"{facts['reference_nonfinite']} output values are NaN/Inf: its cells' accuracy will fail (nan-outputs)"
    top1 = facts.get("top1_torch")
    return "latency only (no dataset)" if top1 is None else f"top-1 {top1:.2%}"
