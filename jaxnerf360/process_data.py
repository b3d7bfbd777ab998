"""Turns your own photos or video into a scene: `python -m jaxnerf360.process_data`.

    python -m jaxnerf360.process_data --input=PHOTOS_OR_VIDEO --output=SCENE

A video is cut into `--num_frames` equal windows and the sharpest frame of each (variance of
the Laplacian) is kept; a folder's photos are all used. pycolmap then runs structure from
motion: SIFT features (`--camera_model`, one camera per folder by default), exhaustive matching
up to 100 images and sequential matching beyond, and incremental mapping; the largest model is
kept, and fewer than `--min_registered` of the images registered is an error naming the rest.
SCENE gets `images/` (the registered images; any others move to `unregistered/`),
`images_2/`, `images_4/`, `images_8/` (area-downsampled), `sparse/0/` (COLMAP binary model),
`poses_bounds.npy` (LLFF's format, for forward-facing configs) and `colmap/` (the database and
every model, for inspection). `--undistort` (automatic for camera models the loaders refuse)
undistorts the images to PINHOLE cameras first.
"""

import shutil
import time
from pathlib import Path

import numpy as np
from absl import flags, logging

from jaxnerf360 import cli
from jaxnerf360.data import colmap, frames, sfm
from jaxnerf360.errors import UserError

flags.DEFINE_string("input", None, "A folder of photos (.png/.jpg) or a video file.")
flags.DEFINE_string("output", None, "The scene folder to write (created if needed).")
flags.DEFINE_integer("num_frames", 300, "Video: frames to keep (the sharpest of each window).")
flags.DEFINE_string("camera_model", "SIMPLE_RADIAL", "COLMAP camera model (SIMPLE_PINHOLE, "
                    "PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, OPENCV_FISHEYE, ...).")
flags.DEFINE_enum("camera_mode", "per_folder", sfm.CAMERA_MODES,
                  "One camera for every image of the folder, for all, or one per image.")
flags.DEFINE_enum("matching", "auto", sfm.MATCHERS, "Feature matching; auto: exhaustive up to "
                  f"{sfm.EXHAUSTIVE_UP_TO} images, else sequential (neighbours in name order).")
flags.DEFINE_float("min_registered", 0.5, "Least fraction of the images that must be "
                   "registered.")
flags.DEFINE_bool("undistort", False, "Undistort the images to PINHOLE cameras.")
FLAGS = flags.FLAGS


def process(source: Path, out: Path, *, num_frames: int = 300, camera_model="SIMPLE_RADIAL",
            camera_mode="per_folder", matching="auto", min_registered=0.5,
            undistort=False, log=logging.info) -> dict:
    """Builds the scene folder `out` from the photos or video `source`; a summary dict."""
    start = time.time()
    images = out / "images"
    if images.is_dir() and images.resolve() != source.resolve():
        shutil.rmtree(images)  # a rerun: SfM reads the whole folder, so no stale frames
    if frames.is_video(source):
        names = frames.sample_video(source, num_frames, images, log)
    elif source.is_dir():
        names = frames.gather_images(source, images)
        log(f"images: {len(names)} photos from {source}")
    else:
        raise UserError(f"{source}: not found, or neither a folder of images nor a video "
                        f"({', '.join(frames.VIDEO_SUFFIXES)}); check --input")
    rec = sfm.reconstruct(images, out / "colmap", camera_model, camera_mode, matching, log)
    failed = sfm.check_registered(rec, names, min_registered, source)
    if failed:
        (out / "unregistered").mkdir(exist_ok=True)
        for name in failed:
            shutil.move(images / name, out / "unregistered" / name)
        log(f"moved {len(failed)} unregistered image(s) to {out / 'unregistered'}")
    refused = any(colmap.model_name(c) not in colmap.CAMERA_MODELS for c in rec.cameras.values())
    if undistort or refused:
        largest = out / "colmap" / "largest"
        largest.mkdir(parents=True, exist_ok=True)
        rec.write(largest)
        undistorted, model = sfm.undistort(largest, images, out / "colmap")
        shutil.rmtree(images)
        shutil.copytree(undistorted, images)
        rec = type(rec)(model)
        log("undistorted the images to PINHOLE cameras" + (
            f" ({camera_model} is not read by the loaders)" if refused and not undistort else ""))
    sparse = out / "sparse" / "0"
    shutil.rmtree(sparse, ignore_errors=True)
    sparse.mkdir(parents=True)
    rec.write(sparse)
    np.save(out / "poses_bounds.npy", sfm.poses_bounds(rec))
    frames.write_downscaled(images)
    summary = {
        "registered": len(names) - len(failed), "images": len(names),
        "reprojection_error": float(rec.compute_mean_reprojection_error()),
        "points": int(rec.num_points3D()), "forward_facing": sfm.looks_forward(rec),
        "seconds": time.time() - start,
    }
    return summary


def train_command(out: Path, forward_facing: bool) -> str:
    """The command that trains on the scene folder `out`."""
    config = "configs/llff.gin" if forward_facing else "configs/360.gin"
    return (f"python -m jaxnerf360.train --gin_configs={config} --gin_bindings=\"Config.data_dir="
            f"'{out}'\" --gin_bindings=\"Config.checkpoint_dir='runs/{out.name}'\"")


def main(_):
    """Runs `process` on the flags and prints the summary line."""
    if not FLAGS.input or not FLAGS.output:
        raise UserError("give --input (a folder of photos or a video) and --output (the scene "
                        "folder to write)")
    out = Path(FLAGS.output)
    summary = process(Path(FLAGS.input), out, num_frames=FLAGS.num_frames,
                      camera_model=FLAGS.camera_model, camera_mode=FLAGS.camera_mode,
                      matching=FLAGS.matching, min_registered=FLAGS.min_registered,
                      undistort=FLAGS.undistort)
    print(f"{out}: {summary['registered']}/{summary['images']} images registered, mean "
          f"reprojection error {summary['reprojection_error']:.2f} px, {summary['points']} "
          f"points, {summary['seconds']:.0f} s. Train on it with:\n  "
          + train_command(out, summary["forward_facing"]))


if __name__ == "__main__":
    cli.run(main)
