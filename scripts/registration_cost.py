"""What one image registration event costs, in train steps, measured in one process.

    python scripts/registration_cost.py --gin_configs=configs/lego200_cpu.gin \
        --gin_configs=configs/register.gin

The run is built as `train` builds it (fresh state: the MLP path's step and renders cost the
same whatever the state), compiled and warmed; then, for each round, a block of train steps
and one event's renders and fits (`Registration.estimate`) take turns. Prints the median
over rounds of the event's time in train steps, so a registration run can be given the
steps its events cost (BENCHMARKS.md).
"""

import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from jaxnerf360 import configs, parallel, training  # configs: --gin_configs, --gin_bindings
from jaxnerf360.data import load_split
from jaxnerf360.registration import Registration

flags.DEFINE_integer("rounds", 4, "Rounds of one block of steps and one event.")
flags.DEFINE_integer("block", 20, "Train steps per block.")
FLAGS = flags.FLAGS


def main(_):
    configs.parse_gin(FLAGS.gin_configs, [*(FLAGS.gin_bindings or []),
                                          f"Config.checkpoint_dir = '{tempfile.mkdtemp()}'"])
    config = configs.Config()
    mesh = parallel.make_mesh()
    run = training.setup(config, load_split(config, "train"), mesh)
    event = next((e for e in run.events if isinstance(e, Registration)), None)
    if event is None:
        raise SystemExit("the config registers no images: add configs/register.gin")
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)

    def block():
        start = time.perf_counter()
        for _ in range(FLAGS.block):
            run.state, stats = run.step(run.state, run.next_batch(), key)
        jax.block_until_ready(stats)
        return (time.perf_counter() - start) / FLAGS.block

    def registration():
        start = time.perf_counter()
        event.estimate(run, run.state)
        return time.perf_counter() - start

    block(), registration()  # compiled and warm
    ratios = []
    for r in range(FLAGS.rounds):
        step, renders = block(), registration()
        ratios.append(renders / step)
        print(f"round {r}: step {step * 1e3:.0f} ms, event {renders:.1f} s = "
              f"{ratios[-1]:.1f} steps", flush=True)
    print(f"one registration event costs {np.median(ratios):.1f} train steps (median of "
          f"{FLAGS.rounds} rounds; {event.settings.patches} patches of "
          f"{event.settings.patch_size}^2 per image, {len(event.loaded)} images)")


if __name__ == "__main__":
    app.run(main)
