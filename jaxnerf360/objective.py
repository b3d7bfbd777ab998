"""The objective: an ordered list of named, weighted loss terms.

A `LossTerm` is a function of `LossInputs` (the model's outputs, the batch, the target
colours, the step...) with a weight and a name; the name is what the log and TensorBoard show.
The run's own terms come first (the data term, mip-NeRF 360's interlevel and distortion
losses, weighted by Config), then the terms the field declares for itself (TensoRF's L1 and
TV, the wavelet mask penalty), then any term a gin file adds:

    @gin.configurable
    def my_term(config, weight=0.1):
        return objective.LossTerm("my_term", lambda inputs: ..., weight)

    Objective.extra_terms = [@my_term]

so a new term registers without editing a central sum.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import gin
import jax

from jaxnerf360 import losses
from jaxnerf360.errors import UserError


@dataclasses.dataclass(frozen=True)
class LossInputs:
    """Everything a loss term may read, for one batch."""

    outputs: dict  # the model's outputs: rgb [..., 3], acc, sdist, weights, prop_levels, ...
    batch: dict  # rays, rgb, alpha, pixels (each [...] leading shape)
    target: Any  # [..., 3] the colours the data term compares `outputs['rgb']` with
    pixel_weights: Any  # [...] per-pixel weights of the data term, or None
    params: dict  # the model's parameters
    field_params: dict  # the field's own parameters (for its regularisers)
    step: Any  # the state's step (traced)
    train_frac: Any  # step / Config.max_steps in [0, 1] (traced)
    lr_ratio: dict  # {group label: current learning rate / initial}, e.g. TensoRF's TV decay


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """One named term: `weight * fn(inputs)` joins the loss; the log shows `fn(inputs)`.

    `weight` is a number, a function of the `LossInputs` (a schedule), or None for a value
    that is only logged (no gradient).
    """

    name: str
    fn: Callable[[LossInputs], Any]
    weight: float | Callable[[LossInputs], Any] | None = 1.0


class Objective:
    """The sum of weighted terms, in order; returns (total, {name: value})."""

    def __init__(self, terms: Sequence[LossTerm]):
        names = [t.name for t in terms]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UserError(f"loss term {repeated[0]!r} appears twice in the objective; give "
                            "each term its own name")
        self.terms = tuple(terms)

    @property
    def names(self) -> tuple:
        """The term names, in order."""
        return tuple(t.name for t in self.terms)

    def __call__(self, inputs: LossInputs):
        """(total loss, {term name: unweighted value})."""
        total, parts = 0.0, {}
        for term in self.terms:
            value = term.fn(inputs)
            if term.weight is None:
                parts[term.name] = jax.lax.stop_gradient(value)
                continue
            parts[term.name] = value
            weight = term.weight(inputs) if callable(term.weight) else term.weight
            total = total + weight * value
        return total, parts


def data_term(config) -> LossTerm:
    """Config.data_loss_type between rendered and target colours, per-pixel weighted."""
    def data(inputs):
        return losses.data_loss(inputs.outputs["rgb"], inputs.target, config.data_loss_type,
                                config.charb_padding, inputs.pixel_weights)

    return LossTerm("data", data, config.data_loss_mult)


def interlevel_term(config) -> LossTerm:
    """mip-NeRF 360's proposal loss (zero for samplers without proposal levels)."""
    def interlevel(inputs):
        out = inputs.outputs
        return losses.interlevel(out["sdist"], out["weights"], out["prop_levels"])

    return LossTerm("interlevel", interlevel, config.interlevel_loss_mult)


def distortion_term(config) -> LossTerm:
    """mip-NeRF 360's distortion loss of the final histogram."""
    def distortion(inputs):
        return losses.distortion(inputs.outputs["sdist"], inputs.outputs["weights"])

    return LossTerm("distortion", distortion, config.distortion_loss_mult)


@gin.configurable("Objective", denylist=["config", "field_terms"])
def build(config, field_terms: Sequence[LossTerm] = (), extra_terms: Sequence = ()) -> Objective:
    """The run's objective: data, interlevel, distortion, the field's terms, then
    `extra_terms` (gin: functions of the Config that return a LossTerm)."""
    terms = [data_term(config), interlevel_term(config), distortion_term(config)]
    terms += list(field_terms)
    terms += [make(config) for make in extra_terms]
    return Objective(terms)
