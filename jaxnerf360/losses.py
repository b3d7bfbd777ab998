"""Training losses: Charbonnier data term, interlevel (proposal) and distortion losses."""

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


def grid_regularizers(field_params, config, step, grid_lr_ratio):
    """Weighted grid terms, (total, {name: value}): TensoRF's L1 and TV, the mask penalty.

    Also logs `mask_kept`, the fraction of coefficients the masks keep.

    The L1 weight switches to `l1_density_mult_rest` at `l1_density_switch_step`; the TV
    weights are scaled by `grid_lr_ratio` (the grid learning rate over its initial value).
    """
    from jaxnerf360.fields import vm as tensorf

    parts, total = {}, 0.0
    if config.l1_density_mult > 0 or config.l1_density_mult_rest:
        weight = config.l1_density_mult
        if config.l1_density_mult_rest is not None:
            weight = jnp.where(step >= config.l1_density_switch_step,
                               config.l1_density_mult_rest, weight)
        parts["l1_density"] = tensorf.l1_density(field_params)
        total += weight * parts["l1_density"]
    for prefix, mult in (("density", config.tv_density_mult),
                         ("appearance", config.tv_appearance_mult)):
        if mult > 0:
            parts[f"tv_{prefix}"] = tensorf.tv_planes(field_params, prefix)
            total += mult * grid_lr_ratio * parts[f"tv_{prefix}"]
    logits = [v for k, v in field_params.items() if "mask_" in k]
    if logits:
        from jaxnerf360.fields.wavelet import kept_fraction, mask_fraction

        parts["mask_kept"] = jax.lax.stop_gradient(kept_fraction(logits))
        if config.mask_loss_mult > 0:
            parts["mask_fraction"] = mask_fraction(logits)
            total += config.mask_loss_mult * parts["mask_fraction"]
    return total, parts
