"""How far a run's image registration is from the known misalignment of its training images.

    python scripts/registration_error.py --run=runs/misaligned_lego200_cpu

For each registration the run made (`RUN/registration/STEP.npy`), or for the image maps it
learned (`Cameras.image_maps`, from its latest checkpoint), the mean over training images of
the mean distance, over pixel centres, between the fitted map and the true one (the inverse
of `Misalign`'s perturbation, from the run's saved config), beside the misalignment itself
(the distance of the true map from the identity).
"""

import glob
import os

import gin
import numpy as np
from absl import app, flags

from jaxnerf360 import configs
from jaxnerf360.data.misalign import Misalign, inverse_map
from jaxnerf360.image_maps import map_distance

flags.DEFINE_string("run", None, "A run directory with a registration/ folder, or one that "
                                 "learned image maps.")
flags.DEFINE_integer("size", 200, "The training images' width and height, in pixels.")
FLAGS = flags.FLAGS


def learned_maps(run: str) -> dict:
    """{step: [N, 3, 3]} the image maps of `run`'s latest checkpoint (empty: none learned)."""
    from jaxnerf360 import parallel
    from jaxnerf360.cameras import Cameras
    from jaxnerf360.data import load_split
    from jaxnerf360.trained import load_trained

    config = configs.load(checkpoint_dir=run)
    cameras = Cameras()
    if cameras.image_maps == "none":
        return {}
    scene = load_split(config, "train")
    _, state = load_trained(config, scene, parallel.make_mesh(config.mesh_shape,
                                                              fallback=True), None, scene)
    return {int(state.step): cameras.map_matrices(state.params, scene.height, scene.width)}


def main(_):
    files = sorted(glob.glob(os.path.join(FLAGS.run, "registration", "*.npy")),
                   key=lambda f: int(os.path.basename(f).split(".")[0]))
    maps = {int(os.path.basename(f).split(".")[0]): np.load(f) for f in files}
    if not maps:
        maps = learned_maps(FLAGS.run)
    if not maps:
        raise SystemExit(f"{FLAGS.run} holds no registration maps and learned no image maps")
    configs.parse_gin([os.path.join(FLAGS.run, "config.gin")], [])
    misalign = Misalign()
    gin.clear_config()
    first = next(iter(maps.values()))
    truth = np.stack([inverse_map(d, FLAGS.size, FLAGS.size)
                      for d in misalign.draws(len(first))])
    moved = map_distance(truth, np.eye(3), FLAGS.size, FLAGS.size)
    print(f"misalignment: mean {moved.mean():.3f} px")
    for step, found in maps.items():
        err = map_distance(found, truth, FLAGS.size, FLAGS.size)
        print(f"step {step}: error mean {err.mean():.3f} px, median {np.median(err):.3f}, "
              f"largest {err.max():.3f}")


if __name__ == "__main__":
    flags.mark_flag_as_required("run")
    app.run(main)
