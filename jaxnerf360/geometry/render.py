"""Ray geometry and volume rendering: frustum Gaussians, alpha compositing, depth.

Directions are not normalised: a cone along `d` with base radius r at t = 1 has radius
r t at ray distance t (measured perpendicular to d), and t along d is the ray distance.
"""

import jax.numpy as jnp

from jaxnerf360.errors import UserError
from jaxnerf360.geometry import stepfun
from jaxnerf360.geometry.safe_math import safe_div


def lift_gaussian(d, t_mean, t_var, r_var, diag):
    """A Gaussian in world space from its statistics along and across the ray direction.

    `d [..., 3]`, `t_mean`/`t_var` `[..., n]` (mean and variance of the ray distance t),
    `r_var [..., n]` (variance of each perpendicular coordinate, world units). Returns
    `mean [..., n, 3]` (relative to the origin) and `cov [..., n, 3, 3]`, or its diagonal
    `[..., n, 3]` when `diag`.
    """
    d = jnp.asarray(d)
    mean = d[..., None, :] * t_mean[..., None]
    # The floor only matters for a zero direction, which has no meaningful frustum.
    d_mag_sq = jnp.maximum(1e-10, jnp.sum(d**2, axis=-1, keepdims=True))
    if diag:
        d_outer_diag = d**2
        null_outer_diag = 1.0 - d_outer_diag / d_mag_sq
        t_cov = t_var[..., None] * d_outer_diag[..., None, :]
        xy_cov = r_var[..., None] * null_outer_diag[..., None, :]
        return mean, t_cov + xy_cov
    d_outer = d[..., :, None] * d[..., None, :]
    null_outer = jnp.eye(d.shape[-1], dtype=d.dtype) - d_outer / d_mag_sq[..., None]
    t_cov = t_var[..., None, None] * d_outer[..., None, :, :]
    xy_cov = r_var[..., None, None] * null_outer[..., None, :, :]
    return mean, t_cov + xy_cov


def conical_frustum_to_gaussian(d, t0, t1, base_radius, diag, stable=True):
    """mip-NeRF's Gaussian approximation of the conical frustums between t0 and t1 `[..., n]`.

    The cone runs along `d [..., 3]` from the origin with radius `base_radius [..., 1]` at
    t = 1; points are uniform in the frustum's volume. `stable` uses the reparameterisation
    by the mid-point mu and half-width hw of [t0, t1], accurate for thin intervals. Returns
    `(mean [..., n, 3], cov [..., n, 3, 3] or [..., n, 3] when diag)`.
    """
    t0 = jnp.asarray(t0)
    t1 = jnp.asarray(t1)
    r2 = jnp.asarray(base_radius) ** 2
    if stable:
        mu = (t0 + t1) / 2.0
        hw = (t1 - t0) / 2.0
        denom = 3.0 * mu**2 + hw**2
        t_mean = mu + safe_div(2.0 * mu * hw**2, denom)
        t_var = hw**2 / 3.0 - (4.0 / 15.0) * safe_div(hw**4 * (12.0 * mu**2 - hw**2), denom**2)
        r_var = r2 * (mu**2 / 4.0 + (5.0 / 12.0) * hw**2 - (4.0 / 15.0) * safe_div(hw**4, denom))
    else:
        # The moments of t under a density proportional to t^2 (the cross-section area).
        c3 = t1**3 - t0**3
        t_mean = (3.0 / 4.0) * safe_div(t1**4 - t0**4, c3)
        t_sq = (3.0 / 5.0) * safe_div(t1**5 - t0**5, c3)
        t_var = t_sq - t_mean**2
        r_var = r2 * t_sq / 4.0  # a disc of radius R has per-axis variance R^2 / 4
    return lift_gaussian(d, t_mean, t_var, r_var, diag)


def cylinder_to_gaussian(d, t0, t1, radius, diag):
    """The Gaussian of cylinder segments of `radius [..., 1]` along `d [..., 3]`, t in [t0, t1].

    Points are uniform in the cylinder; shapes as in `conical_frustum_to_gaussian`.
    """
    t0 = jnp.asarray(t0)
    t1 = jnp.asarray(t1)
    t_mean = (t0 + t1) / 2.0
    t_var = (t1 - t0) ** 2 / 12.0
    r_var = jnp.asarray(radius) ** 2 / 4.0
    r_var = jnp.broadcast_to(r_var, jnp.broadcast_shapes(r_var.shape, t_mean.shape))
    return lift_gaussian(d, t_mean, t_var, r_var, diag)


_RAY_SHAPES = {"cone": conical_frustum_to_gaussian, "cylinder": cylinder_to_gaussian}


def cast_rays(tdist, origins, directions, radii, ray_shape="cone", diag=False):
    """Gaussians of the ray segments between the endpoints `tdist [..., n+1]`.

    `origins`, `directions` `[..., 3]`, `radii [..., 1]`. Returns `means [..., n, 3]` (in
    world space) and `covs [..., n, 3, 3]` (`[..., n, 3]` when diag).
    """
    if ray_shape not in _RAY_SHAPES:
        raise UserError(f"unknown ray_shape {ray_shape!r}; use one of {', '.join(_RAY_SHAPES)}")
    tdist = jnp.asarray(tdist)
    means, covs = _RAY_SHAPES[ray_shape](directions, tdist[..., :-1], tdist[..., 1:], radii, diag)
    return means + jnp.asarray(origins)[..., None, :], covs


def compute_alpha_weights(density, tdist, dirs, opaque_background=False):
    """Alpha-compositing weights of densities `[..., n]` on intervals `tdist [..., n+1]`.

    Interval lengths are diff(tdist) * |dirs| (`dirs [..., 3]`). With opaque_background the
    last interval absorbs all remaining light. Returns `(weights, alpha, trans)` `[..., n]`,
    trans being the transmittance reaching the start of each interval.
    """
    density = jnp.asarray(density)
    t_delta = jnp.diff(tdist, axis=-1) * jnp.linalg.norm(dirs[..., None, :], axis=-1)
    density_delta = density * t_delta
    if opaque_background:
        density_delta = jnp.concatenate(
            [density_delta[..., :-1], jnp.full_like(density_delta[..., -1:], jnp.inf)], axis=-1
        )
    alpha = 1.0 - jnp.exp(-density_delta)
    optical_depth = jnp.concatenate(
        [jnp.zeros_like(density_delta[..., :1]), jnp.cumsum(density_delta[..., :-1], axis=-1)],
        axis=-1,
    )
    trans = jnp.exp(-optical_depth)
    return alpha * trans, alpha, trans


def composite(channels: dict, weights) -> dict:
    """Every per-sample channel `[..., n, C]` integrated along the ray: `{name: [..., C]}`.

    The expected value of each channel under the compositing `weights [..., n]`, with no
    background (the background is a colour, added to `rgb` by the caller).
    """
    weights = jnp.asarray(weights)
    return {name: jnp.sum(weights[..., None] * value, axis=-2)
            for name, value in channels.items()}


def ray_distances(weights, tdist, t_far, acc) -> dict:
    """`distance_mean` and `distance_median` `[...]` of the weights `[..., n]` on `tdist`.

    The mean counts the light left over (1 - `acc`) at `t_far [..., 1]` and is clipped to
    [tdist_0, t_far]; the median is that of the normalised weights.
    """
    bg_w = jnp.maximum(0.0, 1.0 - acc)
    t_far = jnp.broadcast_to(jnp.asarray(t_far, dtype=tdist.dtype), acc.shape + (1,))[..., 0]
    t_mids = 0.5 * (tdist[..., 1:] + tdist[..., :-1])
    # `where` rather than a product so that an infinite far plane adds nothing (not NaN)
    # once every bit of light has been absorbed.
    far_part = jnp.where(bg_w > 0, bg_w * jnp.where(bg_w > 0, t_far, 0.0), 0.0)
    mean = jnp.sum(weights * t_mids, axis=-1) + far_part
    return {"distance_mean": jnp.clip(mean, tdist[..., 0], t_far),
            "distance_median": stepfun.weighted_percentile(tdist, weights, [50.0])[..., 0]}


def volumetric_rendering(rgbs, weights, tdist, bg_rgbs, t_far, compute_extras=True):
    """Composites colours `rgbs [..., n, 3]` with `weights [..., n]` over background `bg_rgbs`.

    `tdist [..., n+1]`, `bg_rgbs` broadcastable to `[..., 3]`, `t_far [..., 1]`. Returns a
    dict: `rgb [..., 3]` = sum w c + (1 - acc) bg and `acc [...]`; with compute_extras also
    the `ray_distances` and `weights`.
    """
    weights = jnp.asarray(weights)
    tdist = jnp.asarray(tdist)
    acc = jnp.sum(weights, axis=-1)
    bg_w = jnp.maximum(0.0, 1.0 - acc)
    rgb = composite({"rgb": rgbs}, weights)["rgb"] + bg_w[..., None] * bg_rgbs
    rendering = {"rgb": rgb, "acc": acc}
    if compute_extras:
        rendering.update(ray_distances(weights, tdist, t_far, acc))
        rendering["weights"] = weights
    return rendering
