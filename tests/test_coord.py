"""Tests of jaxnerf360.geometry.coord against closed forms, finite differences and sampling."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360.errors import UserError
from jaxnerf360.geometry import coord, safe_math


def _random_points(rng, n, log_lo=-3.0, log_hi=3.0):
    """Points `[n, 3]` with random directions and log-uniform norms."""
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    return dirs * 10.0 ** rng.uniform(log_lo, log_hi, size=(n, 1))


def _contract_reference(x):
    """eq. 10 of mip-NeRF 360 written out in numpy, one point at a time."""
    out = []
    for p in x:
        norm = np.linalg.norm(p)
        out.append(p if norm <= 1 else (2.0 - 1.0 / norm) * p / norm)
    return np.array(out)


def test_contract_matches_closed_form():
    x = _random_points(np.random.default_rng(0), 200)
    with jax.enable_x64(True):
        z = np.asarray(coord.contract(jnp.asarray(x)))
    np.testing.assert_allclose(z, _contract_reference(x), rtol=1e-12, atol=1e-12)


def test_contract_inverse_round_trip():
    rng = np.random.default_rng(1)
    x = np.concatenate([_random_points(rng, 300, -4.0, 4.0), np.zeros((1, 3))])
    with jax.enable_x64(True):
        x_back = np.asarray(coord.inv_contract(coord.contract(jnp.asarray(x))))
        z = _random_points(rng, 300, -4.0, np.log10(1.999))
        z_back = np.asarray(coord.contract(coord.inv_contract(jnp.asarray(z))))
    np.testing.assert_allclose(x_back, x, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(z_back, z, rtol=1e-10, atol=1e-12)
    # float32 round trip of moderate points.
    x32 = _random_points(rng, 100, -2.0, 1.0).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(coord.inv_contract(coord.contract(x32))), x32, rtol=1e-4, atol=1e-6
    )


def test_contract_maps_into_ball_of_radius_two_and_is_safe():
    rng = np.random.default_rng(2)
    x = _random_points(rng, 500, -30.0, 37.0).astype(np.float32)
    x = np.concatenate([x, np.zeros((1, 3), np.float32), [[3.4e38, -3.4e38, 3.4e38]]])
    z = np.asarray(coord.contract(x))
    assert np.all(np.isfinite(z))
    assert np.all(np.linalg.norm(z, axis=-1) <= 2.0 + 1e-6)
    # Points beyond the unit ball land strictly between the spheres of radius 1 and 2.
    far = np.linalg.norm(x, axis=-1) > 1.5
    assert np.all(np.linalg.norm(z[far], axis=-1) > 1.0)
    jac = jax.vmap(jax.jacfwd(coord.contract))(x)
    assert np.all(np.isfinite(np.asarray(jac)))
    np.testing.assert_allclose(np.asarray(jac[-2]), np.eye(3))  # identity at the origin
    grad = jax.grad(lambda p: jnp.sum(coord.contract(p)))(x)
    assert np.all(np.isfinite(np.asarray(grad)))


def _finite_difference_jacobian(fn, x, h=1e-6):
    """Central-difference Jacobians `[n, 3, 3]` of a point map at `x [n, 3]` (float64)."""
    cols = []
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        cols.append((np.asarray(fn(x + e)) - np.asarray(fn(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)


def _random_covs(rng, n, scale=0.1):
    a = rng.normal(size=(n, 3, 3)) * scale
    return a @ np.swapaxes(a, -1, -2) + 1e-3 * np.eye(3)


def test_track_linearize_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    # Inside and outside the unit ball, kept away from |x| = 1 where the formula switches.
    x = np.concatenate([_random_points(rng, 20, -2.0, -0.1), _random_points(rng, 20, 0.1, 2.0)])
    cov = _random_covs(rng, len(x))
    with jax.enable_x64(True):
        mean, cov_out = coord.contract_gaussians(jnp.asarray(x), jnp.asarray(cov))
        jac = _finite_difference_jacobian(lambda p: coord.contract(jnp.asarray(p)), x)
    np.testing.assert_allclose(np.asarray(mean), _contract_reference(x), rtol=1e-12)
    expected = jac @ cov @ np.swapaxes(jac, -1, -2)
    np.testing.assert_allclose(np.asarray(cov_out), expected, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(np.asarray(cov_out), np.swapaxes(cov_out, -1, -2), atol=1e-12)


def test_track_linearize_is_exact_for_affine_maps():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(2, 3))  # also checks a map to a different dimension
    b = rng.normal(size=2)
    mean = rng.normal(size=(4, 5, 3))
    cov = _random_covs(rng, 20).reshape(4, 5, 3, 3)
    with jax.enable_x64(True):
        fn_mean, fn_cov = coord.track_linearize(
            lambda x: x @ jnp.asarray(a).T + b, jnp.asarray(mean), jnp.asarray(cov)
        )
    assert fn_mean.shape == (4, 5, 2) and fn_cov.shape == (4, 5, 2, 2)
    np.testing.assert_allclose(np.asarray(fn_mean), mean @ a.T + b, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(fn_cov), a @ cov @ a.T, rtol=1e-12, atol=1e-14)
    # An affine map of a Gaussian is Gaussian: compare with sampling as well.
    samples = rng.multivariate_normal(mean[0, 0], cov[0, 0], size=100_000) @ a.T + b
    np.testing.assert_allclose(np.cov(samples.T), np.asarray(fn_cov[0, 0]), atol=0.02)


def test_pos_enc_basic_properties():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    enc = np.asarray(coord.pos_enc(x, 1, 4, append_identity=True))
    assert enc.shape == (2, 4, 3 + 3 * 2 * 3)
    np.testing.assert_array_equal(enc[..., :3], x)
    no_id = np.asarray(coord.pos_enc(x, 1, 4, append_identity=False))
    assert no_id.shape == (2, 4, 18)
    np.testing.assert_allclose(no_id, enc[..., 3:])
    expected_sin = [np.sin(2.0**deg * x[..., i]) for deg in range(1, 4) for i in range(3)]
    expected_cos = [np.cos(2.0**deg * x[..., i]) for deg in range(1, 4) for i in range(3)]
    np.testing.assert_allclose(no_id[..., :9], np.stack(expected_sin, -1), atol=1e-5)
    np.testing.assert_allclose(no_id[..., 9:], np.stack(expected_cos, -1), atol=1e-5)
    np.testing.assert_allclose(no_id[..., :9] ** 2 + no_id[..., 9:] ** 2, 1.0, atol=1e-5)
    assert coord.pos_enc(x, 0, 0, append_identity=False).shape == (2, 4, 0)


@pytest.mark.parametrize("magnitude", [3.0, 300.0, 1e4, 1e5, 4e5])
def test_sin_cos_match_float64(magnitude):
    """Quarter-turn reduction and polynomials: float32 rounding of the result, at any angle."""
    x = (np.random.default_rng(0).uniform(-1, 1, 200000) * magnitude).astype(np.float32)
    x[:4] = [0.0, np.float32(np.pi / 4), np.float32(-np.pi / 2), np.float32(3 * np.pi / 4)]
    exact = x.astype(np.float64)
    # Compiled, XLA may fuse the reduction's products into multiply-adds; op by op it does not.
    for fn in (jax.jit(safe_math.sin_cos), safe_math.sin_cos):
        sin, cos = fn(jnp.asarray(x))
        np.testing.assert_allclose(sin, np.sin(exact), atol=2e-7, rtol=0)
        np.testing.assert_allclose(cos, np.cos(exact), atol=2e-7, rtol=0)


def test_sin_cos_derivatives_are_cos_and_minus_sin():
    x = jnp.linspace(-50.0, 50.0, 1001)
    d_sin = jax.vmap(jax.grad(lambda v: safe_math.sin_cos(v)[0]))(x)
    d_cos = jax.vmap(jax.grad(lambda v: safe_math.sin_cos(v)[1]))(x)
    exact = np.asarray(x, np.float64)
    np.testing.assert_allclose(d_sin, np.cos(exact), atol=2e-7, rtol=0)
    np.testing.assert_allclose(d_cos, -np.sin(exact), atol=2e-7, rtol=0)
    # And against central differences of the float64 functions the polynomial stands for.
    h = 1e-4
    np.testing.assert_allclose(d_sin, (np.sin(exact + h) - np.sin(exact - h)) / (2 * h),
                               atol=1e-6, rtol=0)


def test_sines_and_cosines_match_float64_halves():
    angles = (np.random.default_rng(2).uniform(-1, 1, (64, 5)) * 2e5).astype(np.float32)
    got = np.asarray(jax.jit(coord.sines_and_cosines)(jnp.asarray(angles)))
    exact = angles.astype(np.float64)
    assert got.shape == (64, 10)
    np.testing.assert_allclose(got[:, :5], np.sin(exact), atol=5e-7)
    np.testing.assert_allclose(got[:, 5:], np.cos(exact), atol=5e-7)


def test_pos_enc_at_high_degrees_matches_float64():
    x = np.random.default_rng(1).uniform(-2, 2, (500, 3)).astype(np.float32)
    scaled = (x.astype(np.float64)[..., None, :] * 2.0 ** np.arange(17)[:, None]).reshape(500, -1)
    want = np.concatenate([np.sin(scaled), np.cos(scaled)], -1)
    got = coord.pos_enc(jnp.asarray(x), 0, 17, append_identity=False)
    np.testing.assert_allclose(got, want, atol=1e-6)
    ipe = coord.integrated_pos_enc(jnp.asarray(x), jnp.zeros_like(jnp.asarray(x)), 0, 17)
    np.testing.assert_allclose(ipe, want, atol=1e-6)


def test_pos_enc_of_large_inputs_matches_float64_at_low_degrees():
    # The TensoRF colour MLP's encoding of its features (degrees 0 and 1, any magnitude a
    # network may give them).
    x = (np.random.default_rng(3).uniform(-1, 1, (400, 27)) * 1e3).astype(np.float32)
    scaled = (x.astype(np.float64)[..., None, :] * 2.0 ** np.arange(2)[:, None]).reshape(400, -1)
    want = np.concatenate([np.sin(scaled), np.cos(scaled)], -1)
    got = jax.jit(lambda v: coord.pos_enc(v, 0, 2, append_identity=False))(jnp.asarray(x))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_integrated_pos_enc_matches_monte_carlo():
    rng = np.random.default_rng(6)
    mean = rng.normal(size=(3, 2))
    var = rng.uniform(0.0, 0.3, size=(3, 2))
    n = 200_000
    samples = mean + np.sqrt(var) * rng.normal(size=(n, 3, 2))
    feats = np.asarray(coord.pos_enc(samples.astype(np.float32), 0, 4, append_identity=False))
    mc_mean = feats.mean(0)
    mc_err = feats.std(0) / np.sqrt(n)
    ipe = np.asarray(coord.integrated_pos_enc(mean, var, 0, 4))
    assert ipe.shape == (3, 2 * 2 * 4)
    assert np.all(np.abs(ipe - mc_mean) < 5 * mc_err + 1e-5)
    # Zero variance is the plain encoding; huge variance washes every feature out.
    np.testing.assert_allclose(
        np.asarray(coord.integrated_pos_enc(mean, 0 * var, 0, 4)),
        np.asarray(coord.pos_enc(mean, 0, 4, append_identity=False)),
        atol=1e-6,
    )
    assert np.all(np.abs(np.asarray(coord.integrated_pos_enc(mean, var + 1e3, 0, 4))) < 1e-6)


@pytest.mark.parametrize("tessellation, count", [(1, 6), (2, 21), (3, 46)])
def test_generate_basis(tessellation, count):
    basis = coord.generate_basis(tessellation)
    assert basis.shape == (3, count)
    np.testing.assert_allclose(np.linalg.norm(basis, axis=0), 1.0, atol=1e-6)
    dots = np.abs(basis.T @ basis)[~np.eye(count, dtype=bool)]
    assert np.all(dots < 1.0 - 1e-4)  # pairwise distinct and not antipodal
    if tessellation == 1:
        # The icosahedron's axes meet at arccos(1/sqrt(5)) ~ 63.4 degrees.
        np.testing.assert_allclose(dots, 1.0 / np.sqrt(5.0), atol=1e-6)
    if tessellation == 2:
        # Every icosahedron axis is in the finer basis.
        coarse = coord.generate_basis(1)
        assert np.all(np.max(np.abs(coarse.T @ basis), axis=-1) > 1.0 - 1e-6)


def test_generate_basis_rejects_bad_tessellation():
    with pytest.raises(UserError, match="tessellation"):
        coord.generate_basis(0)


def test_lift_and_diagonalize_matches_explicit_projection():
    rng = np.random.default_rng(7)
    basis = coord.generate_basis(2).astype(np.float64)
    mean = rng.normal(size=(2, 3, 3))
    cov = _random_covs(rng, 6).reshape(2, 3, 3, 3)
    with jax.enable_x64(True):
        proj_mean, proj_var = coord.lift_and_diagonalize(
            jnp.asarray(mean), jnp.asarray(cov), jnp.asarray(basis)
        )
        proj_mean, proj_var = np.asarray(proj_mean), np.asarray(proj_var)
    assert proj_mean.shape == (2, 3, 21) and proj_var.shape == (2, 3, 21)
    for i, j, k in itertools.product(range(2), range(3), range(21)):
        b = basis[:, k]
        assert abs(proj_mean[i, j, k] - b @ mean[i, j]) < 1e-12
        assert abs(proj_var[i, j, k] - b @ cov[i, j] @ b) < 1e-12


@pytest.mark.parametrize("fn_name", ["reciprocal", "linear", "log"])
def test_ray_warps_round_trip_and_monotone(fn_name):
    near = np.array([[0.5], [2.0]])
    far = np.array([[10.0], [6.0]])
    with jax.enable_x64(True):
        t_to_s, s_to_t = coord.construct_ray_warps(fn_name, jnp.asarray(near), jnp.asarray(far))
        t = near + (far - near) * np.linspace(0.0, 1.0, 33)
        s = np.asarray(t_to_s(jnp.asarray(t)))
        np.testing.assert_allclose(s[:, 0], 0.0, atol=1e-12)
        np.testing.assert_allclose(s[:, -1], 1.0, atol=1e-12)
        assert np.all(np.diff(s, axis=-1) > 0)
        np.testing.assert_allclose(np.asarray(s_to_t(jnp.asarray(s))), t, rtol=1e-12)
        s_grid = np.linspace(0.0, 1.0, 17)
        np.testing.assert_allclose(
            np.asarray(t_to_s(s_to_t(s_grid))), s_grid + 0 * near, atol=1e-12
        )
    # Python floats work as well.
    t_to_s, s_to_t = coord.construct_ray_warps(fn_name, 1.0, 4.0)
    np.testing.assert_allclose(
        float(t_to_s(2.0)), {"reciprocal": 2 / 3, "linear": 1 / 3, "log": 0.5}[fn_name], rtol=1e-6
    )


def test_ray_warps_reject_bad_input():
    with pytest.raises(UserError, match="near distance is 0.0"):
        coord.construct_ray_warps("reciprocal", 0.0, 1.0)
    with pytest.raises(UserError, match="-1.0"):
        coord.construct_ray_warps("log", -1.0, 1.0)
    with pytest.raises(UserError, match="reciprocal, linear, log"):
        coord.construct_ray_warps("cubic", 1.0, 2.0)
    with pytest.raises(UserError, match="far"):
        coord.construct_ray_warps("linear", 3.0, 2.0)
    coord.construct_ray_warps("linear", 0.0, 1.0)  # near = 0 is fine for a linear warp
