"""The train state and the jit-compiled train step: rays -> model -> objective -> update.

One step reads, in one direction: the cameras cast the batch's rays (through learned
corrections when there are some), the supervision gives the target colours and pixel weights,
the model renders, the objective sums its terms, and the optimiser updates every parameter
group. Everything a step needs beyond the state and the batch is fixed when it is built
(`make_loss_fn`); `make_train_step` jit-compiles it, data-parallel over the mesh.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnerf360 import metrics, optim, parallel
from jaxnerf360.cameras import Cameras
from jaxnerf360.data.scene import Rays
from jaxnerf360.model import FIELD, background_colors
from jaxnerf360.objective import LossInputs

CAMERA_UPDATE = "camera_update"  # the loss's statistics for the cameras' refiner


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds: the step, the parameters and the optimiser state."""

    step: jnp.ndarray
    params: Any  # the model's ({'sampler', 'field'[, 'head']}) and the cameras' corrections
    opt_state: Any
    sampler_state: Any = None  # the sampler's state (an occupancy grid), or None
    camera_state: Any = None  # the cameras' (solved image maps' normal equations), or None


def dummy_rays(shape) -> Rays:
    """Rays of leading `shape` that initialise a model (any valid rays would do)."""
    n = int(np.prod(shape))
    ones = jnp.ones((n, 1))
    dirs = jnp.tile(jnp.array([[0.0, 0.0, -1.0]]), (n, 1))
    rays = Rays(origins=jnp.zeros((n, 3)), directions=dirs, viewdirs=dirs, radii=0.01 * ones,
                near=2.0 * ones, far=6.0 * ones, cam_idx=jnp.zeros((n, 1), jnp.int32))
    return jax.tree.map(lambda x: x.reshape(tuple(shape) + x.shape[1:]), rays)


def init_state(model, tx: optax.GradientTransformation, seed: int,
               camera_params: dict | None = None, camera_state=None) -> TrainState:
    """Fresh parameters, optimiser, sampler and `camera_state` (identical on every process
    for one seed).

    A model with a head is initialised on one patch just wide enough for its receptive field.
    """
    radius, _ = model.head_geometry()
    shape = (4,) if model.head is None else (1, 2 * radius + 1, 2 * radius + 1)

    # One compiled program (kept in the persistent cache) rather than hundreds of eager ops,
    # each compiled on its own: seconds at every start.
    @jax.jit
    def fresh(camera_params):
        params = model.init(jax.random.PRNGKey(seed), jax.random.PRNGKey(1), dummy_rays(shape),
                            0.0, jnp.ones(shape + (3,)))["params"]
        params = Cameras.join(params, camera_params)
        return params, tx.init(params)

    params, opt_state = fresh(camera_params)
    return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=opt_state,
                      sampler_state=model.sampler().init_state(model.scene_kind),
                      camera_state=camera_state)


def resized(state, field, resolution):
    """The state with the field's grid factors, and their optimiser moments, resampled to
    `resolution` by the field (`Field.resize_leaf`); every other leaf unchanged."""
    def resizer(moment):
        def resize(path, leaf):
            keys = [getattr(k, "key", None) for k in path]
            if FIELD not in keys:
                return leaf
            inner = tuple(keys[keys.index(FIELD) + 1:])
            return field.resize_leaf(inner, leaf, resolution, moment=moment)
        return resize

    # Leaf by leaf: each resampling is compiled on its own (`vm.resample_axis`); the whole
    # tree as one program took longer to compile for wavelet planes (BENCHMARKS.md).
    return state.replace(
        params=jax.tree_util.tree_map_with_path(resizer(False), state.params),
        opt_state=jax.tree_util.tree_map_with_path(resizer(True), state.opt_state))


def batch_dict(batch, alpha) -> dict:
    """The train step's batch: rays, rgb, alpha (ones where the images have none), pixels."""
    rgb = np.asarray(batch.rgb, np.float32)
    if alpha is None:
        alpha = np.ones(rgb.shape[:-1] + (1,), np.float32)
    pixels = batch.pixels
    if pixels is None:
        pixels = np.zeros(batch.rays.origins.shape[:-1] + (2,), np.float32)
    return {"rays": batch.rays, "rgb": rgb, "alpha": np.asarray(alpha, np.float32),
            "pixels": np.asarray(pixels, np.float32)}


def center_crop(x, height: int, width: int):
    """The central `[..., height, width, C]` of images `x [..., H, W, C]`."""
    top, left = (x.shape[-3] - height) // 2, (x.shape[-2] - width) // 2
    return x[..., top:top + height, left:left + width, :]


def make_loss_fn(model, cameras, supervision, objective, config, groups: dict,
                 capacity: int | None = None, deterministic: bool = False, phase=None,
                 appearance_capacity: int | None = None, appearance_chunks: int = 1):
    """`loss_fn(params, state, batch, rng, views) -> (total, stats)` for one batch.

    `groups` are the declared parameter groups (for the terms' learning-rate ratios);
    `capacity` the static sample-buffer size of a masking sampler, `appearance_capacity` that
    of the samples whose channels are computed (`Model.appearance_weight_threshold`), in
    `appearance_chunks` parts that are skipped past the shown count; `deterministic` renders
    the finished field (no jitter, train_frac 1, the fixed background): test-pose refinement.
    `phase` (a `phases.Phase` of the head's plan, or None): a phase that does not render is
    the plan's own loss; parts the phase does not train get no gradient.
    """
    def loss_fn(params, state, batch, rng, views):
        key_render, key_bg, key_blur = jax.random.split(rng, 3)
        if deterministic:
            train_frac, key_render, key_bg = jnp.asarray(1.0), None, None
        else:
            train_frac = jnp.clip(state.step / config.max_steps, 0.0, 1.0)
        if phase is not None and phase.trains is not None:
            params = {key: value if key in phase.trains else jax.lax.stop_gradient(value)
                      for key, value in params.items()}
        model_params, camera_params = Cameras.split(params)
        if phase is not None and not phase.renders:
            return model.phases().own_loss(phase, model, model_params, batch, key_render,
                                           config)
        rays = cameras.rays(camera_params, batch, train_frac, views)
        bg = background_colors(config.background, rays.origins.shape[:-1], key_bg)
        target = cameras.target(camera_params, batch,
                                supervision.target(views, batch, train_frac, key_blur), views)
        if target.shape == bg.shape:
            # Images were composited on the fixed background at load time; re-composite the
            # target onto this step's background where alpha says the background shows.
            fixed = jnp.asarray(0.0 if config.background == "black" else 1.0)
            target = target + (1.0 - batch["alpha"]) * (bg - fixed)
        out = model.apply({"params": model_params}, key_render, rays, train_frac, bg,
                          sampler_state=state.sampler_state, capacity=capacity,
                          spectral_control=supervision.enabled,
                          appearance_capacity=appearance_capacity,
                          appearance_chunks=appearance_chunks)
        target_patch = target if target.ndim == 4 else None
        if out["rgb"].shape != target.shape:  # a head consumed a margin, or terms read one
            target = center_crop(target, *out["rgb"].shape[-3:-1])

        def plain(name, salt):  # independent rays beside the patches: no head, the fixed bg
            rays = batch[name]
            return model.apply({"params": model_params}, jax.random.fold_in(rng, salt), rays,
                               train_frac, background_colors(config.background,
                                                             rays.origins.shape[:-1]),
                               sampler_state=state.sampler_state,
                               spectral_control=supervision.enabled, apply_head=False)

        # A phase's coarse and full-resolution rays, or a term's coarse rays.
        renders_extra = phase is None or phase.coarse_rays
        extra = plain("extra_rays", 1) if renders_extra and "extra_rays" in batch else None
        colour = plain("colour_rays", 2) if renders_extra and "colour_rays" in batch else None
        inputs = LossInputs(
            outputs=out, batch=batch, target=target,
            pixel_weights=supervision.pixel_weights(views, batch, state.step, train_frac),
            params=model_params, field_params=model_params.get(FIELD, {}), step=state.step,
            train_frac=train_frac, lr_ratio=optim.lr_ratios(config, groups, state.step),
            target_patch=target_patch, phase=None if phase is None else phase.name,
            extra_outputs=extra, phase_data=None if views is None else views.phase_data,
            colour_outputs=colour)
        total, parts = objective(inputs)
        mse = jnp.mean(jnp.square(out["rgb"] - target))
        stats = {"loss": total, **parts, "psnr": metrics.mse_to_psnr(mse),
                 "overflow": out["overflow"], "appearance_overflow": out["appearance_overflow"]}
        update = cameras.map_statistics(camera_params, batch, views, out["rgb"])
        if update is not None:
            stats[CAMERA_UPDATE] = update
        return total, stats

    return loss_fn


class TrainStep:
    """A compiled train step `(state, batch, key) -> (state, stats)` and its device data."""

    def __init__(self, jitted, mesh, views=None):
        self._jitted, self._mesh = jitted, mesh
        self.views = None if views is None else parallel.replicate(views, mesh)

    def __call__(self, state, batch, key):
        """One step."""
        return self._jitted(state, batch, key, self.views)

    def with_views(self, views) -> "TrainStep":
        """The same compiled step on other device data of the same shapes."""
        return TrainStep(self._jitted, self._mesh, views)


_MAX_STATS = ("overflow", "appearance_overflow")  # counts: the fullest part's, not the mean


def chunked_value_and_grad(loss_fn, chunks: int):
    """`loss_fn`'s value_and_grad over `chunks` equal parts of the batch's rays, one after
    another (a scan), the gradients averaged: for losses that are means over rays, the whole
    batch's gradient up to rounding. Part i holds rays i, i + chunks, ... (each device keeps
    its share); its key is `fold_in(rng, i)`. Statistics are the parts' means (PSNR from the
    mean squared error; buffer overflows their maximum).
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def split(x):
        x = x.reshape((x.shape[0] // chunks, chunks) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    def value_and_grad(params, state, batch, rng, views):
        def body(total, part):
            index, rays = part
            (value, stats), grads = grad_fn(params, state, rays, jax.random.fold_in(rng, index),
                                            views)
            return jax.tree.map(jnp.add, total, grads), (value, stats)

        zeros = jax.tree.map(jnp.zeros_like, params)
        grads, (values, stats) = jax.lax.scan(
            body, zeros, (jnp.arange(chunks), jax.tree.map(split, batch)))
        grads = jax.tree.map(lambda g: g / chunks, grads)
        psnr = stats.pop("psnr", None)
        stats = {key: jnp.max(value, 0) if key in _MAX_STATS else jnp.mean(value, 0)
                 for key, value in stats.items()}
        if psnr is not None:  # the whole batch's, from the parts' mean squared errors
            stats["psnr"] = metrics.mse_to_psnr(jnp.mean(metrics.psnr_to_mse(psnr)))
        return (jnp.mean(values), stats), grads

    return value_and_grad


def make_train_step(loss_fn, tx, mesh, views=None, lr_schedule=None,
                    shardings=None, refine=None, chunks: int = 1) -> TrainStep:
    """A jit-compiled, data-parallel `train_step(state, batch, key) -> (state, stats)`.

    `views` (device data: cameras, images, edge maps) is replicated and passed to every call;
    `lr_schedule` (step -> lr) is logged as `lr`. `shardings(state)` (the state's sharding
    tree, from its shapes) pins the new state's layout, so that sharded parameters and their
    moments stay sharded whatever the grid resolution; None keeps everything replicated.
    `refine(params, camera_state, update, step) -> (params, camera_state)` (the cameras'
    `refiner`) then applies what the loss gave under CAMERA_UPDATE (solved image maps).
    `chunks` > 1 runs the batch's rays in that many parts (`chunked_value_and_grad`).
    """
    if chunks > 1:
        grad_fn = chunked_value_and_grad(loss_fn, chunks)
    else:
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state, batch, key, views):
        rng = jax.random.fold_in(key, state.step)
        (_, stats), grads = grad_fn(state.params, state, batch, rng, views)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        camera_state = state.camera_state
        update = stats.pop(CAMERA_UPDATE, None)
        if update is not None and refine is not None:
            params, camera_state = refine(params, camera_state, update, state.step)
        if lr_schedule is not None:
            stats["lr"] = lr_schedule(state.step)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            camera_state=camera_state)
        layout = shardings(new) if shardings else parallel.replicated(mesh)
        return jax.lax.with_sharding_constraint(new, layout), stats

    # The state keeps the layout it comes in (see `shardings`); the batch is split over data.
    step = jax.jit(train_step, in_shardings=(None, parallel.data_sharded(mesh),
                                             parallel.replicated(mesh), None),
                   out_shardings=(None, parallel.replicated(mesh)), donate_argnums=(0,))
    return TrainStep(step, mesh, views)
