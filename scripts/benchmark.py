"""Speed, memory and quality figures for a config: see BENCHMARKS.md.

Speed (training and rendering rays/s, peak memory) on the config's own scene:
    python scripts/benchmark.py --gin_configs=configs/quickstart.gin

Speed of trained runs side by side, as ratios to the first (one process, one machine):
    python scripts/benchmark.py --runs=runs/a,runs/b,runs/c
Each run is timed from its latest checkpoint with its own config.gin, so an occupancy
sampler is timed with its trained grid (empty space culled), as in real training.

JAX's persistent compilation cache is on (--compilation_cache, as for train): pass
--compilation_cache='' for timings that include every compilation (a cold start).

Sharded parameters: the same config on several (data, model) mesh shapes in one process, its
step time and the state each device holds, as ratios to the first shape (simulate 4 CPU
devices with XLA_FLAGS=--xla_force_host_platform_device_count=4):
    python scripts/benchmark.py --gin_configs=configs/tensorf_lego_cpu.gin \
        --mesh_shapes="4,1 2,2" --device_budget_mb=100

Quality: train with the config for its Config.max_steps on lego at factor 8 (100x100, from
../shared/data), then report the mean test PSNR over the 13 held-out views and the wall time:
    python scripts/benchmark.py --gin_configs=configs/lego_cpu.gin --psnr
A latent run's figures also hold its autoencoder's round trip and its colour branch's PSNR
(`latent_figures`); for trained latent runs alone: --runs=A,B --latent_figures.
"""

import json
import os
import resource
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from jaxnerf360 import cli, configs, host_memory, parallel, trained, training
from jaxnerf360.data import load_split
from jaxnerf360.data.cameras import scene_view
from jaxnerf360.parts import parameter_count
from jaxnerf360.rendering import Renderer

flags.DEFINE_integer("steps", 20, "Timed training steps (after 3 warm-up steps).")
flags.DEFINE_bool("psnr", False, "Also train for Config.max_steps and report test PSNR.")
flags.DEFINE_string("out", None, "Write the figures as JSON here too.")
flags.DEFINE_list("runs", None, "Trained run directories to time side by side.")
flags.DEFINE_string("keep_run", None, "With --psnr: train into this directory and keep it.")
flags.DEFINE_bool("latent_figures", False, "With --runs: each trained latent run's autoencoder "
                  "round trip and colour-branch PSNR instead of its speed.")
flags.DEFINE_bool("lpips", False, "With --psnr: also the mean test LPIPS (Config.lpips_net).")
flags.DEFINE_string("mesh_shapes", None, "Space-separated data,model mesh shapes to time "
                    "side by side (e.g. '4,1 2,2').")
flags.DEFINE_float("device_budget_mb", None, "With --mesh_shapes: say whether each device's "
                   "share of the train state fits this budget.")
FLAGS = flags.FLAGS


def peak_memory_mb() -> dict:
    """Peak device memory (accelerators) and the peak resident memory of this process."""
    out = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


def speed(config, restore: bool = False) -> dict:
    """Training and rendering throughput of the config's model on its scene.

    With `restore`, the state (and any occupancy grid, ray filter and sample buffer) comes
    from the latest checkpoint in Config.checkpoint_dir; otherwise it is freshly initialised.
    """
    from jaxnerf360 import checkpoints

    scene = load_split(config, "train")
    mesh = parallel.make_mesh(config.mesh_shape)
    run = training.Training(config, scene, mesh)
    if restore:
        mgr = checkpoints.manager(config.checkpoint_dir, config.checkpoint_keep)
        if not run.restore(mgr):
            sys.exit(f"error: no checkpoint in {config.checkpoint_dir}")
    start_step = int(run.state.step)
    run.start()
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    batches = [run.next_batch() for _ in range(4)]
    state, step = run.state, run.step
    for i in range(3):
        state, stats = step(state, batches[i % 4], key)
    jax.block_until_ready(stats)
    t0 = time.perf_counter()
    for i in range(FLAGS.steps):
        state, stats = step(state, batches[i % 4], key)
    jax.block_until_ready(stats)
    train_time = time.perf_counter() - t0
    host = host_share(run, state, key, train_time / FLAGS.steps)
    state = host.pop("state")
    phases = {}
    for phase in run.plan.phases() if run.plan is not None else ():
        # A head's phases train with steps of their own (the first one was timed above).
        run.state = state  # the timed steps donated the run's own state
        step = run.phase_step(phase.name)
        for i in range(2):
            state, stats = step(state, batches[i % 4], key)
        jax.block_until_ready(stats)
        t0 = time.perf_counter()
        for i in range(FLAGS.steps):
            state, stats = step(state, batches[i % 4], key)
        jax.block_until_ready(stats)
        phases[phase.name] = FLAGS.steps / (time.perf_counter() - t0)
    renderer = Renderer(run.model, mesh, config.background, config.render_chunk_size)
    view = scene_view(scene, 0)
    renderer.image(state, view)  # compile
    t0 = time.perf_counter()
    renderer.image(state, view)
    render_time = time.perf_counter() - t0
    n_params = parameter_count(state.params)
    by_part = {name: parameter_count(tree)
               for name, tree in training.Training.model_params(state).items()}
    if "head" in by_part:  # a field's features layer exists only to feed the head
        feats = training.Training.model_params(state)["field"].get("features")
        by_part["field_features"] = parameter_count(feats)
    return {
        "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "checkpoint_step": start_step,
        "batch_size": config.batch_size,
        "params": int(n_params),
        "params_by_part": by_part,
        "train_steps_per_sec": FLAGS.steps / train_time,
        "train_rays_per_sec": FLAGS.steps * config.batch_size / train_time,
        **({"phase_steps_per_sec": phases} if phases else {}),
        **host,
        "render_rays_per_sec": scene.height * scene.width / render_time,
        "render_images_per_sec": 1.0 / render_time,
        "mesh_shape": list(mesh.devices.shape),
        "state_mb": _megabytes(state),
        "state_mb_per_device": max(state_bytes_per_device(state).values()) / 2**20,
        **peak_memory_mb(),
    }


def host_share(run, state, key, step_seconds: float) -> dict:
    """What building and transferring batches on the host costs a step: alone (drawn and put
    on the devices, waited for), and within the loop as `train` runs it (the next batch drawn
    while the device computes the step), against the step on ready batches."""
    t0 = time.perf_counter()
    for _ in range(FLAGS.steps):
        jax.block_until_ready(run.next_batch())
    batch_seconds = (time.perf_counter() - t0) / FLAGS.steps
    step0 = int(state.step)
    t0 = time.perf_counter()
    for i in range(FLAGS.steps):
        run.state = state
        run.before_step(step0 + i)
        state, stats = run.step(state, run.next_batch(), key)
    jax.block_until_ready(stats)
    loop_seconds = (time.perf_counter() - t0) / FLAGS.steps
    return {"state": state, "host_batch_ms": 1e3 * batch_seconds,
            "loop_step_ms": 1e3 * loop_seconds, "ready_batch_step_ms": 1e3 * step_seconds,
            # Waiting for each batch before its step (the loop before it stopped reading
            # the step count off the device) would add all of it; the loop hides the rest.
            "host_share_serial": batch_seconds / (batch_seconds + step_seconds),
            "host_share_in_loop": max(loop_seconds - step_seconds, 0.0) / loop_seconds}


def state_bytes_per_device(tree) -> dict:
    """{device: bytes of `tree`'s arrays that it holds} (a sharded leaf counts its shard)."""
    held = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held


def _megabytes(tree) -> float:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree)) / 2**20


def compare_meshes(config, shapes: list, budget_mb) -> dict:
    """The config's speed and each device's state on every mesh shape, as ratios to the
    first."""
    import dataclasses

    rows = []
    for shape in shapes:
        row = speed(dataclasses.replace(config, mesh_shape=shape))
        if budget_mb is not None:
            row["fits_budget"] = row["state_mb_per_device"] <= budget_mb
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    base = rows[0]
    print(f"{'mesh':8s} {'step ms':>8s} {'ratio':>6s} {'state MB':>9s} {'per device':>11s} "
          f"{'ratio':>6s}")
    for row in rows:
        row["step_time_ratio"] = base["train_steps_per_sec"] / row["train_steps_per_sec"]
        row["state_per_device_ratio"] = row["state_mb_per_device"] / base["state_mb_per_device"]
        print(f"{str(tuple(row['mesh_shape'])):8s} {1e3 / row['train_steps_per_sec']:8.1f} "
              f"{row['step_time_ratio']:6.2f} {row['state_mb']:9.1f} "
              f"{row['state_mb_per_device']:11.1f} {row['state_per_device_ratio']:6.2f}"
              + ("" if budget_mb is None else
                 f"  {'fits' if row['fits_budget'] else 'exceeds'} {budget_mb:g} MB"))
    return {"meshes": rows, "device_budget_mb": budget_mb}


def compare_runs(run_dirs) -> dict:
    """Speed of each trained run, and its ratios to the first run's figures."""
    import gin

    rows = []
    for run in run_dirs:
        gin.clear_config()
        config = configs.load(checkpoint_dir=run)
        row = {"run": run, **speed(config, restore=True)}
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    base = rows[0]
    for row in rows:
        for key in ("train_rays_per_sec", "render_rays_per_sec"):
            row[key.replace("_per_sec", "_ratio")] = row[key] / base[key]
    print(f"{'run':40s} {'train rays/s':>13s} {'ratio':>6s} {'render rays/s':>14s} {'ratio':>6s}")
    for row in rows:
        print(f"{row['run']:40s} {row['train_rays_per_sec']:13.0f} {row['train_rays_ratio']:6.2f} "
              f"{row['render_rays_per_sec']:14.0f} {row['render_rays_ratio']:6.2f}")
    return {"runs": rows}


def latent_figures(config) -> dict | None:
    """A latent run's mean test PSNR through its autoencoder (encoder, then decoder; the centre
    the decoder leaves), of its field's own colours (on the latent grid, upsampled k times),
    and of the ground truth averaged over k x k blocks and upsampled alike (what any image on
    that grid reaches); None for a run without an autoencoder."""
    from jaxnerf360 import latent_training, metrics
    from jaxnerf360.model import ENCODER

    scene = load_split(config, "test")
    mesh = parallel.make_mesh()
    model, state = trained.load_trained(config, scene, mesh)
    if ENCODER not in model.parts():
        return None
    decoded, truth = latent_training.round_trip(model, training.Training.model_params(state),
                                                scene.images)
    out = {"autoencoder_round_trip_psnr": float(np.mean([
        metrics.psnr_between(np.clip(d, 0, 1), t) for d, t in zip(decoded, truth, strict=True)]))}
    renderer = Renderer(model, mesh, config.background, config.render_chunk_size)
    branch, bound = [], []
    for i in range(scene.num_images):
        image = renderer.image(state, scene_view(scene, i))
        if "field_rgb" not in image:  # no colour branch
            return out
        target = np.asarray(scene.images[i][..., :3], np.float32)[:image["rgb"].shape[0],
                                                                  :image["rgb"].shape[1]]
        k = target.shape[0] // image["field_rgb"].shape[0]
        branch.append(metrics.upsampled_psnr(np.asarray(image["field_rgb"]), target))
        bound.append(metrics.upsampled_psnr(latent_training.block_mean(target[None], k)[0],
                                            target))
    return {**out, "colour_branch_psnr": float(np.mean(branch)),
            "coarse_truth_psnr": float(np.mean(bound))}


def run_latent_figures(run: str) -> dict:
    """`latent_figures` of the trained run in directory `run`, with its own config.gin."""
    import gin

    gin.clear_config()
    return {"run": run, **(latent_figures(configs.load(checkpoint_dir=run)) or {})}


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


class CompileTimer:
    """Seconds spent tracing and compiling (or loading from the persistent cache) since made,
    and the number of compilations that took at least one second."""

    def __init__(self):
        self.seconds, self.long = 0.0, 0
        self.active = True
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event, duration, **kwargs):
        del kwargs
        if self.active and event in _COMPILE_EVENTS:
            self.seconds += duration
            self.long += event == _COMPILE_EVENTS[-1] and duration >= 1.0


def quality(config) -> dict:
    """Trains for Config.max_steps in a temporary directory and evaluates every test view."""
    from jaxnerf360 import eval as eval_lib
    from jaxnerf360 import train as train_lib

    with tempfile.TemporaryDirectory() as tmp:
        config.checkpoint_dir = FLAGS.keep_run or os.path.join(tmp, "run")
        if not FLAGS.lpips:
            config.lpips_net = "none"
        timer = CompileTimer()
        t0 = time.perf_counter()
        train_lib.train(config)
        train_seconds = time.perf_counter() - t0
        timer.active = False
        metrics = eval_lib.evaluate(config)
        latent = latent_figures(config)
    out = {"max_steps": config.max_steps, "train_seconds": train_seconds,
           "train_compile_seconds": timer.seconds, "train_compilations_over_1s": timer.long,
           "test_psnr": metrics["psnr"], "test_ssim": metrics["ssim"],
           "num_test_views": metrics["num_images"]}
    if metrics.get("lpips") is not None:
        out["test_lpips"] = metrics["lpips"]
    if latent is not None:  # the autoencoder, the colour branch, and what its grid allows
        out.update(latent)
    if metrics.get("rcc") is not None:  # reprojective colour consistency of the render path
        out["rcc"] = metrics["rcc"]
    if "poses" in metrics:  # joint pose optimisation: errors before and after
        out["poses"] = metrics["poses"]
    return out


def main(argv):
    """Entry point."""
    del argv
    if FLAGS.runs:
        if FLAGS.latent_figures:
            result = {"runs": [run_latent_figures(run) for run in FLAGS.runs]}
            print(json.dumps(result, indent=2))
        else:
            result = compare_runs(FLAGS.runs)
        if FLAGS.out:
            with open(FLAGS.out, "w", encoding="utf-8") as f:
                f.write(json.dumps(result, indent=2, default=float))
        return 0
    host_memory.restart_with_huge_pages()  # as `python -m jaxnerf360.train` does
    cli.enable_compilation_cache(FLAGS.compilation_cache)
    configs.parse_gin(FLAGS.gin_configs, FLAGS.gin_bindings)
    config = configs.Config()
    if not config.data_dir:
        sys.exit("error: Config.data_dir is not set")
    result = {"configs": FLAGS.gin_configs, "bindings": FLAGS.gin_bindings}
    if FLAGS.mesh_shapes:
        shapes = [tuple(int(n) for n in s.split(",")) for s in FLAGS.mesh_shapes.split()]
        result.update(compare_meshes(config, shapes, FLAGS.device_budget_mb))
        if FLAGS.out:
            with open(FLAGS.out, "w", encoding="utf-8") as f:
                f.write(json.dumps(result, indent=2, default=float))
        return 0
    if FLAGS.psnr:  # first, so that a cold compilation cache is cold for training
        result.update(quality(config))
    result.update(speed(config))
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if FLAGS.out:
        with open(FLAGS.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    app.run(main)
