"""How far a run's image registration is from the known misalignment of its training images.

    python scripts/registration_error.py --run=runs/misaligned_lego200_cpu

For each registration the run made (`RUN/registration/STEP.npy`), the mean over training
images of the mean distance, over pixel centres, between the fitted map and the true one
(the inverse of `Misalign`'s perturbation, from the run's saved config), beside the
misalignment itself (the distance of the true map from the identity).
"""

import glob
import os

import gin
import numpy as np
from absl import app, flags

from jaxnerf360 import configs
from jaxnerf360.data.misalign import Misalign, inverse_map
from jaxnerf360.registration import map_distance

flags.DEFINE_string("run", None, "A run directory with a registration/ folder.")
flags.DEFINE_integer("size", 200, "The training images' width and height, in pixels.")
FLAGS = flags.FLAGS


def main(_):
    configs.parse_gin([os.path.join(FLAGS.run, "config.gin")], [])
    misalign = Misalign()
    gin.clear_config()
    files = sorted(glob.glob(os.path.join(FLAGS.run, "registration", "*.npy")),
                   key=lambda f: int(os.path.basename(f).split(".")[0]))
    if not files:
        raise SystemExit(f"{FLAGS.run}/registration holds no maps")
    first = np.load(files[0])
    truth = np.stack([inverse_map(d, FLAGS.size, FLAGS.size)
                      for d in misalign.draws(len(first))])
    moved = map_distance(truth, np.eye(3), FLAGS.size, FLAGS.size)
    print(f"misalignment: mean {moved.mean():.3f} px")
    for path in files:
        err = map_distance(np.load(path), truth, FLAGS.size, FLAGS.size)
        step = os.path.basename(path).split(".")[0]
        print(f"step {step}: error mean {err.mean():.3f} px, median {np.median(err):.3f}, "
              f"largest {err.max():.3f}")


if __name__ == "__main__":
    flags.mark_flag_as_required("run")
    app.run(main)
