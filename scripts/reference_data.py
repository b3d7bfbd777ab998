"""Writes a Blender scene as our loader sees it, for the original codes to train on.

    python scripts/reference_data.py --data_dir=../shared/data/nerf_synthetic/lego \
        --factor=8 --out=/tmp/lego100

Side-by-side runs of TensoRF's and multinerf's own code (BENCHMARKS.md, issue 19) need the
images that `jaxnerf360.data.blender.load` trains on: composited on white, then area-filtered
by `factor`. TensoRF's Blender loader cannot downsample (it resets its factor before resizing)
and multinerf composites after filtering, so each reads this copy at full size instead: the
same `transforms_*.json` files, and every image as an 8-bit RGBA PNG with opaque alpha (8-bit
rounding moves a pixel by at most 1/510).
"""

import os
import shutil

import numpy as np
from absl import flags
from PIL import Image

from jaxnerf360 import cli
from jaxnerf360.data import blender
from jaxnerf360.errors import UserError

flags.DEFINE_string("data_dir", "../shared/data/nerf_synthetic/lego", "A Blender scene.")
flags.DEFINE_integer("factor", 8, "The downsampling factor (area filter).")
flags.DEFINE_string("out", None, "Where to write the copy.")
FLAGS = flags.FLAGS


def to_rgba8(image: np.ndarray) -> np.ndarray:
    """`[H, W, 3]` floats in [0, 1] -> `[H, W, 4]` uint8 with opaque alpha."""
    rgb = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)


def main(_):
    if not FLAGS.out:
        raise UserError("--out is required: the directory to write the copy to")
    written = 0
    for split in ("train", "test", "val"):
        json_path = os.path.join(FLAGS.data_dir, f"transforms_{split}.json")
        if not os.path.exists(json_path):
            continue
        scene = blender.load(FLAGS.data_dir, split, factor=FLAGS.factor)
        for name, image in zip(scene.names, np.asarray(scene.images), strict=True):
            path = os.path.join(FLAGS.out, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(to_rgba8(image), "RGBA").save(path)
        shutil.copy(json_path, FLAGS.out)
        print(f"{split}: {scene.num_images} images of {scene.width}x{scene.height}")
        written += 1
    if not written:
        raise UserError(f"--data_dir={FLAGS.data_dir} holds no transforms_train/test/val.json; "
                        "give a Blender scene's directory")


if __name__ == "__main__":
    cli.run(main)
