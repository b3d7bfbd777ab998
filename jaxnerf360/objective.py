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
import jax.numpy as jnp

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
    # [B, E, E, 3] the ground-truth patches (E >= P, centred on the output patches) with the
    # margin the terms declare, on this step's background; None for independent rays
    target_patch: Any = None
    phase: str | None = None  # the training phase's name (static), None without phases
    # the outputs of the batch's independent coarse rays (`extra_rays`), rendered without the
    # head, when the phase renders them; and what the phase precomputed (`Views.phase_data`)
    extra_outputs: Any = None
    phase_data: Any = None
    # the outputs of the plan's full-resolution rays (`colour_rays`), likewise
    colour_outputs: Any = None


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """One named term: `weight * fn(inputs)` joins the loss; the log shows `fn(inputs)`.

    `weight` is a number, a function of the `LossInputs` (a schedule), or None for a value
    that is only logged (no gradient). `margin` is the ground-truth margin in pixels the term
    reads around each output patch (`LossInputs.target_patch`). `active` (a function of the
    inputs, 0 or 1) switches the term on for a stage of training; while it is on, the term
    named `replaces` is off (a staged data term). `needs_patches`: it compares image patches.
    `rays`: the independent rays per (global) batch it reads as `LossInputs.extra_outputs`,
    drawn beside the patches.
    """

    name: str
    fn: Callable[[LossInputs], Any]
    weight: float | Callable[[LossInputs], Any] | None = 1.0
    margin: int = 0
    active: Callable[[LossInputs], Any] | None = None
    replaces: str | None = None
    needs_patches: bool = False  # it reads image patches `[B, P, P, 3]`, not independent rays
    rays: int = 0


def stage_gate(start: float):
    """`active` for a term that is on from the fraction `start` of training (None: always)."""
    if start <= 0.0:
        return None
    return lambda inputs: (inputs.train_frac >= start).astype(jnp.float32)


class Objective:
    """The sum of weighted terms, in order; returns (total, {name: value})."""

    def __init__(self, terms: Sequence[LossTerm]):
        names = [t.name for t in terms]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UserError(f"loss term {repeated[0]!r} appears twice in the objective; give "
                            "each term its own name")
        unknown = sorted({t.replaces for t in terms if t.replaces} - set(names))
        if unknown:
            raise UserError(f"a loss term replaces {unknown[0]!r}, which is not in the "
                            f"objective ({', '.join(names)})")
        self.terms = tuple(terms)

    @property
    def patch_terms(self) -> tuple:
        """The names of the terms that read image patches."""
        return tuple(t.name for t in self.terms if t.needs_patches or t.margin)

    @property
    def margin(self) -> int:
        """The widest ground-truth margin (pixels around each output patch) a term reads."""
        return max((t.margin for t in self.terms), default=0)

    @property
    def independent_rays(self) -> int:
        """The independent rays per batch that terms read beside the patches (0: none)."""
        return max((t.rays for t in self.terms), default=0)

    @property
    def names(self) -> tuple:
        """The term names, in order."""
        return tuple(t.name for t in self.terms)

    def __call__(self, inputs: LossInputs):
        """(total loss, {term name: unweighted value})."""
        total, parts = 0.0, {}
        gates = {t.name: t.active(inputs) for t in self.terms if t.active is not None}
        for term in self.terms:
            value = term.fn(inputs)
            if term.weight is None:
                parts[term.name] = jax.lax.stop_gradient(value)
                continue
            parts[term.name] = value
            weight = term.weight(inputs) if callable(term.weight) else term.weight
            weight = weight * gates.get(term.name, 1.0)
            for other in self.terms:
                if other.replaces == term.name and other.name in gates:
                    weight = weight * (1.0 - gates[other.name])
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
