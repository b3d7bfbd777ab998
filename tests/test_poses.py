"""Pose maths against independent truths: matrix exponentials, exact Sim(3) recovery."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm
from scipy.spatial.transform import Rotation

from jaxnerf360 import poses
from jaxnerf360.errors import UserError


def _twist_matrix(xi):
    """The 4x4 Lie-algebra matrix [[w^, v], [0, 0]] of a twist (w, v), float64."""
    w, v = xi[:3], xi[3:]
    out = np.zeros((4, 4))
    out[:3, :3] = [[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]
    out[:3, 3] = v
    return out


@pytest.mark.parametrize("angle", [0.0, 1e-7, 1e-4, 5e-3, 0.011, 0.3, 1.5, 3.0])
def test_se3_exp_is_the_matrix_exponential(angle):
    rng = np.random.default_rng(int(angle * 1000))
    for _ in range(5):
        axis = rng.normal(size=3)
        xi = np.concatenate([angle * axis / np.linalg.norm(axis), rng.normal(size=3)])
        want = expm(_twist_matrix(xi))[:3]
        got = np.asarray(poses.se3_exp(jnp.asarray(xi, jnp.float32)))
        np.testing.assert_allclose(got, want, atol=2e-6)
        np.testing.assert_allclose(poses.so3_exp(jnp.asarray(xi[:3], jnp.float32)),
                                   want[:, :3], atol=2e-6)


def test_se3_log_inverts_exp():
    rng = np.random.default_rng(0)
    xi = rng.normal(size=(200, 6)) * np.array([0.8, 0.8, 0.8, 2, 2, 2])
    xi[:20, :3] *= 1e-4  # near the identity, where the series take over
    back = poses.se3_log(poses.se3_exp(jnp.asarray(xi, jnp.float32)))
    np.testing.assert_allclose(back, xi, atol=5e-5)
    # And exp(log(T)) = T for random rigid transforms (rotation angles below pi).
    rots = Rotation.random(50, random_state=1).as_matrix()
    angles = np.linalg.norm(Rotation.from_matrix(rots).as_rotvec(), axis=-1)
    rots = rots[angles < 3.0]
    t = rng.normal(size=(len(rots), 3, 1))
    pose = jnp.asarray(np.concatenate([rots, t], -1), jnp.float32)
    np.testing.assert_allclose(poses.se3_exp(poses.se3_log(pose)), pose, atol=2e-5)


def test_exp_gradients_are_finite_at_zero():
    def f(xi):
        return jnp.sum(poses.se3_exp(xi) * jnp.arange(12.0).reshape(3, 4))

    g = jax.grad(f)(jnp.zeros(6))
    assert np.all(np.isfinite(g))
    eps = 1e-3  # central differences of the float32 function around zero
    fd = [(f(jnp.eye(6)[i] * eps) - f(-jnp.eye(6)[i] * eps)) / (2 * eps) for i in range(6)]
    np.testing.assert_allclose(g, fd, atol=2e-2)


def test_compose_invert_and_camera_side_correction():
    rng = np.random.default_rng(2)
    a = poses.se3_exp(jnp.asarray(rng.normal(size=6), jnp.float32))
    b = poses.se3_exp(jnp.asarray(rng.normal(size=6), jnp.float32))
    ha, hb = np.asarray(poses.to_homogeneous(a)), np.asarray(poses.to_homogeneous(b))
    np.testing.assert_allclose(poses.compose(a, b), (ha @ hb)[:3], atol=1e-5)
    np.testing.assert_allclose(poses.to_homogeneous(poses.invert(a)), np.linalg.inv(ha),
                               atol=1e-5)
    # A pure translation correction moves the camera along its own axes.
    fixed = poses.correct(a, jnp.array([0.0, 0, 0, 0, 0, 1.0]))
    np.testing.assert_allclose(fixed[:, 3], np.asarray(a)[:, 3] + np.asarray(a)[:, 2], atol=1e-5)


def test_procrustes_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(30, 3))
    rot = Rotation.random(random_state=4).as_matrix()
    scale, shift = 2.7, np.array([0.5, -3.0, 1.2])
    dst = scale * src @ rot.T + shift
    s, r, t = poses.procrustes(src, dst)
    assert s == pytest.approx(scale, rel=1e-12)
    np.testing.assert_allclose(r, rot, atol=1e-12)
    np.testing.assert_allclose(t, shift, atol=1e-12)
    with pytest.raises(UserError, match="3 distinct"):
        poses.procrustes(np.zeros((5, 3)), dst[:5])


def test_pose_errors_are_gauge_free_and_measure_what_was_added():
    rng = np.random.default_rng(5)
    gt = np.asarray(poses.se3_exp(jnp.asarray(rng.normal(size=(12, 6)), jnp.float32)))
    rot = Rotation.random(random_state=6).as_matrix()
    moved = np.concatenate([rot @ gt[:, :, :3], (0.5 * gt[:, :, 3] @ rot.T + 1.0)[..., None]], -1)
    err = poses.pose_errors(moved, gt)  # the same cameras in another frame and scale
    assert err["rotation_deg"] < 1e-3 and err["translation"] < 1e-5
    np.testing.assert_allclose(poses.align(moved, err["align"]), gt, atol=1e-5)
    np.testing.assert_allclose(poses.unalign(gt, err["align"]), moved, atol=1e-5)
    # A known rotation about each camera's own centre shows up as exactly that angle.
    turn = np.zeros((12, 6))
    turn[:, 1] = np.radians(2.0)
    turned = np.asarray(poses.correct(jnp.asarray(gt), jnp.asarray(turn, jnp.float32)))
    err = poses.pose_errors(turned, gt)
    assert err["rotation_deg"] == pytest.approx(2.0, abs=1e-3) and err["translation"] < 1e-4


def test_pose_errors_from_identity_poses_are_unaligned():
    """Coinciding centres fix no Sim(3): they are compared as they are (BARF's fallback)."""
    rng = np.random.default_rng(8)
    gt = np.asarray(poses.se3_exp(jnp.asarray(rng.normal(size=(6, 6)), jnp.float32)))
    start = np.tile(np.eye(3, 4), (6, 1, 1))
    err = poses.pose_errors(start, gt)
    angles = poses.rotation_angle_deg(np.eye(3), gt[:, :, :3])
    assert err["rotation_deg"] == pytest.approx(np.mean(angles))
    assert err["translation"] == pytest.approx(np.mean(np.linalg.norm(gt[:, :, 3], axis=-1)))


def test_orientation_fit_is_immune_to_the_tilt_of_nearly_planar_centres():
    rng = np.random.default_rng(9)
    rotations = Rotation.from_rotvec(rng.normal(0, 0.05, (16, 3))).as_matrix()
    centres = np.stack([rng.uniform(-0.4, 0.4, 16), rng.uniform(-0.13, 0.13, 16),
                        np.zeros(16)], -1)  # forward-facing: centres on a plane
    gt = np.concatenate([rotations, centres[..., None]], -1)
    gauge = Rotation.random(random_state=10).as_matrix()
    depth_error = rng.normal(0, 0.015, 16)[:, None] * [0.0, 0.0, 1.0]
    learned = np.concatenate([gauge @ rotations, ((centres + depth_error) @ gauge.T)[..., None]],
                             -1)
    np.testing.assert_allclose(poses.orientation_fit(learned[:, :, :3], rotations), gauge.T,
                               atol=1e-12)
    err = poses.pose_errors(learned, gt)
    assert err["rotation_deg_orientation_fit"] < 1e-5
    assert err["rotation_deg"] > 1.0  # depth errors of 0.015 tilt the centre fit by degrees
    err = poses.pose_errors(np.concatenate([learned[:, :, :3], gauge @ centres[..., None]], -1),
                            gt)
    assert err["rotation_deg"] < 1e-4  # exact centres: both fits agree


def test_perturb_is_seeded_camera_side_noise():
    gt = np.tile(np.eye(3, 4, dtype=np.float32), (400, 1, 1))
    a, b = poses.perturb(gt, 0.15, seed=1), poses.perturb(gt, 0.15, seed=1)
    np.testing.assert_array_equal(a, b)
    xi = np.asarray(poses.se3_log(jnp.asarray(a)))
    assert np.std(xi) == pytest.approx(0.15, rel=0.05)
    np.testing.assert_array_equal(poses.perturb(gt, 0.0, seed=1), gt)
    with pytest.raises(UserError, match="non-negative"):
        poses.perturb(gt, -0.1, seed=1)
