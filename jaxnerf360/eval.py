"""Evaluates a trained run on its test views: `python -m jaxnerf360.eval`.

Writes `eval/<name>.png`, `eval/<name>_depth.png` and `eval/metrics.json` (means
under `psnr`, `ssim`, `lpips`, a per-image list, and `rcc`: the reprojective colour
consistency of the first `Consistency.eval_frames` frames of the render path) under
Config.checkpoint_dir.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags, logging

from jaxnerf360 import (
    cli,
    configs,
    consistency,
    metrics,
    objective,
    optim,
    outputs,
    parallel,
    rendering,
)
from jaxnerf360.cameras import POSE, Cameras
from jaxnerf360.data import load_split
from jaxnerf360.data.cameras import scene_rays, scene_view
from jaxnerf360.data.scene import Batch
from jaxnerf360.rendering import Renderer
from jaxnerf360.supervision import Supervision
from jaxnerf360.train_step import TrainState, batch_dict, make_loss_fn, make_train_step
from jaxnerf360.trained import load_trained


def evaluate(config: configs.Config, compressed_path: str | None = None) -> dict:
    """Renders every test view, writes images and metrics.json; returns the metrics.

    For a run that optimised its poses, metrics.json also holds the training pose errors
    before and after (BARF's Sim(3)-aligned errors), and each test view is rendered from its
    true pose mapped into the optimised frame, refined photometrically first when
    Cameras.test_pose_steps > 0.
    """
    # With several processes each renders its share of the views on its own devices.
    split = jax.process_count() > 1
    mesh = parallel.local_mesh() if split else parallel.make_mesh(config.mesh_shape,
                                                                  fallback=True)
    scene = load_split(config, "test")
    cameras = Cameras()
    train = load_split(config, "train") if cameras.learned and not compressed_path \
        else None
    model, state = load_trained(config, scene, mesh, compressed_path, train)
    renderer = Renderer(model, mesh, config.background, config.render_chunk_size)
    pose_report, test_poses = {}, None
    if train is not None:
        cameras = Cameras(train, seed=config.seed)
        pose_report, align = cameras.report(state.params)
        test_poses = cameras.test_poses(scene, align)
        if cameras.test_pose_steps > 0:
            test_poses = refine_test_poses(config, model, state, cameras, scene, test_poses, mesh)
    lpips_fn = metrics.make_lpips(config.lpips_net)
    out_dir = os.path.join(config.checkpoint_dir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    count = scene.num_images if config.eval_max_images is None else min(
        scene.num_images, config.eval_max_images)
    table = np.full((count, len(_METRICS)), np.nan)  # this process's rows, then everyone's
    for i in parallel.share(count):
        view = scene_view(scene, i)
        if test_poses is not None:
            view = dataclasses.replace(view, camtoworld=test_poses[i])
        out = renderer.image(state, view)
        gt = scene.images[i]
        result = metrics.evaluate_image(out["rgb"], gt, lpips_fn)
        table[i] = [np.nan if result.get(k) is None else float(result[k]) for k in _METRICS]
        name = _name(scene, i)
        outputs.write_png(os.path.join(out_dir, f"{name}.png"), out["rgb"])
        outputs.write_png(os.path.join(out_dir, f"{name}_depth.png"),
                          outputs.depth_to_image(out["distance_median"], out["acc"]))
        logging.info("eval %d/%d %s: psnr %.2f ssim %.4f lpips %s", i + 1, count, name,
                     result["psnr"], result["ssim"], result.get("lpips"))
    table = np.fmax.reduce(parallel.gather(table), axis=0)  # each row from its one renderer
    per_image = [{"name": _name(scene, i),
                  **{k: float(v) for k, v in zip(_METRICS, row, strict=True) if not np.isnan(v)}}
                 for i, row in enumerate(table)]
    summary = {"step": int(state.step), "num_images": count}
    for key in ("psnr", "ssim", "lpips"):
        values = [r[key] for r in per_image if r.get(key) is not None]
        summary[key] = float(np.mean(values)) if values else None
    summary.update(pose_report)
    frames = consistency.Consistency().eval_frames
    if frames >= 2 and jax.process_index() == 0:
        # The first frames of the render path (so spaced as in the video), fitted to the test
        # cameras (in the optimised frame for a pose run).
        views = rendering.path_of(config, scene, max(frames, config.render_frames),
                                  test_poses, renderer.upsample)[:frames]
        summary["rcc"] = consistency.path_consistency(
            rendering.render_views(renderer, state, views), views)
    summary["per_image"] = per_image
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    logging.info("mean over %d test views: psnr %.3f ssim %.4f lpips %s", count,
                 summary["psnr"], summary["ssim"], summary["lpips"])
    return summary


_METRICS = ("psnr", "ssim", "lpips")


def _name(scene, i: int) -> str:
    return os.path.splitext(os.path.basename(scene.names[i]))[0]


def refine_test_poses(config, model, state, cameras, scene, init, mesh) -> np.ndarray:
    """Each test pose refined by Cameras.test_pose_steps photometric Adam steps, the field
    frozen: the general train step with a pose-only objective and a parameter mask."""
    from jaxnerf360 import poses

    steps = cameras.test_pose_steps
    mse = dataclasses.replace(config, data_loss_type="mse", data_loss_mult=1.0, max_steps=steps)
    frozen = "frozen"

    def labels(params):
        return jax.tree.map(lambda _: frozen, Cameras.split(params)[0]) | \
            Cameras.param_labels(params)

    pose_adam = optax.adam(lambda t: optim.log_linear_lr(
        t, cameras.test_pose_lr_init, cameras.test_pose_lr_final, steps))
    tx = optax.multi_transform({POSE: pose_adam, frozen: optax.set_to_zero()}, labels)
    data_only = objective.Objective([objective.data_term(mse)])
    # On the host: each refinement's step donates its state, the field's arrays included.
    model_params = jax.device_get(Cameras.split(state.params)[0])
    sampler_state = jax.device_get(state.sampler_state)
    refine, _ = cameras.for_test_view(scene, 0, init[0])
    loss_fn = make_loss_fn(model, refine, Supervision(False), data_only, mse, {},
                           deterministic=True)

    def pose_loss_fn(params, *args):
        # The frozen field's gradients would be zeroed anyway; stopping them spares the
        # backward pass through its parameters (the grid factors' scatter-adds above all).
        field, corrections = Cameras.split(params)
        return loss_fn(Cameras.join(jax.lax.stop_gradient(field), corrections), *args)

    compiled = make_train_step(pose_loss_fn, tx, mesh)
    rng = np.random.default_rng(config.seed)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    out = np.array(init)
    for i in range(init.shape[0]):
        refine, views = cameras.for_test_view(scene, i, init[i])
        step = compiled.with_views(views)
        single = dataclasses.replace(scene, camtoworlds=init[i:i + 1],
                                     intrinsics=scene.intrinsics[i:i + 1],
                                     distortion=None if scene.distortion is None
                                     else scene.distortion[i:i + 1])
        params = Cameras.join(model_params, refine.init_params())
        ts = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                        sampler_state=sampler_state)
        for _ in range(steps):
            flat = rng.integers(0, scene.height * scene.width, cameras.test_pose_batch)
            rows, cols = np.divmod(flat, scene.width)
            batch = Batch(rays=scene_rays(single, np.zeros_like(rows), cols, rows),
                          rgb=scene.images[i][rows, cols],
                          pixels=np.stack([cols, rows], -1).astype(np.float32) + 0.5)
            ts, stats = step(ts, parallel.to_global(batch_dict(batch, None), mesh), key)
        xi = Cameras.split(jax.device_get(ts.params))[1]["xi"][0]
        out[i] = np.asarray(poses.correct(jnp.asarray(init[i]), jnp.asarray(xi)))
        logging.info("test pose %d/%d refined: %d steps, final batch mse %.5f", i + 1,
                     init.shape[0], steps, float(stats["data"]))
    return out


def main(_):
    """Entry point."""
    evaluate(cli.load_run(), flags.FLAGS.compressed)


if __name__ == "__main__":
    cli.run(main)
