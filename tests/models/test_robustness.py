"""Corruptions and FGSM (models/robustness.py): seeded and deterministic, stronger with severity, in the
dataset's normalised space, and FGSM against the session's trained small_cnn."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.models import robustness as rob
from edgebench.models.data import Dataset


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    """Digits-like images in [-1, 1]: a dark background with a bright stroke, and some colour."""
    rng = np.random.default_rng(3)
    p = np.zeros((6, 3, 32, 32))
    p[:, :, 8:24, 14:18] = 0.9
    p[:, 0] *= rng.uniform(0.5, 1.0, (6, 1, 1))  # colour: the channels differ
    p += rng.uniform(0, 0.05, p.shape)
    return ((p - 0.5) / 0.5).astype(np.float32)


@pytest.mark.parametrize("name", rob.CORRUPTIONS)
def test_each_corruption_keeps_shape_dtype_and_the_normalised_range(batch, name):
    for severity in rob.SEVERITIES:
        out = rob.corrupt(batch, name, severity)
        assert out.shape == batch.shape and out.dtype == np.float32
        assert out.min() >= -1.0 and out.max() <= 1.0
        assert not np.array_equal(out, batch)


@pytest.mark.parametrize("name", rob.CORRUPTIONS)
def test_corruptions_are_deterministic_under_their_seed(batch, name):
    a, b = rob.corrupt(batch, name, 2, seed=7), rob.corrupt(batch, name, 2, seed=7)
    np.testing.assert_array_equal(a, b)


def test_noise_changes_with_the_seed_and_not_with_what_ran_before(batch):
    first = rob.corrupt(batch, "gaussian_noise", 1, seed=0)
    rob.corrupt(batch, "gaussian_noise", 3, seed=0)  # another draw in between changes nothing: each call seeds its own generator
    np.testing.assert_array_equal(rob.corrupt(batch, "gaussian_noise", 1, seed=0), first)
    assert not np.array_equal(rob.corrupt(batch, "gaussian_noise", 1, seed=1), first)


@pytest.mark.parametrize("name", rob.CORRUPTIONS)
def test_severities_are_monotone_in_strength(batch, name):
    dist = [float(np.abs(rob.corrupt(batch, name, s) - batch).mean()) for s in rob.SEVERITIES]
    assert dist == sorted(dist) and dist[0] < dist[-1], dist


def test_brightness_shifts_hsv_value_and_keeps_hue():
    p = np.array([0.2, 0.4, 0.1])[None, :, None, None] * np.ones((1, 3, 2, 2))
    x = ((p - 0.5) / 0.5).astype(np.float32)
    out = rob.to_pixels(rob.corrupt(x, "brightness", 3))  # c = 0.30
    np.testing.assert_allclose(out.max(axis=1), 0.4 + 0.30, atol=1e-6)  # V = max(R, G, B) moves by c
    np.testing.assert_allclose(out[0, :, 0, 0] / out[0, :, 0, 0].max(), p[0, :, 0, 0] / 0.4, atol=1e-6)  # hue and saturation kept
    black = rob.to_pixels(rob.corrupt(np.full((1, 3, 2, 2), -1.0, np.float32), "brightness", 1))
    np.testing.assert_allclose(black, 0.05, atol=1e-6)  # no hue: grey c


def test_contrast_keeps_each_channels_mean(batch):
    out = rob.to_pixels(rob.corrupt(batch, "contrast", 3))
    np.testing.assert_allclose(out.mean(axis=(2, 3)), rob.to_pixels(batch).mean(axis=(2, 3)), atol=1e-5)


def test_unknown_corruption_or_severity_is_refused(batch):
    with pytest.raises(ValueError, match="unknown corruption"):
        rob.corrupt(batch, "fog", 1)
    with pytest.raises(ValueError, match="severity 4"):
        rob.corrupt(batch, "contrast", 4)


def test_in_pixel_range_reads_the_normalised_range(batch):
    assert rob.in_pixel_range(batch)
    assert not rob.in_pixel_range(batch * 3)


# -- FGSM and the evaluation on a trained model ---------------------------------------------------------
@pytest.fixture(scope="module")
def trained(built):
    """The session's trained small_cnn and its evaluation split."""
    import torch

    torch.set_num_threads(1)
    data = built.eval_data()
    return built.module(), data["inputs"], data["labels"]


def test_fgsm_with_eps_0_changes_nothing(trained):
    module, x, y = trained
    np.testing.assert_array_equal(rob.fgsm(module, x[:64], y[:64], 0.0), x[:64])


def test_fgsm_stays_within_eps_in_pixels_and_lowers_accuracy(trained):
    module, x, y = trained
    eps = 8 / 255
    adv = rob.fgsm(module, x, y, eps)
    assert adv.dtype == np.float32 and adv.shape == x.shape
    assert np.abs(rob.to_pixels(adv) - rob.to_pixels(x)).max() <= eps + 1e-5
    clean, attacked = rob.top1(module, x, y), rob.top1(module, adv, y)
    assert clean > 0.9
    assert attacked < clean - 0.05, (clean, attacked)


def test_evaluate_robustness_returns_every_corruption_severity_and_eps(trained):
    module, x, y = trained
    data = Dataset("digits", x[:4], y[:4], x, y, 10)
    cfg = rob.RobustnessConfig(("gaussian_noise", "contrast"), (1, 3), (0.0, 8 / 255), seed=0)
    result = rob.evaluate_robustness(module, data, cfg)
    assert result.n_images == len(x)
    assert [(c.corruption, c.severity) for c in result.corrupted] == [("gaussian_noise", 1), ("gaussian_noise", 3), ("contrast", 1), ("contrast", 3)]
    assert result.fgsm[0].top1 == pytest.approx(result.clean_top1)  # eps 0: the clean accuracy
    assert result.fgsm[1].top1 < result.clean_top1
    assert result.mean_corrupted_top1 == pytest.approx(np.mean([c.top1 for c in result.corrupted]))
    again = rob.RobustnessResult.from_dict(result.to_dict())
    assert again == result
