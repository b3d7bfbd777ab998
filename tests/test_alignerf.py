"""AligNeRF as a run: the conv head on rendered features, the alignment and VGG terms staged
by gin, the misalignment benchmark's loader option, and the start-up checks."""

import re

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360 import parallel, training
from jaxnerf360.data import load_split, misalign
from jaxnerf360.data.scene import BOUNDED
from jaxnerf360.errors import UserError
from jaxnerf360.heads import ConvHead
from jaxnerf360.model import Model
from jaxnerf360.rendering import Renderer
from jaxnerf360.train_step import TrainState, dummy_rays
from tests.test_grid_training import TINY_FIELDS, TINY_SAMPLERS, _config
from tests.test_heads import _view

HEAD = ["Model.head = @ConvHead", "ConvHead.feature_dim = 4", "ConvHead.depth = 2",
        "ConvHead.width = 8"]
MLP = [*TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], "MLPField.feature_dim = 4"]
ALIGNED = ["Config.patch_size = 4", "Config.batch_size = 64", "PatchAlignment.margin = 2",
           "PatchAlignment.start = 0.5",
           "Objective.extra_terms = [@alignment_term, @high_frequency_term]",
           "high_frequency_term.aligned = True", "high_frequency_term.start = 0.5"]


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _init(model, side):
    return jax.jit(lambda: model.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1),
                                      dummy_rays((1, side, side)), 0.0,
                                      jnp.ones((1, side, side, 3))))()["params"]


@pytest.mark.parametrize("field", ["mlp", "tensorf"])
def test_conv_head_images_are_seamless_in_tiles(synthetic_dir, field):
    extra = MLP if field == "mlp" else [*TINY_FIELDS["tensorf"], *TINY_SAMPLERS["proposal"],
                                        "TensoRFField.feature_dim = 4"]
    _config(synthetic_dir, *extra, *HEAD)
    model = Model(scene_kind=BOUNDED)
    assert model.head_geometry() == (2, 1)
    params = _init(model, 5)
    view = _view(18)
    rays = jax.tree.map(lambda x: x[None], view.window_rays(-2, -2, 22, 22))
    whole = jax.jit(lambda p: model.apply({"params": p}, None, rays, 1.0,
                                          jnp.ones((1, 22, 22, 3))))(params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None)
    for chunk in (64, 100):  # tiles of 4x4 and 6x6 output pixels
        tiled = Renderer(model, parallel.make_mesh(), "white", chunk=chunk).image(state, view)
        assert tiled["rgb"].shape == (18, 18, 3)
        np.testing.assert_allclose(tiled["rgb"], whole["rgb"][0], atol=2e-5)


def test_conv_head_is_translation_equivariant_away_from_borders():
    head = ConvHead(feature_dim=3, depth=2, width=8)
    rng = np.random.default_rng(0)
    feats = jnp.asarray(rng.normal(size=(1, 16, 16, 3)), jnp.float32)
    rgb = jnp.asarray(rng.uniform(size=(1, 16, 16, 3)), jnp.float32)
    params = head.init(jax.random.PRNGKey(0), {"features": feats, "rgb": rgb})
    out = head.apply(params, {"features": feats, "rgb": rgb})["rgb"]
    assert out.shape == (1, 12, 12, 3)
    moved = head.apply(params, {"features": jnp.roll(feats, (2, 3), (1, 2)),
                                "rgb": jnp.roll(rgb, (2, 3), (1, 2))})["rgb"]
    # Output pixel (i, j) sees input [i, i + 4]; away from the wrapped border the shifted
    # input gives the shifted output.
    np.testing.assert_allclose(moved[0, 2 + 2:, 3 + 2:], out[0, 2:-2, 2:-3], atol=1e-6)


def test_gradients_reach_the_field_through_the_head(synthetic_dir):
    jax.config.update("jax_enable_x64", True)
    try:
        _config(synthetic_dir, *MLP, *HEAD)
        model = Model(scene_kind=BOUNDED)
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), _init(model, 5))
        rays = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64)[None]
                            if x.dtype != np.int32 else x[None], _view(6).window_rays(0, 0, 5, 5))
        bg = jnp.ones((1, 5, 5, 3), jnp.float64)

        @jax.jit  # compiled once rather than run op by op (seven calls)
        def loss(field_params):
            p = {**params, "field": field_params}
            return jnp.sum(model.apply({"params": p}, None, rays, 1.0, bg)["rgb"] ** 2)

        grads = jax.jit(jax.grad(loss))(params["field"])
        leaf = ("features", "kernel")  # reaches rgb only through the head
        g = grads
        for key in leaf:
            g = g[key]
        base = params["field"]
        eps = 1e-6
        for index in [(0, 0), (3, 2), (7, 1)]:
            def bumped(delta, index=index):
                kernel = base["features"]["kernel"].at[index].add(delta)
                return loss({**base, "features": {**base["features"], "kernel": kernel}})
            fd = (bumped(eps) - bumped(-eps)) / (2 * eps)
            np.testing.assert_allclose(g[index], fd, rtol=1e-5, atol=1e-10)
        assert float(jnp.abs(g).max()) > 0
    finally:
        jax.config.update("jax_enable_x64", False)


def test_an_aligned_run_trains_in_two_stages(synthetic_dir):
    config = _config(synthetic_dir, *MLP, *HEAD, *ALIGNED, "Config.max_steps = 20")
    mesh = parallel.make_mesh()
    run = training.setup(config, load_split(config, "train"), mesh)
    # Rays: the patch plus the head's radius; ground truth: also the alignment margin.
    batch = run.next_batch()
    assert batch["rays"].origins.shape == (4, 8, 8, 3) and batch["rgb"].shape == (4, 12, 12, 3)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    state, logs = run.state, []
    for _ in range(20):
        state, stats = run.step(state, batch, key)
        logs.append({k: float(v) for k, v in stats.items()})
    assert all(np.isfinite(v) for log in logs for v in log.values())
    first, second = logs[:10], logs[10:]  # the switch is at half of 20 steps
    # The loss is the data term in the first stage, alignment + 0.1 * VGG in the second.
    def rest(log):
        return (config.interlevel_loss_mult * log["interlevel"]
                + config.distortion_loss_mult * log["distortion"])
    for log in first:
        np.testing.assert_allclose(log["loss"], log["data"] + rest(log), rtol=1e-5)
    for log in second:
        np.testing.assert_allclose(log["loss"], log["alignment"] + 0.1 * log["high_frequency"]
                                   + rest(log), rtol=1e-5)
        assert log["alignment"] <= log["data"] + 1e-7  # the aligned target is never worse
    assert np.mean([g["data"] for g in logs[-3:]]) < logs[0]["data"]


def test_independent_rays_beside_aligned_patches_train_with_their_own_data_term(
        synthetic_dir):
    config = _config(synthetic_dir, *MLP, "Config.patch_size = 4", "Config.batch_size = 32",
                     "PatchAlignment.margin = 2", "PatchAlignment.start = 0.5",
                     "Objective.extra_terms = [@alignment_term, @ray_term]", "ray_term.rays = 24",
                     "ray_term.weight = 0.5", "Config.max_steps = 12")
    mesh = parallel.make_mesh()
    run = training.setup(config, load_split(config, "train"), mesh)
    batch = run.next_batch()
    assert batch["rays"].origins.shape == (2, 4, 4, 3)  # two patches of 4 x 4
    assert batch["extra_rays"].origins.shape == (24, 3) and batch["extra_rgb"].shape == (24, 3)
    # The rays' colours are the training pixels they pass through.
    img, row, col = np.asarray(jax.device_get(batch["extra_index"])).T
    np.testing.assert_allclose(jax.device_get(batch["extra_rgb"]),
                               run.scene.images[img, row, col, :3], atol=1e-6)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    state, logs = run.state, []
    for _ in range(12):
        state, stats = run.step(state, run.next_batch(), key)
        logs.append({k: float(v) for k, v in stats.items()})
    rest = [config.interlevel_loss_mult * log["interlevel"]
            + config.distortion_loss_mult * log["distortion"] for log in logs]
    # The rays' term joins both stages: the data term's (first half), the alignment's.
    for log, other in zip(logs[:6], rest[:6], strict=True):
        np.testing.assert_allclose(log["loss"], log["data"] + 0.5 * log["rays"] + other,
                                   rtol=1e-5)
    for log, other in zip(logs[6:], rest[6:], strict=True):
        np.testing.assert_allclose(log["loss"], log["alignment"] + 0.5 * log["rays"] + other,
                                   rtol=1e-5)
    assert np.mean([g["rays"] for g in logs[-3:]]) < logs[0]["rays"]


@pytest.mark.parametrize("bindings, match", [
    (["Objective.extra_terms = [@ray_term]"], "already trains on independent rays"),
    (["Config.patch_size = 4", "Config.batch_size = 64", "ray_term.rays = 0",
      "Objective.extra_terms = [@ray_term]"], "ray_term.rays=0"),
    (["Model.head = @ConvHead", "ConvHead.feature_dim = 8", "Config.patch_size = 4",
      "Config.batch_size = 64"], "features.*width 8.*produces 4"),
    (["Objective.extra_terms = [@alignment_term]"], "compares image patches.*Config.patch_size"),
    (["Config.patch_size = 4", "Config.batch_size = 64", "PatchAlignment.margin = 20",
      "Objective.extra_terms = [@alignment_term]"], "do not fit"),
    (["Config.patch_size = 4", "Config.batch_size = 64", "PatchAlignment.method = 'per_pixel'",
      "Objective.extra_terms = [@alignment_term]"], "Config.patch_size > 4"),
    (["Config.patch_size = 4", "Config.batch_size = 64", "Config.background = 'random'",
      "Objective.extra_terms = [@alignment_term]"], "background = 'random'"),
    (["Config.patch_size = 4", "Config.batch_size = 64", "PatchAlignment.method = 'cobi'",
      "Objective.extra_terms = [@alignment_term]"], "PatchAlignment.method"),
])
def test_bad_settings_are_one_clear_line_at_start_up(synthetic_dir, bindings, match):
    config = _config(synthetic_dir, *MLP, *bindings)
    with pytest.raises(UserError) as err:
        training.setup(config, load_split(config, "train"), parallel.make_mesh())
    assert re.search(match, str(err.value).splitlines()[0])  # the line the CLI prints


def test_misalign_moves_training_images_by_the_drawn_shift_only(synthetic_dir):
    config = _config(synthetic_dir, "Misalign.shift_pixels = 3")  # read as the split loads
    moved, moved_test = load_split(config, "train"), load_split(config, "test")
    clean = _config(synthetic_dir)
    plain = load_split(clean, "train")
    draws = misalign.Misalign(shift_pixels=3).draws(plain.num_images)
    assert np.abs(draws[:, :2]).max() <= 3 and np.all(draws[:, 2:5] == 0)
    # An integer shift of the drawn one moves the content by exactly that much inside.
    whole = misalign.Misalign(shift_pixels=0.0)
    assert not whole.enabled
    draw = np.array([2.0, -1.0, 0, 0, 0, 0, 0])
    x, y = misalign.source_coordinates(draw, plain.height, plain.width)
    img = misalign.bilinear(plain.images[0], x, y)
    np.testing.assert_allclose(img[3:-3, 3:-3], plain.images[0][4:-2, 1:-5], atol=1e-6)
    # The training images moved; the test split did not.
    assert np.abs(moved.images - plain.images).max() > 0.05
    np.testing.assert_array_equal(moved_test.images, load_split(clean, "test").images)
    # A rotation about the centre keeps the centre pixel's content.
    turn = np.array([0.0, 0.0, np.deg2rad(1.0), 0, 0, 0, 0])
    x, y = misalign.source_coordinates(turn, 33, 33)
    assert abs(x[16, 16] - 16.5) < 1e-9 and abs(y[16, 16] - 16.5) < 1e-9
    with pytest.raises(UserError, match="Misalign.shift_pixels"):
        misalign.Misalign(shift_pixels=-1.0)


def test_a_run_with_a_conv_head_compresses_and_renders_the_same(synthetic_dir, tmp_path):
    from jaxnerf360 import compressed

    config = _config(synthetic_dir, *TINY_FIELDS["wavelet"], *TINY_SAMPLERS["occupancy"],
                     "TensoRFField.feature_dim = 4", *HEAD, "Config.patch_size = 4",
                     "Config.batch_size = 64")
    mesh = parallel.make_mesh()
    run = training.setup(config, load_split(config, "train"), mesh)
    path = str(tmp_path / "scene.jnrf")
    compressed.write(path, run.model, run.state, gin.config_str(), network_dtype="float32")
    _, bindings = compressed.read_config(path)  # the decoded field renders as spatial planes
    gin.parse_config(bindings)
    model, state = compressed.restore(path, BOUNDED, mesh)
    head_in = jax.device_get(run.state.params["head"])
    head_out = jax.device_get(state.params["head"])
    for a, b in zip(jax.tree.leaves(head_in), jax.tree.leaves(head_out), strict=True):
        np.testing.assert_array_equal(a, b)  # float32 networks: the head is stored exactly
    view = _view(12)
    want = Renderer(run.model, mesh, "white", chunk=256).image(run.state, view)["rgb"]
    got = Renderer(model, mesh, "white", chunk=256).image(state, view)["rgb"]
    assert got.shape == (12, 12, 3)
    # The file holds the 8-bit quantised planes, which the field was trained through.
    np.testing.assert_allclose(got, want, atol=2e-3)
