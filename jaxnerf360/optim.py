"""The optimiser: Adam per parameter group, groups declared by the modules that own them.

Every parameter carries a group label that its owner declares (`Field.param_labels`,
`Sampler.param_labels`, `Cameras.param_labels`, ...): NETWORK for parameters that train at
the run's rate (Config.lr_init to lr_final), anything else for a `ParamGroup` with its own
rates (a field's grid factors, a camera's corrections). Each group is an Adam with a
log-linear schedule; all of them follow one global-norm clip.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxnerf360 import schedules
from jaxnerf360.errors import UserError
from jaxnerf360.parts import NETWORK, ParamGroup

# The optimiser state of every checkpoint written since grid fields exist holds the NETWORK
# and "grid" groups whether or not any parameter uses them (other groups appear only where
# used), so that layout is kept: an unused "grid" group trains nothing.
_ALWAYS_PRESENT = (NETWORK, "grid")


def log_linear_lr(step, lr_init: float, lr_final: float, max_steps: int,
                  delay_steps: int = 0, delay_mult: float = 1.0):
    """Log-linear decay from lr_init to lr_final, with mip-NeRF's sine-eased warm-up."""
    t = jnp.clip(step / max_steps, 0.0, 1.0)
    lr = jnp.exp(jnp.log(lr_init) * (1 - t) + jnp.log(lr_final) * t)
    if delay_steps > 0:
        ease = jnp.sin(0.5 * jnp.pi * jnp.clip(step / delay_steps, 0.0, 1.0))
        lr = lr * (delay_mult + (1 - delay_mult) * ease)
    return lr


def network_group(config) -> ParamGroup:
    """The run's own group: Config.lr_init to lr_final with the run's warm-up."""
    return ParamGroup(config.lr_init, config.lr_final)


def group_schedule(group: ParamGroup, config) -> Callable:
    """step -> learning rate of `group` over Config.max_steps (over its window, zero outside).
    """
    delay = (config.lr_delay_steps, config.lr_delay_mult) if group.warmup else (0, 1.0)
    if tuple(group.window) == (0.0, 1.0) and not group.scales:
        return lambda step: log_linear_lr(step, group.lr_init, group.lr_final, config.max_steps,
                                          *delay)
    at = lambda frac: schedules.fraction_step(frac, config.max_steps)  # noqa: E731
    first, end = at(group.window[0]), at(group.window[1])

    def windowed(step):
        lr = log_linear_lr(step - first, group.lr_init, group.lr_final, max(1, end - first),
                           *delay)
        for start, stop, factor in group.scales:
            lr = jnp.where((step >= at(start)) & (step < at(stop)), factor * lr, lr)
        return jnp.where((step >= first) & (step < end), lr, 0.0)

    return windowed


def schedule_from_config(config) -> Callable:
    """The learning-rate schedule of the NETWORK group (the one the log shows)."""
    return group_schedule(network_group(config), config)


def all_groups(config, groups: dict) -> dict:
    """{label: ParamGroup}: NETWORK, the declared `groups` (which may restate NETWORK, e.g.
    with a window), and the always-present layout."""
    out = {NETWORK: network_group(config), **groups}
    for label in _ALWAYS_PRESENT:
        out.setdefault(label, out[NETWORK])
    return out


def lr_ratios(config, groups: dict, step) -> dict:
    """{label: learning rate at `step` / its initial rate} (e.g. TensoRF's TV decay; 0 outside
    the group's window)."""
    return {label: group_schedule(group, config)(step) / group.lr_init
            for label, group in all_groups(config, groups).items()}


def make_optimizer(config, groups: dict, labels: Callable) -> optax.GradientTransformation:
    """Adam per group (log-linear schedules) after global-norm clipping (Config.grad_max_norm).

    `groups` {label: ParamGroup} are the declared groups besides NETWORK; `labels(params)`
    gives the label of every parameter leaf.
    """
    transforms = {}
    for label, group in all_groups(config, groups).items():
        eps = config.adam_eps if group.eps is None else group.eps
        transforms[label] = optax.adam(group_schedule(group, config), b1=config.adam_beta1,
                                       b2=config.adam_beta2, eps=eps)
    parts = []
    if config.grad_max_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_max_norm))
    parts.append(_present_groups(transforms, labels))
    return optax.chain(*parts)


def _present_groups(transforms: dict, labels: Callable) -> optax.GradientTransformation:
    """`optax.multi_transform` over `labels`, holding state only for groups in use (and for
    `_ALWAYS_PRESENT`, the layout of existing checkpoints)."""
    def build(tree):
        present = set(jax.tree.leaves(labels(tree))) | set(_ALWAYS_PRESENT)
        unknown = sorted(present - set(transforms))
        if unknown:
            raise UserError(f"parameters labelled {unknown[0]!r} belong to no declared "
                            "parameter group; declare it in the owner's param_groups()")
        return optax.multi_transform({k: t for k, t in transforms.items() if k in present},
                                     labels)

    def update(updates, state, params=None):
        return build(updates).update(updates, state, params)

    return optax.GradientTransformation(lambda params: build(params).init(params), update)
