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
from jaxnerf360.data.cameras import image_rays


def evaluate(config: configs.Config, compressed: str | None = None) -> dict:
    """Renders every test view, writes images and metrics.json; returns the metrics."""
    mesh = parallel.make_mesh()
    scene = load_split(config, "test")
    model, state = pipeline.load_trained(config, scene.kind, mesh, compressed)
    renderer = pipeline.Renderer(model, mesh, config.background)
    lpips_fn = None if config.lpips_net == "none" else metrics.LPIPS(config.lpips_net)
    out_dir = os.path.join(config.checkpoint_dir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    count = scene.num_images if config.eval_max_images is None else min(
        scene.num_images, config.eval_max_images)
    per_image = []
    for i in range(count):
        out = renderer(state, image_rays(scene, i),
                                   config.render_chunk_size, jax.device_count())
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
    summary["per_image"] = per_image
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    logging.info("mean over %d test views: psnr %.3f ssim %.4f lpips %s", count,
                 summary["psnr"], summary["ssim"], summary["lpips"])
    return summary


def main(_):
    """Entry point."""
    evaluate(cli.load_run(), flags.FLAGS.compressed)


if __name__ == "__main__":
    cli.run(main)
