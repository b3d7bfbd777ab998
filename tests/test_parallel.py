"""One device and four simulated devices give the same loss and update on the same batch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.cli_env import cli_env

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import jax, numpy as np
from jaxnerf360 import configs, parallel, training
from jaxnerf360.train_step import batch_dict
from jaxnerf360.data import load_split
from jaxnerf360.data.batching import RayBatcher

configs.parse_gin([sys.argv[1]], [f"Config.data_dir='{sys.argv[2]}'", "Config.batch_size=64",
                                  "Config.checkpoint_dir='unused'"])
config = configs.Config()
scene = load_split(config, "train")
mesh = parallel.make_mesh()
run = training.setup(config, scene, mesh)
state, step = run.state, run.step
batch, alpha = RayBatcher(scene, 64, seed=3).next_with_alpha()
batch = parallel.to_global(batch_dict(batch, alpha), mesh)
key = parallel.replicate(jax.random.PRNGKey(7), mesh)
losses = []
for _ in range(3):
    state, stats = step(state, batch, key)
    losses.append(float(stats["loss"]))
leaf = np.asarray(jax.tree.leaves(state.params)[0]).ravel()[:8].tolist()
print(json.dumps({"devices": jax.device_count(), "losses": losses, "leaf": leaf}))
"""


def run(devices, scene_dir):
    env = cli_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "configs" / "debug.gin"),
                           str(scene_dir)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_one_and_four_devices_agree(tmp_path):
    one = run(1, tmp_path / "scene")
    four = run(4, tmp_path / "scene")
    assert one["devices"] == 1 and four["devices"] == 4
    np.testing.assert_allclose(one["losses"], four["losses"], rtol=2e-5)
    np.testing.assert_allclose(one["leaf"], four["leaf"], rtol=1e-4, atol=1e-6)
    assert one["losses"][-1] < one["losses"][0]
