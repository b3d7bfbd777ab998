"""Trains a scene: `python -m jaxnerf360.train --gin_configs=configs/X.gin`."""

import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxnerf360 import checkpoints, cli, configs, grid_schedule, optim, parallel, pipeline
from jaxnerf360.data import load_split
from jaxnerf360.data.batching import RayBatcher, check_batch_divisible
from jaxnerf360.data.cameras import image_rays


class _StopFlag:
    """Turns SIGTERM and the first Ctrl-C into a request to checkpoint and exit."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested = True
        logging.warning("signal %d: saving a checkpoint, then exiting", signum)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _summary_writer(config):
    if jax.process_index() != 0:
        return None
    from tensorboardX import SummaryWriter

    return SummaryWriter(os.path.join(config.checkpoint_dir, "tensorboard"))


def train(config: configs.Config) -> pipeline.TrainState:
    """Trains (or resumes) the run that `config` describes; returns the final state."""
    mesh = parallel.make_mesh()
    check_batch_divisible(config.batch_size, jax.device_count())
    checkpoints.check_and_save_config(config.checkpoint_dir, write=jax.process_index() == 0)

    scene = load_split(config, "train")
    test_scene = load_split(config, "test") if config.summary_render_every else None
    logging.info("loaded %d training images %dx%d (%s scene) from %s", scene.num_images,
                 scene.width, scene.height, scene.kind, config.data_dir)

    cameras = _TrainingCameras(config, scene)
    model, state, train_step = pipeline.setup(config, scene.kind, mesh, scene.num_images,
                                              cameras.views)
    mgr = checkpoints.manager(config.checkpoint_dir, config.checkpoint_keep)
    restored = pipeline.restore(mgr, model, state, config.checkpoint_dir)
    if restored is not None:
        state = restored
        logging.info("resumed from step %d in %s", int(state.step), config.checkpoint_dir)
    start = int(state.step)
    batcher = RayBatcher(scene, config.batch_size, seed=config.seed,
                         process_index=jax.process_index(), process_count=jax.process_count(),
                         start_step=start)
    grids = _GridTraining(model, config, mesh, scene, batcher, cameras.views)
    state, train_step = grids.resume(state, train_step)
    renderer = pipeline.Renderer(model, mesh, config.background) if test_scene else None
    key = parallel.replicate(jax.random.PRNGKey(config.seed + 1), mesh)
    writer = _summary_writer(config)

    stop = _StopFlag()
    step = start
    try:
        t_last, steps_since = time.time(), 0
        for step in range(start + 1, config.max_steps + 1):
            state, train_step = grids.before_step(state, train_step)
            batch, alpha = batcher.next_with_alpha()
            batch = parallel.to_global(pipeline.batch_dict(batch, alpha), mesh)
            state, stats = train_step(state, batch, key)
            steps_since += 1
            if step % config.print_every == 0 or step == config.max_steps:
                stats = jax.device_get(stats)
                now = time.time()
                rays_per_sec = steps_since * config.batch_size / (now - t_last)
                eta = (config.max_steps - step) * (now - t_last) / steps_since
                stats.update(cameras.errors(state))
                logging.info(
                    "step %d/%d  loss %.4f  psnr %.2f  rays/s %.0f  lr %.2e  eta %s%s%s",
                    step, config.max_steps, stats["loss"], stats["psnr"], rays_per_sec,
                    stats["lr"], _format_eta(eta),
                    f"  overflow {int(stats['overflow'])}" if stats["overflow"] else "",
                    cameras.describe(stats))
                if stats["overflow"]:
                    train_step = grids.grow_buffer(state, int(stats["overflow"]))
                if not np.isfinite(stats["loss"]):
                    raise FloatingPointError(f"loss is {stats['loss']} at step {step}")
                if writer is not None:
                    for name, value in stats.items():
                        writer.add_scalar(f"train/{name}", float(value), step)
                    writer.add_scalar("train/rays_per_sec", rays_per_sec, step)
                t_last, steps_since = time.time(), 0
            if renderer is not None and step % config.summary_render_every == 0:
                _summarise_test_view(writer, renderer, state, test_scene, config, step)
            if step % config.checkpoint_every == 0:
                checkpoints.save(mgr, step, state)
            if stop.requested:
                logging.info("stopping at step %d", step)
                break
    except FloatingPointError:
        raise  # a diverged state is not worth saving over the last good checkpoint
    except BaseException:
        if int(state.step) > start:
            logging.warning("saving a checkpoint at step %d before exiting", int(state.step))
            checkpoints.save(mgr, int(state.step), state)
        raise
    finally:
        stop.restore()
    checkpoints.save(mgr, int(state.step), state)
    if writer is not None:
        writer.close()
    logging.info("checkpoint at step %d in %s", int(state.step), config.checkpoint_dir)
    return state


class _TrainingCameras:
    """The training split's initial poses (perturbed or identity), and pose errors to log."""

    def __init__(self, config, scene):
        from jaxnerf360 import poses, supervision
        from jaxnerf360.data import views

        self.config = config
        self.truth = np.array(scene.camtoworlds)
        scene.camtoworlds = poses.initial(self.truth, config.pose_noise, config.pose_init,
                                          config.seed)
        self.initial = np.array(scene.camtoworlds)
        self.tracked = config.optimize_poses or not np.array_equal(self.initial, self.truth)
        if self.tracked:
            start = poses.pose_errors(self.initial, self.truth)
            logging.info("initial training poses: %.3f deg mean rotation error, %.4f mean "
                         "translation error (scene units, after Sim(3) alignment of distinct "
                         "centres)",
                         start["rotation_deg"], start["translation"])
        self.views = None
        spectral = config.spectral_control
        if config.optimize_poses or spectral and (config.image_blur or config.edge_loss_until):
            edges = None
            if config.edge_loss_until > 0 and spectral:
                edges = supervision.edge_map(scene.images, config.edge_threshold_mult)
            self.views = views.from_scene(scene, images=bool(config.image_blur) and spectral,
                                          edges=edges)

    def errors(self, state) -> dict:
        """{'pose_rotation_deg', 'pose_translation'} of the current poses (if tracked)."""
        from jaxnerf360 import poses

        if not self.tracked or jax.process_count() > 1 and jax.process_index() != 0:
            return {}
        current = self.initial
        if self.config.optimize_poses:
            current = poses.current(self.initial, jax.device_get(state.params["poses"]))
        err = poses.pose_errors(current, self.truth)
        return {"pose_rotation_deg": err["rotation_deg"], "pose_translation": err["translation"]}

    @staticmethod
    def describe(stats) -> str:
        if "pose_rotation_deg" not in stats:
            return ""
        return f"  pose {stats['pose_rotation_deg']:.3f} deg {stats['pose_translation']:.4f}"


class _GridTraining:
    """Applies the grid schedule between steps: upsampling, occupancy updates, ray filtering.

    Everything here is a function of the step and the state, so a resumed run redoes
    exactly what an uninterrupted one did (the ray filter and buffer size are recomputed).
    """

    def __init__(self, model, config, mesh, scene, batcher, views=None):
        self.model, self.config, self.mesh = model, config, mesh
        self.scene, self.batcher, self.views = scene, batcher, views
        self.upsample = dict(pipeline.grid_schedule(model))
        self.occupancy = pipeline.uses_occupancy(model)
        self.updates = tuple(model.sampler().update_steps) if self.occupancy else ()
        self.tx = optim.make_optimizer(config)
        self.kept = None
        self.capacity = None
        self._steps = {}  # (capacity, spectral) -> jitted step: a repeated size is not recompiled
        self.spectral_end = pipeline.spectral_end_step(config, model)

    def resume(self, state, train_step):
        """Re-derives the ray filter, sample buffer and spectral phase of a restored run."""
        step = int(state.step)
        if not self.occupancy:
            return state, train_step if self._spectral(step) else self._plain_step(step)
        if len(self.updates) > 1 and step >= self.updates[1]:
            self._filter_rays(state)
        return state, self._remake_step(state)

    def _spectral(self, step: int) -> bool:
        """Whether the train step at `step` still needs the spectral-control code."""
        return self.spectral_end is None or step < self.spectral_end

    def _plain_step(self, step: int):
        return pipeline.make_train_step(self.model, self.tx, self.config, self.mesh,
                                        views=self.views, spectral=self._spectral(step))

    def before_step(self, state, train_step):
        """Applies the changes scheduled at the state's step; returns (state, train_step)."""
        step = int(state.step)
        changed = False
        if self.occupancy and step in self.updates:
            state = grid_schedule.update_occupancy(self.model, state)
            occupied = float(np.mean(np.asarray(state.occupancy)))
            grid_schedule.log_change("occupancy grid rebuilt", step,
                                     f"{100 * occupied:.1f}% of voxels occupied")
            if len(self.updates) > 1 and step == self.updates[1]:
                self._filter_rays(state)
            changed = True
        if step in self.upsample:
            state = parallel.replicate(pipeline.resize_grids(state, self.upsample[step],
                                                             self.model.field()),
                                       self.mesh)
            grid_schedule.log_change("grid upsampled", step, f"resolution {self.upsample[step]}")
            changed = True
        if step == self.spectral_end:
            grid_schedule.log_change("spectral control over", step,
                                     "the train step is recompiled without it")
            changed = True
        if changed and self.occupancy:
            train_step = self._remake_step(state)
        elif changed:
            train_step = self._plain_step(step)
        return state, train_step

    def _filter_rays(self, state):
        if self.config.optimize_poses:  # the rays still move: keep every one
            grid_schedule.log_change("training rays kept", int(state.step),
                                     "poses are being optimised")
            return
        hits = grid_schedule.training_ray_hits(self.model, state, self.scene)
        kept = self.batcher.keep_only(hits)
        self.kept = hits
        grid_schedule.log_change("training rays filtered", int(state.step),
                                 f"{kept} of {hits.size} reach occupied space")

    def grow_buffer(self, state, overflow: int):
        """The train step re-sized after a step dropped `overflow` occupied samples.

        Called at print steps. Batches vary, and rays cast from cameras being optimised
        cross more of the scene as the poses settle, so probe batches can under-count.
        """
        return self._remake_step(state, at_least=(self.capacity or 0) + overflow)

    def _remake_step(self, state, at_least: int = 0):
        probe = RayBatcher(self.scene, self.config.batch_size, seed=self.config.seed + 7919)
        if self.kept is not None:
            probe.keep_only(self.kept)
        batches = [self._probe_rays(state, next(probe)) for _ in range(4)]
        capacity = grid_schedule.estimate_capacity(self.model, state, batches, at_least)
        logging.info("occupied-sample buffer: %s", capacity or "all samples")
        key = (capacity, self._spectral(int(state.step)))
        if key not in self._steps:
            self._steps[key] = pipeline.make_train_step(self.model, self.tx, self.config,
                                                        self.mesh, capacity, self.views, key[1])
        self.capacity = capacity
        return self._steps[key]

    def _probe_rays(self, state, batch):
        # With poses being optimised the train step casts rays from the corrected cameras,
        # which cross the scene box differently from the initial ones.
        if "poses" not in state.params:
            return batch.rays
        from jaxnerf360 import poses

        params = jax.device_get(state.params["poses"])
        return poses.corrected_rays(self.views, params, jnp.asarray(batch.pixels),
                                    jnp.asarray(batch.rays.cam_idx[..., 0]))


def _summarise_test_view(writer, renderer, state, scene, config, step):
    if writer is None:
        return
    rays = image_rays(scene, 0)
    out = renderer(state, rays, config.render_chunk_size, jax.device_count())
    writer.add_image("test/rgb", np.clip(out["rgb"], 0, 1), step, dataformats="HWC")
    psnr = -10 * np.log10(np.mean((out["rgb"] - scene.images[0]) ** 2))
    writer.add_scalar("test/psnr_view0", psnr, step)


def main(_):
    """Entry point."""
    config = configs.load_config()
    train(config)


if __name__ == "__main__":
    cli.run(main)
