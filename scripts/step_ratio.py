"""Train-step time of config variants as ratios to a base config, measured in one process.

Every variant is the base config plus more gin files or bindings (`;` separates variants,
`,` the parts of one; a part ending in .gin is a file, anything else a binding). Each one is
built and compiled in turn (a step reads its gin settings when it is traced, so they are
compiled before the next is parsed), then they take turns, one block of train steps each,
the order rotated every round; each round gives one ratio per variant, and the median is
printed (above 1: the variant's step takes longer than the base's):

    python scripts/step_ratio.py --base=configs/misaligned_lego200_cpu.gin \
        --variants="configs/align.gin;configs/align.gin,PatchAlignment.method='global_shift'"
"""

import time

import gin
import jax
import numpy as np
from absl import app, flags

from jaxnerf360 import configs, parallel, training
from jaxnerf360.data import load_split

flags.DEFINE_string("base", "configs/lego200_cpu.gin", "The base config file.")
flags.DEFINE_string("variants", "configs/align.gin", "';'-separated variants (see above).")
flags.DEFINE_integer("rounds", 10, "Rounds of one block per variant.")
flags.DEFINE_integer("block", 5, "Train steps per block.")
FLAGS = flags.FLAGS


def _warm(files: list, bindings: list):
    """(block closure, output pixels per step) of one compiled, warm variant."""
    gin.clear_config()
    configs.parse_gin(files, bindings)
    config = configs.Config()
    mesh = parallel.make_mesh()
    run = training.Training(config, load_split(config, "train"), mesh)
    run.start()
    batches = [run.next_batch() for _ in range(4)]
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    state = {"s": run.state}

    def block():
        s = state["s"]
        for i in range(FLAGS.block):
            s, stats = run.step(s, batches[i % 4], key)
        jax.block_until_ready(stats)
        state["s"] = s

    block()
    return block, config.batch_size


def main(argv):
    """Entry point."""
    del argv
    specs = configs.variants(FLAGS.base, FLAGS.variants)
    names = [name for name, _, _ in specs]
    blocks = []
    for name, files, bindings in specs:
        blocks.append(_warm(files, bindings))
        print(f"compiled: {name}", flush=True)
    times = np.zeros((FLAGS.rounds, len(names)))
    for r in range(FLAGS.rounds):
        order = np.roll(np.arange(len(names)), r)
        for i in order:
            t0 = time.perf_counter()
            blocks[i][0]()
            times[r, i] = time.perf_counter() - t0
    print(f"{'variant':70s} {'px/s':>8s} {'time / base':>12s} {'rounds slower':>14s}")
    for i, name in enumerate(names):
        ratio = times[:, i] / times[:, 0]
        rate = FLAGS.block * blocks[i][1] / np.median(times[:, i])
        print(f"{name:70s} {rate:8.0f} {np.median(ratio):12.3f} "
              f"{int(np.sum(ratio > 1))}/{FLAGS.rounds}")
    return 0


if __name__ == "__main__":
    app.run(main)
