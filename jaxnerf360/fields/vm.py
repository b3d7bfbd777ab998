"""The VM (vector-matrix) decomposition as pure maths: interpolation, resampling, regularisers.

Three (plane, line) pairs, one per axis c: the plane spans the other two axes (a, b) with
a < b and the line runs along c:

    mode 0: plane over (x, y), line along z
    mode 1: plane over (x, z), line along y
    mode 2: plane over (y, z), line along x

Planes are stored `[rank, N_a, N_b]` (first index along axis a, second along axis b) and
lines `[rank, N_c]`, so `plane[r, i, j]` is the value at grid point (a=i, b=j): there is no
hidden (row, column) = (y, x) swap as with `grid_sample`. Grid points sit at the box
corners and are evenly spaced (align_corners=True). Factor names are `<prefix>_plane_<m>`
and `<prefix>_line_<m>` (prefix `density` or `appearance`).
"""

import functools
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360.fields import vm_kernel

# (plane axes, line axis) for each of the three modes.
MODES = (((0, 1), 2), ((0, 2), 1), ((1, 2), 0))


def grid_coords(x, lo, hi, n: int):
    """Continuous grid coordinates in [0, n-1] of positions `x [...]` in [lo, hi]."""
    return jnp.clip((x - lo) / (hi - lo) * (n - 1), 0.0, n - 1)


def _lerp(x, u, axis: int):
    """Linear interpolation of `x` along `axis` at grid coordinates `u [P]` in [0, n-1]."""
    n = x.shape[axis]
    moved = jnp.moveaxis(x, axis, 0)
    i0 = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, max(n - 2, 0))
    i1 = jnp.minimum(i0 + 1, n - 1)
    f = (u - i0).reshape((-1,) + (1,) * (moved.ndim - 1))
    return jnp.moveaxis(moved[i0] * (1 - f) + moved[i1] * f, 0, axis)


def interp_line(line, u):
    """Linear interpolation of `line [R, N]` at grid coordinates `u [P]`: `[P, R]`."""
    return _lerp(line.T, u, 0)


def interp_plane(plane, u, v):
    """Bilinear interpolation of `plane [R, Na, Nb]` at grid coordinates (u, v) `[P]`: `[P, R]`.

    Gathers whole rank vectors from a channels-last copy of the plane: contiguous rows make
    the gather, and above all its scatter-add gradient, about 1.5x faster on a CPU.
    """
    r, na, nb = plane.shape
    i0 = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, max(na - 2, 0))
    j0 = jnp.clip(jnp.floor(v).astype(jnp.int32), 0, max(nb - 2, 0))
    fu, fv = (u - i0)[:, None], (v - j0)[:, None]
    rows = jnp.moveaxis(plane, 0, -1).reshape(na * nb, r)
    base = i0 * nb + j0  # resolution >= 2 on every axis, so the +1 neighbours exist
    p00, p01, p10, p11 = rows[base], rows[base + 1], rows[base + nb], rows[base + nb + 1]
    return (p00 * (1 - fu) * (1 - fv) + p01 * (1 - fu) * fv
            + p10 * fu * (1 - fv) + p11 * fu * fv)


def vm_components(planes, lines, points, box_min, box_max, kernel: bool = False):
    """Per-mode products plane x line at `points [P, 3]`: a list of three `[P, R_m]`.

    With `kernel`, through the compiled CPU kernel where it serves (`vm_kernel.usable`): the
    same numbers, several times faster on a CPU.
    """
    product = (vm_kernel.mode_product if kernel and vm_kernel.usable(*planes, *lines, points)
               else lambda plane, line, u, v, w: interp_plane(plane, u, v) * interp_line(line, w))
    out = []
    for m, ((a, b), c) in enumerate(MODES):
        plane, line = planes[m], lines[m]
        u = grid_coords(points[:, a], box_min[a], box_max[a], plane.shape[1])
        v = grid_coords(points[:, b], box_min[b], box_max[b], plane.shape[2])
        w = grid_coords(points[:, c], box_min[c], box_max[c], line.shape[1])
        out.append(product(plane, line, u, v, w))
    return out


@functools.partial(jax.jit, static_argnums=(1, 2))
def resample_axis(x, axis: int, n_new: int):
    """Linear resampling of `x` along `axis` to `n_new` corner-aligned grid points."""
    return _lerp(x, jnp.linspace(0.0, x.shape[axis] - 1, n_new), axis)


def resample_factor(name: str, value, resolution: Sequence[int]):
    """`value` resampled to `resolution` (x, y, z) if `name` is a VM plane or line, else as is.

    Mask logits (`_planemask_`, `_linemask_`) are resampled like their factors.
    """
    for m, ((a, b), c) in enumerate(MODES):
        if re.search(f"_plane(mask)?_{m}$", name):
            return resample_axis(resample_axis(value, 1, resolution[a]), 2, resolution[b])
        if re.search(f"_line(mask)?_{m}$", name):
            return resample_axis(value, 1, resolution[c])
    return value


def resample_factors(params, resolution: Sequence[int]):
    """Returns `params` with every VM plane and line resampled to `resolution` (x, y, z).

    New grid points take the old field's interpolated values, so the field is unchanged at
    the new grid points (TensoRF's upsampling step). Other parameters pass through.
    """
    return {name: resample_factor(name, value, resolution) for name, value in params.items()}


def upsampling_schedule(start, final, steps) -> list:
    """[(step, (nx, ny, nz))]: TensoRF's upsampling, voxel count log-linear in the step index.

    The k-th of K upsampling `steps` scales every axis of `start` by (V_k / V_0)^(1/3),
    V_k = V_0 (V_final / V_0)^(k / K), keeping the initial aspect; the last step lands exactly
    on `final`.
    """
    start = np.array(start, np.float64)
    final = np.array(final, np.float64)
    count = len(steps)
    ratio = np.prod(final) / np.prod(start)
    out = []
    for k, step in enumerate(steps, start=1):
        if k == count:
            res = final
        else:
            res = np.minimum(np.round(start * ratio ** (k / count / 3.0)), final)
        out.append((int(step), tuple(int(n) for n in res)))
    return out


def is_factor(name: str) -> bool:
    """Whether a parameter name is a VM plane or line (`..._plane_m`, `..._line_m`)."""
    return re.search(r"_(plane|line)_\d+$", name) is not None


def has_factors(params) -> bool:
    """Whether `params` (a field's) hold VM factors to read the grid resolution off."""
    return "density_line_0" in params


def grid_resolution(params) -> tuple:
    """The current grid points per axis (x, y, z) of VM factors `params`, read off the lines."""
    return tuple(int(params[f"density_line_{m}"].shape[1]) for m in (2, 1, 0))


def l1_density(params):
    """Sum over modes of the mean |density plane| and mean |density line| (TensoRF's L1)."""
    total = 0.0
    for m in range(3):
        total += jnp.mean(jnp.abs(params[f"density_plane_{m}"]))
        total += jnp.mean(jnp.abs(params[f"density_line_{m}"]))
    return total


def tv_planes(params, prefix: str = "density"):
    """Sum over modes of mean squared neighbour differences of the `prefix` planes (both axes).

    TensoRF's TV term equals 0.02 x this (its TVLoss doubles it and its VM model scales by
    1e-2), so a TensoRF TV_weight of w is a weight of 0.02 w here.
    """
    total = 0.0
    for m in range(3):
        plane = params[f"{prefix}_plane_{m}"]
        total += jnp.mean(jnp.square(jnp.diff(plane, axis=1)))
        total += jnp.mean(jnp.square(jnp.diff(plane, axis=2)))
    return total
