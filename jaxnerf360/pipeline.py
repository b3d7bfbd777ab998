"""The training pipeline as pure functions: model and state, the train step, rendering."""

import dataclasses
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnerf360 import losses, metrics, optim, parallel, poses, supervision
from jaxnerf360.data.scene import Rays
from jaxnerf360.geometry import filters
from jaxnerf360.model import Model, background_colors
from jaxnerf360.samplers import field_warp


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint holds: the step, the parameters and the optimiser state."""

    step: jnp.ndarray
    params: Any
    opt_state: Any
    occupancy: Any = None  # bool [X, Y, Z] grid of an occupancy sampler; None otherwise


def _dummy_rays(n: int = 4) -> Rays:
    ones = jnp.ones((n, 1))
    dirs = jnp.tile(jnp.array([[0.0, 0.0, -1.0]]), (n, 1))
    return Rays(origins=jnp.zeros((n, 3)), directions=dirs, viewdirs=dirs, radii=0.01 * ones,
                near=2.0 * ones, far=6.0 * ones, cam_idx=jnp.zeros((n, 1), jnp.int32))


def build_model(scene_kind: str) -> Model:
    """The gin-configured model for a scene of the given kind."""
    return Model(scene_kind=scene_kind)


def uses_occupancy(model: Model) -> bool:
    """Whether the model's sampler keeps an occupancy grid (TensoRF's alpha mask)."""
    return hasattr(model.sampler, "update_steps") or hasattr(model.sampler(), "update_steps")


def init_state(model: Model, tx: optax.GradientTransformation, seed: int,
               pose_params: dict | None = None) -> TrainState:
    """Fresh parameters and optimiser state (identical on every process for one seed).

    An occupancy grid starts all occupied: nothing is skipped until the first update.
    `pose_params` (camera corrections) join the parameters under 'poses'.
    """
    rays = _dummy_rays()
    params = model.init(jax.random.PRNGKey(seed), jax.random.PRNGKey(1), rays, 0.0,
                        jnp.ones((4, 3)))["params"]
    if pose_params is not None:
        params = {**params, "poses": pose_params}
    occ = None
    if uses_occupancy(model):
        res = model.sampler().grid_resolution
        res = (res,) * 3 if isinstance(res, int) else tuple(res)
        occ = jnp.ones(res, bool)
    return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params),
                      occupancy=occ)


def resize_grids(state: TrainState, resolution, field) -> TrainState:
    """The state with the field's grid factors, and their optimiser moments, resampled.

    TensoRF's upsampling as a pure function: factors are resampled to `resolution` (x, y, z)
    by `field.resize_factor`, and so are Adam's first and second moments for them, so
    optimisation goes on smoothly; every other leaf (networks, step counts) is unchanged.
    """
    def resizer(moment):
        def resize(path, leaf):
            keys = [getattr(k, "key", None) for k in path]
            if "field" not in keys or not optim.is_grid_param(path):
                return leaf
            return field.resize_factor(str(keys[-1]), leaf, resolution, moment=moment)
        return resize

    return state.replace(
        params=jax.tree_util.tree_map_with_path(resizer(False), state.params),
        opt_state=jax.tree_util.tree_map_with_path(resizer(True), state.opt_state))


def compute_losses(params, model, config, batch, rng, train_frac, step=0, occupancy=None,
                   capacity=None, views=None):
    """Total loss and its parts for one batch (a dict with rays, rgb, alpha, pixels).

    With camera corrections in `params['poses']` the rays are cast here from the batch
    pixels and the corrected `views` cameras; blurred targets and edge weights (Config) are
    gathered from `views` too.
    """
    rays = batch["rays"]
    key_render, key_bg, key_blur = jax.random.split(rng, 3)
    if "poses" in params:
        rays = poses.corrected_rays(views, params["poses"], batch["pixels"], rays.cam_idx[..., 0])
        params = {k: v for k, v in params.items() if k != "poses"}
    if config.near_schedule:
        rays = scheduled_near(rays, config.near_schedule, train_frac)
    bg = background_colors(config.background, rays.origins.shape[:-1], key_bg)
    target = batch["rgb"]
    if config.image_blur and config.spectral_control:
        target = _blurred_target(config, views, batch, train_frac, key_blur)
    # Images were composited on the fixed background at load time; re-composite the target
    # onto this step's background where alpha says the background shows through.
    fixed = jnp.asarray(0.0 if config.background == "black" else 1.0)
    target = target + (1.0 - batch["alpha"]) * (bg - fixed)
    out = model.apply({"params": params}, key_render, rays, train_frac, bg,
                      occupancy=occupancy, capacity=capacity,
                      spectral_control=config.spectral_control)
    weights = None
    if config.edge_loss_until > 0 and config.spectral_control:
        edge = supervision.pixel_values(views.edges, rays.cam_idx[..., 0], batch["pixels"])
        active = (train_frac < config.edge_loss_until) & (step % config.edge_loss_every == 0)
        weights = jnp.where(active, jnp.where(edge, config.edge_weight, config.non_edge_weight),
                            1.0)
    data = losses.data_loss(out["rgb"], target, config.data_loss_type, config.charb_padding,
                            weights)
    interlevel = losses.interlevel(out["sdist"], out["weights"], out["prop_levels"])
    distortion = losses.distortion(out["sdist"], out["weights"])
    total = (config.data_loss_mult * data + config.interlevel_loss_mult * interlevel
             + config.distortion_loss_mult * distortion)
    grid_reg, reg_parts = losses.grid_regularizers(
        params.get("field", {}), config, step,
        optim.grid_schedule_from_config(config)(step) / config.grid_lr_init)
    total = total + grid_reg
    mse = jnp.mean(jnp.square(out["rgb"] - target))
    return total, {"loss": total, "data": data, "interlevel": interlevel,
                   "distortion": distortion, "psnr": metrics.mse_to_psnr(mse),
                   "overflow": out["overflow"], **reg_parts}


def scheduled_near(rays: Rays, schedule, train_frac) -> Rays:
    """`rays` with each near bound raised to the schedule's value at `train_frac`."""
    from jaxnerf360.fields.spectral import schedule_value

    near = jnp.maximum(rays.near, schedule_value(schedule, train_frac))
    return rays.replace(near=jnp.minimum(near, rays.far))


def _blurred_target(config, views, batch, train_frac, key):
    """The batch colours of the images blurred by Config.image_blur (in image widths)."""
    from jaxnerf360.fields.spectral import max_value, schedule_value

    width = views.images.shape[2]
    sigma = schedule_value(config.image_blur, train_frac) * width
    if config.image_blur_random_scale:
        sigma = sigma * jax.random.uniform(key)
    radius = filters.kernel_radius(max_value(config.image_blur) * width)
    cam_idx = batch["rays"].cam_idx[..., 0]
    return jax.lax.cond(sigma > 0, lambda: supervision.blurred_targets(
        views.images, cam_idx, batch["pixels"], sigma, radius), lambda: batch["rgb"])


def spectral_end_step(config, model) -> int | None:
    """The first step (`state.step`) from which spectral control changes nothing.

    None when no control is on. From that step the train step can be compiled without the
    filters, blurred targets and edge weights, which otherwise stay in the compiled step
    behind `lax.cond` (their wide static kernels cost compile time at every later change).
    """
    from jaxnerf360.fields import spectral

    if not config.spectral_control:
        return None
    field = model.field()
    ends = [spectral.end_fraction(getattr(field, name, ()))
            for name in ("density_blur", "appearance_blur")]
    ends += [spectral.end_fraction(config.image_blur), max(config.edge_loss_until, 0.0)]
    end = max(ends)
    if end == 0 or math.isinf(end):
        return None
    return math.ceil(end * config.max_steps - 1e-9)


def make_train_step(model, tx, config, mesh, capacity: int | None = None, views=None,
                    spectral: bool = True):
    """A jit-compiled, data-parallel `train_step(state, batch, key) -> (state, stats)`.

    `capacity` is the static size of the occupied-sample buffer (occupancy sampler only);
    `views` (replicated device data: cameras, images, edges) is passed to every call;
    `spectral=False` compiles the step without spectral control (see `spectral_end_step`).
    """
    if not spectral:
        config = dataclasses.replace(config, spectral_control=False)
    schedule = optim.schedule_from_config(config)

    def train_step(state, batch, key, views):
        rng = jax.random.fold_in(key, state.step)
        train_frac = jnp.clip(state.step / config.max_steps, 0.0, 1.0)
        grad_fn = jax.value_and_grad(compute_losses, has_aux=True)
        (_, stats), grads = grad_fn(state.params, model, config, batch, rng, train_frac,
                                    state.step, state.occupancy, capacity, views)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        stats["lr"] = schedule(state.step)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), stats

    repl, data = parallel.replicated(mesh), parallel.data_sharded(mesh)
    step = jax.jit(train_step, in_shardings=(repl, data, repl, repl),
                   out_shardings=(repl, repl), donate_argnums=(0,))
    if views is not None:
        views = parallel.replicate(views, mesh)
    return lambda state, batch, key: step(state, batch, key, views)


def batch_dict(batch, alpha) -> dict:
    """The train step's batch: rays, rgb, alpha (ones where the images have none), pixels."""
    rgb = np.asarray(batch.rgb, np.float32)
    if alpha is None:
        alpha = np.ones(rgb.shape[:-1] + (1,), np.float32)
    pixels = batch.pixels
    if pixels is None:
        pixels = np.zeros(rgb.shape[:-1] + (2,), np.float32)
    return {"rays": batch.rays, "rgb": rgb, "alpha": np.asarray(alpha, np.float32),
            "pixels": np.asarray(pixels, np.float32)}


class Renderer:
    """Deterministic whole-image rendering in fixed-size chunks (bounded memory).

    With an occupancy sampler, a cheap first pass counts the occupied samples of every
    chunk, and the field then runs on a buffer sized for the fullest chunk (rounded up to
    1/32 of all samples, so only a few sizes are ever compiled).
    """

    def __init__(self, model, mesh, background: str):
        self.model = model
        self.occupancy = uses_occupancy(model)
        repl, data = parallel.replicated(mesh), parallel.data_sharded(mesh)
        bg_kind = "black" if background == "black" else "white"

        def render(state, rays, capacity):
            bg = background_colors(bg_kind, rays.origins.shape[:-1])
            params = {k: v for k, v in state.params.items() if k != "poses"}
            out = model.apply({"params": params}, None, rays, 1.0, bg, compute_extras=True,
                              occupancy=state.occupancy, capacity=capacity)
            return {k: out[k] for k in ("rgb", "acc", "distance_mean", "distance_median")}

        self._render = jax.jit(render, in_shardings=(repl, data), out_shardings=data,
                               static_argnums=(2,))
        self._count = jax.jit(lambda state, rays: occupied_samples(model, state, rays),
                              in_shardings=(repl, data), out_shardings=repl)

    def __call__(self, state, rays: Rays, chunk: int, num_devices: int) -> dict:
        """Renders rays of any leading shape on host: a dict of numpy arrays."""
        shape = rays.origins.shape[:-1]
        flat = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[len(shape):]), rays)
        n = flat.origins.shape[0]
        chunk = max(num_devices, chunk - chunk % num_devices)
        parts = []
        for start in range(0, n, chunk):
            part = jax.tree.map(lambda x, s=start: x[s:s + chunk], flat)
            pad = chunk - part.origins.shape[0]
            if pad:
                part = jax.tree.map(lambda x, p=pad: np.concatenate([x, np.repeat(x[-1:], p, 0)]),
                                    part)
            parts.append((part, pad))
        capacity = None
        if self.occupancy:
            counts = [jax.device_get(self._count(state, part)) for part, _ in parts]
            capacity = round_capacity(max(int(c[0]) for c in counts), int(counts[0][1]))
        pieces = []
        for part, pad in parts:
            out = jax.device_get(self._render(state, part, capacity))
            pieces.append({k: v[:chunk - pad] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in pieces]).reshape(shape + pieces[0][k].shape[1:])
                for k in pieces[0]}


def occupancy_mask(model, state, rays):
    """`[..., n]` bool: the deterministic samples of `rays` that the occupancy grid keeps."""
    sampler = model.sampler()
    step = Model.step_size_for(sampler, model.field(), state.params.get("field"))
    *_, mask = sampler.apply({}, None, rays, field_warp(model.scene_kind), 1.0,
                             occupancy=state.occupancy, step_size=step,
                             scene_kind=model.scene_kind)
    return mask


def occupied_samples(model, state, rays):
    """(occupied samples, all samples) of `rays` under the model's occupancy sampler."""
    mask = occupancy_mask(model, state, rays)
    return jnp.sum(mask), jnp.asarray(mask.size)


def ray_hits(model, state, rays):
    """`[...]` bool: whether each ray has an occupied sample (TensoRF's ray filtering)."""
    return jnp.any(occupancy_mask(model, state, rays), -1)


def round_capacity(needed: int, total: int) -> int | None:
    """A buffer size >= needed, rounded up to 1/32 of `total` (None: no smaller than total)."""
    quantum = max(1, -(-total // 32))
    capacity = max(quantum, -(-needed // quantum) * quantum)
    return None if capacity >= total else capacity


def setup(config, scene_kind: str, mesh, num_poses: int = 0, views=None):
    """Model, fresh replicated state and the jitted train step for `config`.

    With Config.optimize_poses the state holds corrections for `num_poses` training
    cameras, and the train step casts rays from `views`.
    """
    model = build_model(scene_kind)
    check_pose_support(config, model)
    tx = optim.make_optimizer(config)
    pose_params = None
    if config.optimize_poses:
        pose_params = poses.init_params(num_poses, config.optimize_focal)
    state = init_state(model, tx, config.seed, pose_params)
    check_regularizers(config, state.params)
    state = parallel.replicate(state, mesh)
    return model, state, make_train_step(model, tx, config, mesh, views=views)


def check_pose_support(config, model) -> None:
    """Pose optimisation needs a field and sampler that pass gradients to the rays."""
    from jaxnerf360.errors import UserError

    if not config.optimize_poses:
        return
    for part in (model.field, model.sampler):
        if not getattr(part, "supports_pose_optimization", False):
            name = getattr(part, "__name__", type(part).__name__)
            raise UserError(f"Config.optimize_poses needs a field and sampler whose samples "
                            f"follow the rays with gradients; {name} does not declare "
                            "supports_pose_optimization (use MLPField or TensoRFField with "
                            "ProposalSampler or OccupancySampler)")


def check_regularizers(config, params) -> None:
    """Grid regulariser weights need a field with VM factors: a clear start-up error."""
    from jaxnerf360.errors import UserError

    wanted = [n for n in ("l1_density_mult", "tv_density_mult", "tv_appearance_mult")
              if getattr(config, n) > 0]
    if wanted and "density_plane_0" not in params.get("field", {}):
        raise UserError(f"Config.{wanted[0]} > 0 needs a field with grid factors "
                        "(Model.field = @TensoRFField); set it to 0 for this field")
    if config.mask_loss_mult > 0 and "density_planemask_0" not in params.get("field", {}):
        raise UserError("Config.mask_loss_mult > 0 needs masked wavelet planes "
                        "(TensoRFField.plane_coding = 'wavelet'); set it to 0 for this field")


def grid_schedule(model) -> list:
    """[(step, resolution)] at which the field's grid grows (empty for fields without one)."""
    field = model.field()
    if not hasattr(field, "upsample_steps"):
        return []
    from jaxnerf360.fields.tensorf import resolution_schedule

    return resolution_schedule(field)


def resolution_at(model, step: int):
    """The field grid's resolution after `step` steps; None for fields without a schedule."""
    if not grid_schedule(model):
        return None
    from jaxnerf360.fields.tensorf import resolution_at as field_resolution_at

    return field_resolution_at(model.field(), step)


def restore(mgr, model, state, checkpoint_dir: str):
    """The latest checkpoint (None if none), its grids at the resolution of its step."""
    from jaxnerf360 import checkpoints

    step = mgr.latest_step()
    if step is None:
        return None
    resolution = resolution_at(model, step)
    if resolution is not None:
        state = resize_grids(state, resolution, model.field())
    return checkpoints.restore_latest(mgr, state, checkpoint_dir)


def restore_trained(config, scene_kind: str, mesh, num_poses: int = 0):
    """The model and the latest trained parameters of the run in `config.checkpoint_dir`."""
    from jaxnerf360 import checkpoints
    from jaxnerf360.errors import UserError

    model, state, _ = setup(config, scene_kind, mesh, num_poses)
    mgr = checkpoints.manager(config.checkpoint_dir, config.checkpoint_keep)
    restored = restore(mgr, model, state, config.checkpoint_dir)
    if restored is None:
        raise UserError(f"{config.checkpoint_dir}: no checkpoint found; train first with "
                        "python -m jaxnerf360.train")
    return model, restored


def load_trained(config, scene_kind: str, mesh, compressed: str | None = None,
                 num_poses: int = 0):
    """(model, state) of the trained run in `config`, or of a compressed scene file."""
    if compressed:
        from jaxnerf360 import compress

        return compress.restore_compressed(compressed, scene_kind, mesh)
    return restore_trained(config, scene_kind, mesh, num_poses)
