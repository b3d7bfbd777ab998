"""Training losses: Charbonnier data term, interlevel (proposal) and distortion losses."""

import jax
import jax.numpy as jnp

from jaxnerf360.geometry import stepfun


def charbonnier(pred, target, eps: float):
    """Mean Charbonnier loss sqrt((pred - target)^2 + eps^2) over `[..., 3]`."""
    return jnp.mean(jnp.sqrt(jnp.square(pred - target) + eps**2))


def data_loss(pred, target, kind: str, eps: float):
    """The data term: 'charbonnier' or 'mse' between `[..., 3]` colours."""
    if kind == "mse":
        return jnp.mean(jnp.square(pred - target))
    return charbonnier(pred, target, eps)


def interlevel(final_sdist, final_weights, prop_levels):
    """mip-NeRF 360 proposal loss, summed over levels; the NeRF histogram is a constant.

    Each proposal histogram must upper-bound the final weights; only the proposal
    receives gradients (stop-gradient on the final level).
    """
    s = jax.lax.stop_gradient(final_sdist)
    w = jax.lax.stop_gradient(final_weights)
    total = 0.0
    for level in prop_levels:
        per_interval = stepfun.lossfun_outer(s, w, level["sdist"], level["weights"])
        total += jnp.mean(jnp.sum(per_interval, -1))
    return total


def distortion(sdist, weights):
    """Mean mip-NeRF 360 distortion loss of the final histogram in s-space."""
    return jnp.mean(stepfun.lossfun_distortion(sdist, weights))
