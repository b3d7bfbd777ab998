"""Renders a camera path of a trained run to MP4 and PNG frames: `python -m jaxnerf360.render`.

Writes `render/rgb.mp4`, `render/depth.mp4` and `render/frames/*.png` under
Config.checkpoint_dir. The path is an ellipse around 360 and object scenes, a spiral
for forward-facing scenes, or an interpolation through the training cameras.
"""

import os

import numpy as np
from absl import flags, logging

from jaxnerf360 import camera_paths, cli, outputs, parallel
from jaxnerf360.cameras import Cameras
from jaxnerf360.data import load_split
from jaxnerf360.data.cameras import View
from jaxnerf360.errors import UserError
from jaxnerf360.rendering import Renderer
from jaxnerf360.training import load_trained

flags.DEFINE_integer("frames", None, "Override Config.render_frames.")


def render_path(config, n_frames=None, compressed_path: str | None = None) -> str:
    """Renders the path (of a run, or of a compressed scene file); returns the output directory."""
    n_frames = n_frames or config.render_frames
    mesh = parallel.make_mesh()
    scene = load_split(config, "train")
    cameras = Cameras(scene, seed=config.seed)
    learned = cameras.optimize_poses and not compressed_path
    model, state = load_trained(config, scene, mesh, compressed_path,
                                scene if learned else None)
    if learned:  # the path follows the optimised cameras, in the frame the field learnt
        scene.camtoworlds = cameras.current(state.params)
    renderer = Renderer(model, mesh, config.background, config.render_chunk_size)
    path = camera_paths.make_path(config.render_path, scene.camtoworlds, n_frames, scene.kind)
    f = config.render_factor
    out_dir = os.path.join(config.checkpoint_dir, "render")
    rgbs, depths, accs = [], [], []
    for i, pose in enumerate(path):
        view = View(camtoworld=pose, intrinsics=scene.intrinsics[0] / np.float32(f),
                    width=scene.width // f, height=scene.height // f, near=scene.near,
                    far=scene.far, ndc=scene.ndc)
        out = renderer.image(state, view)
        rgbs.append(np.clip(out["rgb"], 0, 1))
        depths.append(out["distance_median"])
        accs.append(out["acc"])
        outputs.write_png(os.path.join(out_dir, "frames", f"rgb_{i:04d}.png"), rgbs[-1])
        logging.info("frame %d/%d", i + 1, n_frames)
    # One normalisation for the whole depth video, so brightness does not flicker.
    lo, hi = outputs.depth_range(np.stack(depths), np.stack(accs))
    depth_frames = [outputs.depth_to_image(d, a, lo=lo, hi=hi) for d, a in zip(depths, accs,
                                                                               strict=True)]
    for i, d in enumerate(depth_frames):
        outputs.write_png(os.path.join(out_dir, "frames", f"depth_{i:04d}.png"), d)
    outputs.write_video(os.path.join(out_dir, "rgb.mp4"), np.stack(rgbs), config.render_fps)
    outputs.write_video(os.path.join(out_dir, "depth.mp4"), np.stack(depth_frames),
                        config.render_fps)
    logging.info("wrote %d frames to %s", n_frames, out_dir)
    return out_dir


def main(_):
    """Entry point."""
    frames = flags.FLAGS.frames
    if frames is not None and frames <= 0:  # checked before anything loads
        raise UserError(f"--frames={frames} must be a positive number of frames")
    render_path(cli.load_run(), frames, flags.FLAGS.compressed)


if __name__ == "__main__":
    cli.run(main)
