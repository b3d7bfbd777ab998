"""What eval and render write: depth maps shown only where the opacity is meaningful."""

import numpy as np

from jaxnerf360 import outputs


def test_depth_shows_only_where_rays_hit_something():
    rng = np.random.default_rng(0)
    depth = np.full((20, 20), 3.0)
    depth[:, 10:] = 5.0  # two opaque planes
    acc = np.ones((20, 20))
    acc[:5] = rng.uniform(0.0, 0.3, (5, 20))  # rows that hit (almost) nothing
    depth[:5] = rng.uniform(0.01, 100.0, (5, 20))  # whose expected depth is noise
    image = outputs.depth_to_image(depth, acc)
    assert np.all(image[:5] == 0.0)  # no noise where nothing was hit
    # The grey range comes from the opaque pixels alone: near (3) white, far (5) black.
    np.testing.assert_allclose(image[5:, :10], 1.0)
    np.testing.assert_allclose(image[5:, 10:], 0.0)
    lo, hi = outputs.depth_range(depth, acc)
    np.testing.assert_allclose([lo, hi], [1 / 5, 1 / 3])
    # Without opacities every pixel counts, and the noise stretches the range.
    noisy_lo, noisy_hi = outputs.depth_range(depth)
    assert noisy_hi > 1.0 / 3 and noisy_lo < 1.0 / 5


def test_partly_opaque_pixels_fade_with_their_opacity():
    depth = np.array([[2.0, 4.0], [2.0, 4.0]])
    acc = np.array([[1.0, 1.0], [0.6, 0.4]])
    image = outputs.depth_to_image(depth, acc)
    np.testing.assert_allclose(image, [[1.0, 0.0], [0.6, 0.0]])
