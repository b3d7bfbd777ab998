"""Trains a scene: `python -m jaxnerf360.train --gin_configs=configs/X.gin`."""

import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from jaxnerf360 import checkpoints, cli, configs, parallel, training
from jaxnerf360.data import load_split
from jaxnerf360.data.batching import check_batch_divisible
from jaxnerf360.data.cameras import scene_view
from jaxnerf360.errors import UserError
from jaxnerf360.rendering import Renderer


class _StopFlag:
    """Turns SIGTERM and the first Ctrl-C into a request to checkpoint and exit.

    With several processes every one must save the same step: SIGTERM is left to JAX's
    preemption service, which tells every process the step at which to stop
    (`reached_preemption_sync_point`), and a Ctrl-C is passed on to it as a SIGTERM.
    """

    def __init__(self):
        self.requested = False
        self.shared = jax.process_count() > 1
        self._previous = {}
        for sig in (signal.SIGINT,) if self.shared else (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested = True
        logging.warning("signal %d: saving a checkpoint, then exiting", signum)
        if self.shared:  # JAX's preemption service listens for SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)

    def stop_at(self, step: int) -> bool:
        """Whether to save and stop after `step` (called at every step)."""
        if self.shared:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

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


def most_dropped(dropped) -> tuple:
    """(counted, shown) samples dropped by the fullest of the steps' `dropped` pairs (reduced
    on the device: one read, however many steps)."""
    most = jnp.max(jnp.asarray([list(pair) for pair in dropped], jnp.int32), axis=0)
    return tuple(int(v) for v in jax.device_get(most))


def _describe_overflow(stats) -> str:
    """'  overflow N' (and the appearance buffer's) for the log, '' when nothing overflowed."""
    text = f"  overflow {int(stats['overflow'])}" if stats["overflow"] else ""
    if stats.get("appearance_overflow"):
        text += f"  appearance overflow {int(stats['appearance_overflow'])}"
    return text


def train(config: configs.Config):
    """Trains (or resumes) the run that `config` describes; returns the final state."""
    mesh = parallel.make_mesh(config.mesh_shape)
    check_batch_divisible(config.batch_size, parallel.data_size(mesh))
    previous_data = checkpoints.saved_data_dir(config.checkpoint_dir)
    checkpoints.check_and_save_config(config.checkpoint_dir, write=jax.process_index() == 0)

    scene = load_split(config, "train")
    checkpoints.check_data(config.checkpoint_dir, config.data_dir, previous_data, scene,
                           write=jax.process_index() == 0)
    # The test view and the viewer render on process 0 alone, which cannot reach the
    # parameters on the other processes' devices: with several processes they are off.
    alone = jax.process_count() == 1
    test_scene = load_split(config, "test") if config.summary_render_every and alone else None
    if not alone and (config.summary_render_every or config.viewer_port):
        logging.info("with %d processes, no test-view summaries and no viewer during "
                     "training (eval and render afterwards)", jax.process_count())
    logging.info("loaded %d training images %dx%d (%s scene) from %s", scene.num_images,
                 scene.width, scene.height, scene.kind, config.data_dir)

    run = training.Training(config, scene, mesh)
    run.cameras.log_initial_errors()
    mgr = checkpoints.manager(config.checkpoint_dir, config.checkpoint_keep)
    if run.restore(mgr):
        logging.info("resumed from step %d in %s", int(run.state.step), config.checkpoint_dir)
    start = int(run.state.step)
    run.start()
    renderer = (Renderer(run.model, mesh, config.background, config.render_chunk_size)
                if test_scene else None)
    key = parallel.replicate(jax.random.PRNGKey(config.seed + 1), mesh)
    writer = _summary_writer(config)
    viewer = _viewer(config, run, scene, mesh)

    stop = _StopFlag()
    try:
        t_last, steps_since = time.time(), 0
        dropped = []  # each step's buffer overflows since the last print, read there
        for step in range(start + 1, config.max_steps + 1):
            run.before_step(step - 1)  # the state's step, counted on the host
            run.state, stats = run.step(run.state, run.next_batch(), key)
            dropped.append((stats["overflow"], stats.get("appearance_overflow", 0)))
            steps_since += 1
            if step % config.print_every == 0 or step == config.max_steps:
                stats = jax.device_get(stats)
                # The most any step dropped, not only this one: buffers are sized with
                # little head-room, and a step between prints may be the one that overflows.
                stats["overflow"], stats["appearance_overflow"] = most_dropped(dropped)
                dropped = []
                now = time.time()
                rays_per_sec = steps_since * config.batch_size / (now - t_last)
                eta = (config.max_steps - step) * (now - t_last) / steps_since
                stats.update(run.cameras.errors(run.state.params))
                phase = run.describe_phase(step - 1)
                logging.info(
                    "step %d/%d  loss %.4f  psnr %.2f  rays/s %.0f  lr %.2e  eta %s%s%s%s",
                    step, config.max_steps, stats["loss"], stats["psnr"], rays_per_sec,
                    stats["lr"], _format_eta(eta),
                    _describe_overflow(stats),
                    run.cameras.describe(stats), f"  {phase}" if phase else "")
                if stats["overflow"] or stats.get("appearance_overflow"):
                    run.grow_buffer(int(stats["overflow"]),
                                    int(stats.get("appearance_overflow", 0)))
                if not np.isfinite(stats["loss"]):
                    raise FloatingPointError(f"loss is {stats['loss']} at step {step}")
                if writer is not None:
                    for name, value in stats.items():
                        writer.add_scalar(f"train/{name}", float(value), step)
                    writer.add_scalar("train/rays_per_sec", rays_per_sec, step)
                t_last, steps_since = time.time(), 0
                if viewer is not None:
                    viewer.update(run.state, step, float(stats["psnr"]))
            if renderer is not None and step % config.summary_render_every == 0:
                _summarise_test_view(writer, renderer, run.state, test_scene, step)
            if step % config.checkpoint_every == 0:
                checkpoints.save(mgr, step, run.state)
            if stop.stop_at(step):
                logging.warning("stopping at step %d", step)
                break
    except FloatingPointError:
        raise  # a diverged state is not worth saving over the last good checkpoint
    except BaseException:
        # With several processes a save needs them all, and the others may be gone.
        if not stop.shared and int(run.state.step) > start:
            logging.warning("saving a checkpoint at step %d before exiting", int(run.state.step))
            checkpoints.save(mgr, int(run.state.step), run.state)
        raise
    finally:
        stop.restore()
        if viewer is not None:
            viewer.close()
    checkpoints.save(mgr, int(run.state.step), run.state)
    if writer is not None:
        writer.close()
    logging.info("checkpoint at step %d in %s", int(run.state.step), config.checkpoint_dir)
    return run.state


def _viewer(config, run, scene, mesh):
    """The live viewer of Config.viewer_port (one process only), showing the starting state."""
    if not config.viewer_port or jax.process_count() > 1:
        return None
    from jaxnerf360.viewer import Viewer

    viewer = Viewer(run.model, scene, mesh, config.background, config.viewer_port,
                    chunk=config.render_chunk_size)
    viewer.update(run.state, int(run.state.step))
    logging.info("viewer at http://127.0.0.1:%d", config.viewer_port)
    return viewer


def _summarise_test_view(writer, renderer, state, scene, step):
    if writer is None:
        return
    out = renderer.image(state, scene_view(scene, 0))
    writer.add_image("test/rgb", np.clip(out["rgb"], 0, 1), step, dataformats="HWC")
    psnr = -10 * np.log10(np.mean((out["rgb"] - scene.images[0]) ** 2))
    writer.add_scalar("test/psnr_view0", psnr, step)


def main(_):
    """Entry point. `--checkpoint_dir=RUN` resumes that run with its saved config."""
    if flags.FLAGS.compressed:
        raise UserError("train does not take --compressed (a compressed file cannot be trained "
                        "further); resume a run with --checkpoint_dir")
    train(cli.load_run())


if __name__ == "__main__":
    cli.run(main)
