"""Pixel -> ray maths checked against independent forward projections and closed forms."""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360.data import cameras
from jaxnerf360.data.scene import BOUNDED, FORWARD, Scene
from jaxnerf360.errors import UserError

DIST = np.array([-0.21, 0.048, 0.0013, -0.0021])


def random_rotation(rng):
    """A uniformly random rotation matrix with det +1."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_cameras(rng, n):
    """`n` random camtoworlds [n, 3, 4], intrinsics [n, 4] and distortions [n, 4]."""
    c2w = np.stack(
        [np.concatenate([random_rotation(rng), rng.normal(size=(3, 1))], 1) for _ in range(n)]
    )
    f = rng.uniform(40, 80, size=(n, 2))
    c = rng.uniform(25, 35, size=(n, 2))
    intr = np.concatenate([f, c], axis=1)
    dist = DIST * rng.uniform(0.5, 1.5, size=(n, 4))
    return c2w, intr, dist


def project(points, c2w, intr, dist):
    """Independent forward model: world points [..., 3] -> pixel coordinates (u, v)."""
    rot, t = c2w[..., :3, :3], c2w[..., :3, 3]
    p_cam = np.einsum("...ji,...j->...i", rot, points - t)  # R^T (p - t)
    # OpenGL camera (x right, y up, looking down -z) -> OpenCV (x right, y down, +z fwd).
    x = p_cam[..., 0] / -p_cam[..., 2]
    y = -p_cam[..., 1] / -p_cam[..., 2]
    k1, k2, p1, p2 = np.moveaxis(dist, -1, 0)
    r2 = x**2 + y**2
    radial = 1 + k1 * r2 + k2 * r2**2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x**2)
    yd = y * radial + p1 * (r2 + 2 * y**2) + 2 * p2 * x * y
    return intr[..., 0] * xd + intr[..., 2], intr[..., 1] * yd + intr[..., 3]


def test_distortion_round_trip():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-0.6, 0.6, size=(2, 500))
    xd, yd = cameras.distort_points(x, y, DIST)
    xu, yu = cameras.undistort_points(xd, yd, DIST)
    np.testing.assert_allclose(xu, x, atol=1e-10)
    np.testing.assert_allclose(yu, y, atol=1e-10)


def test_distort_matches_independent_model():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-0.5, 0.5, size=(2, 50))
    k1, k2, p1, p2 = DIST
    r2 = x**2 + y**2
    # OpenCV's model written out term by term.
    want_x = x + x * k1 * r2 + x * k2 * r2 * r2 + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    want_y = y + y * k1 * r2 + y * k2 * r2 * r2 + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)
    xd, yd = cameras.distort_points(x, y, DIST)
    np.testing.assert_allclose(xd, want_x, atol=1e-12)
    np.testing.assert_allclose(yd, want_y, atol=1e-12)


def test_undistort_identity_for_zero_distortion():
    x, y = np.linspace(-1, 1, 7), np.linspace(0.5, -0.3, 7)
    xu, yu = cameras.undistort_points(x, y, np.zeros(4))
    np.testing.assert_array_equal(xu, x)
    np.testing.assert_array_equal(yu, y)


def test_undistort_radial_only_matches_cubic_root():
    # With k2 = p1 = p2 = 0 the radius solves the cubic k1 r^3 + r - r_d = 0 exactly.
    k1 = -0.25
    dist = np.array([k1, 0.0, 0.0, 0.0])
    xd, yd = np.array([0.1, -0.4, 0.3]), np.array([0.2, 0.35, -0.5])
    xu, yu = cameras.undistort_points(xd, yd, dist)
    for i in range(3):
        rd = np.hypot(xd[i], yd[i])
        roots = np.roots([k1, 0.0, 1.0, -rd])
        real = roots[np.abs(roots.imag) < 1e-12].real
        r = real[np.argmin(np.abs(real - rd))]
        np.testing.assert_allclose([xu[i], yu[i]], [xd[i] * r / rd, yd[i] * r / rd], atol=1e-12)


def test_rays_project_back_to_their_pixels():
    rng = np.random.default_rng(2)
    n = 64
    c2w, intr, dist = random_cameras(rng, n)
    cols = rng.uniform(0, 60, size=n)
    rows = rng.uniform(0, 60, size=n)
    rays = cameras.pixels_to_rays(cols, rows, c2w, intr, dist, 0.5, 5.0, np.arange(n))
    for t in (0.7, 2.3):
        points = rays.origins.astype(np.float64) + t * rays.directions.astype(np.float64)
        u, v = project(points, c2w, intr, dist)
        np.testing.assert_allclose(u, cols, atol=2e-3)
        np.testing.assert_allclose(v, rows, atol=2e-3)
    # t is depth along the optical axis: the camera-space z of the direction is -1.
    d_cam = np.einsum("nji,nj->ni", c2w[:, :3, :3], rays.directions)
    np.testing.assert_allclose(d_cam[:, 2], -1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rays.viewdirs, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        rays.viewdirs, rays.directions / np.linalg.norm(rays.directions, axis=-1, keepdims=True),
        atol=1e-6,
    )
    np.testing.assert_allclose(rays.origins, c2w[:, :, 3], atol=1e-6)
    assert rays.near.shape == rays.far.shape == rays.radii.shape == rays.cam_idx.shape == (n, 1)
    assert rays.cam_idx.dtype == np.int32 and rays.origins.dtype == np.float32
    np.testing.assert_array_equal(rays.cam_idx[:, 0], np.arange(n))
    np.testing.assert_allclose(rays.near, 0.5)
    np.testing.assert_allclose(rays.far, 5.0)


def test_principal_ray_is_minus_z():
    rng = np.random.default_rng(3)
    c2w, intr, dist = random_cameras(rng, 5)
    rays = cameras.pixels_to_rays(intr[:, 2], intr[:, 3], c2w, intr, dist, 1.0, 2.0, 0)
    np.testing.assert_allclose(rays.directions, -c2w[:, :, 2], atol=1e-6)


def test_radii_are_neighbour_differences():
    rng = np.random.default_rng(4)
    c2w, intr, dist = random_cameras(rng, 20)
    cols, rows = rng.uniform(0, 60, size=(2, 20))
    rays = cameras.pixels_to_rays(cols, rows, c2w, intr, dist, 1.0, 2.0, 0)
    right = cameras.pixels_to_rays(cols + 1, rows, c2w, intr, dist, 1.0, 2.0, 0)
    want = np.linalg.norm(right.directions - rays.directions, axis=-1) * 2 / np.sqrt(12)
    np.testing.assert_allclose(rays.radii[:, 0], want, rtol=1e-4)
    # Closed form for a pinhole camera at the principal point: the spacing is 1/fx.
    pin = cameras.pixels_to_rays(intr[:, 2] - 0.5, intr[:, 3], c2w, intr, None, 1.0, 2.0, 0)
    np.testing.assert_allclose(pin.radii[:, 0], 2 / np.sqrt(12) / intr[:, 0], rtol=1e-5)


def ndc_project(points, fx, fy, width, height, near):
    """NeRF's NDC projection of world points [..., 3] (the camera at the origin looks down -z)."""
    x, y, z = np.moveaxis(points, -1, 0)
    return np.stack(
        [-fx / (width / 2) * x / z, -fy / (height / 2) * y / z, 1 + 2 * near / z], axis=-1
    )


def test_ndc_rays_contain_projected_points():
    rng = np.random.default_rng(5)
    n = 40
    width, height, fx, fy = 64, 48, 50.0, 52.0
    ndc = {"fx": fx, "fy": fy, "width": width, "height": height, "near": 1.0}
    # Forward-facing cameras near the origin, looking roughly down -z.
    c2w = []
    for _ in range(n):
        axis = rng.normal(size=3) * 0.05
        angle = np.linalg.norm(axis)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(3) + np.sin(angle) / angle * k + (1 - np.cos(angle)) / angle**2 * k @ k
        c2w.append(np.concatenate([rot, rng.uniform(-0.2, 0.2, size=(3, 1))], 1))
    c2w = np.stack(c2w)
    intr = np.tile([fx, fy, width / 2, height / 2], (n, 1))
    cols, rows = rng.uniform(0, width, n), rng.uniform(0, height, n)
    world = cameras.pixels_to_rays(cols, rows, c2w, intr, None, 0.0, 1.0, 0)
    rays = cameras.pixels_to_rays(cols, rows, c2w, intr, None, 0.0, 1.0, 0, ndc=ndc)
    np.testing.assert_allclose(rays.near, 0.0)
    np.testing.assert_allclose(rays.far, 1.0)
    np.testing.assert_allclose(rays.viewdirs, world.viewdirs, atol=1e-6)
    for depth in (1.5, 4.0, 30.0):
        # A world point on the ray at camera depth `depth` (t is depth along the axis).
        points = world.origins + depth * world.directions.astype(np.float64)
        p_ndc = ndc_project(points, fx, fy, width, height, 1.0)
        # It lies on the NDC ray: p = o + s d for some s in [0, 1].
        s = (p_ndc[:, 2] - rays.origins[:, 2]) / rays.directions[:, 2]
        assert np.all((s >= 0) & (s <= 1))
        on_ray = rays.origins + s[:, None] * rays.directions
        np.testing.assert_allclose(on_ray, p_ndc, atol=1e-4)
    # NDC origins lie on the near plane, which NDC maps to z = -1.
    np.testing.assert_allclose(rays.origins[:, 2], -1.0, atol=1e-5)


def test_ndc_radii_are_near_plane_pixel_spacing():
    # For a camera at the origin, NDC x spans [-1, 1] over the image width.
    width, height = 40, 30
    ndc = {"fx": 35.0, "fy": 35.0, "width": width, "height": height}
    rays = cameras.camera_rays(np.eye(4)[:3], [35.0, 35.0, 20.0, 15.0], width, height, 0, 1,
                               ndc=ndc)
    np.testing.assert_allclose(rays.radii, 2 / width * 2 / np.sqrt(12), rtol=1e-4)
    np.testing.assert_allclose(rays.directions[..., :2], 0.0, atol=1e-6)


def test_jax_matches_numpy():
    rng = np.random.default_rng(6)
    c2w, intr, dist = random_cameras(rng, 16)
    cols, rows = rng.uniform(0, 60, size=(2, 16))
    ndc = {"fx": 50.0, "fy": 50.0, "width": 60, "height": 60}
    for kwargs in ({}, {"ndc": ndc}):
        want = cameras.pixels_to_rays(cols, rows, c2w, intr, dist, 0.2, 3.0, 7, **kwargs)
        fn = jax.jit(
            functools.partial(cameras.pixels_to_rays, near=0.2, far=3.0, cam_idx=7, xnp=jnp,
                              **kwargs)
        )
        got = fn(cols, rows, c2w, intr, dist)
        for name in ("origins", "directions", "viewdirs", "radii", "near", "far", "cam_idx"):
            np.testing.assert_allclose(
                np.asarray(getattr(got, name)), getattr(want, name), rtol=1e-4, atol=1e-5,
                err_msg=name,
            )


def tiny_scene(kind=BOUNDED, ndc=None):
    """A 2-image scene with distinct cameras and a little distortion."""
    rng = np.random.default_rng(7)
    c2w, intr, dist = random_cameras(rng, 2)
    return Scene(
        images=rng.uniform(size=(2, 6, 9, 3)).astype(np.float32),
        camtoworlds=c2w.astype(np.float32),
        intrinsics=np.tile([8.0, 8.0, 4.5, 3.0], (2, 1)).astype(np.float32),
        distortion=dist.astype(np.float32),
        near=0.5,
        far=4.0,
        kind=kind,
        names=["a.png", "b.png"],
        ndc=ndc,
    )


def test_image_rays_and_scene_rays_agree():
    scene = tiny_scene()
    rays = cameras.image_rays(scene, 1)
    assert rays.origins.shape == (6, 9, 3) and rays.radii.shape == (6, 9, 1)
    np.testing.assert_array_equal(rays.cam_idx, 1)
    np.testing.assert_allclose(rays.near, 0.5)
    np.testing.assert_allclose(rays.far, 4.0)
    some = cameras.scene_rays(scene, np.array([1, 1]), np.array([0, 8]), np.array([5, 2]))
    np.testing.assert_allclose(some.directions[0], rays.directions[5, 0], atol=1e-6)
    np.testing.assert_allclose(some.directions[1], rays.directions[2, 8], atol=1e-6)
    # Pixel centres: pixel (col, row) projects back to (col + 0.5, row + 0.5).
    u, v = project(rays.origins + 2.0 * rays.directions.astype(np.float64),
                   scene.camtoworlds[1].astype(np.float64), scene.intrinsics[1],
                   scene.distortion[1].astype(np.float64))
    cols, rows = np.meshgrid(np.arange(9), np.arange(6))
    np.testing.assert_allclose(u, cols + 0.5, atol=1e-3)
    np.testing.assert_allclose(v, rows + 0.5, atol=1e-3)
    with pytest.raises(UserError, match="out of range"):
        cameras.image_rays(scene, 2)


def test_scene_rays_use_scene_ndc():
    ndc = {"fx": 8.0, "fy": 8.0, "width": 9, "height": 6, "near": 1.0}
    scene = tiny_scene(kind=FORWARD, ndc=ndc)
    rays = cameras.image_rays(scene, 0)
    np.testing.assert_allclose(rays.near, 0.0)
    np.testing.assert_allclose(rays.far, 1.0)


def test_camera_rays_shape():
    rays = cameras.camera_rays(np.eye(4), [10.0, 10.0, 4.5, 3.5], 8, 6, 2.0, 6.0)
    assert rays.origins.shape == (6, 8, 3)
    assert rays.cam_idx.shape == (6, 8, 1)
    # Pixel (col 4, row 3) has its centre on the principal point, so it looks down -z;
    # its lower-right neighbour goes right (+x) and down (-y).
    np.testing.assert_allclose(rays.directions[3, 4], [0.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(rays.directions[4, 5], [0.1, -0.1, -1.0], atol=1e-6)


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "colmap_bird" / "sparse" / "0").is_dir(),
                    reason="shared colmap_bird scene not available")
def test_rays_through_colmap_keypoints_hit_their_3d_points():
    # End-to-end convention check on real data: COLMAP's keypoint pixel coordinates
    # (top-left pixel centre at (0.5, 0.5), as ours) cast through a converted pose
    # pass through the triangulated 3D point, up to COLMAP's ~1 px reprojection error.
    pycolmap = pytest.importorskip("pycolmap")
    rec = pycolmap.Reconstruction(str(DATA / "colmap_bird" / "sparse" / "0"))
    for image_id in sorted(rec.images)[:3]:
        image = rec.images[image_id]
        cam = rec.cameras[image.camera_id]
        f, cx, cy = cam.params  # SIMPLE_PINHOLE
        w2c = np.eye(4)
        w2c[:3] = image.cam_from_world().matrix()
        c2w = np.linalg.inv(w2c)[:3]
        c2w[:, 1:3] *= -1  # COLMAP (right, down, forward) -> OpenGL (right, up, back)
        obs = [p for p in image.points2D if p.has_point3D()]
        xy = np.array([p.xy for p in obs])
        xyz = np.array([rec.points3D[p.point3D_id].xyz for p in obs])
        rays = cameras.pixels_to_rays(xy[:, 0], xy[:, 1], c2w, [f, f, cx, cy], None, 0, 1, 0)
        d = rays.directions.astype(np.float64)
        v = xyz - rays.origins
        t = np.sum(v * d, -1) / np.sum(d * d, -1)
        assert np.all(t > 0)
        # Miss distance over depth, times the focal length: an error in pixels.
        miss = (v - t[:, None] * d) @ c2w[:, :3] / t[:, None] * f  # camera frame, pixels
        assert np.median(np.linalg.norm(miss, axis=-1)) < 1.5
        # Unbiased: a half-pixel convention slip would shift the mean by 0.5 px.
        assert np.all(np.abs(miss[:, :2].mean(axis=0)) < 0.1), miss[:, :2].mean(axis=0)
