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

from edgebench.models import data as datasets
from edgebench.models import recipes as recipe_lib
from edgebench.models.cache import Cache, Entry

# Bump when training, pruning or export code changes what a cached entry would contain.
PIPELINE_VERSION = 1
EXPORT_TOLERANCE = 1e-4


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


def _versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__, "pipeline": str(PIPELINE_VERSION)}


def save_module(module: Any, arch: dict[str, Any], out: Path) -> None:
    """``model.pt`` (state_dict) and ``arch.json`` (factory, kwargs, widths changed by pruning)."""
    import torch

    from edgebench.backends.torch_eager import build_module, resized_layers

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
    _datasets: dict[str, datasets.Dataset] = field(default_factory=dict)
    _done: dict[tuple[Any, ...], Entry] = field(default_factory=dict)

    def _once(self, key: tuple[Any, ...], make: Callable[[], Entry]) -> Entry:
        """Each step runs (and is logged and counted) once per run, however many cells need it."""
        if key not in self._done:
            self._done[key] = make()
        return self._done[key]

    def dataset(self, name: str) -> datasets.Dataset:
        if name not in self._datasets:
            self._datasets[name] = datasets.load(name)
        return self._datasets[name]

    def _module(self, entry: Entry) -> Any:
        import torch

        from edgebench.backends.torch_eager import build_module

        module = build_module(json.loads((entry.dir / "arch.json").read_text()))
        module.load_state_dict(torch.load(entry.dir / "model.pt", weights_only=True))
        return module.eval()

    def dense(self, model_name: str) -> Entry:
        """The trained dense model and the evaluation tensors (inputs, labels, dense logits)."""
        return self._once(("dense", model_name), lambda: self._dense(model_name))

    def pruned(self, model_name: str, recipe: recipe_lib.Recipe) -> Entry:
        """The dense model with ``recipe`` applied (the dense entry itself for the dense method)."""
        return self._once(("pruned", model_name, recipe.model_dump_json()), lambda: self._pruned(model_name, recipe))

    def artifact(self, model_name: str, recipe: recipe_lib.Recipe, backend_name: str, precision: str) -> Entry:
        """The backend's artifact for the pruned model, checked against PyTorch on the eval inputs."""
        key = ("artifact", model_name, recipe.model_dump_json(), backend_name, precision)
        return self._once(key, lambda: self._artifact(model_name, recipe, backend_name, precision))

    def _dense(self, model_name: str) -> Entry:
        from edgebench.models import train, zoo

        spec = zoo.entry(model_name)
        data = self.dataset(spec.dataset)
        arch = {"factory": spec.factory, "kwargs": spec.kwargs}
        payload = {
            "model": model_name, "arch": arch, "dataset": spec.dataset, "data_hash": data.content_hash(),
            "epochs": spec.train_epochs, "lr": spec.lr, "seed": 0, **_versions(),
        }

        def build(out: Path) -> dict[str, Any]:
            import torch

            from edgebench.backends.torch_eager import build_module

            t0 = time.perf_counter()
            train.seed_everything(0)
            module = build_module(arch)
            train.train(module, data, spec.train_epochs, spec.lr, seed=0)
            save_module(module, arch, out)
            reference = train.logits(module, data.x_test)
            np.savez(out / "eval.npz", inputs=data.x_test, labels=data.y_test, reference_logits=reference)
            np.save(out / "calibration.npy", data.calibration_subset())
            return {
                "top1_torch": float(np.mean(reference.argmax(1) == data.y_test)),
                "train_s": time.perf_counter() - t0,
                **model_facts(module, data.x_test[:1]),
            }

        entry = self.cache.get_or_build("dense", payload, build)
        self.counters.note(entry, "trained")
        self._say(entry, f"dense {model_name}", "trained", f"top-1 {entry.manifest['facts']['top1_torch']:.2%}")
        return entry

    def _pruned(self, model_name: str, recipe: recipe_lib.Recipe) -> Entry:
        from edgebench.models import train, zoo

        dense = self.dense(model_name)
        if recipe.method == "dense":
            return dense
        spec = zoo.entry(model_name)
        data = self.dataset(spec.dataset)
        payload = {"dense": dense.key, "recipe": recipe.identity(), **_versions()}

        def build(out: Path) -> dict[str, Any]:
            import torch

            t0 = time.perf_counter()
            train.seed_everything(recipe.seed)
            module = self._module(dense)
            module = recipe_lib.apply(recipe, module, self._context(recipe, data, dense))
            save_module(module, json.loads((dense.dir / "arch.json").read_text()), out)
            return {
                "top1_torch": train.top1(module, data),
                "prune_s": time.perf_counter() - t0,
                **model_facts(module, data.x_test[:1]),
            }

        entry = self.cache.get_or_build("pruned", payload, build)
        self.counters.note(entry, "pruned")
        self._say(entry, f"{recipe.name} {model_name}", "pruned", f"top-1 {entry.manifest['facts']['top1_torch']:.2%}")
        return entry

    def _artifact(self, model_name: str, recipe: recipe_lib.Recipe, backend_name: str, precision: str) -> Entry:
        from edgebench.backends import base
        from edgebench.models import zoo

        model = self.pruned(model_name, recipe)
        dense = self.dense(model_name)
        backend = base.get(backend_name)
        payload = {"model": model.key, "backend": backend_name, "precision": precision, **_versions(), "backend_version": backend.availability().version}

        def build(out: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            module = self._module(model)
            arch = json.loads((model.dir / "arch.json").read_text())
            inputs = np.load(dense.dir / "eval.npz")["inputs"]
            art = backend.export(zoo.PreparedModel(module, arch), inputs[:1], precision, out)
            export_s = time.perf_counter() - t0
            return {
                "artifact": art.path.name,
                "files": [f.name for f in art.files],
                "size_bytes": art.size_bytes,
                "export_s": export_s,
                "export_check": _check_export(backend, art.path, precision, module, inputs),
                **art.facts,
            }

        entry = self.cache.get_or_build("artifacts", payload, build)
        self.counters.note(entry, "exported")
        check = entry.manifest["facts"]["export_check"]
        detail = f"max |diff| vs torch {check['max_abs_diff']:.1e}" if "max_abs_diff" in check else check.get("skipped", "")
        self._say(entry, f"{backend_name}/{precision} {recipe.name} {model_name}", "exported", detail)
        return entry

    def _context(self, recipe: recipe_lib.Recipe, data: datasets.Dataset, dense: Entry) -> recipe_lib.PruneContext:
        import torch

        from edgebench.models import train

        ft = recipe.finetune
        teacher = self._module(dense) if ft.distill is not None else None

        def finetune(module: Any, epochs: int | None = None, lr: float | None = None, before_step: Any = None, after_step: Any = None) -> Any:
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
        return recipe_lib.PruneContext(finetune=finetune, example=example, batches=batches)

    def _say(self, entry: Entry, what: str, verb: str, detail: str) -> None:
        state = f"cached ({entry.key[:8]})" if entry.hit else f"{verb} ({entry.key[:8]})"
        self.log(f"{what}: {state}, {detail}")


def _check_export(backend: Any, path: Path, precision: str, module: Any, inputs: np.ndarray) -> dict[str, Any]:
    """Run the exported artifact on the host and compare with the PyTorch module it came from."""
    from edgebench.bench.worker import evaluate
    from edgebench.models.train import logits

    avail = backend.availability()
    if not avail.available:
        return {"skipped": f"not checked: {backend.name} {avail.reason}"}
    session = backend.load(path, precision, {"threads": 1})
    got = evaluate(session, inputs, 32)
    want = logits(module, inputs).astype(np.float64)
    diff = float(np.abs(got - want).max())
    return {"reference": "pytorch", "n": int(len(inputs)), "max_abs_diff": diff, "tolerance": EXPORT_TOLERANCE, "ok": diff < EXPORT_TOLERANCE}
