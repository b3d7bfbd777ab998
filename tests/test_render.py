"""Tests of jaxnerf360.geometry.render against Monte-Carlo sampling and brute-force loops."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360.errors import UserError
from jaxnerf360.geometry import render


def _perpendicular_frame(d):
    """Two unit vectors orthogonal to `d [3]` and to each other."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d / np.linalg.norm(d), e1)
    return e1, e2


def _sample_segment(rng, d, t0, t1, radius, shape, n):
    """Points `[n, 3]` uniform in the cone frustum (radius r t) or cylinder along d."""
    u = rng.uniform(size=n)
    if shape == "cone":
        # The cross-section grows as t^2: invert the CDF of t^3.
        t = np.cbrt(t0**3 + u * (t1**3 - t0**3))
        rad = radius * t
    else:
        t = t0 + u * (t1 - t0)
        rad = np.full(n, radius)
    rho = rad * np.sqrt(rng.uniform(size=n))  # uniform in the disc
    theta = rng.uniform(0.0, 2.0 * np.pi, size=n)
    e1, e2 = _perpendicular_frame(d)
    offset = rho[:, None] * (np.cos(theta)[:, None] * e1 + np.sin(theta)[:, None] * e2)
    return t[:, None] * d + offset


CASES = [
    # direction, t0, t1, radius: a long segment, a wide cone and a skewed direction.
    (np.array([0.0, 0.0, -1.0]), 1.0, 3.0, 0.2),
    (np.array([0.3, -0.5, -1.2]), 0.5, 0.9, 0.8),
    (np.array([2.0, 1.0, 0.5]), 0.1, 2.0, 0.05),
]


@pytest.mark.parametrize("shape", ["cone", "cylinder"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_segment_gaussians_match_monte_carlo(shape, case):
    d, t0, t1, radius = CASES[case]
    rng = np.random.default_rng(case)
    n = 400_000
    pts = _sample_segment(rng, d, t0, t1, radius, shape, n)
    mc_mean, mc_cov = pts.mean(0), np.cov(pts.T)
    fn = render.conical_frustum_to_gaussian if shape == "cone" else render.cylinder_to_gaussian
    with jax.enable_x64(True):
        mean, cov = fn(
            jnp.asarray(d), jnp.array([t0]), jnp.array([t1]), jnp.array([radius]), diag=False
        )
        mean_d, cov_d = fn(
            jnp.asarray(d), jnp.array([t0]), jnp.array([t1]), jnp.array([radius]), diag=True
        )
        mean, cov = np.asarray(mean[0]), np.asarray(cov[0])
        mean_d, cov_d = np.asarray(mean_d[0]), np.asarray(cov_d[0])
    # Monte-Carlo standard errors: sigma/sqrt(n) for means, ~sigma^2 sqrt(2/n) for covariances.
    scale = np.sqrt(np.max(np.diag(mc_cov)))
    np.testing.assert_allclose(mean, mc_mean, atol=5 * scale / np.sqrt(n))
    np.testing.assert_allclose(cov, mc_cov, atol=6 * scale**2 * np.sqrt(2.0 / n))
    np.testing.assert_allclose(mean_d, mean, rtol=1e-12)
    np.testing.assert_allclose(cov_d, np.diag(cov), rtol=1e-12, atol=1e-15)


def _exact_frustum_moments(t0, t1, radius):
    """(t_mean, t_var, r_var) of a cone frustum in exact rational arithmetic."""
    t0, t1, r = Fraction(t0), Fraction(t1), Fraction(radius)
    # Moments of t under a density proportional to t^2 on [t0, t1].
    m1 = Fraction(3, 4) * (t1**4 - t0**4) / (t1**3 - t0**3)
    m2 = Fraction(3, 5) * (t1**5 - t0**5) / (t1**3 - t0**3)
    return float(m1), float(m2 - m1**2), float(r**2 * m2 / 4)


def test_stable_frustum_formula_on_a_thin_interval():
    """A thin, distant interval: the plain moments cancel catastrophically in float32."""
    d = np.array([0.0, 0.6, -0.8], np.float32)
    t0, t1, radius = 100.0, 100.0 + 2.0**-10, 2.0**-10  # exactly representable in float32
    t_mean, t_var, r_var = _exact_frustum_moments(t0, t1, radius)
    d64 = d.astype(np.float64)
    d_outer = np.outer(d64, d64)
    truth = t_var * d_outer + r_var * (np.eye(3) - d_outer / (d64 @ d64))
    # The exact moments agree with sampling the frustum.
    rng = np.random.default_rng(7)
    pts = _sample_segment(rng, d64, t0, t1, radius, "cone", 200_000)
    assert (pts @ d64).var() / (d64 @ d64) ** 2 == pytest.approx(t_var, rel=0.02)
    mean32, cov32 = render.conical_frustum_to_gaussian(
        d,
        np.array([t0], np.float32),
        np.array([t1], np.float32),
        np.array([radius], np.float32),
        diag=False,
    )
    cov32 = np.asarray(cov32[0], np.float64)
    np.testing.assert_allclose(cov32, truth, rtol=1e-3, atol=1e-4 * np.abs(truth).max())
    np.testing.assert_allclose(np.asarray(mean32[0]), t_mean * d64, rtol=1e-6)
    _, plain32 = render.conical_frustum_to_gaussian(
        d,
        np.array([t0], np.float32),
        np.array([t1], np.float32),
        np.array([radius], np.float32),
        diag=False,
        stable=False,
    )
    # The reason for the stable form: the plain one is far off here (if not NaN).
    plain_err = np.nan_to_num(np.abs(np.asarray(plain32[0]) - truth).max(), nan=np.inf)
    assert plain_err > 100 * np.abs(cov32 - truth).max()


def test_stable_and_plain_formulas_agree_in_float64():
    rng = np.random.default_rng(8)
    d = rng.normal(size=(4, 3))
    t = np.sort(rng.uniform(0.1, 5.0, size=(4, 7)), axis=-1)
    radii = rng.uniform(0.01, 0.5, size=(4, 1))
    with jax.enable_x64(True):
        args = (jnp.asarray(d), jnp.asarray(t[:, :-1]), jnp.asarray(t[:, 1:]), jnp.asarray(radii))
        stable = render.conical_frustum_to_gaussian(*args, diag=False, stable=True)
        plain = render.conical_frustum_to_gaussian(*args, diag=False, stable=False)
        for a, b in zip(stable, plain, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


def test_cast_rays_shapes_and_origins():
    rng = np.random.default_rng(9)
    tdist = np.sort(rng.uniform(1.0, 4.0, size=(2, 3, 6)), axis=-1).astype(np.float32)
    origins = rng.normal(size=(2, 3, 3)).astype(np.float32)
    dirs = rng.normal(size=(2, 3, 3)).astype(np.float32)
    radii = rng.uniform(0.001, 0.01, size=(2, 3, 1)).astype(np.float32)
    for shape in ("cone", "cylinder"):
        means, covs = render.cast_rays(tdist, origins, dirs, radii, ray_shape=shape)
        assert means.shape == (2, 3, 5, 3) and covs.shape == (2, 3, 5, 3, 3)
        at_zero, _ = render.cast_rays(tdist, 0 * origins, dirs, radii, ray_shape=shape)
        np.testing.assert_allclose(
            np.asarray(means - at_zero),
            np.broadcast_to(origins[..., None, :], means.shape),
            atol=1e-5,
        )
        # The means lie on the rays, between the interval ends.
        t_along = np.sum((np.asarray(means) - origins[..., None, :]) * dirs[..., None, :], -1)
        t_along /= np.sum(dirs**2, -1)[..., None]
        assert np.all(t_along >= tdist[..., :-1] - 1e-5) and np.all(t_along <= tdist[..., 1:])
        _, diag = render.cast_rays(tdist, origins, dirs, radii, ray_shape=shape, diag=True)
        np.testing.assert_allclose(
            np.asarray(diag), np.diagonal(np.asarray(covs), 0, -2, -1), rtol=1e-5, atol=1e-9
        )
    with pytest.raises(UserError, match="cone, cylinder"):
        render.cast_rays(tdist, origins, dirs, radii, ray_shape="pyramid")


def _brute_alpha(density, tdist, dirs):
    """Front-to-back compositing, one ray and one sample at a time."""
    weights = np.zeros_like(density)
    for idx in np.ndindex(density.shape[:-1]):
        trans = 1.0
        for i in range(density.shape[-1]):
            delta = (tdist[idx][i + 1] - tdist[idx][i]) * np.linalg.norm(dirs[idx])
            alpha = 1.0 - np.exp(-density[idx][i] * delta)
            weights[idx][i] = trans * alpha
            trans *= 1.0 - alpha
    return weights


def test_compute_alpha_weights_matches_loop():
    rng = np.random.default_rng(10)
    density = rng.exponential(2.0, size=(3, 2, 8))
    tdist = np.sort(rng.uniform(0.0, 3.0, size=(3, 2, 9)), axis=-1)
    dirs = rng.normal(size=(3, 2, 3))
    with jax.enable_x64(True):
        weights, alpha, trans = (
            np.asarray(x)
            for x in render.compute_alpha_weights(
                jnp.asarray(density), jnp.asarray(tdist), jnp.asarray(dirs)
            )
        )
    np.testing.assert_allclose(weights, _brute_alpha(density, tdist, dirs), rtol=1e-12)
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(-1), 1.0 - np.prod(1.0 - alpha, -1), rtol=1e-12)
    np.testing.assert_allclose(trans[..., 0], 1.0)
    np.testing.assert_allclose(weights, alpha * trans, rtol=1e-12)
    # An opaque background soaks up whatever light is left.
    w_opaque, alpha_opaque, _ = render.compute_alpha_weights(
        density.astype(np.float32),
        tdist.astype(np.float32),
        dirs.astype(np.float32),
        opaque_background=True,
    )
    np.testing.assert_allclose(np.asarray(w_opaque).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(alpha_opaque)[..., -1], 1.0)
    # Gradients stay finite with the infinite last interval.
    grad = jax.grad(
        lambda s: jnp.sum(
            render.compute_alpha_weights(
                s, tdist.astype(np.float32), dirs.astype(np.float32), opaque_background=True
            )[0]
        )
    )(density.astype(np.float32))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_volumetric_rendering_composites_on_background():
    rng = np.random.default_rng(11)
    rgbs = rng.uniform(size=(4, 6, 3)).astype(np.float32)
    weights = (rng.uniform(size=(4, 6)) / 8.0).astype(np.float32)
    tdist = np.sort(rng.uniform(2.0, 6.0, size=(4, 7)), axis=-1).astype(np.float32)
    bg = np.array([0.2, 0.5, 0.9], np.float32)
    far = np.full((4, 1), 6.0, np.float32)
    out = render.volumetric_rendering(rgbs, weights, tdist, bg, far)
    acc = weights.sum(-1)
    np.testing.assert_allclose(np.asarray(out["acc"]), acc, rtol=1e-6)
    expected = np.einsum("bn,bnc->bc", weights, rgbs) + (1.0 - acc)[:, None] * bg
    np.testing.assert_allclose(np.asarray(out["rgb"]), expected, rtol=1e-5)
    t_mid = 0.5 * (tdist[:, 1:] + tdist[:, :-1])
    mean = np.sum(weights * t_mid, -1) + (1.0 - acc) * 6.0
    np.testing.assert_allclose(np.asarray(out["distance_mean"]), mean, rtol=1e-5)
    assert out["distance_median"].shape == (4,)
    np.testing.assert_array_equal(np.asarray(out["weights"]), weights)
    # An empty ray shows the background and sits at the far plane.
    empty = render.volumetric_rendering(rgbs[:1], 0 * weights[:1], tdist[:1], bg, far[:1])
    np.testing.assert_allclose(np.asarray(empty["rgb"])[0], bg)
    np.testing.assert_allclose(np.asarray(empty["distance_mean"]), 6.0)
    # Without extras only colour and opacity come back; per-ray backgrounds broadcast.
    lean = render.volumetric_rendering(
        rgbs, weights, tdist, np.ones((4, 3)), far, compute_extras=False
    )
    assert set(lean) == {"rgb", "acc"}


def test_opaque_surface_depth():
    """A solid starting at t = 2.5: mean and median depth both land on the surface."""
    tdist = np.linspace(1.0, 4.0, 301, dtype=np.float32)[None]
    t_mid = 0.5 * (tdist[:, 1:] + tdist[:, :-1])
    density = np.where(t_mid > 2.5, 1e3, 0.0).astype(np.float32)
    dirs = np.array([[0.0, 0.0, -1.0]], np.float32)
    weights = render.compute_alpha_weights(density, tdist, dirs)[0]
    rgbs = np.broadcast_to(np.array([1.0, 0.0, 0.0], np.float32), (1, 300, 3))
    out = render.volumetric_rendering(
        rgbs, weights, tdist, np.zeros(3, np.float32), np.array([[4.0]], np.float32)
    )
    width = 0.01
    np.testing.assert_allclose(np.asarray(out["acc"]), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["rgb"]), [[1.0, 0.0, 0.0]], atol=1e-5)
    assert abs(float(out["distance_median"][0]) - 2.5) <= width
    assert abs(float(out["distance_mean"][0]) - 2.5) <= width
    # The far-plane term with an infinite far does not turn an opaque ray into NaN.
    inf_far = render.volumetric_rendering(
        rgbs, weights, tdist, np.zeros(3, np.float32), np.array([[np.inf]], np.float32)
    )
    assert np.isfinite(float(inf_far["distance_mean"][0]))
