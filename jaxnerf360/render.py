"""Renders a camera path of a trained run to MP4 and PNG frames: `python -m jaxnerf360.render`.

Writes `render/rgb.mp4`, `render/depth.mp4` and `render/frames/*.png` under
Config.checkpoint_dir. The path is an ellipse around 360 and object scenes, a spiral
for forward-facing scenes, or an interpolation through the training cameras.
"""

import os

import jax
import numpy as np
from absl import flags, logging

from jaxnerf360 import camera_paths, cli, outputs, parallel, pipeline
from jaxnerf360.data import load_split
from jaxnerf360.data.cameras import camera_rays

flags.DEFINE_integer("frames", None, "Override Config.render_frames.")


def render_path(config, n_frames=None, compressed: str | None = None) -> str:
    """Renders the path (of a run, or of a compressed scene file); returns the output directory."""
    n_frames = n_frames or config.render_frames
    mesh = parallel.make_mesh()
    scene = load_split(config, "train")
    num_poses = scene.num_images if config.optimize_poses and not compressed else 0
    model, state = pipeline.load_trained(config, scene.kind, mesh, compressed, num_poses)
    if num_poses:  # the path follows the optimised cameras, in the frame the field learnt
        from jaxnerf360 import poses

        initial = poses.initial(scene.camtoworlds, config.pose_noise, config.pose_init,
                                config.seed)
        scene.camtoworlds = poses.current(initial, jax.device_get(state.params["poses"]))
    renderer = pipeline.Renderer(model, mesh, config.background)
    poses = camera_paths.make_path(config.render_path, scene.camtoworlds, n_frames, scene.kind)
    f = config.render_factor
    width, height = scene.width // f, scene.height // f
    intrinsics = scene.intrinsics[0] / np.array([f, f, f, f], np.float32)
    out_dir = os.path.join(config.checkpoint_dir, "render")
    rgbs, depths = [], []
    for i, pose in enumerate(poses):
        rays = camera_rays(pose, intrinsics, width, height, scene.near, scene.far, ndc=scene.ndc)
        out = renderer(state, rays, config.render_chunk_size,
                                   jax.device_count())
        rgbs.append(np.clip(out["rgb"], 0, 1))
        depths.append(out["distance_median"])
        outputs.write_png(os.path.join(out_dir, "frames", f"rgb_{i:04d}.png"), rgbs[-1])
        logging.info("frame %d/%d", i + 1, n_frames)
    # One normalisation for the whole depth video, so brightness does not flicker.
    inv = 1.0 / np.maximum(np.stack(depths), 1e-6)
    lo, hi = np.percentile(inv, 1), np.percentile(inv, 99)
    depth_frames = [outputs.depth_to_image(d, lo=lo, hi=hi) for d in depths]
    for i, d in enumerate(depth_frames):
        outputs.write_png(os.path.join(out_dir, "frames", f"depth_{i:04d}.png"), d)
    outputs.write_video(os.path.join(out_dir, "rgb.mp4"), np.stack(rgbs), config.render_fps)
    outputs.write_video(os.path.join(out_dir, "depth.mp4"), np.stack(depth_frames),
                        config.render_fps)
    logging.info("wrote %d frames to %s", n_frames, out_dir)
    return out_dir


def main(_):
    """Entry point."""
    render_path(cli.load_run(), flags.FLAGS.frames, flags.FLAGS.compressed)


if __name__ == "__main__":
    cli.run(main)
