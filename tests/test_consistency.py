"""Reprojective colour consistency: projection round trips, the analytic scene's true depth,
independent noise (the MSE rises by 2 s^2), and an occluder (the occlusion test)."""

import math

import numpy as np
import pytest

from jaxnerf360.consistency import Consistency, lift, pair, project, reprojective_consistency
from jaxnerf360.data import synthetic
from jaxnerf360.data.cameras import View
from jaxnerf360.errors import UserError

SIZE = 48


def _view(pose, size=SIZE, **kw):
    focal = 0.5 * size / math.tan(0.5 * synthetic.CAMERA_ANGLE_X)
    return View(camtoworld=pose[:3, :4], intrinsics=np.array([focal, focal, size / 2, size / 2]),
                width=size, height=size, near=0.5, far=8.0, **kw)


def _arc(count, step_degrees, elevation=35.0):
    """Poses on a horizontal arc around the synthetic scene, `step_degrees` apart."""
    el = math.radians(elevation)
    out = []
    for k in range(count):
        az = math.radians(20.0 + step_degrees * k)
        pos = synthetic.CAMERA_RADIUS * np.array([math.cos(el) * math.cos(az),
                                                  math.cos(el) * math.sin(az), math.sin(el)])
        out.append(synthetic.look_at_origin(pos))
    return out


def _trace(view):
    """The analytic scene seen by `view`: rgb `[H, W, 3]`, distance and alpha `[H, W]`."""
    rays = view.rays()
    o, d = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
    rgb, alpha = synthetic.trace(o, d)
    shape = (view.height, view.width)
    return rgb.reshape(*shape, 3), synthetic.distance(o, d).reshape(shape), alpha.reshape(shape)


@pytest.mark.parametrize("kind", ["pinhole", "distorted", "ndc"])
def test_lift_then_project_returns_each_pixel_and_its_depth(kind):
    pose = _arc(1, 0)[0]
    kw = {}
    if kind == "distorted":
        kw["distortion"] = np.array([0.05, -0.01, 0.002, -0.001])
    if kind == "ndc":
        pose = np.eye(4)  # NDC is defined for the reference camera at the origin
        focal = 0.5 * SIZE / math.tan(0.5 * synthetic.CAMERA_ANGLE_X)
        kw["ndc"] = {"fx": focal, "fy": focal, "width": SIZE, "height": SIZE}
    view = _view(pose, **kw)
    rng = np.random.default_rng(0)
    distance = rng.uniform(0.1, 0.9, (SIZE, SIZE)) if kind == "ndc" else \
        rng.uniform(1.0, 6.0, (SIZE, SIZE))
    cols, rows, depth = project(view, lift(view, distance))
    want_c, want_r = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5)
    np.testing.assert_allclose(cols, want_c, atol=2e-3)
    np.testing.assert_allclose(rows, want_r, atol=2e-3)
    if kind == "pinhole":  # the rays' directions have camera z = -1: distance is depth
        np.testing.assert_allclose(depth, distance, rtol=1e-5)
    if kind == "ndc":  # NDC t = 1 - near / depth along the axis, for near = 1
        np.testing.assert_allclose(depth, 1.0 / (1.0 - distance), rtol=1e-4)


def _frames(poses):
    views = [_view(p) for p in poses]
    traced = [_trace(v) for v in views]
    rgbs, dists, alphas = (np.stack(x) for x in zip(*traced, strict=True))
    return views, rgbs, dists, alphas


def test_true_depth_on_the_analytic_scene_is_nearly_consistent():
    views, rgbs, dists, alphas = _frames(_arc(4, 1.5))
    true = reprojective_consistency(rgbs, dists, views, alphas)
    assert true["covisible"] > 0.3, true
    # Shading is Lambertian, so a surface point has one colour in every frame: with the true
    # depth, a kept pixel differs from its landing pixel in frame 1 by no more than frame 1's
    # colours vary around that pixel (the nearest-pixel rounding), and by nothing where they
    # are flat.
    out = pair(rgbs[0], dists[0], views[0], rgbs[1], dists[1], views[1], 0.05,
               alphas[0] > 0.5, alphas[1] > 0.5)
    cols, rows, _ = project(views[1], lift(views[0], np.where(alphas[0] > 0, dists[0], 1.0)))
    padded = np.pad(rgbs[1], ((1, 1), (1, 1), (0, 0)), mode="edge")
    around = np.stack([padded[dr:dr + SIZE, dc:dc + SIZE] for dr in range(3) for dc in range(3)])
    spread = around.max(0) - around.min(0)  # [H, W, 3] local colour range of frame 1
    c = np.clip(np.floor(cols), 0, SIZE - 1).astype(int)
    r = np.clip(np.floor(rows), 0, SIZE - 1).astype(int)
    diff = np.abs(rgbs[0] - rgbs[1][r, c])
    explained = np.all(diff <= spread[r, c] + 1e-6, -1)
    assert explained[out["mask"]].mean() > 0.98
    flat = np.all(spread[r, c] < 0.02, -1) & out["mask"]
    assert flat.sum() > 0.05 * out["mask"].sum() and np.max(diff[flat]) < 0.02
    assert true["rcc"] > 17.0, true  # the edges, at 48 x 48 pixels
    # A frame consistent with itself scores infinite dB.
    static = reprojective_consistency(rgbs[[0, 0]], dists[[0, 0]], [views[0]] * 2, alphas[[0, 0]])
    assert static["rcc"] == float("inf") and static["covisible"] == pytest.approx(
        alphas[0].mean())


def test_independent_noise_raises_the_mse_by_twice_its_variance():
    views, rgbs, dists, alphas = _frames(_arc(3, 1.5))
    clean = reprojective_consistency(rgbs, dists, views, alphas)
    sigma = 0.05
    noisy_rgbs = rgbs + np.random.default_rng(1).normal(0, sigma, rgbs.shape)
    noisy = reprojective_consistency(noisy_rgbs, dists, views, alphas)
    assert noisy["covisible"] == clean["covisible"]  # the mask depends on geometry alone
    want = -10 * np.log10(clean["mse"] + 2 * sigma**2)
    assert noisy["rcc"] == pytest.approx(want, abs=0.1), (noisy, want)
    assert noisy["rcc"] < clean["rcc"] - 1.0


def _plane_and_occluder(view):
    """Distances `[H, W]` in a world of a wall at z = -6 and a square at z = -2, |x|, |y| < 0.4."""
    rays = view.rays()
    o, d = rays.origins.astype(np.float64), rays.directions.astype(np.float64)
    t_wall = (-6.0 - o[..., 2]) / d[..., 2]
    t_sq = (-2.0 - o[..., 2]) / d[..., 2]
    hit = o + t_sq[..., None] * d
    on_sq = (np.abs(hit[..., 0]) < 0.4) & (np.abs(hit[..., 1]) < 0.4)
    return np.where(on_sq, t_sq, t_wall), on_sq


def test_the_occlusion_test_drops_the_pixels_an_occluder_hides():
    view0 = _view(np.eye(4))
    pose1 = np.eye(4)
    pose1[0, 3] = 1.0  # a step sideways: the square now hides another part of the wall
    view1 = _view(pose1)
    d0, sq0 = _plane_and_occluder(view0)
    d1, _ = _plane_and_occluder(view1)
    rgb = np.zeros((SIZE, SIZE, 3))
    out = pair(rgb, d0, view0, rgb, d1, view1, depth_tolerance=0.05)
    # Independent truth: a wall point is hidden from camera 1 when the segment from camera 1
    # to it crosses the square; square points are never hidden.
    points = lift(view0, d0)
    c1 = pose1[:3, 3]
    s = (-2.0 - c1[2]) / (points[..., 2] - c1[2])
    cross = c1 + s[..., None] * (points - c1)
    hidden = ~sq0 & (np.abs(cross[..., 0]) < 0.4) & (np.abs(cross[..., 1]) < 0.4)
    cols, rows, _ = project(view1, points)
    inside = (cols >= 0) & (cols < SIZE) & (rows >= 0) & (rows < SIZE)
    want = inside & ~hidden
    assert hidden.mean() > 0.03
    assert not np.any(out["mask"] & hidden)  # nothing hidden is kept
    # Kept everywhere else, but for the nearest-pixel rounding at the square's edge.
    assert np.mean(out["mask"] != want) < 0.01


def test_bad_settings_and_paths():
    with pytest.raises(UserError, match="depth_tolerance"):
        Consistency(depth_tolerance=0)
    with pytest.raises(UserError, match="eval_frames"):
        Consistency(eval_frames=-1)
    with pytest.raises(UserError, match="at least 2 frames"):
        reprojective_consistency(np.zeros((1, 4, 4, 3)), np.ones((1, 4, 4)), [None])
