"""The mip-NeRF 360 MLPs: a density-only proposal MLP and the NeRF MLP."""


import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from jaxnerf360 import precision
from jaxnerf360.errors import UserError
from jaxnerf360.fields.base import Field
from jaxnerf360.geometry import coord


def _encode_gaussians(means, covs, tessellation: int, min_deg: int, max_deg: int):
    """Integrated positional encoding of Gaussians projected on a fixed basis."""
    if covs is None:
        return coord.pos_enc(means, min_deg, max_deg, append_identity=True)
    if tessellation == 0:
        mean = means
        var = jnp.diagonal(covs, axis1=-2, axis2=-1)
    else:
        basis = coord.generate_basis(tessellation)
        mean, var = coord.lift_and_diagonalize(means, covs, basis)
    return coord.integrated_pos_enc(mean, var, min_deg, max_deg)


def _density_activation(raw, bias: float):
    return jax.nn.softplus(raw + bias)


@gin.configurable
class MLPField(Field):
    """The NeRF MLP of mip-NeRF 360: IPE -> trunk (skip) -> density, bottleneck + viewdirs -> rgb.

    With `density_only=True` it is the proposal MLP (no colour branch).
    """

    net_depth: int = 8
    net_width: int = 1024
    skip_layer: int = 4  # the input is concatenated back before this layer
    net_depth_viewdirs: int = 1
    net_width_viewdirs: int = 128
    bottleneck_width: int = 256
    min_deg: int = 0
    max_deg: int = 12
    deg_view: int = 4
    basis_tessellation: int = 2  # 0: encode along the x/y/z axes only
    density_bias: float = -1.0
    rgb_padding: float = 0.001
    density_only: bool = False
    # Width of a `features` channel from the view-dependent branch, composited like rgb for
    # an image-space head (AligNeRF's ConvHead); 0: none.
    feature_dim: int = 0
    # BARF's coarse-to-fine encoding for joint pose optimisation: (start, end) fractions of
    # training over which the frequency bands open one after another; None: all open.
    coarse_to_fine: tuple | None = None
    supports_pose_optimization = True  # gradients reach the sample positions

    def __post_init__(self):
        c2f = self.coarse_to_fine
        if c2f is not None and not (len(c2f) == 2 and 0 <= c2f[0] < c2f[1] <= 1):
            raise UserError(f"{type(self).__name__}.coarse_to_fine={c2f!r} must be (start, end) "
                            "fractions of training with 0 <= start < end <= 1, or None")
        if isinstance(self.feature_dim, bool) or not isinstance(self.feature_dim, int) or \
                self.feature_dim < 0:
            raise UserError(f"{type(self).__name__}.feature_dim={self.feature_dim!r} must be a "
                            "non-negative integer")
        super().__post_init__()

    @nn.nowrap
    def channels(self) -> dict:
        """rgb (unless density-only) and, with feature_dim, features."""
        if self.density_only:
            return {}
        return {"rgb": 3, **({"features": self.feature_dim} if self.feature_dim else {})}

    @nn.compact
    def __call__(self, means, covs, viewdirs: jnp.ndarray | None = None, progress=None):
        """Returns {'density': [..., n]} and, unless density-only, {'rgb': [..., n, 3]} (and
        `features [..., n, feature_dim]` when feature_dim > 0).

        `progress` ({'train_frac', ...}, during training) drives the coarse-to-fine window.
        """
        dense = lambda width, name=None: precision.dense(  # noqa: E731
            width, kernel_init=nn.initializers.he_uniform(), name=name
        )
        inputs = _encode_gaussians(means, covs, self.basis_tessellation, self.min_deg, self.max_deg)
        if self.coarse_to_fine is not None and progress is not None:
            start, end = self.coarse_to_fine
            bands = self.max_deg - self.min_deg
            alpha = bands * jnp.clip((progress["train_frac"] - start) / (end - start), 0.0, 1.0)
            identity = means.shape[-1] if covs is None else 0  # pos_enc puts x first
            dim = (inputs.shape[-1] - identity) // (2 * bands)
            window = jnp.concatenate([jnp.ones(identity),
                                      coord.coarse_to_fine_weights(alpha, bands, dim)])
            inputs = inputs * window
        x = inputs
        for i in range(self.net_depth):
            if i == self.skip_layer and i > 0:
                x = jnp.concatenate([x, inputs], axis=-1)
            x = nn.relu(dense(self.net_width)(x))
        density = _density_activation(dense(1, "density")(x)[..., 0], self.density_bias)
        out = {"density": density}
        if self.density_only:
            return out
        if viewdirs is None:
            raise ValueError("MLPField needs viewdirs unless density_only=True")
        bottleneck = dense(self.bottleneck_width, "bottleneck")(x)
        dir_enc = coord.pos_enc(viewdirs, 0, self.deg_view, append_identity=True)
        dir_enc = jnp.broadcast_to(dir_enc[..., None, :],
                                   bottleneck.shape[:-1] + dir_enc.shape[-1:])
        y = jnp.concatenate([bottleneck, dir_enc], axis=-1)
        for _ in range(self.net_depth_viewdirs):
            y = nn.relu(dense(self.net_width_viewdirs)(y))
        rgb = jax.nn.sigmoid(dense(3, "rgb")(y))
        out["rgb"] = rgb * (1 + 2 * self.rgb_padding) - self.rgb_padding
        if self.feature_dim:
            out["features"] = dense(self.feature_dim, "features")(y)
        return out


@gin.configurable
class PropMLPField(MLPField):
    """The density-only proposal MLP (4 x 256 by default)."""

    net_depth: int = 4
    net_width: int = 256
    density_only: bool = True
