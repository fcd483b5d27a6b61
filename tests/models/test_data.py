"""The built-in digits dataset (models/data.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.bench.contracts.errors import ConfigError
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


def _npz(tmp_path, **arrays):
    path = tmp_path / "user.npz"
    np.savez(path, **arrays)
    return path


X = np.random.default_rng(0).standard_normal((30, 3, 8, 8)).astype(np.float32)
Y = np.arange(30) % 3


@pytest.mark.parametrize("arrays, expected", [
    ({"x": X, "y": Y - 1}, r"y holds negative labels \(min -1\).*0\.\.K-1"),
    ({"x": X, "y": Y[:29]}, r"x has 30 images but y has 29 labels; give one label per image"),
    ({"x_train": X[:20], "y_train": Y[:19], "x_test": X[20:], "y_test": Y[20:]}, r"x_train has 20 images but y_train has 19 labels"),
    ({"x": X.transpose(0, 2, 3, 1), "y": Y}, r"x looks channels-last \(N, H, W, C\) with shape \(30, 8, 8, 3\).*x\.transpose\(0, 3, 1, 2\)"),
    ({"x": X, "y": Y + 0.5}, r"y holds non-integer labels \(e\.g\. 0\.5\)"),
    ({"x": X, "y": np.array(["cat", "dog", "owl"] * 10)}, r"y holds <U3 values; labels must be integer class indices.*return_inverse"),
    ({"x": X, "y": np.eye(3)[Y]}, r"y has shape \(30, 3\) \(one-hot\?\).*y\.argmax\(1\)"),
    ({"x": X[:, 0], "y": Y}, r"x must be NCHW images \(N, C, H, W\), got shape \(30, 8, 8\); add the channel axis"),
    ({"x": np.where(X > 2, np.nan, X), "y": Y}, r"x holds \d+ NaN/Inf values"),
])
def test_user_npz_problems_are_one_line_naming_the_file_and_the_fix(tmp_path, arrays, expected):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(data.DatasetError, match=expected) as err:
        data.load(str(path), 8)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert isinstance(err.value, ConfigError)  # the CLI exits 2 with this line, no traceback


def test_integral_float_labels_are_accepted_as_class_indices(tmp_path):
    d = data.load(str(_npz(tmp_path, x=X, y=Y.astype(np.float32))), 8)
    assert d.y_train.dtype == np.int64 and d.num_classes == 3 and d.source.endswith("user.npz")


def test_an_unreadable_image_in_a_folder_names_the_file(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(data.DatasetError, match=r"broken\.png: not a readable image"):
        data.load(str(tmp_path), 8)
