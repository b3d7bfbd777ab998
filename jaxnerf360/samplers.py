"""Samplers: where along each ray the final field is evaluated.

`ProposalSampler` is mip-NeRF 360's: proposal fields (density only) predict
histograms in normalised ray distance s, each level resampling the previous
level's annealed, dilated histogram; the final level's intervals go to the field.

`OccupancySampler` is TensoRF's: uniform steps along each ray inside a box in field space,
each sample flagged by an occupancy grid (the alpha mask) so the model can skip empty space.

Every sampler returns `(sdist, tdist, levels, mask)`; mask is None when all samples count.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from jaxnerf360.data.scene import BOUNDED, FORWARD, UNBOUNDED
from jaxnerf360.errors import UserError
from jaxnerf360.fields.mlp import PropMLPField
from jaxnerf360.geometry import coord, render, stepfun
from jaxnerf360.geometry.occupancy import (
    check_box,
    grid_samples,
    lookup,
    mean_voxel_edge,
    ray_box_intersect,
)


def field_warp(scene_kind: str) -> Callable:
    """The map from world Gaussians to field space: contraction for unbounded scenes."""
    if scene_kind == UNBOUNDED:
        return coord.contract_gaussians
    if scene_kind in (BOUNDED, FORWARD):
        return lambda means, covs: (means, covs)
    raise ValueError(f"unknown scene kind {scene_kind!r}")


def rays_to_gaussians(rays, tdist, ray_shape: str, warp: Callable):
    """Gaussians of the frustums between `tdist [..., n+1]`, warped to field space."""
    means, covs = render.cast_rays(tdist, rays.origins, rays.directions, rays.radii, ray_shape)
    return warp(means, covs)


def anneal_power(train_frac, slope: float):
    """Schlick-style bias curve: 0 at the start of training rising to 1 at the end."""
    return slope * train_frac / ((slope - 1.0) * train_frac + 1.0)


@gin.configurable
class ProposalSampler(nn.Module):
    """mip-NeRF 360 online-distilled proposal sampling (2 x 64 proposal, 32 final)."""

    num_prop_samples: Sequence[int] = (64, 64)
    num_final_samples: int = 32
    proposal_field: Callable = PropMLPField
    raydist_fn: str = "reciprocal"  # reciprocal | linear | log
    supports_pose_optimization = True  # intervals follow the (corrected) rays
    anneal_slope: float = 10.0
    dilation_multiplier: float = 0.5
    dilation_bias: float = 0.0025
    resample_padding: float = 0.0
    single_jitter: bool = True
    stop_level_grad: bool = True
    ray_shape: str = "cone"  # cone | cylinder

    @nn.compact
    def __call__(self, rng, rays, warp: Callable, train_frac, occupancy=None, step_size=None,
                 scene_kind=None):
        """Returns `(sdist, tdist, levels, None)`: the final level `[..., m+1]` and histograms.

        `rng` None gives deterministic (evaluation) sampling. `levels`, the proposal
        histograms, is a list of dicts with `sdist [..., n+1]` and `weights [..., n]`, for the
        interlevel loss. The last entry (a sample mask for occupancy samplers) is always None:
        every sample is evaluated. `occupancy`, `step_size` and `scene_kind` are accepted
        for a common sampler interface and ignored.
        """
        t_to_s, s_to_t = coord.construct_ray_warps(self.raydist_fn, rays.near, rays.far)
        prop = self.proposal_field(name="proposal")
        batch_shape = rays.origins.shape[:-1]
        sdist = jnp.broadcast_to(jnp.array([0.0, 1.0]), batch_shape + (2,))
        weights = jnp.ones(batch_shape + (1,))
        levels = []
        prod_samples = 1
        counts = list(self.num_prop_samples) + [self.num_final_samples]
        for i, num_samples in enumerate(counts):
            if i > 0 and self.dilation_multiplier > 0:
                dilation = self.dilation_bias + self.dilation_multiplier / prod_samples
                sdist, weights = stepfun.max_dilate_weights(
                    sdist, weights, dilation, domain=(0.0, 1.0), renormalize=True
                )
                sdist, weights = sdist[..., 1:-1], weights[..., 1:-1]
            power = anneal_power(train_frac, self.anneal_slope)
            logits = jnp.where(
                sdist[..., 1:] > sdist[..., :-1],
                power * jnp.log(weights + self.resample_padding),
                -jnp.inf,
            )
            if rng is None:
                key = None
            else:
                rng, key = jax.random.split(rng)
            sdist = stepfun.sample_intervals(
                key, sdist, logits, num_samples, single_jitter=self.single_jitter, domain=(0.0, 1.0)
            )
            if self.stop_level_grad:
                sdist = jax.lax.stop_gradient(sdist)
            prod_samples *= num_samples
            tdist = s_to_t(sdist)
            if i == len(counts) - 1:
                return sdist, tdist, levels, None
            means, covs = rays_to_gaussians(rays, tdist, self.ray_shape, warp)
            density = prop(means, covs, None)["density"]
            weights = render.compute_alpha_weights(density, tdist, rays.directions)[0]
            levels.append({"sdist": sdist, "weights": weights})
        raise AssertionError("unreachable")


# Field space of unbounded scenes: the contraction maps R^3 into the ball of radius 2, so
# an occupancy box for them must contain this one.
CONTRACTED_BOX = ((-2.0, -2.0, -2.0), (2.0, 2.0, 2.0))


@gin.configurable
class OccupancySampler(nn.Module):
    """TensoRF's sampler: uniform steps inside a field-space box, flagged by an occupancy grid.

    No parameters. The grid (bool `[X, Y, Z]` over the box [box_min, box_max), from
    `occupancy.build_grid`) is passed in by the caller and rebuilt at `update_steps`. For
    unbounded scenes the box is in contracted space and must contain [-2, 2]^3.
    """

    supports_pose_optimization = True  # steps follow the (corrected) rays; see train.py
    box_min: Sequence[float] = (-1.5, -1.5, -1.5)  # field space (bounded / forward scenes)
    box_max: Sequence[float] = (1.5, 1.5, 1.5)
    grid_resolution: int | Sequence[int] = 128  # occupancy voxels per axis
    step_ratio: float = 0.5  # step = step_ratio x the field grid's voxel edge
    max_samples: int = 1024  # cap on samples per ray (TensoRF's nSamples)
    threshold: float = 1e-4  # alpha threshold when the grid is rebuilt
    update_steps: Sequence[int] = (2000, 4000)  # training steps that rebuild the grid
    raydist_fn: str = "reciprocal"  # unbounded scenes only: reciprocal | linear | log
    ray_shape: str = "cone"  # cone | cylinder

    def field_box(self, scene_kind: str = BOUNDED):
        """The box `(box_min, box_max)` in field space that the grid covers.

        Always the configured box (so the grid built over `box_min`/`box_max` matches); for
        unbounded scenes it must cover the contracted space [-2, 2]^3, else samples beyond it
        would be silently dropped.
        """
        if scene_kind not in (BOUNDED, FORWARD, UNBOUNDED):
            raise ValueError(f"unknown scene kind {scene_kind!r}")
        lo, hi = check_box(self.box_min, self.box_max)
        lo, hi = tuple(float(v) for v in lo), tuple(float(v) for v in hi)
        covers = all(a <= c for a, c in zip(lo, CONTRACTED_BOX[0], strict=True)) and all(
            b >= c for b, c in zip(hi, CONTRACTED_BOX[1], strict=True))
        if scene_kind == UNBOUNDED and not covers:
            raise UserError(
                f"OccupancySampler box {lo} to {hi} does not cover the contracted space"
                " [-2, 2]^3 of an unbounded scene; set OccupancySampler.box_min = (-2, -2, -2)"
                " and box_max = (2, 2, 2)"
            )
        return lo, hi

    def default_step_size(self, scene_kind: str = BOUNDED) -> float:
        """`step_ratio` x the mean voxel edge of the occupancy grid (half a voxel by default)."""
        lo, hi = self.field_box(scene_kind)
        return self.step_ratio * mean_voxel_edge(lo, hi, self.grid_resolution)

    def __call__(self, rng, rays, warp: Callable, train_frac, occupancy=None, step_size=None,
                 scene_kind=BOUNDED):
        """Returns `(sdist [..., n+1], tdist [..., n+1], [], mask [..., n] bool)`.

        `step_size` is a static Python float in field-space units (None: `default_step_size`);
        n = min(max_samples, ceil(|box diagonal| / step_size)) is static.

        Bounded and forward scenes (the identity warp): edges every step_size / |d| in t
        from where the ray enters the box (clipped to [near, far]), clamped to where it leaves
        it, so the intervals past the exit have zero length; sdist is t mapped linearly from
        [near, far] to [0, 1]. Rays that miss the box get zero-length intervals.

        Unbounded scenes: n intervals uniform in s (the `raydist_fn` warp between near and
        far) and tdist = s_to_t(sdist); a step of 1/n in s is only roughly step_size (about
        half a voxel) in contracted space, as the contraction does not preserve lengths.

        With `rng` (else deterministic), every interior edge moves back by one random
        fraction of a step per ray (TensoRF's jitter); the first and last edges stay put, so
        the covered range does not change. mask: the interval has positive length, and its
        centre (the warped mean of its Gaussian) lies in the box and, when `occupancy` is
        given, in an occupied voxel. `train_frac` is unused.
        """
        del train_frac
        lo, hi = self.field_box(scene_kind)
        if step_size is None:
            step_size = self.default_step_size(scene_kind)
        n = grid_samples(lo, hi, step_size, self.max_samples)
        origins = jnp.asarray(rays.origins)
        directions = jnp.asarray(rays.directions)
        batch_shape = origins.shape[:-1]
        offsets = jnp.arange(n + 1, dtype=origins.dtype)
        if rng is not None:
            frac = jax.random.uniform(rng, batch_shape + (1,), dtype=origins.dtype)
            interior = (offsets > 0) & (offsets < n)
            offsets = jnp.where(interior, offsets - frac, offsets)
        else:
            offsets = jnp.broadcast_to(offsets, batch_shape + (n + 1,))
        near = jnp.broadcast_to(jnp.asarray(rays.near, dtype=origins.dtype), batch_shape + (1,))
        far = jnp.broadcast_to(jnp.asarray(rays.far, dtype=origins.dtype), batch_shape + (1,))
        if scene_kind == UNBOUNDED:
            _, s_to_t = coord.construct_ray_warps(self.raydist_fn, near, far)
            sdist = jnp.clip(offsets / n, 0.0, 1.0)
            tdist = s_to_t(sdist)
        else:
            t_enter, t_exit = ray_box_intersect(origins, directions, lo, hi)
            t0 = jnp.clip(t_enter[..., None], near, far)
            # A miss (t_exit < t_enter) collapses every edge onto t0.
            t1 = jnp.clip(t_exit[..., None], t0, far)
            d_norm = jnp.linalg.norm(directions, axis=-1, keepdims=True)
            # The floor keeps a zero direction's step finite (its edges then all clamp to t1).
            dt = step_size / jnp.maximum(d_norm, 1e-30)
            tdist = jnp.clip(t0 + offsets * dt, t0, t1)
            t_to_s, _ = coord.construct_ray_warps("linear", near, far)
            sdist = t_to_s(tdist)
        sdist = jax.lax.stop_gradient(sdist)
        tdist = jax.lax.stop_gradient(tdist)
        centres, _ = rays_to_gaussians(rays, tdist, self.ray_shape, warp)
        lo_a = jnp.asarray(lo, dtype=centres.dtype)
        hi_a = jnp.asarray(hi, dtype=centres.dtype)
        # Positive metric length: a zero direction has none, whatever its t range.
        has_dir = jnp.any(directions != 0, axis=-1, keepdims=True)
        mask = (tdist[..., 1:] > tdist[..., :-1]) & has_dir
        mask &= jnp.all((centres >= lo_a) & (centres < hi_a), axis=-1)
        if occupancy is not None:
            mask &= lookup(occupancy, lo, hi, centres)
        return sdist, tdist, [], mask
