"""A misalignment benchmark: training images moved by known small shifts, rotations and warps.

`Misalign` (gin) perturbs the training split as it loads, image by image, the way slightly
wrong SfM poses and a scene that moves a little would: the content of image i is shifted by
`(dx_i, dy_i)` pixels, rotated by `theta_i` about the image centre and, optionally, bent by a
smooth local warp, while the cameras stay as they were. The test split is never touched, so
test PSNR measures how much of the clean scene a method recovers. Each image's perturbation
is drawn from `seed` (uniform within the bounds), so a run is reproducible.
"""

import dataclasses

import gin
import numpy as np

from jaxnerf360.errors import UserError


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Misalign:
    """Bounds of the per-image perturbation of the training images (0: none)."""

    shift_pixels: float = 0.0  # |dx|, |dy| at most this many pixels (at the loaded resolution)
    rotation_degrees: float = 0.0  # |theta| at most this
    warp_pixels: float = 0.0  # amplitude of a smooth local displacement (one sine period)
    seed: int = 0

    def __post_init__(self):
        for name in ("shift_pixels", "rotation_degrees", "warp_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise UserError(f"Misalign.{name}={value!r} must be a non-negative number")

    @property
    def enabled(self) -> bool:
        """Whether anything is perturbed."""
        return bool(self.shift_pixels or self.rotation_degrees or self.warp_pixels)

    def draws(self, count: int) -> np.ndarray:
        """`[count, 7]`: (dx, dy, theta in radians, warp amplitude x, y, phase x, y) per image."""
        rng = np.random.default_rng(self.seed)
        shift = rng.uniform(-1, 1, (count, 2)) * self.shift_pixels
        theta = np.deg2rad(rng.uniform(-1, 1, (count, 1)) * self.rotation_degrees)
        amp = rng.uniform(-1, 1, (count, 2)) * self.warp_pixels
        phase = rng.uniform(0, 2 * np.pi, (count, 2))
        return np.concatenate([shift, theta, amp, phase], -1)


def source_coordinates(draw, height: int, width: int) -> tuple:
    """(x, y) `[H, W]` in the clean image that each pixel centre of the perturbed image shows.

    The perturbed image at pixel centre p shows the clean image at
    R(-theta) (p - c - t) + c - w(p), with t the shift, c the centre and w the warp.
    """
    dx, dy, theta, ax, ay, px, py = draw
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    cx, cy = width / 2, height / 2
    ux, uy = xs - cx - dx, ys - cy - dy
    cos, sin = np.cos(theta), np.sin(theta)
    sx = cos * ux + sin * uy + cx
    sy = -sin * ux + cos * uy + cy
    sx = sx - ax * np.sin(2 * np.pi * ys / height + px)
    sy = sy - ay * np.sin(2 * np.pi * xs / width + py)
    return sx, sy


def bilinear(image, x, y):
    """`image [H, W, ...]` sampled at pixel coordinates `x, y [H', W']` (centres at +0.5),
    edges clamped."""
    h, w = image.shape[:2]
    fx, fy = np.clip(x - 0.5, 0, w - 1), np.clip(y - 0.5, 0, h - 1)
    x0 = np.clip(np.floor(fx).astype(np.int64), 0, max(w - 2, 0))
    y0 = np.clip(np.floor(fy).astype(np.int64), 0, max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    wx, wy = fx - x0, fy - y0
    extra = (slice(None),) * 2 + (None,) * (image.ndim - 2)
    wx, wy = wx[extra], wy[extra]
    top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
    bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(image.dtype)


def inverse_map(draw, height: int, width: int) -> np.ndarray:
    """`[3, 3]` the map g of absolute pixel coordinates (x, y) that undoes `draw`'s shift and
    turn (its warp is not affine, so not included): perturbed(g(p)) = clean(p), that is
    g(p) = R(theta) (p - c) + c + t, the inverse of `source_coordinates`."""
    dx, dy, theta = draw[:3]
    cos, sin = np.cos(theta), np.sin(theta)
    cx, cy = width / 2, height / 2
    return np.array([[cos, -sin, cx - cos * cx + sin * cy + dx],
                     [sin, cos, cy - sin * cx - cos * cy + dy], [0, 0, 1]])


def perturb(scene, misalign: Misalign | None = None):
    """`scene` with every image (and alpha) moved by its drawn perturbation; unchanged when
    `misalign` (default: the gin-configured one) perturbs nothing."""
    misalign = Misalign() if misalign is None else misalign
    if not misalign.enabled:
        return scene
    draws = misalign.draws(scene.num_images)
    images, alphas = [], []
    for i, draw in enumerate(draws):
        x, y = source_coordinates(draw, scene.height, scene.width)
        images.append(bilinear(scene.images[i], x, y))
        if scene.alphas is not None:
            alphas.append(bilinear(scene.alphas[i], x, y))
    return dataclasses.replace(scene, images=np.stack(images),
                               alphas=np.stack(alphas) if alphas else None)
