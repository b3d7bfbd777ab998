"""The head stage: channels composited as patches, seamless tiles, training on patches."""

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360 import parallel, training
from jaxnerf360.data import load_split
from jaxnerf360.data.cameras import View
from jaxnerf360.data.scene import BOUNDED
from jaxnerf360.heads import Head, IdentityHead
from jaxnerf360.model import Model
from jaxnerf360.rendering import Renderer
from jaxnerf360.train_step import TrainState, dummy_rays
from tests.test_grid_training import TINY_FIELDS, TINY_SAMPLERS, _config


@gin.configurable
class ConvTestHead(Head):
    """A 3x3 valid convolution of the composited colours (receptive radius 1)."""

    def receptive_radius(self) -> int:
        return 1

    @nn.compact
    def __call__(self, images):
        return {"rgb": jax.nn.sigmoid(nn.Conv(3, (3, 3), padding="VALID")(images["rgb"]))}


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _view(size: int) -> View:
    """A camera at radius 4 looking at the origin (the synthetic scene's layout)."""
    from jaxnerf360.data.synthetic import look_at_origin

    pose = look_at_origin(np.array([2.0, -3.0, 2.0]))[:3].astype(np.float32)
    focal = 0.5 * size / np.tan(0.35)
    return View(pose, np.array([focal, focal, size / 2, size / 2], np.float32), size, size,
                2.0, 6.0)


def _model(synthetic_dir, *bindings):
    _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], *bindings)
    return Model(scene_kind=BOUNDED)


def test_tiled_image_equals_the_head_on_the_whole_image(synthetic_dir):
    model = _model(synthetic_dir, "Model.head = @ConvTestHead")
    assert model.head_geometry() == (1, 1)
    params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1),
                                        dummy_rays((1, 3, 3)), 0.0, jnp.ones((1, 3, 3, 3))))()
    params = params["params"]
    assert set(params) == {"sampler", "field", "head"}
    view = _view(20)
    rays = jax.tree.map(lambda x: x[None], view.window_rays(-1, -1, 22, 22))
    whole = jax.jit(lambda p: model.apply({"params": p}, None, rays, 1.0,
                                          jnp.ones((1, 22, 22, 3)), compute_extras=True))(params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None)
    renderer = Renderer(model, parallel.make_mesh(), "white", chunk=36)  # 4x4-pixel tiles
    tiled = renderer.image(state, view)
    assert tiled["rgb"].shape == (20, 20, 3) and tiled["acc"].shape == (20, 20)
    np.testing.assert_allclose(tiled["rgb"], whole["rgb"][0], atol=1e-5)
    np.testing.assert_allclose(tiled["acc"], whole["acc"][0, 1:-1, 1:-1], atol=1e-5)
    # A different tile size gives the same image.
    other = Renderer(model, parallel.make_mesh(), "white", chunk=81).image(state, view)
    np.testing.assert_allclose(other["rgb"], tiled["rgb"], atol=1e-5)


def test_identity_head_renders_what_no_head_renders(synthetic_dir):
    plain = _model(synthetic_dir)
    params = jax.jit(lambda: plain.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1),
                                        dummy_rays((4,)), 0.0, jnp.ones((4, 3))))()["params"]
    rays = jax.tree.map(lambda x: x[None], _view(6).rays())
    bg = jnp.ones((1, 6, 6, 3))
    want = jax.jit(lambda p: plain.apply({"params": p}, None, rays, 1.0, bg))(params)
    identity = plain.clone(head=IdentityHead)
    got = jax.jit(lambda p: identity.apply({"params": p}, None, rays, 1.0, bg))(params)
    np.testing.assert_array_equal(got["rgb"], want["rgb"])


def test_a_head_trains_on_patches_with_its_own_parameters(synthetic_dir):
    config = _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"],
                     "Model.head = @ConvTestHead", "Config.patch_size = 4",
                     "Config.batch_size = 128")
    mesh = parallel.make_mesh()
    run = training.setup(config, load_split(config, "train"), mesh)
    assert run.patch_size == 4 and run.batcher.size == 6  # a margin of the head's radius
    labels = run.model.param_labels(jax.device_get(run.state.params))
    assert set(jax.tree.leaves(labels["head"])) == {"net"}
    batch = run.next_batch()
    assert batch["rays"].origins.shape == (8, 6, 6, 3)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    state, losses = run.state, []
    before = jax.device_get(state.params["head"])
    for _ in range(25):
        state, stats = run.step(state, batch, key)
        losses.append(float(stats["data"]))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), state.params["head"],
                         before)
    assert max(jax.tree.leaves(moved)) > 1e-4  # the head's own parameters learn


def test_a_head_needs_patches(synthetic_dir):
    from jaxnerf360.errors import UserError

    config = _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"],
                     "Model.head = @ConvTestHead")
    with pytest.raises(UserError, match="Config.patch_size"):
        training.Training(config, load_split(config, "train"), parallel.make_mesh())
