"""Scenes, rays and batches: from a folder of posed images to training rays."""


def load_split(config, split: str):
    """Loads the `split` ('train' or 'test') of the scene that `config` names."""
    from jaxnerf360.configs import background_rgb
    from jaxnerf360.data import loaders

    return loaders.load_scene(
        config.dataset_loader, config.data_dir, split, factor=config.factor,
        background=background_rgb(config), llff_hold=config.llff_hold,
        forward_facing=config.forward_facing, near=config.near, far=config.far,
    )
