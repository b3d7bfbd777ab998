"""The cameras stage: initial poses, corrections as parameters, training rays, pose errors."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360 import poses
from jaxnerf360.cameras import PARAMS, POSE, Cameras
from jaxnerf360.data import load_split
from jaxnerf360.data.cameras import scene_rays
from jaxnerf360.errors import UserError
from tests.test_grid_training import _config


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


@pytest.fixture
def scene(synthetic_dir):
    return load_split(_config(synthetic_dir), "train")


def test_initial_poses_and_what_is_tracked(scene):
    given = Cameras(scene)
    assert not given.tracked and given.init_params() is None
    np.testing.assert_array_equal(given.initial, scene.camtoworlds)
    noisy = Cameras(scene, seed=3, pose_noise=0.1)
    assert noisy.tracked
    np.testing.assert_allclose(noisy.initial, poses.perturb(scene.camtoworlds, 0.1, 3))
    moved = noisy.training_scene(scene)
    np.testing.assert_array_equal(moved.camtoworlds, noisy.initial)
    assert moved.images is scene.images  # the pixels are shared, not copied
    np.testing.assert_array_equal(scene.camtoworlds, noisy.truth)  # the input is untouched
    identity = Cameras(scene, pose_init="identity", optimize_poses=True)
    np.testing.assert_array_equal(identity.initial, np.tile(np.eye(3, 4), (16, 1, 1)))


def test_corrections_are_parameters_with_their_own_group(scene):
    cameras = Cameras(scene, optimize_poses=True, optimize_focal="per_image",
                      pose_lr_init=2e-3, pose_lr_final=2e-4)
    corrections = cameras.init_params()
    assert corrections["xi"].shape == (16, 6) and corrections["log_focal"].shape == (16,)
    params = Cameras.join({"field": {"w": jnp.ones(2)}}, corrections)
    model_params, camera_params = Cameras.split(params)
    assert set(model_params) == {"field"} and camera_params is corrections
    assert set(jax.tree.leaves(Cameras.param_labels(params)[PARAMS])) == {POSE}
    assert Cameras.split(model_params) == (model_params, None)
    group = cameras.param_groups()[POSE]
    assert (group.lr_init, group.lr_final, group.warmup) == (2e-3, 2e-4, False)


def test_training_rays_follow_the_corrections_and_the_near_schedule(scene):
    cameras = Cameras(scene, optimize_poses=True, near_schedule=((0.0, 3.0), (0.5, 2.0)))
    views = cameras.views(cameras.training_scene(scene))
    cam = np.arange(16)
    cols, rows = (3 * cam) % scene.width, (5 * cam) % scene.height
    rays = scene_rays(scene, cam, cols, rows)
    batch = {"rays": rays, "pixels": jnp.asarray(np.stack([cols, rows], -1) + 0.5, jnp.float32)}
    out = cameras.rays(cameras.init_params(), batch, 0.0, views)
    np.testing.assert_allclose(out.origins, rays.origins, atol=1e-5)
    np.testing.assert_allclose(out.directions, rays.directions, atol=1e-5)
    np.testing.assert_allclose(out.near, 3.0)  # raised early in training
    np.testing.assert_allclose(cameras.rays(None, batch, 1.0, views).near, rays.near)
    np.testing.assert_allclose(cameras.rays(None, batch, None, views).near, rays.near)


def test_errors_fall_to_zero_when_corrections_undo_the_noise(scene):
    cameras = Cameras(scene, seed=1, pose_noise=0.1, optimize_poses=True)
    params = {PARAMS: cameras.init_params()}
    before = cameras.errors(params)
    assert before["pose_rotation_deg"] > 1.0 and "pose" in cameras.describe(before)
    noise = np.random.default_rng(1).normal(0.0, 0.1, (16, 6)).astype(np.float32)
    undone = {PARAMS: {"xi": jnp.asarray(np.asarray(poses.se3_log(poses.invert(
        poses.se3_exp(jnp.asarray(noise))))))}}
    after = cameras.errors(undone)
    assert after["pose_rotation_deg"] < 1e-3 and after["pose_translation"] < 1e-4
    report, align = cameras.report(undone)
    assert report["poses"]["rotation_deg_before"] == pytest.approx(before["pose_rotation_deg"])
    test_poses = cameras.test_poses(scene, align)
    np.testing.assert_allclose(test_poses, scene.camtoworlds, atol=1e-4)  # a near-identity fit


def test_a_test_view_is_refined_with_one_correction(scene):
    cameras = Cameras(scene, test_pose_lr_init=5e-3, test_pose_lr_final=5e-4)
    refine, views = cameras.for_test_view(scene, 3, scene.camtoworlds[3])
    assert refine.optimize_poses and refine.init_params()["xi"].shape == (1, 6)
    assert refine.param_groups()[POSE].lr_init == 5e-3 and not refine.near_schedule
    np.testing.assert_allclose(views.camtoworlds[0], scene.camtoworlds[3])
    np.testing.assert_allclose(views.intrinsics[0], scene.intrinsics[3])


@pytest.mark.parametrize("kwargs,needle", [
    (dict(pose_noise=-1.0), "pose_noise"), (dict(pose_init="random"), "pose_init"),
    (dict(optimize_focal="shared"), "optimize_poses"), (dict(pose_lr_init=0.0), "pose_lr"),
    (dict(test_pose_batch=0), "test_pose_batch"),
    (dict(near_schedule=((0.0, 0.1), (0.5, 0.4))), "near_schedule"),
])
def test_bad_settings_are_one_line_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        Cameras(**kwargs)
