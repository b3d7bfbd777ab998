"""The model (proposal sampler + MLP field + renderer) and the losses on random rays."""

import functools

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360 import configs, losses, optim
from jaxnerf360.data.scene import BOUNDED, UNBOUNDED, Rays
from jaxnerf360.model import Model


@pytest.fixture(autouse=True)
def tiny_model():
    gin.clear_config()
    configs.parse_gin([], [
        "ProposalSampler.num_prop_samples = (16, 16)",
        "ProposalSampler.num_final_samples = 8",
        "PropMLPField.net_depth = 2",
        "PropMLPField.net_width = 16",
        "MLPField.net_depth = 3",
        "MLPField.net_width = 32",
        "MLPField.skip_layer = 2",
        "MLPField.bottleneck_width = 16",
        "MLPField.net_width_viewdirs = 16",
    ])
    yield
    gin.clear_config()


def random_rays(n, near, far, seed=0):
    rng = np.random.default_rng(seed)
    origins = rng.normal(size=(n, 3)).astype(np.float32) * 0.3
    dirs = rng.normal(size=(n, 3)).astype(np.float32)
    viewdirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    ones = np.ones((n, 1), np.float32)
    return Rays(origins=origins, directions=dirs, viewdirs=viewdirs, radii=0.002 * ones,
                near=near * ones, far=far * ones, cam_idx=np.zeros((n, 1), np.int32))


@pytest.mark.parametrize("kind,near,far,raydist", [(BOUNDED, 2.0, 6.0, "linear"),
                                                   (UNBOUNDED, 0.2, 1e4, "reciprocal")])
def test_forward_shapes_ranges_and_gradients(kind, near, far, raydist):
    gin.bind_parameter("ProposalSampler.raydist_fn", raydist)
    model = Model(scene_kind=kind)
    rays = random_rays(32, near, far)
    bg = jnp.ones((32, 3))
    # jit: the same programs, compiled whole instead of dispatched op by op (much faster here)
    params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1), rays, 0.5,
                                        bg))()["params"]
    out = jax.jit(lambda p: model.apply({"params": p}, jax.random.PRNGKey(2), rays, 0.5, bg,
                                        compute_extras=True))(params)
    assert out["rgb"].shape == (32, 3) and out["acc"].shape == (32,)
    assert out["sdist"].shape == (32, 9) and out["weights"].shape == (32, 8)
    assert len(out["prop_levels"]) == 2
    assert np.all(np.diff(np.asarray(out["sdist"]), axis=-1) >= 0)
    assert np.all((np.asarray(out["sdist"]) >= 0) & (np.asarray(out["sdist"]) <= 1))
    assert np.all((out["rgb"] >= 0) & (out["rgb"] <= 1))
    np.testing.assert_allclose(out["acc"], out["weights"].sum(-1), rtol=1e-5, atol=1e-6)
    d = np.asarray(out["distance_median"])
    assert np.all((d >= near - 1e-3) & (d <= far * (1 + 1e-3)))

    def loss(p):
        o = model.apply({"params": p}, jax.random.PRNGKey(2), rays, 0.5, bg)
        return (jnp.mean((o["rgb"] - 0.3) ** 2)
                + losses.interlevel(o["sdist"], o["weights"], o["prop_levels"])
                + 0.01 * losses.distortion(o["sdist"], o["weights"]))

    grads = jax.jit(jax.grad(loss))(params)
    flat = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in flat)
    # The proposal MLP learns only through the interlevel loss, and it must learn.
    prop_norm = sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads["sampler"]))
    assert prop_norm > 0


def test_deterministic_eval_sampling():
    model = Model(scene_kind=BOUNDED)
    rays = random_rays(8, 2.0, 6.0)
    bg = jnp.ones((8, 3))
    params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1), rays, 0.0,
                                        bg))()["params"]
    render = jax.jit(lambda p: model.apply({"params": p}, None, rays, 1.0, bg)["rgb"])
    a, b = render(params), render(params)
    np.testing.assert_array_equal(a, b)


def test_interlevel_loss_zero_when_proposal_bounds_final():
    s = jnp.linspace(0, 1, 9)[None]
    w = jnp.full((1, 8), 1 / 8)
    # A proposal histogram with the same intervals and weights bounds the final one exactly.
    assert float(losses.interlevel(s, w, [{"sdist": s, "weights": w}])) < 1e-6
    # One that puts no mass where the final histogram has mass is penalised.
    w_bad = jnp.concatenate([jnp.zeros((1, 4)), jnp.full((1, 4), 0.25)], -1)
    assert float(losses.interlevel(s, w, [{"sdist": s, "weights": w_bad}])) > 0.01


def test_charbonnier_matches_definition():
    a = jnp.array([[0.2, 0.5, 0.9]])
    b = jnp.array([[0.1, 0.5, 0.0]])
    want = np.mean(np.sqrt((np.asarray(a) - np.asarray(b)) ** 2 + 1e-6))
    np.testing.assert_allclose(jnp.mean(losses.charbonnier(a, b, 1e-3)), want, rtol=1e-6)


def test_learning_rate_schedule():
    lr = lambda s: float(optim.log_linear_lr(s, 1e-2, 1e-4, 100, 10, 0.1))  # noqa: E731
    np.testing.assert_allclose(lr(0), 1e-3, rtol=1e-5)  # warm-up starts at delay_mult * lr
    np.testing.assert_allclose(lr(50), 1e-3, rtol=1e-4)  # geometric mean at the midpoint
    np.testing.assert_allclose(lr(100), 1e-4, rtol=1e-5)
    assert lr(5) < lr(10)


def test_data_loss_kinds():
    a = jnp.array([[0.2, 0.5, 0.9]])
    b = jnp.array([[0.1, 0.5, 0.0]])
    np.testing.assert_allclose(losses.data_loss(a, b, "mse", 1e-3), np.mean((a - b) ** 2),
                               rtol=1e-6)
    charbonnier = np.mean(np.sqrt((np.asarray(a) - np.asarray(b)) ** 2 + 1e-6))
    np.testing.assert_allclose(losses.data_loss(a, b, "charbonnier", 1e-3), charbonnier,
                               rtol=1e-6)


def test_composite_integrates_every_channel_like_a_loop():
    from jaxnerf360.geometry import render

    rng = np.random.default_rng(3)
    weights = rng.uniform(size=(5, 7)) / 7
    channels = {"rgb": rng.uniform(size=(5, 7, 3)), "features": rng.normal(size=(5, 7, 16))}
    out = render.composite(channels, weights)
    for name, value in channels.items():
        want = np.zeros((5, value.shape[-1]))
        for ray in range(5):
            for k in range(7):
                want[ray] += weights[ray, k] * value[ray, k]
        np.testing.assert_allclose(out[name], want, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("sampler", ["proposal", "occupancy"])
def test_model_composites_a_sixteen_channel_feature_like_rgb(sampler):
    """A field with a 16-channel `features` (its rgb, repeated) renders features equal to the
    composited rgb channel by channel, on the dense path and through the occupied-sample
    buffer, which gathers and scatters every channel."""
    import flax.linen as nn

    from jaxnerf360.fields.base import Field
    from jaxnerf360.fields.mlp import MLPField
    from jaxnerf360.samplers import OccupancySampler

    class FeatureField(Field):
        @nn.compact
        def __call__(self, means, covs, viewdirs=None, progress=None):
            out = MLPField(net_depth=2, net_width=16, skip_layer=1, bottleneck_width=8,
                           net_width_viewdirs=8, max_deg=4)(means, covs, viewdirs, progress)
            if viewdirs is not None:
                out["features"] = jnp.concatenate([out["rgb"]] * 5 + [out["rgb"][..., :1]], -1)
            return out

    model = Model(scene_kind=BOUNDED, field=FeatureField)
    if sampler == "occupancy":
        model = model.clone(sampler=lambda **kw: OccupancySampler(grid_resolution=8,
                                                                  max_samples=24, **kw))
    rays = random_rays(16, 2.0, 6.0, seed=4)
    rays = rays.replace(origins=-4.0 * rays.viewdirs + rays.origins)  # through the centre
    black = jnp.zeros((16, 3))
    params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), None, rays, 1.0, black))()
    params = params["params"]
    grid = np.zeros((8, 8, 8), bool)
    grid[2:6, 2:6, 2:6] = True
    state = jnp.asarray(grid) if sampler == "occupancy" else None

    @functools.partial(jax.jit, static_argnames="capacity")
    def render(capacity=None):
        return model.apply({"params": params}, None, rays, 1.0, black, sampler_state=state,
                           capacity=capacity)

    dense = render()
    assert dense["features"].shape == (16, 16)
    rgb = np.asarray(dense["rgb"])  # a black background adds nothing
    np.testing.assert_allclose(np.asarray(dense["features"])[:, :15].reshape(16, 5, 3),
                               np.repeat(rgb[:, None], 5, 1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dense["features"][:, 15], rgb[:, 0], rtol=1e-5, atol=1e-7)
    if sampler == "occupancy":
        mask = model.sample_mask(params, rays, state)
        used = int(np.sum(mask))
        assert 0 < used < mask.size
        packed = render(capacity=used)
        for name in ("rgb", "features", "acc"):
            np.testing.assert_allclose(packed[name], dense[name], atol=1e-6, err_msg=name)
