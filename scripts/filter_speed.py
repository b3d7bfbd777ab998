"""Times spectral control's component-wise filtering of a VM field (forward + backward).

    python scripts/filter_speed.py --resolution=73 --rank=24 --sigma_world=0.3

Prints the compile time of the jitted gradient and the mean time of one call; BENCHMARKS.md
records the figures.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from jaxnerf360.fields import spectral
from jaxnerf360.geometry import filters

flags.DEFINE_integer("resolution", 73, "Grid points along each axis.")
flags.DEFINE_integer("rank", 24, "Components per mode.")
flags.DEFINE_float("sigma_world", 0.3, "Largest kernel width in world units (3-unit box).")
flags.DEFINE_integer("calls", 20, "Timed calls after the first.")
FLAGS = flags.FLAGS


def main(_):
    """Entry point."""
    n, r = FLAGS.resolution, FLAGS.rank
    rng = np.random.default_rng(0)
    planes = [jnp.asarray(rng.normal(size=(r, n, n)), jnp.float32) for _ in range(3)]
    lines = [jnp.asarray(rng.normal(size=(r, n)), jnp.float32) for _ in range(3)]
    voxel = spectral.voxel_sizes((-1.5,) * 3, (1.5,) * 3, (n,) * 3)
    radius = filters.kernel_radius(FLAGS.sigma_world / float(voxel.min()))
    sigma = jnp.asarray(FLAGS.sigma_world / voxel, jnp.float32)

    def loss(planes, lines):
        out_planes, out_lines = spectral.filter_vm(planes, lines, sigma, radius)
        return sum(jnp.sum(x**2) for x in out_planes + out_lines)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    t0 = time.perf_counter()
    jax.block_until_ready(grad(planes, lines))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(FLAGS.calls):
        jax.block_until_ready(grad(planes, lines))
    call_ms = 1e3 * (time.perf_counter() - t0) / FLAGS.calls
    print(f"{n}^3 grid, rank {r}, kernel radius {radius}: compile + first call "
          f"{compile_s:.2f} s, forward + backward {call_ms:.1f} ms")


if __name__ == "__main__":
    app.run(main)
