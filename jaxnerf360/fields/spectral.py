"""Spectral control of a decomposed tensor: component-wise Gaussian filtering of VM factors.

A VM field is a sum of products plane_m(p_a, p_b) * line_m(p_c) over disjoint axes, and a 3D
Gaussian is the product of three 1D Gaussians, so filtering the dense field with a 3D
Gaussian equals filtering every plane along its two axes and every line along its own axis
with the matching 1D Gaussians (replicate padding of each factor is replicate padding of the
dense field, so the borders agree too). That costs
only 1D convolutions of the factors, never the dense grid. While poses and scene are
optimised together, a wide kernel early on keeps the field smooth so that the photometric
gradients of the poses are informative; the width decays to zero on a schedule.

Widths are given in world units and converted to voxels of the current grid; a schedule is
`((train_frac, width), ...)`: piecewise linear in the fraction of training, constant before
the first knot and after the last.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxnerf360.errors import UserError
from jaxnerf360.fields.vm import MODES
from jaxnerf360.geometry import filters


def check_schedule(schedule, what: str, allow_negative: bool = False) -> tuple:
    """`schedule` as ((frac, value), ...) or UserError: fractions increasing in [0, 1], values
    finite, non-increasing (controls that only ever relax) and, unless `allow_negative`,
    non-negative."""
    try:
        knots = tuple((float(f), float(v)) for f, v in schedule)
    except (TypeError, ValueError):
        raise UserError(f"{what}={schedule!r} must be pairs (train_frac, value), e.g. "
                        "((0.0, 0.1), (0.3, 0.0))") from None
    fracs = [f for f, _ in knots]
    values = [v for _, v in knots]
    if any(not 0 <= f <= 1 for f in fracs) or fracs != sorted(set(fracs)):
        raise UserError(f"{what}={schedule!r}: the fractions of training must increase within "
                        "[0, 1]")
    if any(not np.isfinite(v) for v in values):
        raise UserError(f"{what}={schedule!r}: values must be finite")
    if not allow_negative and any(v < 0 for v in values):
        raise UserError(f"{what}={schedule!r}: values must be non-negative")
    if any(b > a for a, b in zip(values[:-1], values[1:], strict=True)):
        raise UserError(f"{what}={schedule!r}: values must not increase (the control relaxes "
                        "over training)")
    return knots


def schedule_value(schedule: Sequence, train_frac):
    """The value of a piecewise-linear schedule at `train_frac` (0 for an empty schedule)."""
    if not schedule:
        return jnp.zeros((), jnp.float32)
    fracs = jnp.asarray([f for f, _ in schedule], jnp.float32)
    values = jnp.asarray([v for _, v in schedule], jnp.float32)
    return jnp.interp(jnp.asarray(train_frac, jnp.float32), fracs, values)


def max_value(schedule: Sequence) -> float:
    """The largest value a schedule takes (its first, as values never increase)."""
    return float(schedule[0][1]) if schedule else 0.0


def end_fraction(schedule: Sequence) -> float:
    """The fraction of training from which a schedule stays 0 (0 if empty; inf if never)."""
    if not schedule:
        return 0.0
    if float(schedule[-1][1]) > 0:
        return float("inf")
    return min(float(f) for f, v in schedule if float(v) == 0)


def voxel_sizes(box_min, box_max, resolution) -> np.ndarray:
    """World size `[3]` of one voxel of a corner-aligned grid of `resolution` (x, y, z) points."""
    lo, hi = np.asarray(box_min, np.float64), np.asarray(box_max, np.float64)
    return (hi - lo) / (np.asarray(resolution, np.float64) - 1)


def filter_vm(planes, lines, sigma_vox, radius: int):
    """Planes `[R, Na, Nb]` and lines `[R, Nc]` of the three modes, each filtered along its axes.

    `sigma_vox [3]` is the Gaussian's standard deviation in voxels along x, y, z (traceable);
    `radius` the static kernel support. Replicate padding at the borders.
    """
    out_planes, out_lines = [], []
    for m, ((a, b), c) in enumerate(MODES):
        plane = filters.blur_axis(planes[m], 1, sigma_vox[a], radius)
        out_planes.append(filters.blur_axis(plane, 2, sigma_vox[b], radius))
        out_lines.append(filters.blur_axis(lines[m], 1, sigma_vox[c], radius))
    return out_planes, out_lines
