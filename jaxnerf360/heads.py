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

from jaxnerf360.parts import Part


class Head(Part):
    """Base of every head: the declarations below are those of a per-pixel head."""

    _DECLARATIONS = Part._DECLARATIONS + ("receptive_radius", "upsample")

    @nn.nowrap
    def receptive_radius(self) -> int:
        """Input pixels consumed on every side of the output."""
        return 0

    @nn.nowrap
    def upsample(self) -> int:
        """Output pixels per input pixel along each axis."""
        return 1

    def __call__(self, images: dict) -> dict:
        """`{name: [B, H, W, C]}` composited channels -> `{'rgb': [B, H', W', 3], ...}`."""
        raise NotImplementedError


@gin.configurable
class IdentityHead(Head):
    """Passes the composited channels through: the field's `rgb` is the output."""

    def __call__(self, images: dict) -> dict:
        """The channels, unchanged."""
        return dict(images)
