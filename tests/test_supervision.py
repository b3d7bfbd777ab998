"""Blurred targets and edge maps against whole-image scipy filtering."""

import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from jaxnerf360 import supervision
from jaxnerf360.geometry import filters


def test_blurred_targets_are_pixels_of_the_blurred_image():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 20, 24, 3)).astype(np.float32)
    cam = rng.integers(0, 3, 50)
    rows, cols = rng.integers(0, 20, 50), rng.integers(0, 24, 50)
    rows[:3], cols[:3] = [0, 19, 5], [0, 23, 0]  # corners and borders
    pixels = np.stack([cols + 0.5, rows + 0.5], -1).astype(np.float32)
    sigma = 1.6
    got = supervision.blurred_targets(jnp.asarray(images), jnp.asarray(cam), jnp.asarray(pixels),
                                      sigma, filters.kernel_radius(2.0))
    blurred = ndimage.gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0),
                                      mode="nearest", truncate=filters.TRUNCATE)
    np.testing.assert_allclose(got, blurred[cam, rows, cols], atol=2e-6)
    sharp = supervision.blurred_targets(jnp.asarray(images), jnp.asarray(cam),
                                        jnp.asarray(pixels), 0.0, 3)
    np.testing.assert_array_equal(sharp, images[cam, rows, cols])
    np.testing.assert_array_equal(
        supervision.pixel_values(jnp.asarray(images), jnp.asarray(cam), jnp.asarray(pixels)),
        images[cam, rows, cols])


def test_edge_map_thresholds_the_sobel_magnitude_per_image():
    images = np.zeros((2, 16, 16, 3), np.float32)
    images[0, :, 8:] = 1.0  # one vertical edge
    images[1] = np.random.default_rng(1).uniform(size=(16, 16, 3))
    edges = supervision.edge_map(images, 1.25)
    mag = filters.sobel_magnitude(images)
    np.testing.assert_array_equal(edges[1], mag[1] > 1.25 * mag[1].mean())
    assert edges[0][:, 7:9].all() and not edges[0][:, :6].any() and not edges[0][:, 10:].any()
