"""Gaussian blur and Sobel edges against scipy.ndimage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxnerf360.geometry import filters


@pytest.mark.parametrize("sigma", [0.3, 0.8, 1.0, 2.5])
def test_blur_matches_scipy_gaussian_filter(sigma):
    img = np.random.default_rng(0).uniform(size=(23, 31, 3)).astype(np.float32)
    want = ndimage.gaussian_filter(img.astype(np.float64), (sigma, sigma, 0), mode="nearest",
                                   truncate=filters.TRUNCATE)
    radius = filters.kernel_radius(3.0)  # a larger static support than sigma needs
    got = filters.blur_image(jnp.asarray(img), sigma, radius)
    np.testing.assert_allclose(got, want, atol=2e-6)
    jitted = jax.jit(lambda s: filters.blur_image(jnp.asarray(img), s, radius))(sigma)
    np.testing.assert_allclose(jitted, want, atol=2e-6)


def test_zero_width_kernel_is_the_identity():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 9, 7)), jnp.float32)
    for axis in range(3):
        np.testing.assert_array_equal(filters.blur_axis(x, axis, 0.0, 4), x)
    np.testing.assert_array_equal(filters.gaussian_kernel(0.0, 3), [0, 0, 0, 1, 0, 0, 0])


def test_blur_axis_matches_scipy_along_one_axis():
    x = np.random.default_rng(2).normal(size=(4, 40, 6)).astype(np.float32)
    want = ndimage.gaussian_filter1d(x.astype(np.float64), 1.7, axis=1, mode="nearest",
                                     truncate=filters.TRUNCATE)
    got = filters.blur_axis(jnp.asarray(x), 1, 1.7, filters.kernel_radius(1.7))
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_sobel_magnitude_matches_scipy():
    img = np.random.default_rng(3).uniform(size=(2, 17, 19, 3))
    got = filters.sobel_magnitude(img)
    # scipy's sobel smooths along every other axis (batch and channel too): filter each image
    # and channel on its own.
    gx = np.stack([[ndimage.sobel(i[..., c], axis=1, mode="nearest") for c in range(3)]
                   for i in img]).transpose(0, 2, 3, 1)
    gy = np.stack([[ndimage.sobel(i[..., c], axis=0, mode="nearest") for c in range(3)]
                   for i in img]).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, np.sqrt(np.sum(gx**2 + gy**2, -1)), rtol=1e-5, atol=1e-6)
