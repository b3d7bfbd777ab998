"""Between-step events of a training run, and the cache of compiled train steps.

TensoRF's loop rebuilds its occupancy grid at given steps, drops training rays that miss
occupied space after the second rebuild, and grows its grid at others; spectral control ends
once its schedules reach zero; the training images may be registered to the field
(`registration.Registration`, an event of its own). Each is an `Event`: the steps before
which it is due, what it changes in the state or the run, and whether the train step must be
re-made after it (shapes or static settings changed). The parts declare when
(`Sampler.state_update_steps`, `Sampler.ray_filter_step`, `Field.resolution_schedule`,
`Field.spectral_end`, `Supervision.end_fraction`); `for_run` turns the declarations into
events. Everything is a function of the step and the state, so a resumed run `replay`s what
an uninterrupted one did.
"""

import jax
import numpy as np
from absl import logging

from jaxnerf360.rendering import round_capacity
from jaxnerf360.train_step import resized


def log_change(what: str, step: int, detail: str) -> None:
    """One log line for a scheduled change."""
    logging.info("step %d: %s (%s)", step, what, detail)


class Event:
    """A change applied before the train step at each of `steps` (the state's step)."""

    recompile = True  # whether the train step is re-made afterwards

    def __init__(self, steps):
        self.steps = tuple(int(s) for s in steps)

    def apply(self, run, state):
        """The state after the change (`run` is the `training.Training`)."""
        return state

    def replay(self, run, state) -> None:
        """Re-derives, for a run resumed at the state's step, what the event left outside
        the state (kept rays, static settings); the state itself comes from the checkpoint."""


class SamplerUpdate(Event):
    """The sampler's state rebuilt from the field (TensoRF's alpha mask)."""

    def apply(self, run, state):
        sampler = run.model.sampler()
        new = sampler.update_state(state.sampler_state, run.density_fn(state),
                                   run.field.grid_resolution(run.field_params(state)),
                                   run.model.scene_kind)
        log_change(f"{sampler.state_name()} rebuilt", int(state.step),
                   sampler.describe_state(new))
        return state.replace(sampler_state=new)


class RayFilter(Event):
    """Training rays that reach no counted sample are dropped (kept while poses move)."""

    def apply(self, run, state):
        run.filter_rays(state)
        return state

    def replay(self, run, state) -> None:
        if int(state.step) >= self.steps[0]:
            run.filter_rays(state)


class GridResize(Event):
    """The field's grid (and its optimiser moments) resampled to the scheduled resolution."""

    def __init__(self, schedule):
        super().__init__([step for step, _ in schedule])
        self.resolutions = dict(schedule)

    def apply(self, run, state):
        resolution = self.resolutions[int(state.step)]
        log_change("grid upsampled", int(state.step), f"resolution {resolution}")
        return resized(state, run.field, resolution)  # laid out on the mesh by before_step


class PhaseStart(Event):
    """A training phase of the head's plan begins: its own compiled step from here."""

    def apply(self, run, state):
        log_change(run.describe_phase(int(state.step)), int(state.step), "begins")
        return state


class SpectralEnd(Event):
    """From here the train step is compiled without spectral control."""

    def apply(self, run, state):
        log_change("spectral control over", int(state.step),
                   "the train step is recompiled without it")
        return state


def for_run(run) -> list:
    """The run's events in the order they apply at one step."""
    sampler, field = run.model.sampler(), run.field
    out = []
    if sampler.state_update_steps():
        out.append(SamplerUpdate(sampler.state_update_steps()))
    if sampler.ray_filter_step() is not None:
        out.append(RayFilter([sampler.ray_filter_step()]))
    if field.resolution_schedule():
        out.append(GridResize(field.resolution_schedule()))
    if run.spectral_end is not None:
        out.append(SpectralEnd([run.spectral_end]))
    if getattr(run, "registration", None) is not None:
        out.append(run.registration)
    if run.plan is not None:
        out.append(PhaseStart([step for step, _ in run.plan.starts(run.config.max_steps)]))
    return out


class StepCache:
    """Compiled train steps keyed on their static settings (sample-buffer capacity, spectral
    control, training phase): a setting seen before is not compiled again (new shapes retrace
    on their own)."""

    def __init__(self, build):
        self._build = build
        self._steps = {}

    def get(self, **settings):
        """The train step for `settings`, built on first use."""
        key = tuple(sorted(settings.items()))
        if key not in self._steps:
            self._steps[key] = self._build(**settings)
        return self._steps[key]

    def __len__(self) -> int:
        return len(self._steps)


# Head-room over the fullest of the probe batches. In a trained state of tensorf_lego_cpu.gin
# the counts of 300 batches spread by about 2% (sd); the fullest was 6.4% over the mean, and
# 5% over the fullest of 4 probes held every one; a whole run overflowed once (835 samples)
# and the loop grew the buffer (BENCHMARKS.md). Padding is computed work.
CAPACITY_MARGIN = 1.05
# Rays cast from cameras being optimised cross the scene differently as the poses move.
MOVING_CAPACITY_MARGIN = 1.1


def capacity_margin(moving: bool) -> float:
    """Head-room over the fullest probe batch: more while the poses, so the rays, move."""
    return MOVING_CAPACITY_MARGIN if moving else CAPACITY_MARGIN


def estimate_capacity(count, batches, at_least: int = 0,
                      margin: float = CAPACITY_MARGIN) -> int | None:
    """A static buffer size for the counted samples of training batches like `batches`.

    `count(rays) -> (counted, total)`. The fullest probe batch (or `at_least`, if more) times
    `margin`, rounded by `round_capacity`; None when nearly every sample counts.
    """
    worst, total = at_least, 1
    for rays in batches:
        used, total = (int(v) for v in jax.device_get(count(rays)))
        worst = max(worst, used)
    return round_capacity(int(np.ceil(worst * margin)), total)
