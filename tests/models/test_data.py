"""The built-in digits dataset (models/data.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.models import data


@pytest.fixture(scope="module")
def digits_pair():
    return data.load("digits"), data.load("digits")


def test_split_sizes_and_shapes(digits_pair):
    d, _ = digits_pair
    assert (len(d.x_train), len(d.y_train), len(d.x_test), len(d.y_test)) == (1437, 1437, 360, 360)
    assert d.x_train.shape == (1437, 3, 32, 32) and d.x_test.shape == (360, 3, 32, 32)
    assert d.x_train.dtype == np.float32 and d.x_test.dtype == np.float32
    assert d.x_test.flags["C_CONTIGUOUS"]
    assert d.input_shape == (3, 32, 32)
    assert d.num_classes == 10
    # the three channels repeat one grey image, scaled to [-1, 1]
    assert np.array_equal(d.x_test[:, 0], d.x_test[:, 2])
    assert d.x_train.min() >= -1.0 - 1e-6 and d.x_train.max() <= 1.0 + 1e-6


def test_deterministic_content_hash(digits_pair):
    a, b = digits_pair
    assert a.content_hash() == b.content_hash()
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    # the hash follows the content: one changed pixel changes it
    a.x_test = a.x_test.copy()
    a.x_test[0, 0, 0, 0] += 1.0
    assert a.content_hash() != b.content_hash()


def test_other_seed_is_another_split():
    other = data.digits(seed=1)
    assert other.content_hash() != data.load("digits").content_hash()
    assert len(other.x_test) == 360


def test_stratified(digits_pair):
    d, _ = digits_pair
    train_counts = np.bincount(d.y_train, minlength=10)
    test_counts = np.bincount(d.y_test, minlength=10)
    assert (test_counts > 0).all()
    # every class keeps (about) its 20% share in the evaluation split
    share = test_counts / (train_counts + test_counts)
    assert np.all(np.abs(share - 0.2) < 0.02)


def test_train_and_test_do_not_overlap(digits_pair):
    d, _ = digits_pair
    train = {x.tobytes() for x in d.x_train[:, 0]}
    overlap = sum(x.tobytes() in train for x in d.x_test[:, 0])
    # digits has a few duplicate images; a leak would put hundreds in both splits
    assert overlap < 10


def test_calibration_subset_is_fixed(digits_pair):
    d, _ = digits_pair
    a, b = d.calibration_subset(16), d.calibration_subset(16)
    assert a.shape == (16, 3, 32, 32) and np.array_equal(a, b)


def test_unknown_dataset_lists_known():
    with pytest.raises(KeyError, match="digits"):
        data.load("imagenet")
