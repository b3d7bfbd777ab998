"""Where the time of one training step goes, on this machine: see BENCHMARKS.md.

    python scripts/profile.py --gin_configs=configs/tensorf_lego_cpu.gin
    python scripts/profile.py --gin_configs=configs/tensorf_lego_cpu.gin --run=runs/vm

Each part of the step is compiled on its own and timed on the same batch (the median of
`--repeats` calls): host batch preparation and transfer, ray casting, sampling with the
occupancy lookup, the buffer compaction, the field forward and backward, compositing, the
objective with its regularisers, and the optimiser update. Backward times are the forward and
backward together less the forward. Parts compiled apart lose the fusion across their
boundaries, so their sum is set beside the whole compiled step. With `--run` the state comes
from that trained run's latest checkpoint (its occupancy grid, ray filter and buffer size),
as in the steady state of training; without it the state is freshly initialised. With
TensoRF's weight culling the appearance rows time the appearance buffer's size of samples (the
first ones of the sample buffer, not the culled set: the cost is the same).
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from jaxnerf360 import checkpoints, configs, host_memory, optim, parallel, training
from jaxnerf360.cameras import Cameras
from jaxnerf360.data import load_split
from jaxnerf360.geometry import render
from jaxnerf360.geometry.occupancy import scatter
from jaxnerf360.model import FIELD, SAMPLER, _buffered, _context, background_colors
from jaxnerf360.objective import LossInputs
from jaxnerf360.train_step import batch_dict

flags.DEFINE_string("run", None, "A trained run directory whose latest checkpoint to profile.")
flags.DEFINE_integer("repeats", 10, "Timed calls of each part (the median is reported).")
flags.DEFINE_integer("top_ops", 0, "Also list the N costliest XLA operations of the whole step "
                     "(from a jax.profiler trace).")
FLAGS = flags.FLAGS


def timed(fn, *args, repeats: int) -> tuple:
    """(median seconds of `fn(*args)` after a first call, seconds of the first call)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first


def grad_of_sum(fn, argnums):
    """`fn`'s forward and backward: the gradient of the sum of its floating outputs."""
    def total(*args):
        leaves = jax.tree.leaves(fn(*args))
        return sum(jnp.sum(x) for x in leaves if jnp.issubdtype(x.dtype, jnp.floating))

    return jax.jit(jax.grad(total, argnums=argnums))


def print_top_ops(fn, batch, repeats: int, count: int) -> None:
    """The `count` XLA operations of `fn(batch)` with the most time per call, from a trace."""
    import collections
    import glob
    import gzip
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(repeats):
            jax.block_until_ready(fn(batch))
        jax.profiler.stop_trace()
        (path,) = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") == "X" and not name.startswith(("$", "Thunk", "Pjit")):
            totals[name] += event["dur"] / 1e3 / repeats
    kinds = collections.Counter()
    for name, ms in totals.items():
        kinds[name.split(".")[0]] += ms
    for title, table in (("operations", totals), ("kinds of operation", kinds)):
        print(f"costliest XLA {title} of the whole step (ms per step, {repeats} steps):")
        for name, ms in table.most_common(count):
            print(f"  {ms:7.2f}  {name}")


def profile(config, run, repeats: int) -> dict:
    """{part: (median ms, first-call s)} of one step of `run`, and the sample counts."""
    model, state = run.model, run.state
    at_step = int(state.step)
    sampler, field = model.parts()[SAMPLER], model.parts()[FIELD]
    params = jax.device_get(state.params)
    model_params, camera_params = Cameras.split(params)
    field_params = model_params[FIELD]
    rows = {}

    rows["batch (host)"] = timed(lambda: batch_dict(*run.batcher.next_with_alpha()),
                                 repeats=repeats)
    host_batch = batch_dict(*run.batcher.next_with_alpha())
    rows["batch transfer"] = timed(lambda: parallel.to_global(host_batch, run.mesh),
                                   repeats=repeats)
    batch = parallel.to_global(host_batch, run.mesh)
    train_frac = jnp.asarray(float(state.step) / config.max_steps)
    rng = jax.random.PRNGKey(0)
    views = run.step.views

    cast = jax.jit(lambda cp, b: run.cameras.rays(cp, b, train_frac, views))
    rows["ray casting"] = timed(cast, camera_params, batch, repeats=repeats)
    rays = cast(camera_params, batch)
    context = _context(model.scene_kind, field, field_params, state.sampler_state)

    def sample(rays):
        s = sampler.apply({"params": model_params.get(SAMPLER, {})}, rng, rays, train_frac,
                          context)
        return s.tdist, s.mask

    sample = jax.jit(sample)
    rows["sampling + occupancy"] = timed(sample, rays, repeats=repeats)
    if jax.tree.leaves(model_params.get(SAMPLER, {})):  # proposal networks: their backward

        def proposal(sp, rays):
            s = sampler.apply({"params": sp}, rng, rays, train_frac, context)
            return [level["weights"] for level in s.levels]

        both = timed(grad_of_sum(proposal, 0), model_params[SAMPLER], rays, repeats=repeats)
        rows["sampling backward"] = (both[0] - rows["sampling + occupancy"][0], both[1])
    tdist, mask = sample(rays)
    mask = jnp.ones(tdist.shape[:-1][:1] + (tdist.shape[-1] - 1,), bool) if mask is None \
        else mask
    n = mask.shape[-1]
    capacity = run.capacity or mask.size
    progress = {"train_frac": train_frac, "spectral": run._spectral(at_step),
                "rng": rng}

    @jax.jit
    def gather(rays, tdist, mask):
        idx, valid, _, one, means, covs = _buffered(rays, tdist, mask, capacity,
                                                    sampler.ray_shape, context.warp)
        return means, covs, one.viewdirs, idx, valid

    rows["compaction + Gaussians"] = timed(gather, rays, tdist, mask, repeats=repeats)
    means, covs, viewdirs, idx, valid = gather(rays, tdist, mask)

    shown = capacity if run.appearance_capacity is None else run.appearance_capacity
    parts = {"field": ({}, means)} if shown == capacity else {
        "field density": ({"viewdirs": None}, means),
        "field appearance": ({"with_density": False}, means[:shown])}
    for name, (kwargs, points) in parts.items():
        def run_field(fp, points, kwargs=kwargs):
            dirs = kwargs.get("viewdirs", viewdirs[:points.shape[0]])
            rest = {k: v for k, v in kwargs.items() if k != "viewdirs"}
            return field.apply({"params": fp}, points, covs[:points.shape[0]], dirs,
                               progress=progress, **rest)

        fwd = jax.jit(run_field)
        rows[f"{name} forward"] = timed(fwd, field_params, points, repeats=repeats)
        both = timed(grad_of_sum(run_field, 0), field_params, points, repeats=repeats)
        rows[f"{name} backward"] = (both[0] - rows[f"{name} forward"][0], both[1])
    sub = jax.jit(lambda fp, means: field.apply({"params": fp}, means, covs, viewdirs,
                                                progress=progress))(field_params, means)
    bg = background_colors(config.background, tdist.shape[:-1])

    def composite(sub):
        out = {k: scatter(v[:, 0], idx, valid, mask.size).reshape(mask.shape + v.shape[2:])
               for k, v in sub.items()}
        weights = render.compute_alpha_weights(out["density"], tdist, rays.directions)[0]
        rendered = render.composite({k: v for k, v in out.items() if k != "density"}, weights)
        acc = jnp.sum(weights, -1)
        return rendered["rgb"] + jnp.maximum(0.0, 1.0 - acc)[..., None] * bg, acc, weights

    rows["scatter + compositing (fwd+bwd)"] = timed(grad_of_sum(composite, 0), sub,
                                                    repeats=repeats)
    lr_ratio = optim.lr_ratios(config, run.groups, state.step)
    outputs = jax.jit(lambda mp, rays: model.apply(
        {"params": mp}, rng, rays, train_frac, bg, sampler_state=state.sampler_state,
        capacity=run.capacity, appearance_capacity=run.appearance_capacity))(model_params, rays)
    ints = ("overflow", "appearance_overflow")
    floats = {k: v for k, v in outputs.items() if k not in ints}

    def loss(floats, mp):
        inputs = LossInputs(outputs={**floats, **{k: outputs[k] for k in ints}}, batch=batch,
                            target=batch["rgb"], pixel_weights=None, params=mp,
                            field_params=mp.get(FIELD, {}), step=state.step,
                            train_frac=train_frac, lr_ratio=lr_ratio)
        return run.objective(inputs)[0]

    rows["objective + regularisers (fwd+bwd)"] = timed(jax.jit(jax.grad(loss, (0, 1))), floats,
                                                       model_params, repeats=repeats)
    grads = jax.tree.map(jnp.ones_like, params)
    update = jax.jit(lambda g, o, p: optax.apply_updates(p, run.tx.update(g, o, p)[0]))
    rows["optimiser update"] = timed(update, grads, state.opt_state, state.params,
                                     repeats=repeats)
    key = parallel.replicate(jax.random.PRNGKey(1), run.mesh)
    steps = [run.step]

    def whole(batch):
        run.state, stats = steps[0](run.state, batch, key)
        return stats

    rows["whole step (compiled)"] = timed(whole, batch, repeats=repeats)
    if FLAGS.top_ops:
        print_top_ops(whole, batch, repeats, FLAGS.top_ops)
    counts = []
    for _ in range(5):
        more = parallel.to_global(batch_dict(*run.batcher.next_with_alpha()), run.mesh)
        more_mask = sample(cast(camera_params, more))[1]
        counts.append(n * config.batch_size if more_mask is None else int(jnp.sum(more_mask)))
    return {"rows": rows, "samples_per_ray": n, "counted_per_ray": np.mean(counts) /
            config.batch_size, "capacity_per_ray": capacity / config.batch_size,
            "shown_per_ray": shown / config.batch_size,
            "resolution": field.grid_resolution(field_params), "step": at_step}


def main(argv):
    """Entry point."""
    del argv
    host_memory.restart_with_huge_pages()  # as `python -m jaxnerf360.train` does
    configs.parse_gin(FLAGS.gin_configs, FLAGS.gin_bindings)
    config = configs.Config()
    if FLAGS.run:
        config.checkpoint_dir = FLAGS.run
    scene = load_split(config, "train")
    run = training.Training(config, scene, parallel.make_mesh())
    if FLAGS.run and not run.restore(checkpoints.manager(FLAGS.run, config.checkpoint_keep)):
        raise SystemExit(f"error: no checkpoint in {FLAGS.run}")
    run.start()
    out = profile(config, run, FLAGS.repeats)
    rows = out.pop("rows")
    parts = sum(ms for name, (ms, _) in rows.items() if not name.startswith("whole"))
    print(f"state at step {out['step']}, grid {out['resolution']}, "
          f"{config.batch_size} rays per step")
    print(f"samples per ray: {out['samples_per_ray']} laid, {out['counted_per_ray']:.1f} "
          f"counted, buffer {out['capacity_per_ray']:.1f} evaluated, appearance buffer "
          f"{out['shown_per_ray']:.1f}")
    print(f"{'part':38s} {'ms':>8s} {'share':>6s} {'first call s':>13s}")
    for name, (sec, first) in rows.items():
        share = "" if name.startswith("whole") else f"{100 * sec / parts:5.1f}%"
        print(f"{name:38s} {1e3 * sec:8.1f} {share:>6s} {first:13.2f}")
    print(f"{'sum of the parts':38s} {1e3 * parts:8.1f}")
    if config.step_chunks > 1:
        print(f"the whole step runs the rays in {config.step_chunks} parts (Config.step_chunks); "
              "the parts above are timed on the whole batch at once")


if __name__ == "__main__":
    app.run(main)
