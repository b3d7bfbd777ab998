"""Evaluates a trained run on its test views: `python -m jaxnerf360.eval`.

Writes `eval/<name>.png`, `eval/<name>_depth.png` and `eval/metrics.json` (means
under `psnr`, `ssim`, `lpips` and a per-image list) under Config.checkpoint_dir.
"""

import json
import os

import jax
import numpy as np
from absl import flags, logging

from jaxnerf360 import cli, configs, metrics, outputs, parallel, pipeline
from jaxnerf360.data import load_split
from jaxnerf360.data.cameras import camera_rays, image_rays


def evaluate(config: configs.Config, compressed: str | None = None) -> dict:
    """Renders every test view, writes images and metrics.json; returns the metrics.

    For a run that optimised its poses, metrics.json also holds the training pose errors
    before and after (BARF's Sim(3)-aligned errors), and each test view is rendered from its
    true pose mapped into the optimised frame, refined photometrically first when
    Config.test_pose_steps > 0.
    """
    mesh = parallel.make_mesh()
    scene = load_split(config, "test")
    train = load_split(config, "train") if config.optimize_poses and not compressed else None
    model, state = pipeline.load_trained(config, scene.kind, mesh, compressed,
                                         0 if train is None else train.num_images)
    renderer = pipeline.Renderer(model, mesh, config.background)
    pose_report, test_poses = {}, None
    if train is not None:
        pose_report, test_poses = _test_poses(config, model, state, train, scene)
    lpips_fn = metrics.make_lpips(config.lpips_net)
    out_dir = os.path.join(config.checkpoint_dir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    count = scene.num_images if config.eval_max_images is None else min(
        scene.num_images, config.eval_max_images)
    per_image = []
    for i in range(count):
        rays = image_rays(scene, i)
        if test_poses is not None:
            rays = camera_rays(test_poses[i], scene.intrinsics[i], scene.width, scene.height,
                               scene.near, scene.far, scene.distortion[i], scene.ndc, i)
        out = renderer(state, rays, config.render_chunk_size, jax.device_count())
        gt = scene.images[i]
        result = metrics.evaluate_image(out["rgb"], gt, lpips_fn)
        name = os.path.splitext(os.path.basename(scene.names[i]))[0]
        result = {"name": name, **{k: float(v) for k, v in result.items()}}
        per_image.append(result)
        outputs.write_png(os.path.join(out_dir, f"{name}.png"), out["rgb"])
        outputs.write_png(os.path.join(out_dir, f"{name}_depth.png"),
                          outputs.depth_to_image(out["distance_median"], out["acc"]))
        logging.info("eval %d/%d %s: psnr %.2f ssim %.4f lpips %s", i + 1, count, name,
                     result["psnr"], result["ssim"], result.get("lpips"))
    summary = {"step": int(state.step), "num_images": count}
    for key in ("psnr", "ssim", "lpips"):
        values = [r[key] for r in per_image if r.get(key) is not None]
        summary[key] = float(np.mean(values)) if values else None
    summary.update(pose_report)
    summary["per_image"] = per_image
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    logging.info("mean over %d test views: psnr %.3f ssim %.4f lpips %s", count,
                 summary["psnr"], summary["ssim"], summary["lpips"])
    return summary


def _test_poses(config, model, state, train, test) -> tuple:
    """({'poses': errors before and after}, test poses `[N, 3, 4]` in the optimised frame)."""
    from jaxnerf360 import poses

    initial = poses.initial(train.camtoworlds, config.pose_noise, config.pose_init, config.seed)
    current = poses.current(initial, jax.device_get(state.params["poses"]))
    before = poses.pose_errors(initial, train.camtoworlds)
    after = poses.pose_errors(current, train.camtoworlds)
    report = {"poses": {
        "rotation_deg_before": before["rotation_deg"], "translation_before": before["translation"],
        "rotation_deg": after["rotation_deg"], "translation": after["translation"],
        "rotation_deg_orientation_fit": after["rotation_deg_orientation_fit"],
        "note": "mean over training views after Sim(3) alignment of camera centres to the "
                "truth (none for coinciding centres, e.g. identity poses); translation in "
                "scene units (the loader's normalised world); rotation_deg_orientation_fit: "
                "after the rotation fitted to the orientations instead (a diagnostic)",
        "test_pose_steps": config.test_pose_steps}}
    logging.info("training poses: rotation %.3f -> %.3f deg, translation %.4f -> %.4f "
                 "(scene units, after Sim(3) alignment of distinct centres); rotation %.3f deg "
                 "after a fit of the orientations", before["rotation_deg"],
                 after["rotation_deg"], before["translation"], after["translation"],
                 after["rotation_deg_orientation_fit"])
    test_poses = poses.unalign(test.camtoworlds, after["align"])
    if config.test_pose_steps > 0:
        test_poses = _refine_test_poses(config, model, state, test, test_poses)
    return report, test_poses


def _refine_test_poses(config, model, state, scene, init) -> np.ndarray:
    """Each test pose refined by Config.test_pose_steps photometric Adam steps, field frozen."""
    import jax.numpy as jnp
    import optax

    from jaxnerf360 import optim, poses
    from jaxnerf360.data import views as views_lib
    from jaxnerf360.model import background_colors

    params = {k: v for k, v in state.params.items() if k != "poses"}
    steps = config.test_pose_steps
    tx = optax.adam(lambda t: optim.log_linear_lr(t, config.test_pose_lr_init,
                                                  config.test_pose_lr_final, steps))

    def loss(xi, views, pixels, rgb):
        rays = poses.corrected_rays(views, {"xi": xi[None]}, pixels,
                                    jnp.zeros(pixels.shape[:-1], jnp.int32))
        bg = background_colors(config.background, rays.origins.shape[:-1])
        out = model.apply({"params": params}, None, rays, 1.0, bg, occupancy=state.occupancy)
        return jnp.mean(jnp.square(out["rgb"] - rgb))

    @jax.jit
    def step(xi, opt_state, views, pixels, rgb):
        value, grad = jax.value_and_grad(loss)(xi, views, pixels, rgb)
        updates, opt_state = tx.update(grad, opt_state)
        return optax.apply_updates(xi, updates), opt_state, value

    rng = np.random.default_rng(config.seed)
    out = np.array(init)
    test_views = views_lib.from_scene(scene)
    for i in range(init.shape[0]):
        single = test_views.replace(camtoworlds=jnp.asarray(init[i:i + 1]),
                                    intrinsics=test_views.intrinsics[i:i + 1],
                                    distortion=test_views.distortion[i:i + 1])
        xi = jnp.zeros(6)
        opt_state = tx.init(xi)
        for _ in range(steps):
            flat = rng.integers(0, scene.height * scene.width, config.test_pose_batch)
            rows, cols = np.divmod(flat, scene.width)
            pixels = np.stack([cols, rows], -1).astype(np.float32) + 0.5
            xi, opt_state, value = step(xi, opt_state, single, pixels, scene.images[i][rows, cols])
        out[i] = np.asarray(poses.correct(jnp.asarray(init[i]), xi))
        logging.info("test pose %d/%d refined: %d steps, final batch mse %.5f", i + 1,
                     init.shape[0], steps, float(value))
    return out


def main(_):
    """Entry point."""
    evaluate(cli.load_run(), flags.FLAGS.compressed)


if __name__ == "__main__":
    cli.run(main)
