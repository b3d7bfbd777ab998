"""Optimiser and learning-rate schedule."""

import jax.numpy as jnp
import optax


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
    """The learning-rate schedule (step -> lr) that `config` describes."""
    return lambda step: log_linear_lr(
        step, config.lr_init, config.lr_final, config.max_steps,
        config.lr_delay_steps, config.lr_delay_mult,
    )


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam with the log-linear schedule, after clipping gradients by global norm."""
    parts = []
    if config.grad_max_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_max_norm))
    parts.append(optax.adam(schedule_from_config(config), b1=config.adam_beta1,
                            b2=config.adam_beta2, eps=config.adam_eps))
    return optax.chain(*parts)
