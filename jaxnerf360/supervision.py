"""Image-space supervision for joint pose optimisation: blurred targets and edge weights.

Early in training the photometric loss compares renders with Gaussian-blurred images, whose
blur shrinks to zero on a schedule (coarse-to-fine in 2D, to match the filtered field), and
pixels on image edges weigh more than the rest. Both are gathered per batch pixel inside the
train step from the views' images: nothing is re-blurred over the whole dataset.
"""

import jax.numpy as jnp
import numpy as np

from jaxnerf360.geometry import filters


def edge_map(images, threshold_mult: float) -> np.ndarray:
    """bool `[N, H, W]`: Sobel magnitude above `threshold_mult` times its image's mean."""
    mag = filters.sobel_magnitude(np.asarray(images)[..., :3])
    return mag > threshold_mult * mag.mean(axis=(-2, -1), keepdims=True)


def blurred_targets(images, cam_idx, pixels, sigma, radius: int):
    """Colours `[B, 3]` of `images [N, H, W, 3]` blurred by a Gaussian of `sigma` pixels.

    Evaluated only at the batch pixels `pixels [B, 2]` (col, row; centres at +0.5) of images
    `cam_idx [B]`: the (2 radius + 1)^2 neighbours are gathered (replicate padding) and
    weighted, which equals blurring the whole image and reading those pixels.
    """
    h, w = images.shape[1], images.shape[2]
    kernel = filters.gaussian_kernel(sigma, radius)
    offsets = jnp.arange(-radius, radius + 1)
    rows = jnp.clip(jnp.floor(pixels[:, 1]).astype(jnp.int32)[:, None] + offsets, 0, h - 1)
    cols = jnp.clip(jnp.floor(pixels[:, 0]).astype(jnp.int32)[:, None] + offsets, 0, w - 1)
    patch = images[cam_idx[:, None, None], rows[:, :, None], cols[:, None, :]]
    return jnp.einsum("k,l,bklc->bc", kernel, kernel, patch)


def pixel_values(maps, cam_idx, pixels):
    """Values `[B, ...]` of per-pixel maps `[N, H, W, ...]` at `pixels [B, 2]` of `cam_idx [B]`."""
    rows = jnp.floor(pixels[:, 1]).astype(jnp.int32)
    cols = jnp.floor(pixels[:, 0]).astype(jnp.int32)
    return maps[cam_idx, rows, cols]
