"""Separable Gaussian blur and Sobel edges in JAX, with replicate (edge) padding.

The same sampled, normalised Gaussian as `scipy.ndimage.gaussian_filter` (radius
round(truncate * sigma), mode='nearest'), written as a sum of shifted slices so that sigma
may be a traced value under jit (the radius is static: the kernel is evaluated on a fixed
support and its tail beyond the sigma-dependent radius is cut off).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

TRUNCATE = 4.0


def kernel_radius(max_sigma: float, truncate: float = TRUNCATE) -> int:
    """The static support radius of kernels with sigma up to `max_sigma` (scipy's rule)."""
    return int(math.floor(truncate * float(max_sigma) + 0.5))


def gaussian_kernel(sigma, radius: int, truncate: float = TRUNCATE):
    """Weights `[2 radius + 1]` of a sampled Gaussian normalised to sum 1; sigma 0 is a delta.

    Taps beyond round(truncate * sigma) are zero, as in scipy, so the kernel for a given
    sigma is the same whatever the static `radius` it is evaluated on.
    """
    sigma = jnp.asarray(sigma, jnp.float32)
    x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    safe = jnp.maximum(sigma, 1e-6)
    cut = jnp.floor(truncate * sigma + 0.5)
    w = jnp.where(jnp.abs(x) <= cut, jnp.exp(-0.5 * (x / safe) ** 2), 0.0)
    delta = (x == 0).astype(jnp.float32)
    return jnp.where(sigma > 0, w / jnp.sum(w), delta)


def blur_axis(x, axis: int, sigma, radius: int):
    """`x` convolved along `axis` with `gaussian_kernel(sigma, radius)`, replicate padding."""
    if radius == 0:
        return x
    axis = axis % x.ndim
    n = x.shape[axis]
    # One [n, n] matrix holds the kernel and the replicate padding (taps past a border land
    # on the edge sample), so the filter is a single matmul rather than 2r+1 shifted copies:
    # far cheaper to run, differentiate and compile when the kernel is wide.
    w = gaussian_kernel(sigma, radius)
    src = np.clip(np.arange(n)[:, None] + np.arange(-radius, radius + 1)[None, :], 0, n - 1)
    matrix = jnp.zeros((n, n), x.dtype).at[np.arange(n)[:, None], src].add(
        jnp.broadcast_to(w.astype(x.dtype), src.shape))
    # HIGHEST: accelerators would otherwise multiply in bfloat16 / TF32.
    out = jnp.tensordot(x, matrix, axes=[[axis], [1]], precision=jax.lax.Precision.HIGHEST)
    return jnp.moveaxis(out, -1, axis)


def blur_image(image, sigma, radius: int):
    """`image [..., H, W, C]` blurred by an isotropic Gaussian of `sigma` pixels."""
    return blur_axis(blur_axis(image, -3, sigma, radius), -2, sigma, radius)


def sobel_magnitude(image) -> np.ndarray:
    """Gradient magnitude `[..., H, W]` of `image [..., H, W, C]` (Sobel, summed over channels).

    sqrt(gx^2 + gy^2) with scipy.ndimage.sobel's kernels ([1, 2, 1] smoothing times a
    [-1, 0, 1] difference) and replicate padding; numpy, computed once per dataset.
    """
    x = np.asarray(image, np.float64)
    xp = np.pad(x, [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)], mode="edge")
    h, w = x.shape[-3], x.shape[-2]

    def shifted(dy, dx):
        return xp[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w, :]

    smooth = (1, 2, 1)
    gx = sum(s * (shifted(d, 1) - shifted(d, -1)) for d, s in zip((-1, 0, 1), smooth, strict=True))
    gy = sum(s * (shifted(1, d) - shifted(-1, d)) for d, s in zip((-1, 0, 1), smooth, strict=True))
    return np.sqrt(np.sum(gx**2 + gy**2, -1)).astype(np.float32)
