"""mip-NeRF 360's proposal sampler: density-only proposal fields predict histograms in
normalised ray distance s, each level resampling the previous level's annealed, dilated
histogram; the final level's intervals go to the field."""

from collections.abc import Callable, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from jaxnerf360.fields.mlp import PropMLPField
from jaxnerf360.geometry import coord, render, stepfun
from jaxnerf360.samplers.base import Sampler, Samples, SamplingContext, rays_to_gaussians


def anneal_power(train_frac, slope: float):
    """Schlick-style bias curve: 0 at the start of training rising to 1 at the end."""
    return slope * train_frac / ((slope - 1.0) * train_frac + 1.0)


@gin.configurable
class ProposalSampler(Sampler):
    """mip-NeRF 360 online-distilled proposal sampling (2 x 64 proposal, 32 final)."""

    num_prop_samples: Sequence[int] = (64, 64)
    num_final_samples: int = 32
    proposal_field: Callable = PropMLPField
    raydist_fn: str = "reciprocal"  # reciprocal | linear | log
    supports_pose_optimization = True  # intervals follow the (corrected) rays
    anneal_slope: float = 10.0
    dilation_multiplier: float = 0.5
    dilation_bias: float = 0.0025
    resample_padding: float = 0.0
    single_jitter: bool = True
    stop_level_grad: bool = True
    ray_shape: str = "cone"  # cone | cylinder

    def param_labels(self, params):
        """The proposal field's own labels."""
        return {"proposal": self.proposal_field().param_labels(params["proposal"])}

    def param_groups(self) -> dict:
        """The proposal field's own groups."""
        return self.proposal_field().param_groups()

    @nn.compact
    def __call__(self, rng, rays, train_frac, context: SamplingContext) -> Samples:
        """The final level `[..., m+1]` and the proposal histograms; every sample counts.

        `rng` None gives deterministic (evaluation) sampling. The proposal histograms are
        dicts with `sdist [..., n+1]` and `weights [..., n]`, for the interlevel loss.
        """
        warp = context.warp
        t_to_s, s_to_t = coord.construct_ray_warps(self.raydist_fn, rays.near, rays.far)
        prop = self.proposal_field(name="proposal")
        batch_shape = rays.origins.shape[:-1]
        sdist = jnp.broadcast_to(jnp.array([0.0, 1.0]), batch_shape + (2,))
        weights = jnp.ones(batch_shape + (1,))
        levels = []
        prod_samples = 1
        counts = list(self.num_prop_samples) + [self.num_final_samples]
        for i, num_samples in enumerate(counts):
            if i > 0 and self.dilation_multiplier > 0:
                dilation = self.dilation_bias + self.dilation_multiplier / prod_samples
                sdist, weights = stepfun.max_dilate_weights(
                    sdist, weights, dilation, domain=(0.0, 1.0), renormalize=True
                )
                sdist, weights = sdist[..., 1:-1], weights[..., 1:-1]
            power = anneal_power(train_frac, self.anneal_slope)
            logits = jnp.where(
                sdist[..., 1:] > sdist[..., :-1],
                power * jnp.log(weights + self.resample_padding),
                -jnp.inf,
            )
            if rng is None:
                key = None
            else:
                rng, key = jax.random.split(rng)
            sdist = stepfun.sample_intervals(
                key, sdist, logits, num_samples, single_jitter=self.single_jitter, domain=(0.0, 1.0)
            )
            if self.stop_level_grad:
                sdist = jax.lax.stop_gradient(sdist)
            prod_samples *= num_samples
            tdist = s_to_t(sdist)
            if i == len(counts) - 1:
                return Samples(sdist, tdist, levels)
            means, covs = rays_to_gaussians(rays, tdist, self.ray_shape, warp)
            density = prop(means, covs, None)["density"]
            weights = render.compute_alpha_weights(density, tdist, rays.directions)[0]
            levels.append({"sdist": sdist, "weights": weights})
        raise AssertionError("unreachable")
