"""Image-space heads: the optional stage after compositing (`Model.head`).

A head maps composited channels laid out as images or patches, `{name: [B, H, W, C]}` (the
field's `rgb`, and later `features` or `latent`), to the final colours `{'rgb': [B, H', W',
3]}` with parameters of its own. It may look at a neighbourhood of each pixel (a convolutional
head, AligNeRF) and change the resolution (a latent decoder that upsamples, ReLS-NeRF), so it
declares both:

- `receptive_radius()`: r, the input pixels it consumes on every side (a valid convolution
  of a `[H, W]` input gives `[H - 2r, W - 2r]`);
- `upsample()`: k, output pixels per input pixel along each axis.

An output `[(H - 2r) k, (W - 2r) k]` then follows from an input `[H, W]`. Training renders
patches with a margin of r ray pixels (`data.batching.PatchBatcher`), and whole images are
rendered as overlapping tiles of channels that the head turns into seamless output
(`rendering.Renderer`). With no head (the default, `Model.head = None`) rays are independent
pixels and nothing of this runs.
"""

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from jaxnerf360 import precision
from jaxnerf360.errors import UserError
from jaxnerf360.parts import Part


class Head(Part):
    """Base of every head: the declarations below are those of a per-pixel head."""

    _DECLARATIONS = Part._DECLARATIONS + ("receptive_radius", "upsample", "input_channels",
                                          "encoder", "phases")

    @nn.nowrap
    def receptive_radius(self) -> int:
        """Input pixels consumed on every side of the output."""
        return 0

    @nn.nowrap
    def upsample(self) -> int:
        """Output pixels per input pixel along each axis."""
        return 1

    @nn.nowrap
    def input_channels(self) -> dict:
        """{name: width} of the field's composited channels it reads (checked at start-up)."""
        return {"rgb": 3}

    @nn.nowrap
    def encoder(self, **kwargs):
        """A part that maps images to this head's input (an autoencoder's encoder), made with
        the module `kwargs`; None for a head without one."""
        return None

    @nn.nowrap
    def phases(self):
        """The head's training phases (`phases.PhasePlan`); None: one phase, all training."""
        return None

    def __call__(self, images: dict) -> dict:
        """`{name: [B, H, W, C]}` composited channels -> `{'rgb': [B, H', W', 3], ...}`.

        Outputs other than `rgb` are at the input's resolution (`[B, H, W, ...]`)."""
        raise NotImplementedError


@gin.configurable
class IdentityHead(Head):
    """Passes the composited channels through: the field's `rgb` is the output."""

    def __call__(self, images: dict) -> dict:
        """The channels, unchanged."""
        return dict(images)


@gin.configurable
class ConvHead(Head):
    """AligNeRF's convolution-augmented head: rendered features (and colours) -> rgb.

    `depth` valid 3x3 convolutions of `width` channels with ReLUs (each consumes one pixel
    on every side, so the receptive radius is `depth`), residual connections between
    successive layers of the same width, then a 1x1 convolution to rgb and a sigmoid. It reads
    the composited `features` (`feature_dim` wide) and, with `use_rgb`, the composited `rgb`,
    which carries the background where the accumulated opacity is low. The view direction is
    not fed again: the field's features already come out of its view-dependent branch.
    """

    feature_dim: int = 16
    depth: int = 2
    width: int = 64
    residual: bool = True
    use_rgb: bool = True
    rgb_padding: float = 0.001

    def __post_init__(self):
        for name, least in (("feature_dim", 1), ("depth", 1), ("width", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserError(f"ConvHead.{name}={value!r} must be an integer of at least "
                                f"{least}")
        super().__post_init__()

    def receptive_radius(self) -> int:
        """One pixel per 3x3 convolution."""
        return self.depth

    def input_channels(self) -> dict:
        """features (and rgb)."""
        return {"features": self.feature_dim, **({"rgb": 3} if self.use_rgb else {})}

    @nn.compact
    def __call__(self, images: dict) -> dict:
        """`features [B, H, W, feature_dim]` (+ rgb) -> `rgb [B, H - 2 depth, W - 2 depth, 3]`."""
        parts = [images["features"]] + ([images["rgb"]] if self.use_rgb else [])
        x = jnp.concatenate(parts, -1)
        for i in range(self.depth):
            y = nn.relu(precision.conv(self.width, (3, 3), padding="VALID", name=f"conv{i}")(x))
            if self.residual and i > 0:
                y = y + x[..., 1:-1, 1:-1, :]
            x = y
        rgb = jax.nn.sigmoid(precision.conv(3, (1, 1), name="rgb")(x))
        return {"rgb": rgb * (1 + 2 * self.rgb_padding) - self.rgb_padding}
