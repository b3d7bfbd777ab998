"""Spectral control of a decomposed tensor: component-wise Gaussian filtering of VM factors.

A VM field is a sum of products plane_m(p_a, p_b) * line_m(p_c) over disjoint axes, and a 3D
Gaussian is the product of three 1D Gaussians, so filtering the dense field with a 3D
Gaussian equals filtering every plane along its two axes and every line along its own axis
with the matching 1D Gaussians (replicate padding of each factor is replicate padding of the
dense field, so the borders agree too). That costs
only 1D convolutions of the factors, never the dense grid. While poses and scene are
optimised together, a wide kernel early on keeps the field smooth so that the photometric
gradients of the poses are informative; the width decays to zero on a schedule.

Widths are given in world units and converted to voxels of the current grid, on a schedule
`((train_frac, width), ...)` (`jaxnerf360.schedules`).
"""


import numpy as np

from jaxnerf360.fields.vm import MODES
from jaxnerf360.geometry import filters


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
