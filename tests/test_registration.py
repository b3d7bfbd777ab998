"""Registering training images to the field: the fitted maps against known misalignments."""

import gin
import jax
import numpy as np
import pytest

from jaxnerf360 import parallel, registration
from jaxnerf360.data.misalign import Misalign, bilinear, inverse_map, source_coordinates
from jaxnerf360.errors import UserError
from jaxnerf360.registration import ImageRegistration, fit_map
from tests.test_grid_training import TINY_FIELDS, TINY_SAMPLERS, _config, setup_run


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _texture(n, size, seed=0):
    """`[n, size, size, 3]` smooth random colour images (detail everywhere, blobs of ~4 px)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((n, size, size, 3))
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    kernel /= kernel.sum()
    for axis in (1, 2):
        noise = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), axis, noise)
    return ((noise - noise.min()) / (noise.max() - noise.min())).astype(np.float32)


def test_inverse_map_undoes_the_perturbation_of_a_non_square_image():
    """source_coordinates(p) is the clean point shown at perturbed p; the inverse map takes
    it back to p, at every pixel centre."""
    height, width = 30, 50
    draw = np.array([1.7, -0.9, np.deg2rad(0.8), 0, 0, 0, 0])
    sx, sy = source_coordinates(draw, height, width)
    g = inverse_map(draw, height, width)
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    np.testing.assert_allclose(g[0, 0] * sx + g[0, 1] * sy + g[0, 2], xs, atol=1e-9)
    np.testing.assert_allclose(g[1, 0] * sx + g[1, 1] * sy + g[1, 2], ys, atol=1e-9)


def test_the_fit_recovers_a_similarity_exactly_and_ignores_an_outlier():
    rng = np.random.default_rng(1)
    centres = rng.uniform(-40, 40, (12, 2))
    t, a, b = np.array([1.3, -0.7]), 0.004, 0.009  # a small scale and turn
    m = np.array([[a, -b], [b, a]])
    shifts = t + centres @ m.T
    for model in ("similarity", "affine"):
        fitted = fit_map(centres, shifts, model)
        np.testing.assert_allclose(fitted[:2, 2], t, atol=1e-9)
        np.testing.assert_allclose(fitted[:2, :2] - np.eye(2), m, atol=1e-9)
    shifts[3] += [3.0, -2.5]  # one patch the field renders wrongly
    fitted = fit_map(centres, shifts, "similarity")
    np.testing.assert_allclose(fitted[:2, 2], t, atol=0.02)
    np.testing.assert_allclose(fitted[:2, :2] - np.eye(2), m, atol=5e-4)
    # A turn by a small angle: the rigid model's linearised fit is within a few thousandths
    # of a pixel of the exact rotation at 40 pixels from the centre.
    angle = 0.009
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    fitted = fit_map(centres, t + centres @ (rot - np.eye(2)).T, "rigid")
    np.testing.assert_allclose(fitted[:2, :2], rot, atol=1e-4)
    np.testing.assert_allclose(fitted[:2, 2], t, atol=5e-3)
    # Translation only: the mean shift when there is no turn.
    fitted = fit_map(centres, np.tile(t, (12, 1)) + rng.normal(0, 0.01, (12, 2)), "translation")
    np.testing.assert_allclose(fitted[:2, 2], t, atol=0.01)


def test_shrinking_keeps_clear_maps_and_pulls_noise_to_the_identity():
    """Shifts that are pure scatter (no misalignment) give a map near the identity; a clear
    shift of 1.5 px with the same scatter keeps nearly all of its size (z^2 is a mean over
    the three parameters, two of which are 0 here, so it is scaled by about 0.95)."""
    rng = np.random.default_rng(4)
    centres = rng.uniform(-60, 60, (24, 2))
    raw, shrunk, clear = [], [], []
    for _ in range(50):
        noise = rng.normal(0, 0.8, (24, 2))
        raw.append(np.linalg.norm(fit_map(centres, noise, "rigid")[:2, 2]))
        shrunk.append(np.linalg.norm(fit_map(centres, noise, "rigid", shrink=1.0)[:2, 2]))
        clear.append(fit_map(centres, noise + [1.5, 0.0], "rigid", shrink=1.0)[0, 2])
    assert np.mean(shrunk) < 0.4 * np.mean(raw)
    assert 1.35 < np.mean(clear) < 1.55


@pytest.mark.parametrize("model", ["rigid", "similarity", "affine"])
def test_known_misalignments_are_found_to_a_tenth_of_a_pixel(model):
    """Images moved by known shifts of up to 2 px and turns of up to 0.5 degrees (as the
    misalignment benchmark moves them), registered to renders of the clean images."""
    size, n = 64, 6
    clean = _texture(n, size)
    draws = Misalign(shift_pixels=2.0, rotation_degrees=0.5, seed=3).draws(n)
    moved = np.stack([bilinear(clean[i], *source_coordinates(draws[i], size, size))
                      for i in range(n)])
    settings = ImageRegistration(at=(0.5,), patches=12, patch_size=10, margin=4, model=model)
    corners = registration.windows(moved, settings.patches, settings.extent)

    def render(index, cols, rows):  # the field that learned the clean scene
        return clean[index, rows, cols]

    maps = registration.estimate(render, moved, corners, settings)
    for i in range(n):
        truth = inverse_map(draws[i], size, size)
        assert registration.map_distance(maps[i], truth, size, size) < 0.1
    # Resampled at the maps, the moved images show the clean ones again (inside the frame).
    inner = (slice(6, -6), slice(6, -6))
    before = np.mean((moved[(slice(None), *inner)] - clean[(slice(None), *inner)]) ** 2)
    registered = np.stack([registration.warp(moved[i], maps[i]) for i in range(n)])
    after = np.mean((registered[(slice(None), *inner)] - clean[(slice(None), *inner)]) ** 2)
    assert after < before / 10
    # Images that are not moved get maps near the identity. Not exactly: the parabola through
    # the costs at -1, 0, 1 is not symmetric about 0 (the crops differ), which biases the
    # sub-pixel step by a few hundredths of a pixel.
    corners = registration.windows(clean, settings.patches, settings.extent)
    maps = registration.estimate(render, clean, corners, settings)
    assert registration.displacement(maps, size, size).max() < 0.05


def test_windows_fit_the_image_and_spread_over_it():
    images = _texture(2, 48)
    corners = registration.windows(images, 8, 14)
    assert corners.shape == (2, 8, 2)
    assert corners.min() >= 0 and corners.max() <= 48 - 14
    for i in range(2):  # no two windows from one grid cell of a 4 x 4 grid
        assert len({tuple(c) for c in corners[i]}) == 8


def test_settings_errors_are_one_clear_line():
    with pytest.raises(UserError, match="ImageRegistration.at"):
        ImageRegistration(at=(0.5, 0.3))
    with pytest.raises(UserError, match="ImageRegistration.model"):
        ImageRegistration(model="homography")
    with pytest.raises(UserError, match="ImageRegistration.margin"):
        ImageRegistration(margin=0)
    with pytest.raises(UserError, match="ImageRegistration.shrink"):
        ImageRegistration(shrink=-1.0)
    with pytest.raises(UserError, match="ImageRegistration.settle"):
        ImageRegistration(settle=True)


def test_a_run_registers_its_images_and_a_resumed_run_trains_on_the_same(synthetic_dir,
                                                                         tmp_path):
    bindings = [*TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], "Config.max_steps = 10",
                "Config.batch_size = 64", f"Config.checkpoint_dir = '{tmp_path}'",
                "ImageRegistration.at = (0.5,)", "ImageRegistration.patches = 4",
                "ImageRegistration.patch_size = 6", "ImageRegistration.margin = 2"]
    run, scene, mesh = setup_run(_config(synthetic_dir, *bindings))
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    assert [type(e).__name__ for e in run.events] == ["Registration"]
    loaded = scene.images.copy()
    for step in range(6):
        run.before_step(step)
        run.state, _ = run.step(run.state, run.next_batch(), key)
    np.testing.assert_array_equal(scene.images, loaded)  # the loaded split is not touched
    maps = np.load(tmp_path / "registration" / "5.npy")
    assert maps.shape == (scene.num_images, 3, 3)
    np.testing.assert_array_equal(run.scene.images[0], registration.warp(loaded[0], maps[0]))
    # A run resumed after the event trains on the images it trained on.
    resumed, _, _ = setup_run(_config(synthetic_dir, *bindings), scene)
    resumed.state = run.state
    resumed.start()
    np.testing.assert_array_equal(resumed.scene.images, run.scene.images)
    # Poses that move already correct what the registration would.
    with pytest.raises(UserError, match="Cameras.optimize_poses"):
        setup_run(_config(synthetic_dir, *bindings, "Cameras.optimize_poses = True"), scene)
    with pytest.raises(UserError, match="do not fit the 32x32 training images"):
        setup_run(_config(synthetic_dir, *bindings, "ImageRegistration.patch_size = 30"), scene)


@pytest.mark.parametrize("settle", [0.0, 1e6])
def test_registration_settles_after_an_event_that_moves_the_maps_little(synthetic_dir,
                                                                         tmp_path, settle):
    """With `settle` above what the first event moves, the second renders nothing and keeps
    the maps; a run resumed after it is settled too and trains on the same images. With 0,
    every event renders."""
    bindings = [*TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], "Config.max_steps = 10",
                "Config.batch_size = 64", f"Config.checkpoint_dir = '{tmp_path}'",
                "ImageRegistration.at = (0.3, 0.6)", "ImageRegistration.patches = 4",
                "ImageRegistration.patch_size = 6", "ImageRegistration.margin = 2",
                f"ImageRegistration.settle = {settle}"]
    run, scene, mesh = setup_run(_config(synthetic_dir, *bindings))
    event = run.events[0]
    renders = []
    made = run.renderer
    run.renderer = lambda: renders.append(int(run.state.step)) or made()
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    for step in range(7):
        run.before_step(step)
        run.state, _ = run.step(run.state, run.next_batch(), key)
    first, second = (np.load(tmp_path / "registration" / f"{s}.npy") for s in (3, 6))
    np.testing.assert_array_equal(run.scene.images[1], registration.warp(event.loaded[1],
                                                                         second[1]))
    if not settle:
        assert renders == [3, 6] and not event.settled()
        return
    assert renders == [3] and event.settled()
    np.testing.assert_array_equal(first, second)
    resumed, _, _ = setup_run(_config(synthetic_dir, *bindings), scene)
    resumed.state = run.state
    resumed.start()
    assert resumed.events[0].settled()
    np.testing.assert_array_equal(resumed.scene.images, run.scene.images)
