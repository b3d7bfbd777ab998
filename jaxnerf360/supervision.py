"""Image-space supervision for joint pose optimisation: blurred targets and edge weights.

Early in training the photometric loss compares renders with Gaussian-blurred images, whose
blur shrinks to zero on a schedule (coarse-to-fine in 2D, to match the filtered field), and
pixels on image edges weigh more than the rest. Both are gathered per batch pixel inside the
train step from the views' images: nothing is re-blurred over the whole dataset. The settings
are `ImageBlur` and `EdgeWeights` (gin); `Supervision` gives the data term its target colours
and per-pixel weights, and `Config.spectral_control = False` switches both off.
"""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360 import schedules
from jaxnerf360.errors import UserError
from jaxnerf360.geometry import filters


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ImageBlur:
    """Train against Gaussian-blurred images.

    `schedule`: ((train_frac, sigma), ...) piecewise linear, sigma as a fraction of the image
    width, non-increasing; () is off. With `random_scale` each step draws a scale in [0, 1]
    for the sigma.
    """

    schedule: tuple = ()
    random_scale: bool = False

    def __post_init__(self):
        schedules.check_schedule(self.schedule, "ImageBlur.schedule")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EdgeWeights:
    """Edge-guided loss: until train_frac `until`, pixels whose Sobel magnitude exceeds
    `threshold_mult` times their image's mean weigh `edge_weight`, the rest `non_edge_weight`;
    only on every `every`-th step (Joint-TensoRF alternates: 2)."""

    until: float = 0.0
    threshold_mult: float = 1.25
    edge_weight: float = 1.5
    non_edge_weight: float = 0.5
    every: int = 1

    def __post_init__(self):
        for name in ("until", "threshold_mult", "edge_weight", "non_edge_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise UserError(f"EdgeWeights.{name}={value!r} must be a non-negative number")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every <= 0:
            raise UserError(f"EdgeWeights.every={self.every!r} must be a positive integer")


class Supervision:
    """The data term's target colours and pixel weights for a batch, inside the train step.

    `enabled` is the run's spectral-control switch; `disabled()` is the same supervision with
    both controls off (the step compiled once every schedule has ended).
    """

    def __init__(self, enabled: bool = True, blur: ImageBlur | None = None,
                 edges: EdgeWeights | None = None):
        self.enabled = enabled
        self.blur = ImageBlur() if blur is None else blur
        self.edges = EdgeWeights() if edges is None else edges

    def disabled(self) -> "Supervision":
        """The same settings with both controls off."""
        return Supervision(False, self.blur, self.edges)

    @property
    def needs_images(self) -> bool:
        """Whether the train step needs the training images (to blur them)."""
        return self.enabled and bool(self.blur.schedule)

    @property
    def needs_edges(self) -> bool:
        """Whether the train step needs edge maps of the training images."""
        return self.enabled and self.edges.until > 0

    def edge_maps(self, images) -> np.ndarray | None:
        """bool `[N, H, W]` edge maps of the training images, when needed."""
        return edge_map(images, self.edges.threshold_mult) if self.needs_edges else None

    def end_fraction(self) -> float:
        """The fraction of training from which neither control changes anything."""
        if not self.enabled:
            return 0.0
        return max(schedules.end_fraction(self.blur.schedule), max(self.edges.until, 0.0))

    def target(self, views, batch: dict, train_frac, key):
        """The batch colours `[..., 3]`, blurred by the image-blur schedule when it is on."""
        if not self.needs_images:
            return batch["rgb"]
        width = views.images.shape[2]
        sigma = schedules.schedule_value(self.blur.schedule, train_frac) * width
        if self.blur.random_scale:
            sigma = sigma * jax.random.uniform(key)
        radius = filters.kernel_radius(schedules.max_value(self.blur.schedule) * width)
        cam_idx = batch["rays"].cam_idx[..., 0]
        return jax.lax.cond(sigma > 0, lambda: blurred_targets(
            views.images, cam_idx, batch["pixels"], sigma, radius), lambda: batch["rgb"])

    def pixel_weights(self, views, batch: dict, step, train_frac):
        """Per-pixel weights `[...]` of the data term (None: uniform)."""
        if not self.needs_edges:
            return None
        edge = pixel_values(views.edges, batch["rays"].cam_idx[..., 0], batch["pixels"])
        active = (train_frac < self.edges.until) & (step % self.edges.every == 0)
        return jnp.where(active, jnp.where(edge, self.edges.edge_weight,
                                           self.edges.non_edge_weight), 1.0)


def edge_map(images, threshold_mult: float) -> np.ndarray:
    """bool `[N, H, W]`: Sobel magnitude above `threshold_mult` times its image's mean."""
    mag = filters.sobel_magnitude(np.asarray(images)[..., :3])
    return mag > threshold_mult * mag.mean(axis=(-2, -1), keepdims=True)


def blurred_targets(images, cam_idx, pixels, sigma, radius: int):
    """Colours `[..., 3]` of `images [N, H, W, 3]` blurred by a Gaussian of `sigma` pixels.

    Evaluated only at the batch pixels `pixels [..., 2]` (col, row; centres at +0.5) of images
    `cam_idx [...]`: the (2 radius + 1)^2 neighbours are gathered (replicate padding) and
    weighted, which equals blurring the whole image and reading those pixels.
    """
    lead = pixels.shape[:-1]
    pixels, cam_idx = pixels.reshape(-1, 2), cam_idx.reshape(-1)
    h, w = images.shape[1], images.shape[2]
    kernel = filters.gaussian_kernel(sigma, radius)
    offsets = jnp.arange(-radius, radius + 1)
    rows = jnp.clip(jnp.floor(pixels[:, 1]).astype(jnp.int32)[:, None] + offsets, 0, h - 1)
    cols = jnp.clip(jnp.floor(pixels[:, 0]).astype(jnp.int32)[:, None] + offsets, 0, w - 1)
    patch = images[cam_idx[:, None, None], rows[:, :, None], cols[:, None, :]]
    out = jnp.einsum("k,l,bklc->bc", kernel, kernel, patch)
    return out.reshape(lead + out.shape[-1:])


def pixel_values(maps, cam_idx, pixels):
    """Values `[B..., ...]` of per-pixel maps `[N, H, W, ...]` at `pixels [B..., 2]` of
    `cam_idx [B...]`."""
    rows = jnp.floor(pixels[..., 1]).astype(jnp.int32)
    cols = jnp.floor(pixels[..., 0]).astype(jnp.int32)
    return maps[cam_idx, rows, cols]
