"""Radiance fields: swappable parts with one small interface.

A field is a Flax module called as

    out = field(means, covs, viewdirs)

with Gaussians in *field space* (the sampler has already applied the scene
contraction or NDC warp): `means [..., n, 3]`, `covs [..., n, 3, 3]` (or None for
point samples) and unit view directions `viewdirs [..., 3]` (or None for a
density-only field). It returns a dict with `density [..., n]` (non-negative) and,
unless the field is density-only, `rgb [..., n, 3]` in [0, 1]. A field never knows
which sampler calls it.
"""
