"""A trained run restored for evaluation, rendering and export: its model and state, from
Config.checkpoint_dir or a compressed scene file."""

from jaxnerf360 import checkpoints, compressed, parallel
from jaxnerf360.cameras import Cameras
from jaxnerf360.errors import UserError
from jaxnerf360.model import FIELD
from jaxnerf360.train_step import init_state
from jaxnerf360.training import assemble, restore_at


def restore_trained(config, scene_kind: str, mesh, num_cameras: int = 0) -> tuple:
    """(model, state) of the trained run in Config.checkpoint_dir, for rendering.

    `num_cameras` is the number of training views, needed when the run learned their poses.
    """
    cameras = Cameras()
    model, _, tx = assemble(config, scene_kind, cameras)
    camera_params = cameras.init_params(num_cameras) if cameras.learned else None

    def place(state):
        return parallel.place(state, parallel.state_shardings(state, mesh, model.parts()))

    state = place(init_state(model, tx, config.seed, camera_params,
                             cameras.init_state(num_cameras)))
    mgr = checkpoints.manager(config.checkpoint_dir, config.checkpoint_keep)
    restored = restore_at(mgr, state, model.parts()[FIELD], config.checkpoint_dir, place)
    if restored is None:
        raise UserError(f"{config.checkpoint_dir}: no checkpoint found; train first with "
                        "python -m jaxnerf360.train")
    return model, restored


def load_trained(config, scene, mesh, compressed_path: str | None = None,
                 train_scene=None) -> tuple:
    """(model, state) of the trained run in `config`, or of a compressed scene file.

    A run that learned corrections per training view (poses, image maps) holds one per view:
    their number comes from `train_scene`, or else from loading the training split.
    """
    if compressed_path:
        return compressed.restore(compressed_path, scene.kind, mesh)
    if train_scene is None and Cameras().learned:
        from jaxnerf360.data import load_split

        train_scene = load_split(config, "train")
    views = 0 if train_scene is None else train_scene.num_images
    return restore_trained(config, scene.kind, mesh, views)
