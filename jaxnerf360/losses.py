"""Loss functions: the Charbonnier data term, interlevel (proposal) and distortion losses.

Pure functions; `objective.py` weighs and names them (and the terms fields declare).
"""

import jax
import jax.numpy as jnp

from jaxnerf360.geometry import stepfun


def charbonnier(pred, target, eps: float):
    """Per-entry Charbonnier loss sqrt((pred - target)^2 + eps^2), shape of the inputs."""
    return jnp.sqrt(jnp.square(pred - target) + eps**2)


def data_loss(pred, target, kind: str, eps: float, weights=None):
    """The data term: mean 'charbonnier' or 'mse' between `[..., 3]` colours.

    `weights [...]` (per ray) give a weighted mean, normalised by the mean weight.
    """
    per = jnp.square(pred - target) if kind == "mse" else charbonnier(pred, target, eps)
    if weights is None:
        return jnp.mean(per)
    weights = jnp.broadcast_to(weights[..., None], per.shape)
    return jnp.sum(weights * per) / jnp.sum(weights)


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
