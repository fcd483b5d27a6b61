"""Checks of a written artifact on the host: does it compute what it was made from?

An fp32 artifact is compared with the PyTorch module it was exported from (largest logit
difference); a quantised one with the same backend's fp32 artifact on the whole evaluation split
(top-1 agreement, both accuracies, the points lost). A backend whose runtime this host lacks is
"not checked" here: it is measured on its target all the same.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.bench.worker import accuracy_and_fidelity, evaluate
from edgebench.models.cache import Entry

EXPORT_TOLERANCE = 1e-4
QUANTIZED_TOLERANCE_PTS = 1.0  # top-1 points a quantised artifact may lose against its fp32 artifact
CHECK_BATCH = 32


@contextlib.contextmanager
def host_threads_kept() -> Iterator[None]:
    """Give torch its thread count back after a check: the torch backend's ``load`` sets torch's global
    count (1 for a check), and every later training or export in this process would then run on 1
    thread, which does not give the same bits as 2; the same cache key would hold different files
    depending on what was cached before (and `--executor ray` could not reproduce the in-process run)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch is not None and before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def check_export(backend: Any, path: Path, precision: str, module: Any, inputs: np.ndarray) -> dict[str, Any]:
    """Run the exported artifact on the host and compare with the PyTorch module it came from."""
    from edgebench.models.train import logits  # imports torch

    avail = backend.availability()
    if not avail.available:
        return {"skipped": f"not checked: {backend.name} {avail.reason}"}
    with host_threads_kept():
        session = backend.load(path, precision, {"threads": 1, "batch": CHECK_BATCH})
        got = evaluate(session, inputs, CHECK_BATCH)
    want = logits(module, inputs).astype(np.float64)
    diff = float(np.abs(got - want).max())
    return {"reference": "pytorch", "n": int(len(inputs)), "max_abs_diff": diff, "tolerance": EXPORT_TOLERANCE, "ok": diff < EXPORT_TOLERANCE}


def check_against(backend: Any, path: Path, precision: str, reference: Entry, dense: Entry) -> dict[str, Any]:
    """A quantised artifact against the same backend's fp32 artifact, on the real evaluation set:
    top-1 agreement, both top-1 accuracies and the difference in points (the number that matters
    for int8), and the largest logit difference."""
    avail = backend.availability()
    if not avail.available:
        return {"skipped": f"not checked: {backend.name} {avail.reason}"}
    data = np.load(dense.dir / "eval.npz")
    inputs = data["inputs"]
    labels = data["labels"] if "labels" in data.files else None
    opts = {"threads": 1, "batch": CHECK_BATCH}
    ref_path = reference.dir / reference.manifest["facts"]["artifact"]
    with host_threads_kept():
        got = evaluate(backend.load(path, precision, opts), inputs, CHECK_BATCH)
        want = evaluate(backend.load(ref_path, "fp32", opts), inputs, CHECK_BATCH)
    # the same accuracy and fidelity numbers a cell reports, with the fp32 artifact as the reference
    acc, fid = accuracy_and_fidelity(got, labels, want)
    ref_acc, _ = accuracy_and_fidelity(want, labels, None)
    out: dict[str, Any] = {"reference": f"{backend.name} fp32", "n": int(len(inputs)),
                           "agreement": fid.top1_agreement, "max_abs_diff": fid.max_abs_diff}
    if acc is not None and ref_acc is not None:
        delta = (acc.top1 - ref_acc.top1) * 100
        out.update(top1=acc.top1, reference_top1=ref_acc.top1, delta_pts=delta, tolerance_pts=QUANTIZED_TOLERANCE_PTS,
                   ok=delta >= -QUANTIZED_TOLERANCE_PTS)
    return out


def check_text(check: dict[str, Any]) -> str:
    """The export check in one phrase for the progress log."""
    if "skipped" in check:
        return check["skipped"]
    if check.get("reference") == "pytorch":
        return f"max |diff| vs torch {check['max_abs_diff']:.1e}"
    text = f"agreement with {check['reference']} {check['agreement']:.1%}"
    if "delta_pts" in check:
        text += f", top-1 {check['top1']:.2%} ({check['delta_pts']:+.2f} pts)"
    return text
