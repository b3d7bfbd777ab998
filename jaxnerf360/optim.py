"""Optimiser and learning-rate schedules."""

import re

import jax
import jax.numpy as jnp
import optax

# Parameters of decomposed grids (TensoRF planes and lines, and the mask logits of wavelet
# planes) train with their own rate.
_GRID_PARAM = re.compile(r"_(plane|line|planemask|linemask)_\d+$")
_MASK_PARAM = re.compile(r"_(planemask|linemask)_\d+$")
# A mask logit's gradient is x * sigmoid'(m) * dL/dx, often far below 1e-8: with the usual
# epsilon Adam would scale it down (the masks would only drift). Tiny, it keeps Adam
# scale-free, so the masks settle where the data and the mask penalty balance.
MASK_ADAM_EPS = 1e-15


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


def pose_schedule_from_config(config):
    """The learning-rate schedule of the camera corrections (their own Adam)."""
    return lambda step: log_linear_lr(step, config.pose_lr_init, config.pose_lr_final,
                                      config.max_steps)


def is_grid_param(path) -> bool:
    """Whether the parameter at pytree `path` is a grid factor (a plane or a line)."""
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", ""))
    return bool(_GRID_PARAM.search(str(name)))


def _label(path) -> str:
    name = str(getattr(path[-1], "key", getattr(path[-1], "name", "")))
    if str(getattr(path[0], "key", "")) == "poses":
        return "pose"
    if _MASK_PARAM.search(name):
        return "mask"
    return "grid" if is_grid_param(path) else "net"


def param_labels(params):
    """'pose' for camera corrections, 'mask' for mask logits, 'grid' for grid factors, 'net'
    for the rest, in the structure of `params`."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _label(path), params)


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam with per-group log-linear schedules, after global-norm clipping.

    Groups: networks, grid factors, mask logits (at the grid rate, with MASK_ADAM_EPS) and
    camera corrections (Config.pose_lr_init to pose_lr_final).
    """
    def adam(schedule, eps=config.adam_eps):
        return optax.adam(schedule, b1=config.adam_beta1, b2=config.adam_beta2, eps=eps)

    parts = []
    if config.grad_max_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_max_norm))
    parts.append(_present_groups(
        {"net": adam(schedule_from_config(config)),
         "grid": adam(grid_schedule_from_config(config)),
         "mask": adam(grid_schedule_from_config(config), eps=MASK_ADAM_EPS),
         "pose": adam(pose_schedule_from_config(config))}))
    return optax.chain(*parts)


def _present_groups(transforms: dict) -> optax.GradientTransformation:
    """`optax.multi_transform` over `param_labels`, holding state only for groups in use.

    'net' and 'grid' are always there (the state of every run before masks and poses
    existed), 'mask' and 'pose' only for parameters that have them, so older checkpoints
    keep restoring.
    """
    def build(tree):
        present = set(jax.tree.leaves(param_labels(tree))) | {"net", "grid"}
        return optax.multi_transform({k: t for k, t in transforms.items() if k in present},
                                     param_labels)

    def update(updates, state, params=None):
        return build(updates).update(updates, state, params)

    return optax.GradientTransformation(lambda params: build(params).init(params), update)
