"""What every part of the model (sampler, field, head) declares about its own parameters.

A part is a Flax module. Besides being called inside the model, it answers host-side questions
of the other stages (which optimiser group each of its parameters belongs to, what its state
is, how it resizes, ...) through plain methods that work on unbound modules. The methods a
base class lists in `_DECLARATIONS` stay unwrapped by Flax in every subclass, so they may be
called outside `apply` and may construct other modules.
"""

import dataclasses

import flax.linen as nn
import jax

NETWORK = "net"  # the label of parameters that train at the run's own rate (Config.lr_init)


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """Parameters with their own Adam: log-linear learning rate from lr_init to lr_final.

    `warmup` follows the run's warm-up (Config.lr_delay_steps); `eps` None uses
    Config.adam_eps. `window` (start, end), fractions of training: the group trains only
    from `start` to `end`, its schedule stretched over that stretch, and its rate is exactly
    zero outside it (a training phase that freezes it). `scales` ((start, end, factor), ...)
    multiplies the rate by `factor` within stretches of the window (a phase that slows it).
    """

    lr_init: float
    lr_final: float
    warmup: bool = True
    eps: float | None = None
    window: tuple = (0.0, 1.0)
    scales: tuple = ()


class Part(nn.Module):
    """Base of samplers, fields and heads: the defaults are those of a plain network."""

    _DECLARATIONS = ("param_labels", "param_groups", "partition_leaf")

    def __init_subclass__(cls, **kwargs):
        for name in cls._DECLARATIONS:
            if callable(cls.__dict__.get(name)):
                cls.__dict__[name].nowrap = True  # Flax leaves `nowrap` methods as they are
        super().__init_subclass__(**kwargs)

    @nn.nowrap
    def param_labels(self, params):
        """The optimiser group label of every leaf of this part's `params` (same structure)."""
        return jax.tree.map(lambda _: NETWORK, params)

    @nn.nowrap
    def param_groups(self) -> dict:
        """{label: ParamGroup} of the labels `param_labels` uses besides NETWORK."""
        return {}

    @nn.nowrap
    def partition_leaf(self, path: tuple, shape: tuple, model_size: int) -> tuple:
        """How the leaf at `path` (keys inside this part's params; optimiser moments too) of
        `shape` splits over a model axis of `model_size` devices: a PartitionSpec as a tuple
        of axis names or None per dimension; () keeps it whole on every device."""
        return ()


def parameter_count(params) -> int:
    """Number of scalars in a parameter tree (0 for None or an empty tree)."""
    return int(sum(x.size for x in jax.tree.leaves(params)))
