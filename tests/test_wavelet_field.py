"""Straight-through mask and quantisation of the masked wavelet planes."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360.fields.wavelet import binary_mask, mask_fraction, quantize_ste


def test_binary_mask_forward_is_hard_and_gradient_is_the_sigmoids():
    m = jnp.array([-3.0, -1e-3, 0.0, 1e-3, 2.5])
    np.testing.assert_array_equal(binary_mask(m), [0, 0, 1, 1, 1])
    w = jnp.array([0.5, -1.0, 2.0, 0.3, -0.7])
    grad = jax.grad(lambda m: jnp.sum(w * binary_mask(m)))(m)
    s = 1 / (1 + np.exp(-np.asarray(m)))
    np.testing.assert_allclose(grad, np.asarray(w) * s * (1 - s), rtol=1e-6)


def test_quantize_ste_values_lie_on_the_grid_and_gradient_is_identity():
    x = jax.random.normal(jax.random.PRNGKey(0), (1000,)) * 3.0
    q = np.asarray(quantize_ste(x, 8), np.float64)
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / 255
    assert np.max(np.abs(q - np.asarray(x))) <= scale / 2 + 1e-5
    codes = (q - lo) / scale
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert len(np.unique(np.round(codes))) <= 256
    g = jax.grad(lambda x: jnp.sum(jnp.sin(quantize_ste(x))))(x)
    np.testing.assert_allclose(g, np.cos(q), rtol=1e-4, atol=1e-5)
    const = quantize_ste(jnp.full((4,), 2.0))
    np.testing.assert_array_equal(const, 2.0)


def test_mask_fraction_is_the_mean_sigmoid():
    a, b = jnp.zeros((3, 4)), jnp.full((5,), 100.0)
    np.testing.assert_allclose(mask_fraction([a, b]), (12 * 0.5 + 5) / 17, rtol=1e-6)
