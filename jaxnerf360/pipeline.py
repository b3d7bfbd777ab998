"""The training pipeline as pure functions: model and state, the train step, rendering."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnerf360 import losses, metrics, optim, parallel
from jaxnerf360.data.scene import Rays
from jaxnerf360.model import Model, background_colors


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds: the step, the parameters and the optimiser state."""

    step: jnp.ndarray
    params: Any
    opt_state: Any


def _dummy_rays(n: int = 4) -> Rays:
    ones = jnp.ones((n, 1))
    dirs = jnp.tile(jnp.array([[0.0, 0.0, -1.0]]), (n, 1))
    return Rays(origins=jnp.zeros((n, 3)), directions=dirs, viewdirs=dirs, radii=0.01 * ones,
                near=2.0 * ones, far=6.0 * ones, cam_idx=jnp.zeros((n, 1), jnp.int32))


def build_model(scene_kind: str) -> Model:
    """The gin-configured model for a scene of the given kind."""
    return Model(scene_kind=scene_kind)


def init_state(model: Model, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Fresh parameters and optimiser state (identical on every process for one seed)."""
    rays = _dummy_rays()
    params = model.init(jax.random.PRNGKey(seed), jax.random.PRNGKey(1), rays, 0.0,
                        jnp.ones((4, 3)))["params"]
    return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params))


def compute_losses(params, model, config, batch, rng, train_frac):
    """Total loss and its parts for one batch (a dict with rays, rgb, alpha)."""
    rays = batch["rays"]
    key_render, key_bg = jax.random.split(rng)
    bg = background_colors(config.background, rays.origins.shape[:-1], key_bg)
    # Images were composited on the fixed background at load time; re-composite the target
    # onto this step's background where alpha says the background shows through.
    fixed = jnp.asarray(0.0 if config.background == "black" else 1.0)
    target = batch["rgb"] + (1.0 - batch["alpha"]) * (bg - fixed)
    out = model.apply({"params": params}, key_render, rays, train_frac, bg)
    data = losses.data_loss(out["rgb"], target, config.data_loss_type, config.charb_padding)
    interlevel = losses.interlevel(out["sdist"], out["weights"], out["prop_levels"])
    distortion = losses.distortion(out["sdist"], out["weights"])
    total = (config.data_loss_mult * data + config.interlevel_loss_mult * interlevel
             + config.distortion_loss_mult * distortion)
    mse = jnp.mean(jnp.square(out["rgb"] - target))
    return total, {"loss": total, "data": data, "interlevel": interlevel,
                   "distortion": distortion, "psnr": metrics.mse_to_psnr(mse)}


def make_train_step(model, tx, config, mesh):
    """A jit-compiled, data-parallel `train_step(state, batch, key) -> (state, stats)`."""
    schedule = optim.schedule_from_config(config)

    def train_step(state, batch, key):
        rng = jax.random.fold_in(key, state.step)
        train_frac = jnp.clip(state.step / config.max_steps, 0.0, 1.0)
        grad_fn = jax.value_and_grad(compute_losses, has_aux=True)
        (_, stats), grads = grad_fn(state.params, model, config, batch, rng, train_frac)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        stats["lr"] = schedule(state.step)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), stats

    repl, data = parallel.replicated(mesh), parallel.data_sharded(mesh)
    return jax.jit(train_step, in_shardings=(repl, data, repl), out_shardings=(repl, repl),
                   donate_argnums=(0,))


def batch_dict(batch, alpha) -> dict:
    """The train step's batch: rays, rgb and alpha (ones where the images have none)."""
    rgb = np.asarray(batch.rgb, np.float32)
    if alpha is None:
        alpha = np.ones(rgb.shape[:-1] + (1,), np.float32)
    return {"rays": batch.rays, "rgb": rgb, "alpha": np.asarray(alpha, np.float32)}


def make_render_fn(model, mesh, background: str):
    """A jit-compiled `render(params, rays) -> dict` for evaluation (deterministic)."""
    repl, data = parallel.replicated(mesh), parallel.data_sharded(mesh)

    def render(params, rays):
        bg = background_colors("black" if background == "black" else "white",
                               rays.origins.shape[:-1])
        out = model.apply({"params": params}, None, rays, 1.0, bg, compute_extras=True)
        return {k: out[k] for k in ("rgb", "acc", "distance_mean", "distance_median")}

    return jax.jit(render, in_shardings=(repl, data), out_shardings=data)


def render_rays(render_fn, params, rays: Rays, chunk: int, num_devices: int) -> dict:
    """Renders rays of any leading shape in fixed-size chunks (bounded memory), on host."""
    shape = rays.origins.shape[:-1]
    flat = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[len(shape):]), rays)
    n = flat.origins.shape[0]
    chunk = max(num_devices, chunk - chunk % num_devices)
    pieces = []
    for start in range(0, n, chunk):
        part = jax.tree.map(lambda x, s=start: x[s:s + chunk], flat)
        pad = chunk - part.origins.shape[0]
        if pad:
            part = jax.tree.map(lambda x, p=pad: np.concatenate([x, np.repeat(x[-1:], p, 0)]), part)
        out = jax.device_get(render_fn(params, part))
        pieces.append({k: v[:chunk - pad] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in pieces]).reshape(shape + pieces[0][k].shape[1:])
            for k in pieces[0]}


def setup(config, scene_kind: str, mesh):
    """Model, fresh replicated state and the jitted train step for `config`."""
    model = build_model(scene_kind)
    tx = optim.make_optimizer(config)
    state = parallel.replicate(init_state(model, tx, config.seed), mesh)
    return model, state, make_train_step(model, tx, config, mesh)


def restore_trained(config, scene_kind: str, mesh):
    """The model and the latest trained parameters of the run in `config.checkpoint_dir`."""
    from jaxnerf360 import checkpoints
    from jaxnerf360.errors import UserError

    model, state, _ = setup(config, scene_kind, mesh)
    mgr = checkpoints.manager(config.checkpoint_dir, config.checkpoint_keep)
    restored = checkpoints.restore_latest(mgr, state, config.checkpoint_dir)
    if restored is None:
        raise UserError(f"{config.checkpoint_dir}: no checkpoint found; train first with "
                        "python -m jaxnerf360.train")
    return model, restored
