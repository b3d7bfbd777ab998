"""Renders a camera path of a trained run to MP4 and PNG frames: `python -m jaxnerf360.render`.

Writes `render/rgb.mp4`, `render/depth.mp4`, `render/frames/*.png` and
`render/metrics.json` (the path's reprojective colour consistency, RCC) under
Config.checkpoint_dir. The path is an ellipse around 360 and object scenes, a spiral
for forward-facing scenes, an interpolation through the training cameras, or nerfstudio's
camera-path JSON (`--camera_path=path.json`, `camera_path_file`).
"""

import json
import os
import shutil

import jax
import numpy as np
from absl import flags, logging

from jaxnerf360 import camera_path_file, cli, consistency, outputs, parallel, rendering
from jaxnerf360.cameras import Cameras
from jaxnerf360.data import load_split
from jaxnerf360.errors import UserError
from jaxnerf360.rendering import Renderer
from jaxnerf360.trained import load_trained

flags.DEFINE_integer("frames", None, "Override Config.render_frames.")
flags.DEFINE_string("camera_path", None, "Render nerfstudio's camera-path JSON (its cameras, "
                    "size and fps) instead of Config.render_path.")


def render_path(config, n_frames=None, compressed_path: str | None = None,
                camera_path: str | None = None) -> str:
    """Renders the path (of a run, or of a compressed scene file), or the cameras of a
    `camera_path` file; returns the output directory.

    Also writes `render/metrics.json`: the path's reprojective colour consistency (RCC).
    """
    n_frames = n_frames or config.render_frames
    # With several processes each renders its share of the frames on its own devices.
    mesh = parallel.local_mesh() if jax.process_count() > 1 else parallel.make_mesh(
        config.mesh_shape, fallback=True)
    scene = load_split(config, "train")
    cameras = Cameras(scene, seed=config.seed)
    learned = cameras.learned and not compressed_path
    model, state = load_trained(config, scene, mesh, compressed_path,
                                scene if learned else None)
    if learned:  # the path follows the optimised cameras, in the frame the field learnt
        scene.camtoworlds = cameras.current(state.params)
    renderer = Renderer(model, mesh, config.background, config.render_chunk_size)
    fps = config.render_fps
    if camera_path:
        views, file_fps = camera_path_file.read(camera_path, scene, config.render_factor)
        views = [rendering.cut_to(view, renderer.upsample) for view in views]
        n_frames, fps = len(views), file_fps or fps
    else:
        views = rendering.path_of(config, scene, n_frames, multiple=renderer.upsample)
    out_dir = os.path.join(config.checkpoint_dir, "render")

    mine = parallel.share(n_frames)

    def write_frame(j, rgb):
        outputs.write_png(os.path.join(out_dir, "frames", f"rgb_{mine[j]:04d}.png"), rgb)
        logging.info("frame %d/%d", mine[j] + 1, n_frames)

    frames = rendering.render_views(renderer, state, [views[i] for i in mine], write_frame)
    if jax.process_count() > 1:
        frames = _gathered(frames, mine, n_frames, os.path.join(out_dir, "parts"))
        if frames is None:  # process 0 writes the videos and the metrics
            return out_dir
    # One normalisation for the whole depth video, so brightness does not flicker.
    lo, hi = outputs.depth_range(frames["depth"], frames["acc"])
    depth_frames = [outputs.depth_to_image(d, a, lo=lo, hi=hi)
                    for d, a in zip(frames["depth"], frames["acc"], strict=True)]
    for i, d in enumerate(depth_frames):
        outputs.write_png(os.path.join(out_dir, "frames", f"depth_{i:04d}.png"), d)
    outputs.write_video(os.path.join(out_dir, "rgb.mp4"), frames["rgb"], fps)
    outputs.write_video(os.path.join(out_dir, "depth.mp4"), np.stack(depth_frames), fps)
    if n_frames >= 2 and jax.process_index() == 0:
        summary = {"step": int(state.step), "rcc": consistency.path_consistency(frames, views)}
        with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    logging.info("wrote %d frames to %s", n_frames, out_dir)
    return out_dir


def _gathered(frames: dict, mine: list, n_frames: int, parts: str) -> dict | None:
    """On process 0, every process's frames in order (each passes its own through `parts`, a
    folder beside the frames); None on the others."""
    os.makedirs(parts, exist_ok=True)
    for j, i in enumerate(mine):
        np.savez(os.path.join(parts, f"{i:04d}.npz"), **{k: v[j] for k, v in frames.items()})
    parallel.barrier("render frames written")
    if jax.process_index() != 0:
        return None
    loaded = [np.load(os.path.join(parts, f"{i:04d}.npz")) for i in range(n_frames)]
    out = {k: np.stack([f[k] for f in loaded]) for k in frames}
    shutil.rmtree(parts)
    return out


def main(_):
    """Entry point."""
    frames = flags.FLAGS.frames
    if frames is not None and frames <= 0:  # checked before anything loads
        raise UserError(f"--frames={frames} must be a positive number of frames")
    render_path(cli.load_run(), frames, flags.FLAGS.compressed, flags.FLAGS.camera_path)


if __name__ == "__main__":
    cli.run(main)
