"""A tiny VM run on a given mesh, in a process of its own (its device count is fixed by
XLA_FLAGS before JAX starts): `python -m tests.mesh_worker SCENE JOB...`, each job
`COMMAND;SHAPE;PATH;OUT`, run in order:

- `train`: three steps on a fixed batch on the mesh SHAPE, then a checkpoint in PATH.
- `restore`: the newest checkpoint of PATH restored onto the mesh.
- `legacy`: an old run (PATH in tests/data/legacy) restored onto the mesh, and its test rays
  rendered.

Each job writes OUT.npz (every parameter, by path) and OUT.json (losses, step, the layout of
a plane).
"""

import json
import sys
from pathlib import Path

import gin
import jax
import numpy as np

from jaxnerf360 import checkpoints, configs, parallel, trained, training
from jaxnerf360.data import load_split
from jaxnerf360.data.batching import RayBatcher
from jaxnerf360.data.scene import BOUNDED, Rays
from jaxnerf360.rendering import Renderer
from jaxnerf360.train_step import batch_dict

TINY = Path(__file__).resolve().parent / "data" / "tiny_tensorf.gin"
PLANE = ("field", "density_plane_0")


def bindings(scene: str, shape: str, ckpt: str) -> list:
    """The tests' tiny VM/occupancy run (tests/data/tiny_tensorf.gin) on `shape`, saving in
    `ckpt`."""
    return [f"Config.data_dir = '{scene}'", f"Config.checkpoint_dir = '{ckpt}'",
            f"Config.mesh_shape = {shape}"]


def flat(params) -> dict:
    """{'a/b/c': array} of a parameter tree."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in leaves}


def layout(state) -> dict:
    """How the first density plane lies on the devices: its spec and its shards' shapes."""
    plane = state.params[PLANE[0]][PLANE[1]]
    spec = tuple(plane.sharding.spec) + (None,) * (plane.ndim - len(plane.sharding.spec))
    return {"spec": [str(a) for a in spec],
            "shards": sorted({tuple(s.data.shape) for s in plane.addressable_shards}),
            "global": list(plane.shape)}


def job(scene: str, command: str, shape: str, path: str, out: str) -> None:
    """One job (see the module's docstring)."""
    gin.clear_config()
    report = {"devices": jax.device_count()}
    if command == "legacy":
        config = configs.load(checkpoint_dir=path, bindings=[
            f"Config.data_dir = '{scene}'", f"Config.mesh_shape = {shape}"])
        mesh = parallel.make_mesh(config.mesh_shape)
        model, state = trained.restore_trained(config, BOUNDED, mesh, 16)
        expected = dict(np.load(f"{path}/expected.npz"))
        rays = Rays(**{k[5:]: v for k, v in expected.items() if k.startswith("rays_")})
        rendered = Renderer(model, mesh, config.background, 4096).rays(state, rays)
        report["render_error"] = float(np.max(np.abs(rendered["rgb"] - expected["out_rgb"])))
    else:
        configs.parse_gin([str(TINY)], bindings(scene, shape, path))
        config = configs.Config()
        mesh = parallel.make_mesh(config.mesh_shape)
        run = training.Training(config, load_split(config, "train"), mesh)
        mgr = checkpoints.manager(path)
        if command == "restore":
            assert run.restore(mgr), f"no checkpoint in {path}"
        run.start()
        if command == "train":
            batch = parallel.to_global(
                batch_dict(*RayBatcher(run.scene, 64, seed=3).next_with_alpha()), mesh)
            key = parallel.replicate(jax.random.PRNGKey(7), mesh)
            report["losses"] = []
            for _ in range(3):
                run.state, stats = run.step(run.state, batch, key)
                report["losses"].append(float(stats["loss"]))
            checkpoints.save(mgr, int(run.state.step), run.state)
        state = run.state
    report.update(step=int(state.step), layout=layout(state))
    np.savez(f"{out}.npz", **flat(state.params))
    with open(f"{out}.json", "w", encoding="utf-8") as f:
        json.dump(report, f)


if __name__ == "__main__":
    for spec in sys.argv[2:]:
        job(sys.argv[1], *spec.split(";"))
