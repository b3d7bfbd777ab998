"""How noisy a batch kind's gradient is: its signal-to-noise ratio at one trained state.

Every variant is the base config plus more gin files or bindings, as in `step_ratio.py` (`;`
separates variants, `,` the parts of one). Each draws `--batches` batches of its own kind and
takes the loss's gradient for each at the same parameters (the latest checkpoint of `--run`,
which must hold the same model). The loss is the run's own objective with its sample buffers
and the full supervision; configs whose head trains in phases (latent decoders) are not
covered. With g the flattened gradient of one batch, the ratio is

    SNR = |E g|^2 / tr Cov(g),

estimated without bias (|mean|^2 less tr Cov / batches). It does not depend on the loss's
scale, and an average of n independent batches has n times the SNR of one. Adam divides each
update by the running root mean square of the gradient, so at a lower SNR it takes smaller
steps along the signal:

    python scripts/gradient_noise.py --run=RUN --base=configs/lego200_cpu.gin \
        --variants="Config.batch_size=512;Config.patch_size=8"
"""

import gin
import jax
import numpy as np
from absl import app, flags

from jaxnerf360 import checkpoints, configs, parallel, training
from jaxnerf360.data import load_split
from jaxnerf360.train_step import make_loss_fn

flags.DEFINE_string("run", None, "A trained run directory (its latest checkpoint).")
flags.DEFINE_string("base", "configs/lego200_cpu.gin", "The base config file.")
flags.DEFINE_string("variants", "Config.patch_size=8", "';'-separated variants (see above).")
flags.DEFINE_integer("batches", 40, "Batches per variant.")
flags.mark_flag_as_required("run")
FLAGS = flags.FLAGS


def gradients(files: list, bindings: list, run_dir: str, count: int) -> np.ndarray:
    """`[count, P]`: the flattened loss gradient of `count` batches at the run's state."""
    gin.clear_config()
    configs.parse_gin(files, bindings)
    config = configs.Config()
    run = training.Training(config, load_split(config, "train"), parallel.make_mesh())
    if not run.restore(checkpoints.manager(run_dir, config.checkpoint_keep)):
        raise SystemExit(f"error: no checkpoint in {run_dir}")
    run.start()
    loss_fn = make_loss_fn(run.model, run.cameras, run.supervision, run.objective, config,
                           run.groups, run.capacity,
                           appearance_capacity=run.appearance_capacity)
    grad = jax.jit(jax.grad(lambda p, s, b, k: loss_fn(p, s, b, k, run.views)[0]))
    rows = []
    for i in range(count):
        g = grad(run.state.params, run.state, run.next_batch(), jax.random.PRNGKey(i))
        rows.append(np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(g))]))
    return np.stack(rows)


def signal_to_noise(rows: np.ndarray) -> float:
    """|E g|^2 / tr Cov(g) of gradients `rows [n, P]`, the numerator without bias."""
    n = rows.shape[0]
    noise = rows.var(axis=0, ddof=1).sum()
    return float((np.sum(np.square(rows.mean(axis=0))) - noise / n) / noise)


def main(argv):
    """Entry point."""
    del argv
    ratios = []
    for name, files, bindings in configs.variants(FLAGS.base, FLAGS.variants):
        rows = gradients(files, bindings, FLAGS.run, FLAGS.batches)
        ratios.append(signal_to_noise(rows))
        print(f"{name:90s} SNR {ratios[-1]:.4f}  / base {ratios[-1] / ratios[0]:.3f}",
              flush=True)
    return 0


if __name__ == "__main__":
    app.run(main)
