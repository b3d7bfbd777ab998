"""TensoRF's occupancy sampler: uniform steps along each ray inside a box in field space, each
sample flagged by an occupancy grid (the alpha mask) so the model can skip empty space."""

from collections.abc import Callable, Sequence

import gin
import jax
import jax.numpy as jnp

from jaxnerf360.data.scene import BOUNDED, FORWARD, UNBOUNDED
from jaxnerf360.errors import UserError
from jaxnerf360.geometry import coord
from jaxnerf360.geometry.occupancy import (
    build_grid,
    check_box,
    grid_samples,
    lookup,
    mean_voxel_edge,
    occupancy_step_size,
    ray_box_intersect,
)
from jaxnerf360.samplers.base import Sampler, Samples, SamplingContext, rays_to_gaussians

# Field space of unbounded scenes: the contraction maps R^3 into the ball of radius 2, so
# an occupancy box for them must contain this one.
CONTRACTED_BOX = ((-2.0, -2.0, -2.0), (2.0, 2.0, 2.0))


@gin.configurable
class OccupancySampler(Sampler):
    """TensoRF's sampler: uniform steps inside a field-space box, flagged by an occupancy grid.

    No parameters. Its state is the grid (bool `[X, Y, Z]` over the box [box_min, box_max),
    from `occupancy.build_grid`), all occupied at first and rebuilt before each of
    `update_steps`; after the second rebuild training rays that miss occupied space are
    dropped. For unbounded scenes the box is in contracted space and must contain [-2, 2]^3.
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

    def step_size(self, field_resolution, scene_kind: str = BOUNDED) -> float:
        """The static step in field-space units: `step_ratio` of the field grid's voxel edge
        (TensoRF), or `default_step_size` for a field without a grid."""
        if field_resolution is None:
            return self.default_step_size(scene_kind)
        return occupancy_step_size(self.box_min, self.box_max, field_resolution,
                                   self.step_ratio)

    def init_state(self, scene_kind: str):
        """Every voxel occupied: nothing is skipped before the first rebuild."""
        self.field_box(scene_kind)  # a box that misses the contracted space fails here
        res = self.grid_resolution
        return jnp.ones((res,) * 3 if isinstance(res, int) else tuple(res), bool)

    def state_update_steps(self) -> tuple:
        """`update_steps`."""
        return tuple(int(s) for s in self.update_steps)

    def update_state(self, state, density_fn: Callable, field_resolution, scene_kind: str):
        """TensoRF's alpha mask of the field's density, at the grid's own resolution."""
        step = (occupancy_step_size(self.box_min, self.box_max, state.shape, self.step_ratio)
                if field_resolution is None else self.step_size(field_resolution))
        grid = build_grid(density_fn, self.box_min, self.box_max, state.shape, step,
                          self.threshold)
        return jnp.asarray(grid, bool)

    def state_name(self) -> str:
        """The occupancy grid."""
        return "occupancy grid"

    def describe_state(self, state) -> str:
        """The occupied share of the voxels."""
        return f"{100 * float(jnp.mean(jnp.asarray(state))):.1f}% of voxels occupied"

    def ray_filter_step(self) -> int | None:
        """The second rebuild, as in TensoRF."""
        steps = self.state_update_steps()
        return steps[1] if len(steps) > 1 else None

    def uses_sample_buffer(self) -> bool:
        """Occupied samples are few once empty space is known."""
        return True

    def __call__(self, rng, rays, train_frac, context: SamplingContext) -> Samples:
        """Uniform steps along each ray; the mask `[..., n]` flags the occupied samples.

        The step is `step_size(context.field_resolution)`, static, and
        n = min(max_samples, ceil(|box diagonal| / step)) samples are laid along every ray.

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
        given (`context.state`), in an occupied voxel. `train_frac` is unused.
        """
        del train_frac
        scene_kind, warp, occupancy = context.scene_kind, context.warp, context.state
        lo, hi = self.field_box(scene_kind)
        step_size = self.step_size(context.field_resolution, scene_kind)
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
        return Samples(sdist, tdist, (), mask)
