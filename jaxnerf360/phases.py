"""Training phases: stretches of one run with their own compiled step, losses and trained parts.

A head may declare a `PhasePlan` (`Head.phases()`): ReLS-NeRF pretrains its autoencoder,
then fits the field, then fine-tunes the decoder with the field frozen. Each `Phase` starts at
a fraction of training and says whether the field is rendered at all and which of the model's
parts get gradients; the plan gives every optimiser group the window of training in which it
trains (`ParamGroup.window`: its rate is exactly zero outside), and may add loss terms and a
loss of its own for the phases that do not render. The phase is a function of the step, so a
resumed run is in the phase an uninterrupted one would be.
"""

import dataclasses

from jaxnerf360 import schedules
from jaxnerf360.errors import UserError


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase: from the fraction `start` of training to the next phase's start.

    `renders`: the step renders the field (False: the plan's `own_loss` is the whole loss).
    `trains`: the model's parts (their parameter subtrees) that get gradients; None: all of
    them and the cameras' corrections. `coarse_rays`: the step also renders the batch's
    independent rays without the head: on the head's coarse grid (`PhasePlan.ray_batch`) and
    at full resolution (`PhasePlan.colour_ray_batch`).
    """

    name: str
    start: float
    renders: bool = True
    trains: tuple | None = None
    coarse_rays: bool = False


class PhasePlan:
    """Base of a head's training phases: the phases, each group's window, extra terms."""

    def phases(self) -> tuple:
        """The phases in order, the first starting at 0 (empty phases left out)."""
        raise NotImplementedError

    def window_of(self, label: str) -> tuple:
        """(start, end) fractions of training in which the group `label` trains."""
        raise NotImplementedError

    def scales_of(self, label: str) -> tuple:
        """((start, end, factor), ...): stretches in which the group's rate is scaled."""
        return ()

    def ray_batch(self) -> int:
        """Independent rays on the head's coarse grid each batch carries besides its patches
        (`data.batching.CoarseRayBatcher`; 0: none)."""
        return 0

    def colour_ray_batch(self) -> int:
        """Independent rays at the images' own resolution each batch carries for the field's
        own colours (0: none)."""
        return 0

    def phase_data(self, phase: Phase, model, model_params: dict, scene):
        """Device data the phase's train step reads (`LossInputs.phase_data`), computed once
        when its step is built; None: nothing."""
        return None

    def terms(self, config, model) -> list:
        """Loss terms the plan adds to the objective (gated by `LossInputs.phase`)."""
        return []

    def own_loss(self, phase: Phase, model, model_params: dict, batch: dict, rng, config):
        """(total, stats) of a phase that does not render the field."""
        raise NotImplementedError(phase.name)

    # --- derived, for the training loop ---

    def phase_at(self, step: int, max_steps: int) -> Phase:
        """The phase of the train step at `state.step = step`."""
        current = self.phases()[0]
        for phase in self.phases():
            if step >= schedules.fraction_step(phase.start, max_steps):
                current = phase
        return current

    def starts(self, max_steps: int) -> list:
        """[(first step, phase)] of every phase after the first."""
        return [(schedules.fraction_step(p.start, max_steps), p) for p in self.phases()[1:]]

    def describe(self, phase: Phase) -> str:
        """'phase i/n name' for the log."""
        names = [p.name for p in self.phases()]
        return f"phase {names.index(phase.name) + 1}/{len(names)} {phase.name}"

    def restrict(self, groups: dict) -> dict:
        """`groups` {label: ParamGroup} with each one's training window and rate scales."""
        return {label: dataclasses.replace(group, window=tuple(self.window_of(label)),
                                           scales=tuple(self.scales_of(label)))
                for label, group in groups.items()}


def check_boundaries(owner: str, names: tuple, values: tuple) -> None:
    """Phase boundaries (fractions of training) in [0, 1] and in order, or one clear line."""
    for name, value in zip(names, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise UserError(f"{owner}.{name}={value!r} must be a fraction of training in "
                            "[0, 1]")
    if list(values) != sorted(values):
        shown = ", ".join(f"{owner}.{n}={v}" for n, v in zip(names, values, strict=True))
        raise UserError(f"the phase boundaries are out of order ({shown}); each must be at "
                        "most the next")
