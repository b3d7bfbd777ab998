"""The latent decoder and encoder (ReLS-NeRF): exact output sizes, seamless tiles, shift
equivariance by k, XLA's FLOPs against a hand count, latent compositing, and bad settings."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360 import parallel, training
from jaxnerf360.data import load_split
from jaxnerf360.data.scene import BOUNDED
from jaxnerf360.errors import UserError
from jaxnerf360.geometry.render import composite
from jaxnerf360.latent import (
    SIZES,
    LatentDecoder,
    LatentEncoder,
    depth_to_space,
    flops_per_output_pixel,
)
from jaxnerf360.model import Model
from jaxnerf360.parts import parameter_count
from jaxnerf360.rendering import Renderer
from jaxnerf360.train_step import TrainState, dummy_rays
from tests.test_grid_training import TINY_FIELDS, TINY_SAMPLERS, _config
from tests.test_heads import _view


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _latents(side, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"features": jnp.asarray(rng.normal(size=(1, side, side, dim)), jnp.float32)}


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("upsampling", ["nearest", "subpixel"])
def test_the_output_is_exactly_k_times_the_latents_left_by_the_radius(factor, size, upsampling):
    dec = LatentDecoder(latent_dim=4, factor=factor, size=size, upsampling=upsampling)
    r = dec.receptive_radius()
    x = _latents(2 * r + 3)
    params = dec.init(jax.random.PRNGKey(0), x)
    out = dec.apply(params, x)["rgb"]
    assert out.shape == (1, 3 * factor, 3 * factor, 3)
    assert float(out.min()) >= -0.01 and float(out.max()) <= 1.01


def test_the_decoder_is_equivariant_to_latent_shifts_by_k_output_pixels():
    dec = LatentDecoder(latent_dim=4, factor=4, size="small")
    r = dec.receptive_radius()
    x = _latents(2 * r + 6)
    params = dec.init(jax.random.PRNGKey(0), x)
    out = dec.apply(params, x)["rgb"][0]
    moved = dec.apply(params, {"features": jnp.roll(x["features"], (1, 2), (1, 2))})["rgb"][0]
    # Output block (i, j) sees latents [i, i + 2r]; shifted latents give the shifted blocks.
    np.testing.assert_allclose(moved[4:, 8:], out[:-4, :-8], atol=1e-5)
    # And the radius is tight: the latents just outside it change nothing, just inside do.
    side = 2 * r + 1
    x1 = _latents(side)
    base = dec.apply(params, x1)["rgb"]
    assert base.shape == (1, 4, 4, 3)
    edge = x1["features"].at[0, 0, r].add(5.0)  # row 0 lies within the radius of the output
    assert not np.allclose(dec.apply(params, {"features": edge})["rgb"], base)


def test_depth_to_space_places_each_pixels_channels_in_a_block():
    x = jnp.arange(2 * 3 * 8, dtype=jnp.float32).reshape(1, 2, 3, 8)  # C b^2 = 2 x 4
    y = depth_to_space(x)
    assert y.shape == (1, 4, 6, 2)
    for i in range(2):
        for j in range(3):
            block = np.asarray(x[0, i, j]).reshape(2, 2, 2)  # (dy, dx, c)
            np.testing.assert_array_equal(y[0, 2 * i:2 * i + 2, 2 * j:2 * j + 2], block)


def test_the_encoder_maps_images_to_the_decoders_latent_grid():
    for factor in (4, 8):
        enc = LatentEncoder(latent_dim=6, factor=factor, size="small")
        img = jnp.zeros((2, 32, 48, 3))
        params = enc.init(jax.random.PRNGKey(0), img)
        assert enc.apply(params, img).shape == (2, 32 // factor, 48 // factor, 6)


def _hand_flops(dec: LatentDecoder, side: int, out_side: int) -> float:
    """Multiply-adds x 2 of every convolution, layer by layer, at the sizes they output."""
    width, blocks, narrowest = SIZES[dec.size]
    s = side - 2
    flops = 2 * s * s * 9 * dec.latent_dim * width
    for _ in range(blocks):
        flops += 2 * ((s - 2) ** 2 + (s - 4) ** 2) * 9 * width * width
        s -= 4
    c = width
    for j in range(dec.stages()):
        w = max(narrowest, width >> (j + 1))
        s = 2 * s - 2
        flops += 2 * s * s * 9 * c * w
        c = w
    return flops + 2 * out_side * out_side * c * 3


@pytest.mark.parametrize("size", ["small", "large"])
def test_xla_flops_agree_with_a_hand_count(size):
    dec = LatentDecoder(latent_dim=8, factor=8, size=size)
    side = 2 * dec.receptive_radius() + 4
    params = dec.init(jax.random.PRNGKey(0), _latents(side, 8))
    out_side = 4 * 8
    hand = _hand_flops(dec, side, out_side) / out_side**2
    got = flops_per_output_pixel(dec, params, side)
    assert got == pytest.approx(hand, rel=0.15), (got, hand)
    assert parameter_count(params) > 0


def test_latents_composite_channel_by_channel_like_colours():
    rng = np.random.default_rng(0)
    weights = rng.uniform(0, 0.2, (5, 7))
    latent = rng.normal(size=(5, 7, 8))
    rgb = rng.uniform(size=(5, 7, 3))
    out = composite({"rgb": rgb, "features": latent}, weights)
    for c in range(8):  # each latent channel, composited as if it were a colour channel
        as_rgb = composite({"rgb": np.repeat(latent[..., c:c + 1], 3, -1)}, weights)["rgb"]
        np.testing.assert_allclose(out["features"][..., c], as_rgb[..., 0], rtol=1e-6)
    np.testing.assert_allclose(out["features"], np.einsum("rn,rnc->rc", weights, latent),
                               rtol=1e-5)


HEAD = ["Model.head = @LatentDecoder", "LatentDecoder.latent_dim = 4",
        "LatentDecoder.factor = 4", "LatentDecoder.size = 'small'", "MLPField.feature_dim = 4"]


def test_latent_images_are_seamless_in_tiles(synthetic_dir):
    _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], *HEAD)
    model = Model(scene_kind=BOUNDED)
    r, k = model.head_geometry()
    assert k == 4
    side = 2 * r + 1
    params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1),
                                        dummy_rays((1, side, side)), 0.0,
                                        jnp.ones((1, side, side, 3))))()["params"]
    view = _view(24)  # 6 x 6 latents
    coarse = view.coarse(k)
    rays = jax.tree.map(lambda x: x[None], coarse.window_rays(-r, -r, 6 + 2 * r, 6 + 2 * r))
    whole = jax.jit(lambda p: model.apply({"params": p}, None, rays, 1.0,
                                          jnp.ones((1, 6 + 2 * r, 6 + 2 * r, 3))))(params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None)
    for chunk in ((2 * r + 2) ** 2, (2 * r + 3) ** 2):  # tiles of 2 x 2 and 3 x 3 latents
        tiled = Renderer(model, parallel.make_mesh(), "white", chunk=chunk).image(state, view)
        assert tiled["rgb"].shape == (24, 24, 3) and tiled["acc"].shape == (6, 6)
        np.testing.assert_allclose(tiled["rgb"], whole["rgb"][0], atol=3e-5)
    # Path frames carry depth and opacity per output pixel (each latent's over its k x k block).
    from jaxnerf360 import consistency, rendering

    frames = rendering.render_views(Renderer(model, parallel.make_mesh(), "white",
                                             chunk=(2 * r + 3) ** 2), state, [view, view])
    assert frames["depth"].shape == (2, 24, 24) and frames["acc"].shape == (2, 24, 24)
    np.testing.assert_array_equal(frames["acc"][0, :4, :4], frames["acc"][0, 0, 0])
    assert consistency.path_consistency(frames, [view, view])["frames"] == 2


@pytest.mark.parametrize("bindings, match", [
    (["LatentDecoder.factor = 3"], "power of 2"),
    (["LatentDecoder.size = 'huge'"], "LatentDecoder.size"),
    (["LatentDecoder.latent_dim = 6"], "features"),
    (["Config.factor = 3"], "crop them to 8x8 or pad them to 12x12"),
])
def test_bad_latent_settings_are_one_clear_line(synthetic_dir, bindings, match):
    config = _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], *HEAD,
                     "Config.patch_size = 4", "Config.batch_size = 64", *bindings)
    with pytest.raises(UserError) as err:
        training.setup(config, load_split(config, "train"), parallel.make_mesh())
    assert match in str(err.value).splitlines()[0]  # the line the CLI prints


def test_a_latent_run_trains_on_coarse_rays_against_full_resolution_patches(synthetic_dir):
    # k = 2 keeps the window of rays (the radius around them included) inside 32 x 32 images.
    config = _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], *HEAD,
                     "LatentDecoder.factor = 2", "Config.patch_size = 8", "Config.lr_init = 1e-3",
                     "Config.lr_final = 1e-3", "Config.batch_size = 128",
                     # the joint phase alone, on the data term alone
                     "LatentTraining.autoencoder_end = 0.0", "LatentTraining.decoder_start = 1.0",
                     "LatentTraining.latent_weight = 0.0", "LatentTraining.encoder_margin = 1")
    mesh = parallel.make_mesh()
    run = training.setup(config, load_split(config, "train"), mesh)
    r, k = run.model.head_geometry()
    batch = run.next_batch()
    # 2 patches of 8 x 8 output pixels: 4 x 4 latent rays and the radius, on a 2x coarser grid.
    side = 8 // k + 2 * r
    assert batch["rays"].origins.shape == (2, side, side, 3)
    # The ground truth covers them at full resolution, and one latent pixel (k pixels) more
    # on every side for the encoder (LatentTraining.encoder_margin).
    assert batch["rgb"].shape == (2, side * k + 2 * k, side * k + 2 * k, 3)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    state, losses = run.state, []
    for _ in range(30):
        state, stats = run.step(state, batch, key)
        losses.append(float(stats["data"]))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_the_colour_branch_also_learns_from_full_resolution_rays(synthetic_dir):
    config = _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], *HEAD,
                     "LatentDecoder.factor = 2", "Config.patch_size = 8", "Config.lr_init = 1e-3",
                     "Config.lr_final = 1e-3", "Config.batch_size = 64",
                     "LatentTraining.autoencoder_end = 0.0", "LatentTraining.decoder_start = 1.0",
                     "LatentTraining.encoder_margin = 1", "LatentTraining.joint_rays = 0",
                     # the colour branch alone
                     "LatentTraining.latent_weight = 0.0", "Config.data_loss_mult = 0.0",
                     "LatentTraining.colour_weight = 1.0", "LatentTraining.colour_rays = 48")
    mesh = parallel.make_mesh()
    run = training.setup(config, load_split(config, "train"), mesh)
    batch = run.next_batch()
    assert "extra_rays" not in batch and batch["colour_rays"].origins.shape == (48, 3)
    # Each ray has a pixel's footprint (the patches' rays have k times it) and its colour.
    rays, rgb = jax.device_get(batch["colour_rays"]), np.asarray(batch["colour_rgb"])
    k = run.model.head_geometry()[1]
    np.testing.assert_allclose(np.median(rays.radii) * k,
                               np.median(jax.device_get(batch["rays"]).radii), rtol=0.05)
    images = np.asarray(run.scene.images)[..., :3]
    for img, colour in zip(rays.cam_idx[:, 0], rgb, strict=True):
        assert np.any(np.all(images[img] == colour, axis=-1))
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    # The colour term reads them: other colours give another loss (the step donates its state).
    flipped = dict(batch, colour_rgb=1.0 - batch["colour_rgb"])
    copy = jax.tree.map(jnp.copy, run.state)
    assert float(run.step(copy, flipped, key)[1]["colour"]) != pytest.approx(
        float(run.step(jax.tree.map(jnp.copy, run.state), batch, key)[1]["colour"]))
    state, losses = run.state, []
    for _ in range(30):
        state, stats = run.step(state, batch, key)
        losses.append(float(stats["colour"]))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_latent_patches_must_be_whole_latent_pixels(synthetic_dir):
    config = _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], *HEAD,
                     "Config.patch_size = 6", "Config.batch_size = 72")
    with pytest.raises(UserError, match="multiple of the head's upsampling factor 4"):
        training.setup(config, load_split(config, "train"), parallel.make_mesh())


def test_render_paths_are_cut_to_whole_latent_pixels(synthetic_dir):
    from jaxnerf360 import rendering

    config = _config(synthetic_dir, "Config.render_factor = 3")  # 32 / 3: frames of 10 x 10
    scene = load_split(config, "train")
    views = rendering.path_of(config, scene, 3, multiple=4)
    assert [(v.width, v.height) for v in views] == [(8, 8)] * 3
    assert rendering.path_of(config, scene, 2)[0].width == 10
    with pytest.raises(UserError, match="lower Config.render_factor"):
        rendering.path_of(config, scene, 2, multiple=16)
