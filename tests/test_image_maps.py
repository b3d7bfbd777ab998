"""Learned image maps (`Cameras.image_maps`): the maps against known misalignments."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnerf360 import image_maps, parallel, registration
from jaxnerf360.cameras import IMAGE_MAP, PARAMS, Cameras
from jaxnerf360.data.misalign import bilinear, inverse_map, source_coordinates
from jaxnerf360.errors import UserError
from tests.test_grid_training import TINY_FIELDS, TINY_SAMPLERS, _config, setup_run
from tests.test_registration import _texture


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _centres(height, width):
    """`[H, W, 2]` pixel centres (x, y)."""
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return np.stack([xs, ys], -1).astype(np.float32)


def _rigid(draw, height, width):
    """The rigid parameters (tx, ty, turn in pixels at the arm) of `inverse_map(draw)`."""
    return np.array([draw[0], draw[1], draw[2] * 0.5 * max(height, width)], np.float32)


def test_identity_maps_read_every_pixel_as_loaded():
    images = _texture(3, 16)[:, :12, :9]  # not square
    cam = np.broadcast_to(np.arange(3)[:, None, None], (3, 12, 9))
    pixels = np.broadcast_to(_centres(12, 9), (3, 12, 9, 2))
    for model in image_maps.MODELS:
        out = image_maps.targets(jnp.asarray(images), image_maps.init_params(3, model), cam,
                                 pixels, model)
        np.testing.assert_allclose(np.asarray(out), images, atol=1e-6)


@pytest.mark.parametrize("model", list(image_maps.MODELS))
def test_targets_read_a_smooth_image_where_the_map_sends_each_pixel(model):
    """A band-limited image (two sines, periods of 7 and 11 px) read at mapped pixels equals
    the sines evaluated at the map's points (`matrices`, the NumPy form of the same map),
    to interpolation accuracy, away from the clamped edges."""
    h, w = 40, 36
    params = np.random.default_rng(0).normal(0, 1.5, (2, image_maps.MODELS[model]))

    def sines(x, y):
        return np.stack([np.sin(2 * np.pi * (x / 7 + y / 11)), np.cos(2 * np.pi * x / 11),
                         np.sin(2 * np.pi * y / 7)], -1).astype(np.float32)

    centres = _centres(h, w)
    images = np.stack([sines(centres[..., 0], centres[..., 1])] * 2)
    cam = np.broadcast_to(np.arange(2)[:, None, None], (2, h, w))
    out = image_maps.targets(jnp.asarray(images), jnp.asarray(params, jnp.float32), cam,
                             np.broadcast_to(centres, (2, h, w, 2)), model)
    maps = image_maps.matrices(params, model, h, w)
    for i in range(2):
        points = centres @ maps[i, :2, :2].T + maps[i, :2, 2]
        inner = np.all((points > 8) & (points < [w - 8, h - 8]), -1)
        np.testing.assert_allclose(np.asarray(out[i])[inner],
                                   sines(points[..., 0], points[..., 1])[inner], atol=0.02)


def test_a_blurrier_render_does_not_pull_the_maps_between_pixels():
    """Early in training the field renders a blurred image. Bilinear reading blurs the
    target most half-way between pixels, so it fits a blurred render best there (this
    setup: it drifts 0.11 px along each axis); the Lanczos reading stays on the grid."""
    from scipy.ndimage import gaussian_filter

    clean = _texture(1, 48, seed=5)[0]
    blurred = np.stack([gaussian_filter(clean[..., c], 1.0) for c in range(3)], -1)
    inner = _centres(48, 48)[6:-6, 6:-6].reshape(-1, 2)
    params, _ = _fit(clean, blurred[6:-6, 6:-6].reshape(-1, 3), inner, "translation")
    assert np.all(np.abs(np.asarray(params)) < 0.02), params


def _fit(image, rendered, pixels, model, steps: int = 400):
    """The map `[1, k]` of `image [H, W, 3]` that Adam finds for the render `rendered [P,
    3]` at `pixels [P, 2]`."""
    images, cam = jnp.asarray(image)[None], jnp.zeros(len(pixels), jnp.int32)

    def loss(params):
        read = image_maps.targets(images, params, cam, jnp.asarray(pixels), model)
        return jnp.mean(jnp.square(read - jnp.asarray(rendered)))

    tx = optax.adam(0.02)
    params = image_maps.init_params(1, model)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params, loss


def test_a_rigid_map_is_the_inverse_of_the_misalignment_in_closed_form():
    draw = np.array([1.3, -0.7, np.deg2rad(0.4), 0, 0, 0, 0])
    params = _rigid(draw, 40, 50)
    np.testing.assert_allclose(image_maps.matrices(params[None], "rigid", 40, 50)[0],
                               inverse_map(draw, 40, 50), atol=1e-5)


@pytest.mark.parametrize("draw", [(1.3, -0.7, 0.4), (0.0, 0.25, -0.3)])
def test_the_gradient_recovers_a_known_shift_and_turn(draw):
    """A perfect field (the clean image) against the image moved by a known shift and turn
    (the misalignment benchmark's own perturbation): Adam on the photometric loss through
    the image's gradient finds the inverse map to a few hundredths of a pixel."""
    size = 48
    draw = np.array([draw[0], draw[1], np.deg2rad(draw[2]), 0, 0, 0, 0])
    clean = _texture(1, size, seed=5)[0]
    moved = bilinear(clean, *source_coordinates(draw, size, size))
    inner = _centres(size, size)[6:-6, 6:-6].reshape(-1, 2)  # clear of clamped edges
    rendered = jnp.asarray(clean[6:-6, 6:-6].reshape(-1, 3))
    params, loss = _fit(moved, rendered, inner, "rigid")
    truth = _rigid(draw, size, size)
    found = image_maps.matrices(params, "rigid", size, size)
    err = registration.map_distance(found, inverse_map(draw, size, size)[None], size, size)
    assert err[0] < 0.05, (np.asarray(params), truth)
    assert loss(params) <= 1.05 * loss(jnp.asarray(truth)[None])


def test_the_cameras_declare_the_maps_and_their_group(synthetic_dir):
    from jaxnerf360.data import load_split

    scene = load_split(_config(synthetic_dir), "train")
    cameras = Cameras(scene, image_maps="similarity", image_map_lr_init=0.1,
                      image_map_lr_final=0.01, image_map_start=0.25, image_map_solver="adam")
    corrections = cameras.init_params()
    assert corrections[IMAGE_MAP].shape == (scene.num_images, 4) and cameras.learned
    params = Cameras.join({"field": {"w": jnp.ones(2)}}, corrections)
    assert set(jax.tree.leaves(Cameras.param_labels(params)[PARAMS])) == {IMAGE_MAP}
    group = cameras.param_groups()[IMAGE_MAP]
    assert (group.lr_init, group.lr_final, group.window) == (0.1, 0.01, (0.25, 1.0))
    assert cameras.init_state() is None
    solved = Cameras(scene, image_maps="similarity")  # Gauss-Newton: the group never opens
    assert solved.param_groups()[IMAGE_MAP].window == (1.0, 1.0)
    assert solved.init_state()["normal"].shape == (scene.num_images, 4, 4)
    np.testing.assert_array_equal(cameras.current(params), scene.camtoworlds)
    assert cameras.errors(params) == {"image_map_px": 0.0}
    with pytest.raises(UserError, match="Cameras.image_maps='homography'"):
        Cameras(image_maps="homography")
    with pytest.raises(UserError, match="use one of the two"):
        Cameras(image_maps="rigid", optimize_poses=True)
    with pytest.raises(UserError, match="Cameras.image_map_start=1.0"):
        Cameras(image_maps="rigid", image_map_start=1.0)
    with pytest.raises(UserError, match="Cameras.image_map_solver='newton'"):
        Cameras(image_maps="rigid", image_map_solver="newton")
    with pytest.raises(UserError, match="Cameras.image_map_memory=0"):
        Cameras(image_maps="rigid", image_map_memory=0)
    with pytest.raises(UserError, match="Cameras.image_map_relax=1.5"):
        Cameras(image_maps="rigid", image_map_relax=1.5)
    with pytest.raises(UserError, match="Cameras.image_map_prior=-1"):
        Cameras(image_maps="rigid", image_map_prior=-1)


@pytest.mark.parametrize("solver", ["adam", "gauss_newton"])
def test_a_run_learns_its_maps_only_from_their_start_and_restores_them(synthetic_dir,
                                                                        tmp_path, solver):
    from jaxnerf360 import checkpoints
    from jaxnerf360.trained import load_trained, restore_trained

    bindings = [*TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], "Config.max_steps = 10",
                "Config.batch_size = 64", f"Config.checkpoint_dir = '{tmp_path}'",
                "Cameras.image_maps = 'rigid'", "Cameras.image_map_start = 0.5",
                f"Cameras.image_map_solver = '{solver}'", "Cameras.image_map_relax = 1"]
    config = _config(synthetic_dir, *bindings)
    run, scene, mesh = setup_run(config)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    maps = []
    for step in range(8):
        run.before_step(step)
        run.state, stats = run.step(run.state, run.next_batch(), key)
        maps.append(np.asarray(run.state.params[PARAMS][IMAGE_MAP]))
        assert np.isfinite(stats["loss"])
    assert not np.any(maps[4])  # before step 5 (half of training) the rate is exactly zero
    assert np.any(maps[5])
    if solver == "adam":
        assert np.all(np.abs(maps[7]) < 0.1)  # at most 1e-2 a step
        assert run.state.camera_state is None
    else:  # relaxed in one step: the maps are the accumulated normal equations' solution
        np.testing.assert_allclose(maps[7], image_maps.solve(run.state.camera_state, 3.0),
                                   atol=1e-6)
    mgr = checkpoints.manager(str(tmp_path), 1)
    checkpoints.save(mgr, 8, run.state)
    _, restored = restore_trained(config, scene.kind, mesh, scene.num_images)
    np.testing.assert_array_equal(restored.params[PARAMS][IMAGE_MAP], maps[7])
    if solver == "gauss_newton":  # resuming goes on from the same normal equations
        for key, value in run.state.camera_state.items():
            np.testing.assert_array_equal(restored.camera_state[key], value)
    # Given no training split, loading finds the number of maps itself.
    _, loaded = load_trained(config, scene, mesh)
    np.testing.assert_array_equal(loaded.params[PARAMS][IMAGE_MAP], maps[7])
    # Restored under the other solver, the error names the solver it was trained with.
    other = "adam" if solver == "gauss_newton" else "gauss_newton"
    config = _config(synthetic_dir, *bindings, f"Cameras.image_map_solver = '{other}'")
    with pytest.raises(UserError, match=f"Cameras.image_map_solver='{solver}'") as error:
        restore_trained(config, scene.kind, mesh, scene.num_images)
    assert "\n" not in str(error.value)
    assert not list(tmp_path.glob("checkpoints/*.damaged"))  # a config mismatch: kept as is
    # The maps read the loaded colours on the fixed background, unblurred.
    with pytest.raises(UserError, match="Cameras.image_maps reads the loaded images"):
        setup_run(_config(synthetic_dir, *bindings, "Config.background = 'random'"), scene)


def _gauss_newton(image, rendered, pixels, model, steps: int = 6, keep: float = 0.0,
                  prior: float = 3.0):
    """The maps `[1, k]` that `steps` Gauss-Newton updates find for `rendered [P, 3]` at
    `pixels [P, 2]` of `image [H, W, 3]`, each from the normal equations at the last map
    plus `keep` times the earlier ones."""
    images, cam = jnp.asarray(image)[None], jnp.zeros(len(pixels), jnp.int32)
    params = image_maps.init_params(1, model)
    sums = image_maps.init_normal_equations(1, model)
    for _ in range(steps):
        value, jac = image_maps.read_with_jacobian(images, params, cam, jnp.asarray(pixels),
                                                   model)
        new = image_maps.normal_equations(jac, value - jnp.asarray(rendered), params, cam, 1)
        sums = jax.tree.map(lambda old, b: keep * old + b, sums, new)
        params = image_maps.solve(sums, prior)
    return params


def test_the_jacobian_is_the_derivative_of_the_reading():
    """Central finite differences of the Lanczos reading against `read_with_jacobian`."""
    image = jnp.asarray(_texture(2, 24, seed=3))
    params = jnp.asarray([[0.3, -0.4, 0.2, 0.1], [-0.2, 0.5, -0.3, 0.05]], jnp.float32)
    cam = jnp.asarray([0, 1, 1, 0, 1])
    pixels = jnp.asarray([[8.5, 9.5], [12.2, 7.7], [15.5, 15.5], [10.0, 13.3], [9.1, 11.9]])
    _, jac = image_maps.read_with_jacobian(image, params, cam, pixels, "similarity")
    h = 1e-2
    for a in range(4):
        step = jnp.zeros_like(params).at[:, a].set(h)
        diff = (image_maps.targets(image, params + step, cam, pixels, "similarity")
                - image_maps.targets(image, params - step, cam, pixels, "similarity")) / (2 * h)
        np.testing.assert_allclose(np.asarray(jac[..., a]), np.asarray(diff), atol=2e-3)


@pytest.mark.parametrize("draw", [(1.3, -0.7, 0.4), (0.0, 0.25, -0.3)])
def test_gauss_newton_recovers_a_known_shift_and_turn(draw):
    """The same known misalignment as Adam's test: a few relinearised Gauss-Newton solves
    find the inverse map to a few hundredths of a pixel."""
    size = 48
    draw = np.array([draw[0], draw[1], np.deg2rad(draw[2]), 0, 0, 0, 0])
    clean = _texture(1, size, seed=5)[0]
    moved = bilinear(clean, *source_coordinates(draw, size, size))
    inner = _centres(size, size)[6:-6, 6:-6].reshape(-1, 2)
    params = _gauss_newton(moved, clean[6:-6, 6:-6].reshape(-1, 3), inner, "rigid")
    found = image_maps.matrices(params, "rigid", size, size)
    err = registration.map_distance(found, inverse_map(draw, size, size)[None], size, size)
    assert err[0] < 0.05, np.asarray(params)


def test_gauss_newton_noise_is_that_of_least_squares():
    """Renders with independent Gaussian noise of sd s (the field's error) against the
    aligned image: over 60 draws the solved shifts scatter with the covariance least squares
    predicts, s^2 (J^T J)^-1 (Monte Carlo, to 30%), around zero."""
    size, s = 32, 0.05
    clean = _texture(1, size, seed=7)[0]
    inner = _centres(size, size)[6:-6, 6:-6].reshape(-1, 2)
    truth = clean[6:-6, 6:-6].reshape(-1, 3)
    rng = np.random.default_rng(0)
    found = np.stack([np.asarray(_gauss_newton(clean, truth + rng.normal(0, s, truth.shape),
                                               inner, "translation", steps=2))[0]
                      for _ in range(60)])
    _, jac = image_maps.read_with_jacobian(jnp.asarray(clean)[None],
                                           image_maps.init_params(1, "translation"),
                                           jnp.zeros(len(inner), jnp.int32),
                                           jnp.asarray(inner), "translation")
    jac = np.asarray(jac).reshape(-1, 2)
    predicted = np.sqrt(np.diag(s**2 * np.linalg.inv(jac.T @ jac)))
    measured = found.std(0)
    assert np.all(np.abs(measured / predicted - 1) < 0.3), (measured, predicted)
    assert np.all(np.abs(found.mean(0)) < 3 * predicted / np.sqrt(60))


def test_the_prior_holds_an_image_without_texture_and_a_render_without_rays():
    """A flat image says nothing about where it belongs: its map stays at the identity; so
    does the map of an image that no ray reached."""
    flat = np.full((16, 16, 3), 0.4, np.float32)
    pixels = _centres(16, 16)[4:-4, 4:-4].reshape(-1, 2)
    rendered = np.full((len(pixels), 3), 0.5, np.float32)  # off by a constant
    params = _gauss_newton(flat, rendered, pixels, "rigid")
    np.testing.assert_allclose(np.asarray(params), 0.0, atol=1e-3)  # float: 4e-5 px
    sums = image_maps.init_normal_equations(3, "rigid")
    np.testing.assert_array_equal(np.asarray(image_maps.solve(sums, 3.0)), 0.0)


def test_gauss_newton_does_not_drift_against_a_blurrier_render():
    """As for Adam: the blurred render's least-squares map is on the grid."""
    from scipy.ndimage import gaussian_filter

    clean = _texture(1, 48, seed=5)[0]
    blurred = np.stack([gaussian_filter(clean[..., c], 1.0) for c in range(3)], -1)
    inner = _centres(48, 48)[6:-6, 6:-6].reshape(-1, 2)
    params = _gauss_newton(clean, blurred[6:-6, 6:-6].reshape(-1, 3), inner, "translation")
    assert np.all(np.abs(np.asarray(params)) < 0.02), params


def test_the_refiner_waits_for_the_start_then_relaxes_on_its_schedule():
    """Before the start nothing moves and nothing accumulates; from it the maps move 1/relax
    of the way to the solution, relax log-linear from 10 steps at the start to 1000 at the
    end (100 half-way)."""
    cameras = Cameras(image_maps="translation", image_map_start=0.5, image_map_relax=10,
                      image_map_relax_final=1000, image_map_memory=1)
    params = {PARAMS: {IMAGE_MAP: jnp.zeros((1, 2))}}
    sums = image_maps.init_normal_equations(1, "translation")
    batch = {"normal": jnp.eye(2)[None], "rhs": jnp.array([[2.0, -4.0]]),
             "square": jnp.zeros(1), "count": jnp.ones(1)}
    refine = cameras.refiner(max_steps=100)
    before, kept = refine(params, sums, batch, 49)
    assert not np.any(before[PARAMS][IMAGE_MAP]) and not np.any(kept["normal"])
    for step, relax in ((50, 10.0), (75, 100.0)):
        after, _ = refine(params, sums, batch, step)
        np.testing.assert_allclose(after[PARAMS][IMAGE_MAP], [[2 / relax, -4 / relax]],
                                   rtol=1e-4)
    assert Cameras(image_maps="rigid", image_map_solver="adam").refiner(100) is None
