"""scripts/gradient_noise.py's signal-to-noise estimate against closed forms."""

import importlib.util
import pathlib

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "gradient_noise.py"


@pytest.fixture(scope="module")
def gradient_noise():
    spec = importlib.util.spec_from_file_location("gradient_noise", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_snr_of_gaussian_gradients_matches_the_closed_form(gradient_noise):
    # g = mu + N(0, diag(s^2)): SNR = |mu|^2 / sum(s^2).
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=200), rng.uniform(0.5, 3.0, 200)
    rows = mu + s * rng.normal(size=(4000, 200))
    truth = np.sum(mu**2) / np.sum(s**2)
    assert gradient_noise.signal_to_noise(rows) == pytest.approx(truth, rel=0.05)


def test_snr_is_unbiased_at_few_batches_and_grows_with_averaging(gradient_noise):
    rng = np.random.default_rng(1)
    mu, s = 0.1 * rng.normal(size=500), np.ones(500)
    truth = np.sum(mu**2) / np.sum(s**2)
    # Averaged over many draws of only 10 batches each, the estimate has no bias (the plain
    # |mean|^2 / tr Cov would add 1/10, ten times the truth here).
    draws = [gradient_noise.signal_to_noise(mu + s * rng.normal(size=(10, 500)))
             for _ in range(400)]
    assert np.mean(draws) == pytest.approx(truth, rel=0.1)
    # Each row the mean of 4 independent gradients: 4 times the ratio.
    rows = mu + s * rng.normal(size=(3000, 4, 500)).mean(axis=1)
    assert gradient_noise.signal_to_noise(rows) == pytest.approx(4 * truth, rel=0.1)


def test_snr_does_not_depend_on_the_loss_scale(gradient_noise):
    rows = np.random.default_rng(2).normal(0.3, 1.0, size=(50, 30))
    assert gradient_noise.signal_to_noise(7.5 * rows) == pytest.approx(
        gradient_noise.signal_to_noise(rows), rel=1e-9)
