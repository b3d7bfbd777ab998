"""TensoRF-style occupancy grid: ray/box clipping, voxel lookup and the alpha mask.

The grid is a boolean `[X, Y, Z]` array over an axis-aligned box in field space; voxel
(i, j, k) spans [lo + i * size / X, lo + (i + 1) * size / X) on the first axis and likewise
on the others. `compact` and `scatter` let a model evaluate its field only on the occupied
samples of a batch, in a buffer of static size (jit-friendly).
"""

import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360.errors import UserError


def check_box(box_min, box_max):
    """The box corners as float64 numpy arrays `[3]`; UserError unless finite, positive size."""
    try:
        lo = np.asarray(box_min, dtype=np.float64).reshape(-1)
        hi = np.asarray(box_max, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(
            f"occupancy box {box_min!r} to {box_max!r} is not numeric; give three floats each"
        ) from None
    if lo.shape != (3,) or hi.shape != (3,):
        raise UserError(
            f"occupancy box {tuple(lo)} to {tuple(hi)} needs three coordinates per corner"
        )
    if not np.all(np.isfinite(lo)) or not np.all(np.isfinite(hi)) or not np.all(hi > lo):
        raise UserError(
            f"occupancy box {tuple(lo)} to {tuple(hi)} has a non-positive or non-finite size;"
            " box_max must exceed box_min on every axis"
        )
    return lo, hi


def _resolution(resolution) -> tuple[int, int, int]:
    """`resolution` (an int or a 3-sequence of ints) as a 3-tuple of positive ints."""
    if isinstance(resolution, numbers.Integral):
        res = (int(resolution),) * 3
    else:
        try:
            res = tuple(resolution)
        except TypeError:
            res = ()
        if len(res) != 3 or not all(isinstance(r, numbers.Integral) for r in res):
            raise UserError(
                f"occupancy grid resolution {resolution!r} must be an int or three ints"
            )
        res = tuple(int(r) for r in res)
    if min(res) < 1:
        raise UserError(f"occupancy grid resolution {res} must be at least 1 on every axis")
    return res


def occupancy_step_size(box_min, box_max, resolution, step_ratio: float) -> float:
    """`step_ratio` x the mean voxel edge of a field grid of `resolution` points per axis.

    As TensoRF, a grid of N points per axis spanning the box (points on its faces) has voxel
    edge size / (N - 1). `resolution` is an int or three ints (each >= 2).
    """
    lo, hi = check_box(box_min, box_max)
    res = _resolution(resolution)
    if min(res) < 2:
        raise UserError(f"field grid resolution {res} needs at least 2 points per axis")
    if not (isinstance(step_ratio, numbers.Real) and step_ratio > 0):
        raise UserError(f"occupancy step_ratio is {step_ratio!r}; it must be a positive number")
    edges = (hi - lo) / (np.asarray(res, dtype=np.float64) - 1.0)
    return float(step_ratio * np.mean(edges))


def ray_box_intersect(origins, directions, box_min, box_max):
    """Slab-method ray parameters where rays enter and leave the box: `(t_enter, t_exit)` `[...]`.

    `origins`, `directions` `[..., 3]` (directions not normalised: t is the ray parameter,
    the line being o + t d for all real t). A ray that misses has t_enter > t_exit. A zero
    direction component puts no limit on t when the origin lies in that slab (closed), and
    makes the ray miss otherwise; results are never NaN (they may be +-inf).
    """
    origins = jnp.asarray(origins)
    directions = jnp.asarray(directions)
    lo = jnp.asarray(box_min, dtype=origins.dtype)
    hi = jnp.asarray(box_max, dtype=origins.dtype)
    zero = directions == 0
    # Divide by a dummy 1 where the component is zero so no 0/0 appears; the slab's verdict
    # for those axes comes from the origin alone.
    d_safe = jnp.where(zero, 1.0, directions)
    t_lo = (lo - origins) / d_safe
    t_hi = (hi - origins) / d_safe
    t_near = jnp.minimum(t_lo, t_hi)
    t_far = jnp.maximum(t_lo, t_hi)
    in_slab = (origins >= lo) & (origins <= hi)
    t_near = jnp.where(zero, jnp.where(in_slab, -jnp.inf, jnp.inf), t_near)
    t_far = jnp.where(zero, jnp.where(in_slab, jnp.inf, -jnp.inf), t_far)
    return jnp.max(t_near, axis=-1), jnp.min(t_far, axis=-1)


def voxel_centres(box_min, box_max, resolution):
    """Centres `[X, Y, Z, 3]` of the voxels of a `resolution` (int or 3 ints) grid over the box."""
    lo, hi = check_box(box_min, box_max)
    res = _resolution(resolution)
    axes = [
        lo[i] + (np.arange(res[i], dtype=np.float64) + 0.5) * (hi[i] - lo[i]) / res[i]
        for i in range(3)
    ]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return jnp.asarray(grid, dtype=jnp.float32)


def lookup(grid, box_min, box_max, points):
    """Value of the voxel of bool `grid [X, Y, Z]` holding each of `points [..., 3]`: bool `[...]`.

    Voxel i spans [lo + i size / X, lo + (i + 1) size / X); points outside [lo, hi) give False.
    """
    grid = jnp.asarray(grid)
    points = jnp.asarray(points)
    lo = jnp.asarray(box_min, dtype=points.dtype)
    hi = jnp.asarray(box_max, dtype=points.dtype)
    res = jnp.asarray(grid.shape, dtype=points.dtype)
    inside = jnp.all((points >= lo) & (points < hi), axis=-1)
    # The clip only matters for rounding at the upper face and for points outside, which
    # `inside` masks anyway.
    idx = jnp.floor((points - lo) / (hi - lo) * res).astype(jnp.int32)
    idx = jnp.clip(idx, 0, jnp.asarray(grid.shape, dtype=jnp.int32) - 1)
    return inside & grid[idx[..., 0], idx[..., 1], idx[..., 2]]


def build_grid(
    density_fn: Callable,
    box_min,
    box_max,
    resolution,
    step_size: float,
    threshold: float,
    chunk: int = 2**16,
):
    """TensoRF's alpha mask: bool `[X, Y, Z]`, True where a voxel may hold visible density.

    alpha = 1 - exp(-density * step_size) at the voxel centres, `density_fn` mapping
    `[P, 3] -> [P]` and called on chunks of at most `chunk` points (the last one padded, so a
    jitted density_fn compiles once) to bound memory; alpha is then max-pooled over 3x3x3
    neighbourhoods, so that a voxel whose neighbour is occupied counts as occupied, and
    thresholded (> threshold).
    """
    res = _resolution(resolution)
    if not (isinstance(step_size, numbers.Real) and step_size > 0):
        raise UserError(f"occupancy step_size is {step_size!r}; it must be a positive number")
    if not (isinstance(chunk, numbers.Integral) and chunk >= 1):
        raise UserError(f"occupancy chunk is {chunk!r}; it must be a positive integer")
    centres = np.asarray(voxel_centres(box_min, box_max, res)).reshape(-1, 3)
    total = centres.shape[0]
    size = min(int(chunk), total)
    densities = []
    for start in range(0, total, size):
        part = centres[start:start + size]
        count = part.shape[0]
        if count < size:
            part = np.concatenate([part, np.repeat(part[-1:], size - count, axis=0)])
        out = np.asarray(density_fn(jnp.asarray(part)), dtype=np.float32).reshape(-1)
        if out.shape[0] != size:
            raise UserError(
                f"occupancy density_fn returned {out.shape[0]} values for {size} points;"
                " it must map [P, 3] points to [P] densities"
            )
        densities.append(out[:count])
    density = jnp.asarray(np.concatenate(densities).reshape(res))
    alpha = 1.0 - jnp.exp(-density * step_size)
    pooled = jax.lax.reduce_window(
        alpha, -jnp.inf, jax.lax.max, (3, 3, 3), (1, 1, 1), "SAME"
    )
    return pooled > threshold


def compact(mask, capacity: int):
    """Indices of the first `capacity` True entries of `mask [N]`: `(idx, valid, overflow)`.

    `idx [capacity]` int32 (0 in unused slots), `valid [capacity]` bool marks the used slots,
    `overflow` int32 scalar counts the True entries that did not fit. `capacity` is static.
    """
    mask = jnp.asarray(mask, dtype=bool).reshape(-1)
    capacity = int(capacity)
    (idx,) = jnp.nonzero(mask, size=capacity, fill_value=0)
    count = jnp.sum(mask, dtype=jnp.int32)
    valid = jnp.arange(capacity, dtype=jnp.int32) < count
    overflow = jnp.maximum(count - capacity, 0).astype(jnp.int32)
    return idx.astype(jnp.int32), valid, overflow


def scatter(values, idx, valid, n: int):
    """`values [capacity, ...]` put back at `idx [capacity]` in zeros `[n, ...]`.

    Invalid slots contribute nothing. Differentiable w.r.t. values: the gradient is the
    output's gradient gathered at idx, zero in invalid slots.
    """
    values = jnp.asarray(values)
    valid = jnp.asarray(valid, dtype=bool)
    keep = valid.reshape(valid.shape + (1,) * (values.ndim - 1))
    # Unused slots all point at index 0: adding zeros there leaves it untouched.
    values = jnp.where(keep, values, jnp.zeros_like(values))
    out = jnp.zeros((int(n),) + values.shape[1:], dtype=values.dtype)
    return out.at[idx].add(values)


def grid_samples(box_min, box_max, step_size: float, max_samples: int) -> int:
    """Static sample count per ray: min(max_samples, ceil(|box diagonal| / step_size))."""
    lo, hi = check_box(box_min, box_max)
    if not (isinstance(step_size, numbers.Real) and step_size > 0 and math.isfinite(step_size)):
        raise UserError(f"occupancy step_size is {step_size!r}; it must be a positive number")
    if not (isinstance(max_samples, numbers.Integral) and max_samples >= 1):
        raise UserError(f"occupancy max_samples is {max_samples!r}; it must be a positive integer")
    diag = float(np.linalg.norm(hi - lo))
    return int(min(int(max_samples), max(1, math.ceil(diag / float(step_size)))))


def mean_voxel_edge(box_min, box_max, resolution: int | Sequence[int]) -> float:
    """Mean edge length of the voxels of a grid of `resolution` voxels per axis over the box."""
    lo, hi = check_box(box_min, box_max)
    res = np.asarray(_resolution(resolution), dtype=np.float64)
    return float(np.mean((hi - lo) / res))
