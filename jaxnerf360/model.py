"""The model: sampler + field + volume renderer."""

from collections.abc import Callable

import flax.linen as nn
import gin
import jax.numpy as jnp

from jaxnerf360.data.scene import BOUNDED
from jaxnerf360.fields.mlp import MLPField
from jaxnerf360.geometry import render
from jaxnerf360.samplers import ProposalSampler, field_warp, rays_to_gaussians


@gin.configurable
class Model(nn.Module):
    """Renders rays: the sampler picks intervals, the field colours them, alpha compositing."""

    scene_kind: str = BOUNDED  # set from the data, not from gin
    sampler: Callable = ProposalSampler
    field: Callable = MLPField
    opaque_background: bool = False

    @nn.compact
    def __call__(self, rng, rays, train_frac, bg_rgbs, compute_extras: bool = False):
        """Renders `rays` ([...] leading shape) on background `bg_rgbs [..., 3]`.

        Returns a dict: `rgb [..., 3]`, `acc [...]`, `sdist`/`weights` of the final level,
        `prop_levels` (for the interlevel loss) and, with compute_extras, `distance_mean`
        and `distance_median` `[...]`.
        """
        warp = field_warp(self.scene_kind)
        sampler = self.sampler(name="sampler")
        sdist, tdist, prop_levels = sampler(rng, rays, warp, train_frac)
        means, covs = rays_to_gaussians(rays, tdist, sampler.ray_shape, warp)
        out = self.field(name="field")(means, covs, rays.viewdirs)
        weights = render.compute_alpha_weights(
            out["density"], tdist, rays.directions, opaque_background=self.opaque_background
        )[0]
        rendered = render.volumetric_rendering(
            out["rgb"], weights, tdist, bg_rgbs, rays.far, compute_extras=compute_extras
        )
        rendered = {k: v for k, v in rendered.items() if k != "weights"}
        rendered.update(sdist=sdist, weights=weights, prop_levels=prop_levels)
        return rendered


def background_colors(kind: str, shape, rng=None):
    """Background colours `[*shape, 3]`: 'white', 'black', or uniform 'random' (needs rng)."""
    import jax

    if kind == "random" and rng is not None:
        return jax.random.uniform(rng, tuple(shape) + (3,))
    value = 0.0 if kind == "black" else 1.0
    return jnp.full(tuple(shape) + (3,), value)
