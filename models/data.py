"""Datasets that work offline. Built in: scikit-learn's bundled handwritten digits.

Images are float32 NCHW. The 8x8 digits are upsampled (bilinear) to 32x32 and repeated on three
channels, the shape CIFAR-style networks expect. The split is stratified with a fixed seed, so every
machine and every run sees the same 1437 training and 360 evaluation images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebench.bench.contracts.registry import Registry, UnknownName


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    has_labels: bool = True  # False: synthetic inputs for latency only, no accuracy

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_test.shape[1:])

    def content_hash(self) -> str:
        """Hash of the exact arrays, so a change in preprocessing invalidates every cached model."""
        h = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    def calibration_subset(self, n: int = 128, seed: int = 0) -> np.ndarray:
        """A fixed subset of the training split for quantisation calibration."""
        idx = np.random.default_rng(seed).choice(len(self.x_train), size=min(n, len(self.x_train)), replace=False)
        return self.x_train[np.sort(idx)]


DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")  # built-in datasets: name -> make(size)


@DATASETS.register("digits")
def digits(size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1797 handwritten digits (bundled with the package, no download)."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    images = raw.images.astype(np.float32) / 16.0  # values are 0..16
    if size != images.shape[1]:
        images = zoom(images, (1, size / images.shape[1], size / images.shape[2]), order=1)
    images = (images - 0.5) / 0.5
    x = np.repeat(images[:, None, :, :], 3, axis=1).astype(np.float32)
    y = raw.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset("digits", np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_test), y_test, 10)


@DATASETS.register("synthetic")
def synthetic(size: int = 224, n_train: int = 32, n_test: int = 16, num_classes: int = 1000, seed: int = 0) -> Dataset:
    """Seeded random images for latency-only models: shapes are real, accuracy is meaningless."""
    rng = np.random.default_rng(seed)
    x_train = rng.standard_normal((n_train, 3, size, size), dtype=np.float32)
    x_test = rng.standard_normal((n_test, 3, size, size), dtype=np.float32)
    y_train = rng.integers(0, num_classes, n_train)
    y_test = rng.integers(0, num_classes, n_test)
    return Dataset("synthetic", x_train, y_train, x_test, y_test, num_classes, has_labels=False)


def from_npz(path: Path, size: int | None = None, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A user's ``.npz``: ``x_train, y_train, x_test, y_test`` or ``x, y`` (split here, stratified).

    Inputs are float32 NCHW, already normalised as the model expects; labels are class indices.
    """
    from sklearn.model_selection import train_test_split

    try:
        z = np.load(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz ({exc}); save it with numpy.savez(path, x=..., y=...)") from None
    keys = set(z.files)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        parts = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    elif {"x", "y"} <= keys:
        x, y = z["x"], z["y"]
        strat = y if np.bincount(y.astype(np.int64)).min() >= 2 else None
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=strat)
        parts = [x_tr, y_tr, x_te, y_te]
    else:
        raise ValueError(f"{path}: expected arrays x, y (or x_train, y_train, x_test, y_test), found {', '.join(sorted(keys)) or 'none'}")
    x_tr, y_tr, x_te, y_te = parts
    if x_tr.ndim != 4 or x_te.shape[1:] != x_tr.shape[1:]:
        raise ValueError(f"{path}: inputs must be NCHW images of one shape, got {x_tr.shape} and {x_te.shape}")
    if size is not None and x_tr.shape[-1] != size:
        raise ValueError(f"{path}: images are {x_tr.shape[-2]}x{x_tr.shape[-1]}, the model expects {size}x{size}; resize them or set input_size")
    classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(path.stem, np.ascontiguousarray(x_tr, np.float32), y_tr.astype(np.int64), np.ascontiguousarray(x_te, np.float32), y_te.astype(np.int64), classes)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def from_image_folder(root: Path, size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """An ImageFolder tree (``root/CLASS/*.png``): RGB, resized to ``size``, scaled to [-1, 1], split stratified."""
    from PIL import Image
    from sklearn.model_selection import train_test_split

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class folders; expected {root}/<class>/<image files>")
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
                xs.append(arr.transpose(2, 0, 1) * 2 - 1)
                ys.append(label)
    if len(set(ys)) < 2 or len(ys) < 5:
        raise ValueError(f"{root}: need images in at least two class folders, found {len(ys)} images in {len(set(ys))}")
    x, y = np.stack(xs).astype(np.float32), np.asarray(ys, np.int64)
    strat = y if np.bincount(y).min() >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=strat)
    return Dataset(root.name, np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te, len(classes))


def load(name: str, size: int | None = None) -> Dataset:
    """A built-in dataset by name, or a user's ``.npz`` file or ImageFolder directory by path."""
    path = Path(name)
    if name not in DATASETS and path.exists():
        return from_image_folder(path, size or 32) if path.is_dir() else from_npz(path, size)
    if name not in DATASETS:
        raise UnknownName(f"unknown dataset {name!r}; built-in datasets: {', '.join(DATASETS.names())}, or a path to an .npz or an image folder")
    make = DATASETS.get(name)
    return make(size) if size is not None else make()
