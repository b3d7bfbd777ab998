"""Scenes, rays and batches: from a folder of posed images to training rays."""


def load_split(config, split: str):
    """Loads the `split` ('train' or 'test') of the scene that `config` names."""
    from jaxnerf360.data import loaders, misalign

    # Images are composited on the fixed background ('random' trains on white images and
    # re-composites each step's target where alpha shows the background).
    background = (0.0,) * 3 if config.background == "black" else (1.0,) * 3
    scene = loaders.load_scene(
        config.dataset_loader, config.data_dir, split, factor=config.factor,
        background=background, llff_hold=config.llff_hold,
        forward_facing=config.forward_facing, near=config.near, far=config.far,
        transforms_scene=config.transforms_scene,
    )
    # The misalignment benchmark (data/misalign.py) moves the training images only.
    return misalign.perturb(scene) if split == "train" else scene
