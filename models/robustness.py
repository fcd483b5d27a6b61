"""Robustness of a PyTorch model: top-1 under seeded common corruptions and under FGSM.

Corruptions (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019) are applied in *pixel* space: the built-in datasets are scaled to [-1, 1]
(``x = (p - 0.5) / 0.5``, models/data.py), so a batch is mapped back to pixels ``p`` in [0, 1], corrupted,
clipped to [0, 1] and normalised again. The parameters are those of CIFAR-10-C (``make_cifar_c.py``, made
for 32x32 images, the size the digits are upsampled to); edgebench's severities 1, 2, 3 are CIFAR-10-C's
levels 1, 3 and 5, so they span its whole range:

=================  ====================================================  =================
corruption         what it does to pixels p in [0, 1]                    severity 1 / 2 / 3
=================  ====================================================  =================
gaussian_noise     p + N(0, s^2), seeded                                 s = 0.04 / 0.08 / 0.10
gaussian_blur      Gaussian filter of std s pixels, per image and channel s = 0.4 / 0.7 / 1.0
brightness         HSV value + c (hue and saturation kept)               c = 0.05 / 0.15 / 0.30
contrast           (p - m) * c + m, m the image's per-channel mean       c = 0.75 / 0.40 / 0.15
=================  ====================================================  =================

FGSM (Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015) is white-box against
the model itself, one step of ``eps`` (in pixel units: 2/255 and 8/255 by default, the usual CIFAR
budgets) along the sign of the cross-entropy gradient with the evaluation labels, clipped to the pixel
range. Everything here is fp32 PyTorch on the host: it is a property of the (model, recipe), not of a
runtime or precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgebench.models.data import Dataset

MEAN, STD = 0.5, 0.5  # the built-in datasets' normalisation: x = (pixel - MEAN) / STD, pixels in [0, 1]
SEVERITIES = (1, 2, 3)
# CIFAR-10-C levels 1, 3 and 5 of each corruption's parameter (make_cifar_c.py)
LEVELS: dict[str, tuple[float, float, float]] = {
    "gaussian_noise": (0.04, 0.08, 0.10),
    "gaussian_blur": (0.4, 0.7, 1.0),
    "brightness": (0.05, 0.15, 0.30),
    "contrast": (0.75, 0.40, 0.15),
}
CORRUPTIONS = tuple(LEVELS)
FGSM_EPS = (2 / 255, 8 / 255)
VERSION = 1  # bump when a corruption, FGSM or the evaluation changes what a cached result would hold


@dataclass(frozen=True)
class RobustnessConfig:
    """What to evaluate: corruptions x severities (each seeded) and FGSM at each ``fgsm_eps`` (pixel units)."""

    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    fgsm_eps: tuple[float, ...] = FGSM_EPS
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"corruptions": list(self.corruptions), "severities": list(self.severities), "fgsm_eps": list(self.fgsm_eps), "seed": self.seed}


@dataclass(frozen=True)
class CorruptionTop1:
    corruption: str
    severity: int
    top1: float


@dataclass(frozen=True)
class FgsmTop1:
    eps: float  # pixel units (fraction of the [0, 1] range)
    top1: float


@dataclass
class RobustnessResult:
    """Top-1 of one PyTorch fp32 model on the evaluation split: clean, per corruption and severity, under FGSM."""

    clean_top1: float
    corrupted: list[CorruptionTop1] = field(default_factory=list)
    fgsm: list[FgsmTop1] = field(default_factory=list)
    n_images: int = 0

    @property
    def mean_corrupted_top1(self) -> float | None:
        """The mean over every corruption and severity: the "robust top-1" (CIFAR-10-C's mean corruption accuracy)."""
        return float(np.mean([c.top1 for c in self.corrupted])) if self.corrupted else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean_corrupted_top1": self.mean_corrupted_top1}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustnessResult:
        return cls(float(d["clean_top1"]), [CorruptionTop1(c["corruption"], int(c["severity"]), float(c["top1"])) for c in d.get("corrupted", [])],
                   [FgsmTop1(float(f["eps"]), float(f["top1"])) for f in d.get("fgsm", [])], int(d.get("n_images", 0)))


# -- corruptions: NCHW float32 in the normalised space in, the same out ---------------------------
def to_pixels(x: np.ndarray) -> np.ndarray:
    return x * STD + MEAN


def from_pixels(p: np.ndarray) -> np.ndarray:
    return ((np.clip(p, 0.0, 1.0) - MEAN) / STD).astype(np.float32)


def in_pixel_range(x: np.ndarray, tol: float = 1e-3) -> bool:
    """Whether ``x`` lies in the normalised range of pixels [0, 1] (what the corruptions assume)."""
    lo, hi = (0.0 - MEAN) / STD, (1.0 - MEAN) / STD
    return bool(x.size) and float(x.min()) >= lo - tol and float(x.max()) <= hi + tol


def gaussian_noise(p: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return p + rng.normal(0.0, s, size=p.shape)


def gaussian_blur(p: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    # spatial axes only: each image and channel on its own; edges extended (mode nearest), as skimage's gaussian does
    return gaussian_filter(p, sigma=(0, 0, s, s), mode="nearest")


def brightness(p: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    # HSV value is the channel maximum; scaling R, G, B by new V / V keeps hue and saturation (a black
    # pixel, V = 0, has no hue: it becomes grey c, as skimage's hsv2rgb makes it)
    v = p.max(axis=1, keepdims=True)
    new_v = np.clip(v + c, 0.0, 1.0)
    scaled = p * (new_v / np.maximum(v, 1e-12))
    return np.where(v > 0, scaled, np.broadcast_to(new_v, p.shape))


def contrast(p: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    m = p.mean(axis=(2, 3), keepdims=True)
    return (p - m) * c + m


FUNCTIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": gaussian_noise, "gaussian_blur": gaussian_blur, "brightness": brightness, "contrast": contrast,
}


def corrupt(x: np.ndarray, corruption: str, severity: int, seed: int = 0) -> np.ndarray:
    """``x`` (NCHW float32, normalised) under ``corruption`` at ``severity`` (1..3), normalised again.

    The noise is drawn from a generator seeded by (seed, corruption, severity): the same call gives the
    same batch in every run and on every machine, whatever else was evaluated before."""
    if corruption not in LEVELS:
        raise ValueError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity} is not one of {', '.join(map(str, SEVERITIES))}")
    rng = np.random.default_rng([seed, CORRUPTIONS.index(corruption), severity])
    p = to_pixels(np.asarray(x, dtype=np.float64))
    return from_pixels(FUNCTIONS[corruption](p, LEVELS[corruption][severity - 1], rng))


# -- FGSM and the evaluation (torch) ---------------------------------------------------------------
def fgsm(module: Any, x: np.ndarray, y: np.ndarray, eps: float, batch_size: int = 256) -> np.ndarray:
    """One FGSM step of ``eps`` (pixel units) against ``module`` with labels ``y``, clipped to the pixel range."""
    import torch

    if eps == 0:
        return np.array(x, dtype=np.float32, copy=True)
    module.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)).requires_grad_(True)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(module(xb), torch.from_numpy(y[i:i + batch_size]))
            (grad,) = torch.autograd.grad(loss, xb)
        # the normalised input is pixels / STD, so a pixel step eps is eps / STD here, the gradient's sign the same
        out.append(from_pixels(to_pixels(xb.detach().numpy() + (eps / STD) * np.sign(grad.numpy()))))
    return np.concatenate(out) if out else np.asarray(x, dtype=np.float32)


def top1(module: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    import torch

    module.eval()
    with torch.inference_mode():
        preds = [module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).argmax(1).numpy() for i in range(0, len(x), batch_size)]
    return float(np.mean(np.concatenate(preds) == y))


def evaluate_robustness(module: Any, data: Dataset, cfg: RobustnessConfig) -> RobustnessResult:
    """Top-1 of ``module`` (PyTorch, eval mode) on ``data``'s evaluation split: clean, under each corruption
    x severity and under FGSM at each eps (:func:`evaluate_arrays`)."""
    return evaluate_arrays(module, data.x_test, data.y_test, cfg)


def evaluate_arrays(module: Any, x: np.ndarray, y: np.ndarray, cfg: RobustnessConfig) -> RobustnessResult:
    """:func:`evaluate_robustness` on arrays: ``x`` NCHW float32 in the normalised space of models/data.py."""
    result = RobustnessResult(top1(module, x, y), n_images=len(x))
    for name in cfg.corruptions:
        for severity in cfg.severities:
            result.corrupted.append(CorruptionTop1(name, severity, top1(module, corrupt(x, name, severity, cfg.seed), y)))
    for eps in cfg.fgsm_eps:
        result.fgsm.append(FgsmTop1(float(eps), top1(module, fgsm(module, x, y, eps), y)))
    return result
