"""The live viewer's frame rate, and what a watching browser costs a training run.

    python scripts/viewer_speed.py --checkpoint_dir=runs/quickstart [--screenshot=docs/viewer.png]

1. Frames per second of `Viewer.render` for the run's model at the default resolution (128
   pixels high) and at the quarter resolution shown while the camera moves.
2. Training steps per second of the run's config, with no viewer, then with the viewer
   serving headless Chromium (Debian's `chromium`) whose camera is marked as moving at every
   step (the worst case: the viewer renders all the time it is allowed), blocks of steps
   taking turns; the ratio is the slowdown a watching browser causes.
With `--screenshot`, the page in headless Chromium is saved there (docs/viewer.png).
"""

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxnerf360 import cli, parallel, trained, training  # noqa: E402
from jaxnerf360.data import load_split  # noqa: E402
from jaxnerf360.viewer import Viewer, free_port  # noqa: E402
from tests import browser  # noqa: E402

flags.DEFINE_string("screenshot", None, "Save the page in headless Chromium here.")
flags.DEFINE_integer("rounds", 4, "Blocks of training steps with and without the viewer.")
flags.DEFINE_integer("block", 20, "Training steps per block.")
FLAGS = flags.FLAGS


def frames_per_second(viewer, scene, height: int, repeats: int = 5) -> float:
    """Renders per second of the first training camera at `height` (square pixels)."""
    fov = 2 * np.arctan(0.5 * scene.height / scene.intrinsics[0, 1])
    width = round(height * scene.width / scene.height)
    viewer.render(scene.camtoworlds[0], fov, width, height)  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        viewer.render(scene.camtoworlds[0], fov, width, height)
    return repeats / (time.perf_counter() - start)


def main(_):
    """Prints one JSON object."""
    config = cli.load_run()
    mesh = parallel.make_mesh()
    scene = load_split(config, "train")
    model, state = trained.load_trained(config, scene, mesh)
    viewer = Viewer(model, scene, mesh, config.background, free_port(),
                    chunk=config.render_chunk_size)
    viewer.update(state, int(state.step))
    full = int(viewer.resolution.value)
    out = {"resolution": full, "fps": frames_per_second(viewer, scene, full),
           "fps_moving": frames_per_second(viewer, scene, max(16, full // 4))}
    page = None
    if browser.chromium() is not None:
        page = browser.Page(f"http://127.0.0.1:{viewer.port}/", free_port(), 1000, 640)
        deadline = time.time() + 120
        while time.time() < deadline and full not in viewer.rendered().values():
            time.sleep(0.5)
        time.sleep(3)
        if FLAGS.screenshot:
            Path(FLAGS.screenshot).write_bytes(page.screenshot())
    run = training.Training(config, scene, mesh)
    run.start()
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    batches = [run.next_batch() for _ in range(4)]

    def block(watched: bool) -> float:
        start = time.perf_counter()
        for i in range(FLAGS.block):
            run.state, stats = run.step(run.state, batches[i % 4], key)
            if watched:  # the worst case: a browser whose camera never stops moving
                viewer.refresh(moving=True)
        jax.block_until_ready(stats)
        return FLAGS.block / (time.perf_counter() - start)

    block(False)
    plain, watched = [], []
    for _ in range(FLAGS.rounds):
        plain.append(block(False))
        watched.append(block(page is not None))
    out.update(train_steps_per_sec=float(np.median(plain)),
               train_steps_per_sec_watched=float(np.median(watched)),
               slowdown=float(np.median(np.array(plain) / np.array(watched))),
               browser=page is not None)
    if page is not None:
        page.close()
    viewer.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    app.run(main)
