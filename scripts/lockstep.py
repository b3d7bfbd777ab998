"""Lock-step timing of two checkouts: the same config's train step and render, side by side.

Two worker processes, one per checkout, are warmed up one after the other (compiled, one
block run); then they take turns, one block at a time (10 train steps, then one whole-image
render), with the order swapped every round. Slow drifts of a shared machine then hit both
alike, and each round gives one ratio. Prints the median ratio (old / new time: above 1, the
new code is faster) and in how many rounds the new code was faster:

    git worktree add /tmp/oldcode 4b36fe4   # the code before the restructuring (issue 13)
    python scripts/lockstep.py --old=/tmp/oldcode --new=. --gin_config=configs/lego_cpu.gin

The worker knows the train-step API of the code before issue 13 (`pipeline.setup`) and after
it (`training.Training`). Only for configs whose step has no sample buffer (the MLP path): the
old code timed grid configs without one.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

flags.DEFINE_string("old", None, "Checkout of the old code.")
flags.DEFINE_string("new", ".", "Checkout of the new code.")
flags.DEFINE_string("gin_config", "configs/lego_cpu.gin", "Config (relative to each checkout).")
flags.DEFINE_integer("rounds", 20, "Rounds of one train block and one render each.")
flags.DEFINE_string("worker", None, "Internal: run as the worker of this code ('old'/'new').")
FLAGS = flags.FLAGS


def _warm(kind: str, config_file: str):
    """(train block, render) closures of the code on sys.path, compiled and warm."""
    import jax

    from jaxnerf360 import configs, parallel
    from jaxnerf360.data import load_split

    configs.parse_gin([config_file], [])
    config = configs.Config()
    scene = load_split(config, "train")
    mesh = parallel.make_mesh()
    if kind == "new":
        from jaxnerf360 import training
        from jaxnerf360.data.cameras import scene_view
        from jaxnerf360.rendering import Renderer

        run = training.Training(config, scene, mesh)
        run.start()
        batches = [run.next_batch() for _ in range(4)]
        state, step = run.state, run.step
        renderer = Renderer(run.model, mesh, config.background, config.render_chunk_size)
        rays = scene_view(scene, 0).rays()

        def render(s):
            return renderer.rays(s, rays)
    else:
        from jaxnerf360 import pipeline
        from jaxnerf360.data.batching import RayBatcher
        from jaxnerf360.data.cameras import image_rays
        from jaxnerf360.train import _TrainingCameras

        views = _TrainingCameras(config, scene).views
        model, state, step = pipeline.setup(config, scene.kind, mesh, scene.num_images, views)
        batcher = RayBatcher(scene, config.batch_size, seed=0)
        batches = [parallel.to_global(pipeline.batch_dict(*batcher.next_with_alpha()), mesh)
                   for _ in range(4)]
        renderer = pipeline.Renderer(model, mesh, config.background)
        rays = image_rays(scene, 0)

        def render(s):
            return renderer(s, rays, config.render_chunk_size, jax.device_count())

    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    holder = {"state": state}

    def train_block():
        s = holder["state"]
        for i in range(10):
            s, stats = step(s, batches[i % 4], key)
        jax.block_until_ready(stats)
        holder["state"] = s

    train_block()
    render(holder["state"])
    return train_block, lambda: render(holder["state"])


def worker(kind: str) -> None:
    """Answers each stdin line ('train' or 'render') with the seconds one block took."""
    train_block, render = _warm(kind, FLAGS.gin_config)
    print("ready", flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        (train_block if line.strip() == "train" else render)()
        print(time.perf_counter() - t0, flush=True)


def main(argv):
    """Entry point."""
    del argv
    if FLAGS.worker:
        worker(FLAGS.worker)
        return 0
    if not FLAGS.old:
        sys.exit("error: give --old=<checkout of the old code>")
    procs = {}
    for kind, code in (("old", FLAGS.old), ("new", FLAGS.new)):
        code = os.path.abspath(code)
        env = dict(os.environ, PYTHONPATH=code)
        procs[kind] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), f"--worker={kind}",
             f"--gin_config={FLAGS.gin_config}"], cwd=code, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if procs[kind].stdout.readline().strip() != "ready":  # warm one at a time
            sys.exit(f"error: the {kind} worker ({code}) did not start")
    times = {block: {"old": [], "new": []} for block in ("train", "render")}
    for r in range(FLAGS.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for block in times:
            for kind in order:
                procs[kind].stdin.write(block + "\n")
                procs[kind].stdin.flush()
                times[block][kind].append(float(procs[kind].stdout.readline()))
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    for block, t in times.items():
        old, new = np.array(t["old"]), np.array(t["new"])
        ratio = old / new
        print(f"{FLAGS.gin_config} {block}: median block old {np.median(old):.3f} s, new "
              f"{np.median(new):.3f} s; old/new per round: median {np.median(ratio):.3f} "
              f"(range {ratio.min():.3f}-{ratio.max():.3f}), new faster in "
              f"{int((ratio > 1).sum())}/{len(ratio)} rounds")
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    app.run(main)
