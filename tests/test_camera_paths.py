"""Camera paths: valid rotations, ellipse focus and height, exact keyframes, spiral extent."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from jaxnerf360 import camera_paths
from jaxnerf360.data.scene import FORWARD, UNBOUNDED
from jaxnerf360.errors import UserError


def assert_rigid(poses, atol=1e-5):
    """Every rotation is orthonormal with determinant +1."""
    rot = poses[:, :, :3].astype(np.float64)
    eye = np.broadcast_to(np.eye(3), rot.shape)
    np.testing.assert_allclose(np.swapaxes(rot, 1, 2) @ rot, eye, atol=atol)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=atol)


def orbit_cameras(rng, n=24, radius=2.0, height=0.5, focus=(0.3, -0.2, 0.1)):
    """Cameras on a jittered circle around `focus` (world up +z), looking at it."""
    focus = np.asarray(focus)
    poses = []
    for a in np.linspace(0, 2 * np.pi, n, endpoint=False):
        pos = focus + [radius * np.cos(a), radius * np.sin(a), height]
        pos = pos + rng.normal(scale=0.03, size=3)
        poses.append(camera_paths.look_at(pos, focus + rng.normal(scale=0.02, size=3), [0, 0, 1]))
    return np.stack(poses), focus


def mean_up(poses):
    """The normalised average of the cameras' +y axes."""
    up = poses[:, :, 1].astype(np.float64).mean(axis=0)
    return up / np.linalg.norm(up)


def distance_to_axis(poses, point):
    """Distance from `point` to each pose's optical axis (the -z ray)."""
    d = -poses[:, :, 2].astype(np.float64)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    v = point - poses[:, :, 3]
    along = np.sum(v * d, axis=-1)
    assert np.all(along > 0)  # the point is in front of the camera
    return np.linalg.norm(v - along[:, None] * d, axis=-1)


def test_look_at():
    pose = camera_paths.look_at([1.0, 2.0, 3.0], [1.0, 2.0, 0.0], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(pose, np.concatenate([np.eye(3), [[1], [2], [3]]], 1), atol=1e-12)
    rng = np.random.default_rng(0)
    poses = np.stack(
        [camera_paths.look_at(rng.normal(size=3), rng.normal(size=3), rng.normal(size=3))
         for _ in range(20)]
        # Degenerate: looking straight along up still gives a valid rotation.
        + [camera_paths.look_at([0, 0, 2.0], [0, 0, 0], [0, 0, 1.0])]
    )
    assert_rigid(poses, atol=1e-10)


def test_focus_point_of_converging_cameras():
    rng = np.random.default_rng(1)
    poses, focus = orbit_cameras(rng, height=0.0)
    np.testing.assert_allclose(camera_paths.focus_point(poses), focus, atol=0.05)


def test_ellipse_path():
    rng = np.random.default_rng(2)
    poses, focus = orbit_cameras(rng)
    path = camera_paths.ellipse_path(poses, 30)
    assert path.shape == (30, 3, 4) and path.dtype == np.float32
    assert_rigid(path)
    fitted = camera_paths.focus_point(poses)
    # Every frame looks at the centre of focus...
    assert distance_to_axis(path, fitted).max() < 1e-4
    assert np.linalg.norm(fitted - focus) < 0.1
    # ...from the cameras' height and roughly their distance, with the world up kept up.
    up = mean_up(poses)
    np.testing.assert_allclose(path[:, :, 3] @ up, (poses[:, :, 3] @ up).mean(), atol=1e-5)
    np.testing.assert_allclose(path[:, 2, 3], poses[:, 2, 3].mean(), atol=0.02)
    radial = np.linalg.norm(path[:, :2, 3] - fitted[:2], axis=-1)
    np.testing.assert_allclose(radial, 2.0, atol=0.15)
    assert np.all(path[:, 2, 1] > 0.9)
    # The orbit starts near the first camera.
    assert np.linalg.norm(path[0, :, 3] - poses[0, :, 3]) < 0.2


def test_ellipse_z_variation():
    rng = np.random.default_rng(3)
    poses, _ = orbit_cameras(rng)
    poses[::2, 2, 3] += 0.4  # a spread of heights
    flat = camera_paths.ellipse_path(poses, 40)
    wavy = camera_paths.ellipse_path(poses, 40, z_variation=1.0, z_phase=0.25)
    up = mean_up(poses)
    assert np.ptp(flat[:, :, 3] @ up) < 1e-5
    assert np.ptp(wavy[:, :, 3] @ up) > 0.2
    assert_rigid(wavy)
    np.testing.assert_allclose((wavy[:, :, 3] @ up).mean(), flat[0, :, 3] @ up, atol=1e-5)


def test_interpolate_path_hits_keyframes():
    rng = np.random.default_rng(4)
    keys = np.stack(
        [np.concatenate([Rotation.random(random_state=i).as_matrix(), rng.normal(size=(3, 1))], 1)
         for i in range(5)]
    )
    n_frames = 4 * 7 + 1
    path = camera_paths.interpolate_path(keys, n_frames)
    assert path.shape == (n_frames, 3, 4)
    assert_rigid(path)
    for k in range(5):
        np.testing.assert_allclose(path[7 * k], keys[k], atol=1e-6)
    # In between: smooth, i.e. steps between frames are small compared with the keys' gaps.
    steps = np.linalg.norm(np.diff(path[:, :, 3], axis=0), axis=-1)
    gaps = np.linalg.norm(np.diff(keys[:, :, 3], axis=0), axis=-1)
    assert steps.max() < gaps.max() / 2


def test_slerp_against_scipy():
    r0, r1 = Rotation.random(random_state=7), Rotation.random(random_state=8)
    q0 = camera_paths.rotation_to_quaternion(r0.as_matrix())
    q1 = camera_paths.rotation_to_quaternion(r1.as_matrix())
    # scipy's quaternions are (x, y, z, w).
    for q, r in ((q0, r0), (q1, r1)):
        want = np.roll(r.as_quat(), 1)
        np.testing.assert_allclose(q, want * np.sign(want[0]), atol=1e-10)
    for u in (0.0, 0.3, 0.75, 1.0):
        got = camera_paths.quaternion_to_rotation(camera_paths.slerp(q0, q1, u))
        # The geodesic: rotate r0 by a fraction u of the relative rotation.
        want = (Rotation.from_rotvec(u * (r1 * r0.inv()).as_rotvec()) * r0).as_matrix()
        np.testing.assert_allclose(got, want, atol=1e-9)
    # Quaternion round trip through every branch of the conversion.
    mats = Rotation.random(50, random_state=9).as_matrix()
    mats = np.concatenate([mats, np.diag([1.0, -1, -1])[None], np.diag([-1.0, 1, -1])[None],
                           np.diag([-1.0, -1, 1])[None]])
    back = camera_paths.quaternion_to_rotation(camera_paths.rotation_to_quaternion(mats))
    np.testing.assert_allclose(back, mats, atol=1e-10)


def forward_cameras(rng, n=12):
    """Forward-facing cameras on a small plane, all looking roughly down -z."""
    poses = []
    for _ in range(n):
        pos = np.array([*rng.uniform(-0.3, 0.3, size=2), 0.0]) + rng.normal(scale=0.02, size=3)
        target = np.array([0.0, 0.0, -4.0]) + rng.normal(scale=0.2, size=3)
        poses.append(camera_paths.look_at(pos, target, [0, 1, 0]))
    return np.stack(poses)


def test_spiral_path_stays_near_average_pose():
    rng = np.random.default_rng(5)
    poses = forward_cameras(rng)
    path = camera_paths.spiral_path(poses, 40, near=1.5, far=10.0)
    assert path.shape == (40, 3, 4)
    assert_rigid(path)
    avg = camera_paths.average_pose(poses)
    # Offsets in the average camera's frame stay within the cameras' own spread.
    extent = np.abs((poses[:, :, 3] - avg[:, 3]) @ avg[:, :3]).max(axis=0)
    offsets = np.abs((path[:, :, 3] - avg[:, 3]) @ avg[:, :3])
    assert np.all(offsets <= extent + 1e-5)
    assert offsets[:, 0].max() > 0.5 * extent[0]  # and it does move
    # Looking the same way as the average camera (within a few degrees) and with up kept.
    cos_view = np.sum(path[:, :, 2] * avg[:, 2], axis=-1)
    assert np.all(cos_view > np.cos(np.radians(10)))
    assert np.all(path[:, 1, 1] > 0.95)
    # All frames look at one focus point on the average optical axis.
    focal = 1.0 / (0.25 / (0.9 * 1.5) + 0.75 / (5 * 10.0))
    target = avg[:, 3] - focal * avg[:, 2]
    assert distance_to_axis(path, target).max() < 1e-4
    with pytest.raises(UserError, match="near"):
        camera_paths.spiral_path(poses, 10, near=2.0, far=1.0)


def test_make_path_and_bad_input():
    rng = np.random.default_rng(6)
    poses = forward_cameras(rng)
    np.testing.assert_allclose(
        camera_paths.make_path("auto", poses, 8, FORWARD), camera_paths.spiral_path(poses, 8)
    )
    orbit, _ = orbit_cameras(rng)
    np.testing.assert_allclose(
        camera_paths.make_path("auto", orbit, 8, UNBOUNDED), camera_paths.ellipse_path(orbit, 8)
    )
    assert camera_paths.make_path("interp", orbit, 9).shape == (9, 3, 4)
    with pytest.raises(UserError, match="render_path"):
        camera_paths.make_path("circle", orbit, 8)
    with pytest.raises(UserError, match=r"\[N, 3, 4\]"):
        camera_paths.ellipse_path(np.zeros((4, 3)), 8)
    with pytest.raises(UserError, match="render_frames"):
        camera_paths.interpolate_path(orbit, 0)
    single = camera_paths.interpolate_path(orbit[:1], 3)
    np.testing.assert_allclose(single, np.repeat(orbit[:1], 3, 0), atol=1e-7)
