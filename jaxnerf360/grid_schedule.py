"""Scheduled changes to a grid model during training: upsampling and occupancy updates.

TensoRF's training loop grows the VM grid at given steps, rebuilds its alpha mask (our
occupancy grid) at others, and after the second rebuild drops the training rays that never
reach occupied space. Each change is a pure function of the state; the train loop applies
them between steps (shapes change, so the train step recompiles).
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxnerf360 import pipeline
from jaxnerf360.data.cameras import image_rays
from jaxnerf360.geometry.occupancy import build_grid
from jaxnerf360.model import Model

_CAPACITY_MARGIN = 1.1  # head-room over the fullest probe batch


def update_occupancy(model, state):
    """The state with its occupancy grid rebuilt from the current field's density."""
    sampler, field = model.sampler(), model.field()
    field_params = state.params["field"]
    step = Model.step_size_for(sampler, field, field_params)
    if step is None:
        from jaxnerf360.geometry.occupancy import occupancy_step_size

        step = occupancy_step_size(sampler.box_min, sampler.box_max,
                                   state.occupancy.shape, sampler.step_ratio)

    @jax.jit
    def density(points):
        return field.apply({"params": field_params}, points[None], None, None)["density"][0]

    grid = build_grid(density, sampler.box_min, sampler.box_max, state.occupancy.shape, step,
                      sampler.threshold)
    return state.replace(occupancy=jnp.asarray(grid, bool))


def training_ray_hits(model, state, scene, chunk: int = 8192) -> np.ndarray:
    """`[num_images, H, W]` bool: which training rays reach occupied space."""
    hits = jax.jit(lambda st, rays: pipeline.ray_hits(model, st, rays))
    out = []
    for i in range(scene.num_images):
        rays = image_rays(scene, i)
        flat = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), rays)
        n = flat.origins.shape[0]
        row = []
        for start in range(0, n, chunk):
            part = jax.tree.map(lambda x, s=start: x[s:s + chunk], flat)
            pad = chunk - part.origins.shape[0]
            if pad:
                part = jax.tree.map(lambda x, p=pad: np.concatenate([x, np.repeat(x[-1:], p, 0)]),
                                    part)
            row.append(np.asarray(jax.device_get(hits(state, part)))[:chunk - pad])
        out.append(np.concatenate(row).reshape(scene.height, scene.width))
    return np.stack(out)


def estimate_capacity(model, state, batches, at_least: int = 0) -> int | None:
    """A static buffer size for the occupied samples of training batches like `batches`.

    The fullest of the probe batches (or `at_least`, if more) plus a margin, rounded up to
    1/32 of all samples; None when nearly every sample is occupied (no point in compacting).
    """
    count = jax.jit(lambda st, rays: pipeline.occupied_samples(model, st, rays))
    worst, total = at_least, 1
    for rays in batches:
        used, total = (int(v) for v in jax.device_get(count(state, rays)))
        worst = max(worst, used)
    return pipeline.round_capacity(int(np.ceil(worst * _CAPACITY_MARGIN)), total)


def log_change(what: str, step: int, detail: str) -> None:
    """One log line for a scheduled change."""
    logging.info("step %d: %s (%s)", step, what, detail)
