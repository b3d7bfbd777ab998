"""Latent-space rendering (ReLS-NeRF): a decoder from low-resolution latents to colours.

The field composites a latent vector per ray (its `features` channel, `latent_dim` wide) on
a grid `factor` (k) times coarser than the output, and `LatentDecoder` (`Model.head`) turns
the latent image into colours k times larger. `LatentEncoder` maps an image to latents of the
same shape, for the autoencoder the decoder is trained with; no pretrained autoencoder can be
downloaded here, so both are trained from scratch.

The decoder uses valid convolutions only, so every output pixel depends on a known window of
latents and whole images rendered in overlapping tiles have no seams (`heads`): a 3x3 stem
and `blocks` residual blocks at the latent scale, then log2(k) stages that double the
resolution (nearest neighbour, or sub-pixel: a 1x1 convolution to 4x the channels and a
depth-to-space shuffle) and apply a 3x3 convolution, halving the width down to the size's
narrowest; a 1x1 convolution and a sigmoid give rgb. `size` picks the widths: 'large', or
'small' in the spirit of the paper's R32.

Where a ray's accumulated opacity is below one, the rest of its latent is a learned
background latent (the latent counterpart of the background colour), so empty space decodes
to the background. The decoder and the encoder are trained in three phases
(`latent_training.LatentTraining`), which the decoder declares.
"""

import math

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from jaxnerf360 import precision
from jaxnerf360.errors import UserError
from jaxnerf360.heads import Head
from jaxnerf360.latent_training import DECODER, ENCODER_GROUP, LatentTraining
from jaxnerf360.parts import Part

SIZES = {  # size -> (width at the latent scale, residual blocks, narrowest width)
    "large": (128, 2, 32),
    "small": (32, 1, 16),
}
UPSAMPLING = ("nearest", "subpixel")


def _check_int(owner, name, value, least):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UserError(f"{owner}.{name}={value!r} must be an integer of at least {least}")


def _check_factor(owner, factor):
    _check_int(owner, "factor", factor, 1)
    if factor & (factor - 1):
        raise UserError(f"{owner}.factor={factor} must be a power of 2 (e.g. 4 or 8)")


def _widths(size: str, stages: int, owner: str) -> tuple:
    if size not in SIZES:
        raise UserError(f"{owner}.size={size!r} must be one of {sorted(SIZES)}")
    width, blocks, narrowest = SIZES[size]
    return width, blocks, [max(narrowest, width >> (j + 1)) for j in range(stages)]


def depth_to_space(x, block: int = 2):
    """`[B, H, W, C b^2]` -> `[B, H b, W b, C]`: each pixel's channels become a b x b block."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, block, block, c // block**2)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * block, w * block, c // block**2)


@gin.configurable
class LatentDecoder(Head):
    """Latents `[B, H, W, latent_dim]` -> rgb `[B, (H - 2r) k, (W - 2r) k, 3]`."""

    latent_dim: int = 8
    factor: int = 8
    size: str = "large"
    upsampling: str = "nearest"
    rgb_padding: float = 0.001

    def __post_init__(self):
        _check_int("LatentDecoder", "latent_dim", self.latent_dim, 1)
        _check_factor("LatentDecoder", self.factor)
        _widths(self.size, 0, "LatentDecoder")
        if self.upsampling not in UPSAMPLING:
            raise UserError(f"LatentDecoder.upsampling={self.upsampling!r} must be one of "
                            f"{list(UPSAMPLING)}")
        super().__post_init__()

    @nn.nowrap
    def _consumed(self) -> int:
        """Output pixels the valid convolutions consume on every side."""
        blocks = SIZES[self.size][1]
        k = self.factor
        # 1 + 2 blocks latent pixels, then one pixel at each doubled scale (k / 2^j output px).
        return k * (1 + 2 * blocks) + sum(k >> j for j in range(1, self.stages() + 1))

    @nn.nowrap
    def stages(self) -> int:
        """Doubling stages: log2(factor)."""
        return int(math.log2(self.factor))

    def receptive_radius(self) -> int:
        """Latent pixels consumed on every side (the valid convolutions, rounded up)."""
        return -(-self._consumed() // self.factor)

    def upsample(self) -> int:
        """The factor k."""
        return self.factor

    def input_channels(self) -> dict:
        """The composited latents (the field's `features` channel)."""
        return {"features": self.latent_dim}

    def param_labels(self, params):
        """Every parameter in the decoder's own group."""
        return jax.tree.map(lambda _: DECODER, params)

    def param_groups(self) -> dict:
        """The decoder's learning rates (LatentTraining.decoder_lr)."""
        return {DECODER: LatentTraining().decoder_group()}

    def encoder(self, **kwargs) -> "LatentEncoder":
        """The matching encoder (the autoencoder's other half), trained in phase 1."""
        return LatentEncoder(latent_dim=self.latent_dim, factor=self.factor, size=self.size,
                             **kwargs)

    def background_latent(self):
        """The learned background latent `[latent_dim]` (a bound method: `apply(..., method=)`).
        """
        return self.variables["params"]["background"]

    def phases(self) -> LatentTraining:
        """ReLS-NeRF's three training phases (gin: LatentTraining)."""
        return LatentTraining()

    @nn.compact
    def __call__(self, images: dict) -> dict:
        """`features [B, H, W, latent_dim]` (and `acc [B, H, W]`, where the learned background
        latent fills the rest) -> `rgb [B, (H - 2r) k, (W - 2r) k, 3]`, and the `latents`
        decoded `[B, H, W, latent_dim]`."""
        width, blocks, stage_widths = _widths(self.size, self.stages(), "LatentDecoder")
        latents = images["features"]
        background = self.param("background", nn.initializers.zeros, (self.latent_dim,))
        if "acc" in images:
            latents = latents + (1.0 - images["acc"][..., None]) * background
        x = nn.relu(precision.conv(width, (3, 3), padding="VALID", name="stem")(latents))
        for i in range(blocks):
            y = nn.relu(precision.conv(width, (3, 3), padding="VALID", name=f"block{i}_a")(x))
            y = precision.conv(width, (3, 3), padding="VALID", name=f"block{i}_b")(y)
            x = nn.relu(x[:, 2:-2, 2:-2] + y)
        for j, w in enumerate(stage_widths):
            if self.upsampling == "nearest":
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
            else:
                x = depth_to_space(precision.conv(4 * x.shape[-1], (1, 1), name=f"shuffle{j}")(x))
            x = nn.relu(precision.conv(w, (3, 3), padding="VALID", name=f"up{j}")(x))
        # Crop what the rounding of the radius up to whole latent pixels adds.
        extra = self.receptive_radius() * self.factor - self._consumed()
        if extra:
            x = x[:, extra:-extra, extra:-extra]
        rgb = jax.nn.sigmoid(precision.conv(3, (1, 1), name="rgb")(x))
        out = {"rgb": rgb * (1 + 2 * self.rgb_padding) - self.rgb_padding, "latents": latents}
        if "rgb" in images:  # the field's own colours (the colour branch)
            out["field_rgb"] = images["rgb"]
        return out


@gin.configurable
class LatentEncoder(Part):
    """Images `[B, H, W, 3]` -> latents `[B, H / k, W / k, latent_dim]` (the decoder's mirror).

    'same' padding: the encoder only sees training crops, never tiles.
    """

    latent_dim: int = 8
    factor: int = 8
    size: str = "large"

    def __post_init__(self):
        _check_int("LatentEncoder", "latent_dim", self.latent_dim, 1)
        _check_factor("LatentEncoder", self.factor)
        _widths(self.size, 0, "LatentEncoder")
        super().__post_init__()

    @nn.compact
    def __call__(self, rgb):
        """`rgb [B, H, W, 3]` (H, W multiples of k) -> `[B, H / k, W / k, latent_dim]`."""
        stages = int(math.log2(self.factor))
        width, blocks, stage_widths = _widths(self.size, stages, "LatentEncoder")
        x = nn.relu(precision.conv(stage_widths[-1] if stages else width, (3, 3), name="stem")(rgb))
        for j, w in enumerate([*reversed(stage_widths[:-1]), width] if stages else []):
            x = nn.relu(precision.conv(w, (3, 3), strides=(2, 2), name=f"down{j}")(x))
        for i in range(blocks):
            y = nn.relu(precision.conv(width, (3, 3), name=f"block{i}_a")(x))
            x = nn.relu(x + precision.conv(width, (3, 3), name=f"block{i}_b")(y))
        return precision.conv(self.latent_dim, (1, 1), name="latent")(x)

    def param_labels(self, params):
        """Every parameter in the encoder's own group."""
        return jax.tree.map(lambda _: ENCODER_GROUP, params)

    def param_groups(self) -> dict:
        """The encoder's learning rates, over phase 1 only (LatentTraining.encoder_lr)."""
        return {ENCODER_GROUP: LatentTraining().encoder_group()}


def flops_per_output_pixel(decoder: LatentDecoder, params, latent_side: int = 16) -> float:
    """XLA's FLOP count of the decoder on a `latent_side`^2 latent tile, per output pixel."""
    x = {"features": jnp.zeros((1, latent_side, latent_side, decoder.latent_dim))}
    compiled = jax.jit(lambda p, x: decoder.apply(p, x)).lower(params, x).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    out_side = (latent_side - 2 * decoder.receptive_radius()) * decoder.factor
    return float(cost["flops"]) / out_side**2
