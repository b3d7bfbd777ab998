"""One training run, assembled from its stages: what `train` loops over, and what the
benchmark and the tests build.

`Training(config, scene, mesh)` puts the stages together in the order data flows: the cameras
(initial poses, learned corrections), the model (sampler, field, head), the supervision and
the objective, the optimiser with the groups the owners declare, the state, the between-step
events and the cache of compiled train steps. `start` makes the batcher (and replays the
events of a resumed run), `before_step` applies what is due, `step` is the current compiled
train step `(state, batch, key) -> (state, stats)`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxnerf360 import (
    checkpoints,
    events,
    objective,
    optim,
    parallel,
    run_checks,
    schedules,
)
from jaxnerf360.cameras import Cameras
from jaxnerf360.data.batching import CoarseRayBatcher, PatchBatcher, RayBatcher
from jaxnerf360.data.cameras import image_rays
from jaxnerf360.data.patch_sampling import PatchSampling
from jaxnerf360.errors import UserError
from jaxnerf360.model import FIELD, Model
from jaxnerf360.parts import NETWORK
from jaxnerf360.registration import registration_for
from jaxnerf360.rendering import Renderer, counted_samples, map_rays, shown_samples
from jaxnerf360.supervision import EdgeWeights, ImageBlur, Supervision
from jaxnerf360.train_step import (
    batch_dict,
    init_state,
    make_loss_fn,
    make_train_step,
    resized,
)

_PROBE_SEED = 7919  # the capacity probes' batches are drawn apart from the training batches
_COARSE_SEED = 104729  # and a plan's coarse rays apart from both
_COLOUR_SEED = 130363  # and its full-resolution colour rays apart from all three


class Training:
    """The stages of one run on one training split, and its state."""

    def __init__(self, config, scene, mesh):
        self.config, self.mesh = config, mesh
        self.cameras = Cameras(scene, seed=config.seed)
        self.scene = self.cameras.training_scene(scene)  # the poses the run starts from
        self.model, self.groups, self.tx = assemble(config, scene.kind, self.cameras)
        self.field = self.model.parts()[FIELD]
        self.plan = self.model.phases()  # the head's training phases, or None
        self.supervision = Supervision(config.spectral_control, ImageBlur(), EdgeWeights())
        self.views = None
        maps = self.cameras.image_maps != "none"
        if maps and (config.background == "random" or self.supervision.needs_images):
            raise UserError("Cameras.image_maps reads the loaded images, composited on the fixed "
                            "background and unblurred: use Config.background 'white' or "
                            "'black' and no ImageBlur.schedule with it")
        if self.cameras.learned or self.supervision.needs_images or \
                self.supervision.needs_edges:
            self.views = self.cameras.views(
                self.scene, images=self.supervision.needs_images or maps,
                edges=self.supervision.edge_maps(scene.images))
        self.registration = registration_for(self)
        self.objective = build_objective(config, self.model)
        if self.objective.independent_rays and self.cameras.optimize_poses:
            raise UserError("ray_term's independent rays are cast from the initial cameras, "
                            "not the corrected ones: drop @ray_term or Cameras.optimize_poses")
        run_checks.check_output_size(self.scene, self.model.head_geometry()[1], config.data_dir)
        run_checks.check_appearance_chunks(self.model)
        run_checks.check_step_chunks(config, self.model, self.cameras, self.objective,
                                     self.supervision, parallel.data_size(mesh))
        self.patch_size = run_checks.check_patches(config, self.model, self.objective,
                                                   self.supervision, self.field)
        state = init_state(self.model, self.tx, config.seed, self.cameras.init_params(),
                           self.cameras.init_state())
        self.state = self.placed(state)
        self.spectral_end = spectral_end_step(config, self.field, self.supervision)
        self.events = events.for_run(self)
        self.capacity = None
        self.appearance_capacity = None  # the buffer of samples whose channels are computed
        self.appearance_chunks = 1  # ... in this many parts, skipped past the shown count
        self._grow = None  # (samples, shown) the buffers must hold from the next step
        self.kept = None  # bool [N, H, W] training rays kept by the ray filter
        self.batcher = None
        self.coarse_rays = None  # independent (coarse) rays beside the patches: plan's, terms'
        self.colour_rays = None  # a plan's independent rays at full resolution
        self._phase_data = {}  # phase name -> what the plan precomputed for its step
        self._steps = events.StepCache(self._build_step)
        self._renderer = None
        # Compiled once per run (they retrace for new shapes only), not at every event.
        self._count = jax.jit(lambda st, rays: counted_samples(self.model, st, rays))
        # The density on every sample, not on a buffer: a new buffer size does not recompile.
        self._shown = jax.jit(lambda st, rays: shown_samples(self.model, st, rays))
        self._density = jax.jit(lambda params, points: self.model.density(params, points))
        self.step = self._steps.get(capacity=None, spectral=self._spectral(0),
                                    phase=self.phase_name(0))

    # --- parameters ---

    @staticmethod
    def model_params(state) -> dict:
        """The model's own parameters of a state (without the camera corrections)."""
        return Cameras.split(state.params)[0]

    def shardings(self, state):
        """The sharding tree of `state` on the run's mesh (what the parts declare)."""
        return parallel.state_shardings(state, self.mesh, self.model.parts())

    def placed(self, state):
        """`state` laid out on the mesh as `shardings` says."""
        return parallel.place(state, self.shardings(state))

    def density_fn(self, state):
        """The field's density `[P]` at field-space points `[P, 3]` under `state` (jitted)."""
        model_params = self.model_params(state)
        return lambda points: self._density(model_params, points)

    def field_params(self, state) -> dict:
        """The field's parameters of a state."""
        return self.model_params(state).get(FIELD)

    def renderer(self) -> Renderer:
        """A renderer of this run's model (made once)."""
        if self._renderer is None:
            self._renderer = Renderer(self.model, self.mesh, self.config.background,
                                      self.config.render_chunk_size)
        return self._renderer

    # --- checkpoints, batches and events ---

    def restore(self, mgr) -> bool:
        """Restores the latest checkpoint into `state` (its grids at the resolution of its
        step); False when there is none."""
        restored = restore_at(mgr, self.state, self.field, self.config.checkpoint_dir,
                              self.placed)
        if restored is None:
            return False
        self.state = restored
        return True

    def make_batcher(self, seed: int, start_step: int = 0, process_index: int = 0,
                     process_count: int = 1):
        """A batcher of this run's kind (pixels, or patches for a head)."""
        if self.patch_size:
            # Config.patch_size counts output pixels; a head that upsamples by k is fed rays
            # on a grid k times coarser, with its receptive radius of rays around them.
            radius, k = self.model.head_geometry()
            return PatchBatcher(self.scene, self.config.batch_size // self.patch_size**2,
                                self.patch_size // k + 2 * radius, stride=k,
                                margin=self.objective.margin,
                                seed=seed,
                                process_index=process_index, process_count=process_count,
                                start_step=start_step, sampling=PatchSampling())
        return RayBatcher(self.scene, self.config.batch_size, seed=seed,
                          process_index=process_index, process_count=process_count,
                          start_step=start_step)

    def start(self) -> None:
        """The batcher from the state's step, and what the events decided before it."""
        step = int(self.state.step)
        index, count = parallel.process_data_slice(self.mesh)
        self.batcher = self.make_batcher(self.config.seed, step, index, count)
        rays = (self.plan.ray_batch() if self.plan is not None else 0) or \
            self.objective.independent_rays
        if rays:
            self.coarse_rays = CoarseRayBatcher(
                self.scene, rays, self.model.head_geometry()[1],
                seed=self.config.seed + _COARSE_SEED, process_index=index,
                process_count=count, start_step=step)
        full = self.plan.colour_ray_batch() if self.plan is not None else 0
        if full:
            self.colour_rays = CoarseRayBatcher(
                self.scene, full, 1, seed=self.config.seed + _COLOUR_SEED, process_index=index,
                process_count=count, start_step=step)
        for event in self.events:
            event.replay(self, self.state)
        self.step = self._current_step()

    def next_batch(self):
        """The next global batch, on the mesh (with the plan's coarse rays, if any)."""
        batch = batch_dict(*self.batcher.next_with_alpha())
        if self.coarse_rays is not None:
            extra = self.coarse_rays.next()
            batch.update(extra_rays=extra["rays"], extra_rgb=extra["rgb"],
                         extra_index=extra["index"])
        if self.colour_rays is not None:
            extra = self.colour_rays.next()
            batch.update(colour_rays=extra["rays"], colour_rgb=extra["rgb"])
        return parallel.to_global(batch, self.mesh)

    def before_step(self, step: int | None = None) -> None:
        """Applies the events due before the state's step (re-making the step if needed).

        The training loop passes `step` (the state's step, which it counts itself): reading it
        off the state would make the host wait for the device at every step, and the next
        batch could no longer be drawn while the device computes.
        """
        step = int(self.state.step) if step is None else step
        due = [event for event in self.events if step in event.steps]
        for event in due:
            self.state = event.apply(self, self.state)
        if due:
            # Laid out as the step lays out its output: resized factors need their shardings,
            # and an array an event made outside the step (an occupancy grid) would otherwise
            # compile the step twice, for its own layout and then for the step's.
            self.state = self.placed(self.state)
        if any(event.recompile for event in due):  # what the buffers hold changed: sized afresh
            self.step = self._current_step()
        elif self._grow:
            self.step = self._current_step(*self._grow)
        self._grow = None

    def grow_buffer(self, overflow: int, appearance_overflow: int = 0) -> None:
        """The step re-sized after a step dropped `overflow` counted samples (and
        `appearance_overflow` shown ones from the appearance buffer).

        Called at print steps; the step is re-made before the next one, unless an event
        due then re-sizes the buffers anyway. Batches vary, and rays cast from
        cameras being optimised cross more of the scene as the poses settle, so probe batches
        can under-count.
        """
        self._grow = ((self.capacity or 0) + overflow,
                      (self.appearance_capacity or 0) + appearance_overflow)

    def filter_rays(self, state) -> None:
        """TensoRF's ray filter: from now on draw only training rays with a counted sample."""
        if self.cameras.optimize_poses:  # the rays still move: keep every one
            events.log_change("training rays kept", int(state.step), "poses are being optimised")
            return
        hits = jax.jit(lambda st, rays: counted_hits(self.model, st, rays))
        self.kept = np.stack([map_rays(lambda part: hits(state, part), image_rays(self.scene, i),
                                       8192) for i in range(self.scene.num_images)])
        kept = self.batcher.keep_only(self.kept)
        events.log_change("training rays filtered", int(state.step),
                          f"{kept} of {self.kept.size} reach occupied space")

    # --- compiled steps ---

    def _spectral(self, step: int) -> bool:
        """Whether the train step at `step` still needs the spectral-control code."""
        return self.spectral_end is None or step < self.spectral_end

    def phase_name(self, step: int) -> str | None:
        """The name of the head's training phase at `state.step = step` (None: no phases)."""
        return None if self.plan is None else self.plan.phase_at(step, self.config.max_steps).name

    def describe_phase(self, step: int) -> str:
        """'phase i/n name' at `state.step = step` for the log ('' without phases)."""
        if self.plan is None:
            return ""
        return self.plan.describe(self.plan.phase_at(step, self.config.max_steps))

    def _build_step(self, capacity, spectral, phase, appearance=None, chunks=1):
        supervision = self.supervision if spectral else self.supervision.disabled()
        phase = None if phase is None else next(p for p in self.plan.phases() if p.name == phase)
        loss_fn = make_loss_fn(self.model, self.cameras, supervision, self.objective,
                               self.config, self.groups, capacity, phase=phase,
                               appearance_capacity=appearance, appearance_chunks=chunks)
        network = optim.all_groups(self.config, self.groups)[NETWORK]
        return make_train_step(loss_fn, self.tx, self.mesh, self._views_for(phase),
                               optim.group_schedule(network, self.config), self.shardings,
                               self.cameras.refiner(self.config.max_steps),
                               self.config.step_chunks)

    def phase_step(self, name: str):
        """The compiled train step of the head's phase `name` (for benchmarks)."""
        return self._steps.get(capacity=self.capacity, appearance=self.appearance_capacity,
                               chunks=self.appearance_chunks,
                               spectral=self._spectral(int(self.state.step)), phase=name)

    def _views_for(self, phase):
        """The device data of the phase's step: the run's views, with what the plan
        precomputes for the phase from the current state (once per phase)."""
        if phase is None:
            return self.views
        if phase.name not in self._phase_data:
            self._phase_data[phase.name] = self.plan.phase_data(
                phase, self.model, self.model_params(jax.device_get(self.state)), self.scene)
        data = self._phase_data[phase.name]
        if data is None:
            return self.views
        views = self.views if self.views is not None else self.cameras.views(self.scene)
        return views.replace(phase_data=data)

    def _current_step(self, at_least: int = 0, at_least_shown: int = 0):
        """The compiled step for the state's step: spectral control, training phase and
        sample buffers."""
        step = int(self.state.step)
        spectral, phase = self._spectral(step), self.phase_name(step)
        if not self.model.sampler().uses_sample_buffer():
            return self._steps.get(capacity=None, spectral=spectral, phase=phase)
        probe = self.make_batcher(self.config.seed + _PROBE_SEED)
        if self.kept is not None:
            probe.keep_only(self.kept)
        batches = [self._probe_rays(probe.next_with_alpha()[0]) for _ in range(4)]
        margin = events.capacity_margin(moving=self.cameras.optimize_poses)
        self.capacity = events.estimate_capacity(lambda rays: self._count(self.state, rays),
                                                 batches, at_least, margin)
        self.appearance_capacity, self.appearance_chunks = None, 1
        if self.capacity is not None and self.model.culls_appearance():
            self.appearance_capacity = self.capacity
            updates = self.model.sampler().state_update_steps()
            # Until the sampler's first update the field is fresh and its weights grow
            # within steps: a buffer sized from them now would overflow at once. It holds
            # every counted sample then, in parts skipped past the shown count.
            if not updates or step >= min(updates):
                self.appearance_capacity = events.estimate_capacity(
                    lambda rays: self._shown(self.state, rays), batches,
                    at_least_shown, margin) or self.capacity
            else:
                self.appearance_chunks = self.model.appearance_chunks
        logging.info("occupied-sample buffer: %s%s", self.capacity or "all samples",
                     f", of which shown: {self.appearance_capacity}"
                     if self.appearance_capacity else "")
        return self._steps.get(capacity=self.capacity, appearance=self.appearance_capacity,
                               chunks=self.appearance_chunks, spectral=spectral, phase=phase)

    def _probe_rays(self, batch):
        # With poses being optimised the train step casts rays from the corrected cameras,
        # which cross the scene box differently from the initial ones.
        camera_params = Cameras.split(jax.device_get(self.state.params))[1]
        if camera_params is None:
            return batch.rays
        return self.cameras.rays(camera_params, {"rays": batch.rays,
                                                 "pixels": jnp.asarray(batch.pixels)},
                                 None, self.views)


def build_objective(config, model):
    """The run's objective: the config's terms, the field's regularisers and the terms of the
    head's training plan."""
    plan = model.phases()
    return objective.build(config, [*model.parts()[FIELD].regularizers(),
                                    *(plan.terms(config, model) if plan else [])])


def assemble(config, scene_kind: str, cameras) -> tuple:
    """(model, parameter groups, optimiser) of a run: the groups its owners declare."""
    model = Model(scene_kind=scene_kind)
    run_checks.check_pose_support(cameras, model.parts())
    groups = {**model.param_groups(), **cameras.param_groups()}
    plan = model.phases()
    if plan is not None:  # every group trains in the phases of its owner only
        groups = plan.restrict(optim.all_groups(config, groups))

    def labels(params):
        model_params, _ = Cameras.split(params)
        return {**model.param_labels(model_params), **Cameras.param_labels(params)}

    return model, groups, optim.make_optimizer(config, groups, labels)


def restore_at(mgr, state, field, checkpoint_dir: str, place=None):
    """The newest intact checkpoint restored into `state`'s structure, the field's grids first
    resized to the resolution of its step; None when there is none.

    `place(state)` lays a resized state out on the mesh; orbax restores each leaf with the
    target's sharding, whatever the mesh it was saved from.
    """
    def state_at(step):
        resolution = field.resolution_at(step)
        if resolution is not None and resolution != field.grid_resolution():
            target = resized(state, field, resolution)
            return target if place is None else place(target)
        return state

    return checkpoints.restore_newest_intact(mgr, state_at, checkpoint_dir)


def setup(config, scene, mesh) -> Training:
    """The run of `config` on the training split `scene`, started at step 0."""
    run = Training(config, scene, mesh)
    run.start()
    return run


def counted_hits(model, state, rays):
    """`[...]` bool: whether each ray has a counted sample (TensoRF's ray filtering)."""
    mask = model.sample_mask(Cameras.split(state.params)[0], rays, state.sampler_state)
    return jax.numpy.any(mask, -1)


def spectral_end_step(config, field, supervision) -> int | None:
    """The first step (`state.step`) from which spectral control changes nothing.

    None when no control is on. From that step the train step can be compiled without the
    filters, blurred targets and edge weights, which otherwise stay in the compiled step
    behind `lax.cond` (their wide static kernels cost compile time at every later change).
    """
    if not config.spectral_control:
        return None
    end = max(field.spectral_end(), supervision.end_fraction())
    if end == 0 or math.isinf(end):
        return None
    return schedules.fraction_step(end, config.max_steps)
