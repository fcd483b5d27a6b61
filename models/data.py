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

from edgebench.bench.contracts.errors import ConfigError
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
    source: str = ""  # the user's file or folder it was read from ("" for a built-in dataset), for messages

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

    def check_outputs(self, what: str, outputs: int, strict: bool = False, fix: str | None = None) -> None:
        """Refuse, before anything is measured, a model (``what``: its file or name) with fewer outputs
        than this dataset has classes (labels it can never predict) and, when ``strict`` (a model not
        trained here: a given file, or weights given without training), one with more (its outputs mean
        classes this dataset does not have). ``fix`` replaces the advice (a factory model: num_classes)."""
        k = self.num_classes
        if not self.has_labels or outputs == k or (outputs > k and not strict):
            return
        where = f"{self.source or self.name} has {k} classes (labels 0..{k - 1})"
        if outputs < k:
            advice = fix or f"score it on a dataset with labels 0..{outputs - 1}, or give a model with {k} outputs"
            raise ClassMismatch(f"{what}: the model has {outputs} outputs but {where}; {advice}")
        advice = fix or (f"use the dataset it was trained for (labels 0..{outputs - 1}), `dataset: synthetic` for latency only, "
                         f"or a model with {k} outputs")
        raise ClassMismatch(f"{what}: the model has {outputs} outputs but {where}, so its top-1 would compare unrelated label sets; {advice}")

    def calibration_subset(self, n: int = 128, seed: int = 0) -> np.ndarray:
        """A fixed subset of the training split for quantisation calibration."""
        idx = np.random.default_rng(seed).choice(len(self.x_train), size=min(n, len(self.x_train)), replace=False)
        return self.x_train[np.sort(idx)]


class ClassMismatch(ConfigError, ValueError):
    """A model's outputs do not match the dataset's classes: no accuracy it got would mean anything."""


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


class DatasetError(ConfigError, ValueError):
    """A user's dataset file that cannot be used as it is: one line naming the file and the fix."""


def from_npz(path: Path, size: int | None = None, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A user's ``.npz``: ``x_train, y_train, x_test, y_test`` or ``x, y`` (split here, stratified).

    Inputs are float32 NCHW, already normalised as the model expects; labels are class indices
    ``0..K-1``. Everything a split or a model would trip over later (negative or fractional labels,
    one label per image, channels-last arrays) is refused here with the file and the fix.
    """
    from sklearn.model_selection import train_test_split

    try:
        z = np.load(path)
        keys = set(z.files)
    except (OSError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a readable .npz ({exc}); save it with numpy.savez(path, x=..., y=...)") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        x_tr, x_te = (_images(path, k, z[k]) for k in ("x_train", "x_test"))
        y_tr, y_te = _labels(path, "y_train", z["y_train"], len(x_tr), "x_train"), _labels(path, "y_test", z["y_test"], len(x_te), "x_test")
    elif {"x", "y"} <= keys:
        x = _images(path, "x", z["x"])
        y = _labels(path, "y", z["y"], len(x), "x")
        strat = y if np.bincount(y).min() >= 2 else None
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=strat)
    else:
        raise DatasetError(f"{path}: expected arrays x, y (or x_train, y_train, x_test, y_test), found {', '.join(sorted(keys)) or 'none'}")
    if x_te.shape[1:] != x_tr.shape[1:]:
        raise DatasetError(f"{path}: inputs must be NCHW images of one shape, got {x_tr.shape} and {x_te.shape}")
    if size is not None and x_tr.shape[-1] != size:
        raise DatasetError(f"{path}: images are {x_tr.shape[-2]}x{x_tr.shape[-1]}, the model expects {size}x{size}; resize them or set input_size")
    classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(path.stem, np.ascontiguousarray(x_tr, np.float32), y_tr, np.ascontiguousarray(x_te, np.float32), y_te, classes, source=str(path))


CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: what a channel axis of an image holds


def _images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """``x`` as float32 NCHW, or a DatasetError naming the file, the array and the fix."""
    if x.ndim != 4:
        fix = f"add the channel axis: {key}[:, None]" if x.ndim == 3 else "save images as an (N, C, H, W) array"
        raise DatasetError(f"{path}: {key} must be NCHW images (N, C, H, W), got shape {x.shape}; {fix}")
    if x.shape[1] not in CHANNELS and x.shape[-1] in CHANNELS:
        # A channels-last array (TensorFlow/Keras, PIL) is refused rather than transposed: guessing the
        # layout of a user's data silently would hide a wrong guess behind a plausible accuracy.
        raise DatasetError(f"{path}: {key} looks channels-last (N, H, W, C) with shape {x.shape}; edgebench expects NCHW: "
                           f"save {key}.transpose(0, 3, 1, 2)")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DatasetError(f"{path}: {key} holds {x.dtype} values; save the images as float32")
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DatasetError(f"{path}: {key} holds {bad} NaN/Inf values; replace them before benchmarking (every accuracy would be invalid)")
    return x.astype(np.float32, copy=False)


def _labels(path: Path, key: str, y: np.ndarray, n_images: int, images_key: str) -> np.ndarray:
    """``y`` as int64 class indices 0..K-1, one per image, or a DatasetError naming the file and the fix."""
    if y.ndim == 2 and y.shape[0] == n_images and y.shape[1] > 1:
        raise DatasetError(f"{path}: {key} has shape {y.shape} (one-hot?); labels must be class indices: save {key}.argmax(1)")
    if y.ndim != 1:
        raise DatasetError(f"{path}: {key} must be a 1-D array of class indices, got shape {y.shape}")
    if len(y) != n_images:
        raise DatasetError(f"{path}: {images_key} has {n_images} images but {key} has {len(y)} labels; give one label per image")
    if len(y) == 0:
        raise DatasetError(f"{path}: {key} is empty; give at least one labelled image per split")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise DatasetError(f"{path}: {key} holds {y.dtype} values; labels must be integer class indices 0..K-1 "
                           "(map class names to numbers, e.g. numpy.unique(names, return_inverse=True)[1])")
    if not np.issubdtype(y.dtype, np.integer):
        frac = y[~np.isfinite(y) | (y != np.round(y))] if np.issubdtype(y.dtype, np.floating) else y[:0]
        if len(frac):
            raise DatasetError(f"{path}: {key} holds non-integer labels (e.g. {frac[0].item()}); labels must be integer class indices 0..K-1")
    labels = y.astype(np.int64)
    if labels.min() < 0:
        raise DatasetError(f"{path}: {key} holds negative labels (min {labels.min()}); labels must be class indices 0..K-1: "
                           f"shift or remap them (e.g. {key} - {key}.min())")
    return labels


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def from_image_folder(root: Path, size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """An ImageFolder tree (``root/CLASS/*.png``): RGB, resized to ``size``, scaled to [-1, 1], split stratified."""
    from PIL import Image
    from sklearn.model_selection import train_test_split

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DatasetError(f"{root}: no class folders; expected {root}/<class>/<image files>")
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    with Image.open(f) as im:
                        arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
                except (OSError, ValueError) as exc:
                    raise DatasetError(f"{f}: not a readable image ({type(exc).__name__}); re-save it or remove it from {root}") from None
                xs.append(arr.transpose(2, 0, 1) * 2 - 1)
                ys.append(label)
    if len(set(ys)) < 2 or len(ys) < 5:
        raise DatasetError(f"{root}: need images in at least two class folders, found {len(ys)} images in {len(set(ys))}")
    x, y = np.stack(xs).astype(np.float32), np.asarray(ys, np.int64)
    strat = y if np.bincount(y).min() >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=strat)
    return Dataset(root.name, np.ascontiguousarray(x_tr), y_tr, np.ascontiguousarray(x_te), y_te, len(classes), source=str(root))


def load(name: str, size: int | None = None) -> Dataset:
    """A built-in dataset by name, or a user's ``.npz`` file or ImageFolder directory by path."""
    path = Path(name)
    if name not in DATASETS and path.exists():
        return from_image_folder(path, size or 32) if path.is_dir() else from_npz(path, size)
    if name not in DATASETS:
        raise UnknownName(f"unknown dataset {name!r}; built-in datasets: {', '.join(DATASETS.names())}, or a path to an .npz or an image folder")
    make = DATASETS.get(name)
    return make(size) if size is not None else make()
