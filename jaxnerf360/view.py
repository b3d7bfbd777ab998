"""A live web viewer of a trained scene: `python -m jaxnerf360.view --checkpoint_dir=RUN`.

Serves the viewer (`jaxnerf360/viewer.py`, built on viser) on http://HOST:PORT until Ctrl-C:
the training cameras, the scene rendered from the browser's camera (rgb, depth or opacity, at a
resolution that adapts while the camera moves), and a camera-path recorder. `--compressed`
views a .jnrf file instead. During training, `Config.viewer_port` serves the same viewer.
"""

import time

from absl import flags, logging

from jaxnerf360 import cli, parallel
from jaxnerf360.cameras import Cameras
from jaxnerf360.data import load_split
from jaxnerf360.errors import UserError
from jaxnerf360.trained import load_trained

flags.DEFINE_integer("port", 8080, "The viewer's port.")
flags.DEFINE_string("host", "127.0.0.1", "The address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("resolution", 128, "Image height rendered once the camera is still.")
flags.DEFINE_float("seconds", 0, "Stop after this many seconds (0: on Ctrl-C).")
FLAGS = flags.FLAGS


def open_viewer(config, compressed_path=None, port: int = 8080, host: str = "127.0.0.1",
                resolution: int = 128):
    """The Viewer of a trained run (or compressed file), showing its state."""
    from jaxnerf360.viewer import Viewer

    if not 0 < port < 65536:
        raise UserError(f"--port={port} must be a port number (1 to 65535)")
    mesh = parallel.make_mesh(config.mesh_shape, fallback=True)
    scene = load_split(config, "train")
    learned = Cameras().learned and not compressed_path
    model, state = load_trained(config, scene, mesh, compressed_path, scene if learned else None)
    if learned:
        scene.camtoworlds = Cameras(scene, seed=config.seed).current(state.params)
    viewer = Viewer(model, scene, mesh, config.background, port, host,
                    config.render_chunk_size, resolution)
    viewer.update(state, step=int(state.step))
    return viewer


def main(_):
    """Entry point."""
    viewer = open_viewer(cli.load_run(), FLAGS.compressed, FLAGS.port, FLAGS.host,
                         FLAGS.resolution)
    url = f"http://{FLAGS.host}:{viewer.port}"
    logging.info("viewer at %s (Ctrl-C to stop)", url)
    print(f"viewer at {url} (Ctrl-C to stop)", flush=True)
    try:
        end = time.time() + FLAGS.seconds if FLAGS.seconds > 0 else float("inf")
        while time.time() < end:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()


if __name__ == "__main__":
    cli.run(main)
