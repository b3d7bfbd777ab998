"""The model: sampler + field + volume renderer."""

from collections.abc import Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from jaxnerf360.data.scene import BOUNDED
from jaxnerf360.fields.mlp import MLPField
from jaxnerf360.geometry import render
from jaxnerf360.geometry.occupancy import compact, occupancy_step_size, scatter
from jaxnerf360.samplers import ProposalSampler, field_warp, rays_to_gaussians


@gin.configurable
class Model(nn.Module):
    """Renders rays: the sampler picks intervals, the field colours them, alpha compositing."""

    scene_kind: str = BOUNDED  # set from the data, not from gin
    sampler: Callable = ProposalSampler
    field: Callable = MLPField
    opaque_background: bool = False

    @nn.compact
    def __call__(self, rng, rays, train_frac, bg_rgbs, compute_extras: bool = False,
                 occupancy=None, capacity: int | None = None, spectral_control: bool = True):
        """Renders `rays` ([...] leading shape) on background `bg_rgbs [..., 3]`.

        `occupancy` is an occupancy sampler's grid; with it, the field is evaluated only at
        occupied samples, gathered into a buffer of static size `capacity` (None: evaluate
        every sample). Returns a dict: `rgb [..., 3]`, `acc [...]`, `sdist`/`weights` of the
        final level, `prop_levels` (for the interlevel loss), `overflow` (occupied samples
        that did not fit the buffer) and, with compute_extras, `distance_mean` and
        `distance_median` `[...]`.
        """
        warp = field_warp(self.scene_kind)
        sampler = self.sampler(name="sampler")
        field = self.field(name="field")
        sdist, tdist, prop_levels, mask = sampler(
            rng, rays, warp, train_frac, occupancy=occupancy,
            step_size=self._step_size(sampler, field), scene_kind=self.scene_kind)
        # Training progress for the fields' schedules (spectral control, coarse-to-fine);
        # rendering (no rng) sees the finished field.
        progress = None if rng is None else {"train_frac": train_frac, "spectral":
                                             spectral_control, "rng": jax.random.fold_in(rng, 7)}
        if mask is None:
            means, covs = rays_to_gaussians(rays, tdist, sampler.ray_shape, warp)
            out = field(means, covs, rays.viewdirs, progress=progress)
            overflow = jnp.zeros((), jnp.int32)
        else:
            out, overflow = _masked_field(field, rays, tdist, mask, capacity,
                                          sampler.ray_shape, warp, progress)
        weights = render.compute_alpha_weights(
            out["density"], tdist, rays.directions, opaque_background=self.opaque_background
        )[0]
        rendered = render.volumetric_rendering(
            out["rgb"], weights, tdist, bg_rgbs, rays.far, compute_extras=compute_extras
        )
        rendered = {k: v for k, v in rendered.items() if k != "weights"}
        rendered.update(sdist=sdist, weights=weights, prop_levels=prop_levels,
                        overflow=overflow)
        return rendered

    def _step_size(self, sampler, field):
        return self.step_size_for(sampler, field, self.variables.get("params", {}).get("field"))

    @staticmethod
    def step_size_for(sampler, field, field_params):
        """A grid sampler's step: `step_ratio` of the field grid's current voxel, else None.

        The resolution is read off the parameters' shapes (static under jit), so it follows
        the upsampling schedule; fields without a grid leave the step to the sampler.
        """
        if not hasattr(sampler, "step_ratio") or not hasattr(field, "resolution"):
            return None
        from jaxnerf360.fields.vm import grid_resolution

        params = field_params or {}
        res = grid_resolution(params) if "density_line_0" in params else field.resolution
        return occupancy_step_size(sampler.box_min, sampler.box_max, res, sampler.step_ratio)


def _masked_field(field, rays, tdist, mask, capacity, ray_shape, warp, progress=None):
    """The field on intervals `tdist [..., n+1]` where `mask [..., n]` holds (else no density).

    With a `capacity` below the sample count, the occupied intervals are gathered into a
    buffer of that static size first, so Gaussians and the field are computed for `capacity`
    samples only; occupied samples beyond it are dropped and counted in the overflow.
    """
    shape = mask.shape
    total = mask.size
    if capacity is None or capacity >= total:
        means, covs = rays_to_gaussians(rays, tdist, ray_shape, warp)
        out = field(means, covs, rays.viewdirs, progress=progress)
        density = jnp.where(mask, out["density"], 0.0)
        return {"density": density, "rgb": out["rgb"]}, jnp.zeros((), jnp.int32)
    n = shape[-1]
    idx, valid, overflow = compact(mask.reshape(-1), capacity)
    ray, k = idx // n, idx % n
    flat_t = tdist.reshape(-1, n + 1)
    ends = jnp.stack([flat_t[ray, k], flat_t[ray, k + 1]], -1)  # [capacity, 2]
    one = jax.tree.map(lambda x: jnp.reshape(x, (-1, x.shape[-1]))[ray], rays)
    means, covs = rays_to_gaussians(one, ends, ray_shape, warp)
    sub = field(means, covs, one.viewdirs, progress=progress)
    density = scatter(sub["density"][:, 0], idx, valid, total).reshape(shape)
    rgb = scatter(sub["rgb"][:, 0], idx, valid, total).reshape(shape + (3,))
    return {"density": density, "rgb": rgb}, overflow


def background_colors(kind: str, shape, rng=None):
    """Background colours `[*shape, 3]`: 'white', 'black', or uniform 'random' (needs rng)."""
    import jax

    if kind == "random" and rng is not None:
        return jax.random.uniform(rng, tuple(shape) + (3,))
    value = 0.0 if kind == "black" else 1.0
    return jnp.full(tuple(shape) + (3,), value)
