"""Optimiser and learning-rate schedules."""

import re

import jax
import jax.numpy as jnp
import optax

# Parameters of decomposed grids (TensoRF planes and lines, and the mask logits of wavelet
# planes) train with their own rate.
_GRID_PARAM = re.compile(r"_(plane|line|planemask|linemask)_\d+$")


def log_linear_lr(step, lr_init: float, lr_final: float, max_steps: int,
                  delay_steps: int = 0, delay_mult: float = 1.0):
    """Log-linear decay from lr_init to lr_final, with mip-NeRF's sine-eased warm-up."""
    t = jnp.clip(step / max_steps, 0.0, 1.0)
    lr = jnp.exp(jnp.log(lr_init) * (1 - t) + jnp.log(lr_final) * t)
    if delay_steps > 0:
        ease = jnp.sin(0.5 * jnp.pi * jnp.clip(step / delay_steps, 0.0, 1.0))
        lr = lr * (delay_mult + (1 - delay_mult) * ease)
    return lr


def schedule_from_config(config):
    """The learning-rate schedule (step -> lr) of networks and other non-grid parameters."""
    return lambda step: log_linear_lr(
        step, config.lr_init, config.lr_final, config.max_steps,
        config.lr_delay_steps, config.lr_delay_mult,
    )


def grid_schedule_from_config(config):
    """The learning-rate schedule of grid factors (TensoRF: 0.02 decaying tenfold)."""
    return lambda step: log_linear_lr(
        step, config.grid_lr_init, config.grid_lr_final, config.max_steps,
        config.lr_delay_steps, config.lr_delay_mult,
    )


def is_grid_param(path) -> bool:
    """Whether the parameter at pytree `path` is a grid factor (a plane or a line)."""
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", ""))
    return bool(_GRID_PARAM.search(str(name)))


def param_labels(params):
    """'grid' for grid factors, 'net' for everything else, in the structure of `params`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "grid" if is_grid_param(path) else "net", params)


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam with per-group log-linear schedules (grids and networks), after global-norm clipping."""
    def adam(schedule):
        return optax.adam(schedule, b1=config.adam_beta1, b2=config.adam_beta2,
                          eps=config.adam_eps)

    parts = []
    if config.grad_max_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_max_norm))
    parts.append(optax.multi_transform(
        {"net": adam(schedule_from_config(config)),
         "grid": adam(grid_schedule_from_config(config))},
        param_labels))
    return optax.chain(*parts)
