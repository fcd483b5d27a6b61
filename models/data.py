"""Datasets that work offline. Built in: scikit-learn's bundled handwritten digits.

Images are float32 NCHW. The 8x8 digits are upsampled (bilinear) to 32x32 and repeated on three
channels, the shape CIFAR-style networks expect. The split is stratified with a fixed seed, so every
machine and every run sees the same 1437 training and 360 evaluation images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

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


DATASETS = {"digits": digits}


def load(name: str) -> Dataset:
    """A built-in dataset by name; KeyError lists the known ones."""
    try:
        return DATASETS[name]()
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; built-in datasets: {', '.join(sorted(DATASETS))}") from None
