"""Every shipped gin config parses, validates and builds its sampler and field, and can
split its steps into the parts it asks for."""

from pathlib import Path

import gin
import pytest

from jaxnerf360 import configs, run_checks
from jaxnerf360.cameras import Cameras
from jaxnerf360.fields.tensorf import TensoRFField
from jaxnerf360.model import Model
from jaxnerf360.samplers import OccupancySampler
from jaxnerf360.supervision import EdgeWeights, ImageBlur, Supervision
from jaxnerf360.training import build_objective

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.gin"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses_and_builds(path):
    gin.clear_config()
    try:
        configs.parse_gin([str(path)], [])
        config = configs.Config()
        configs.validate(config, check_dirs=False)
        parts = Model().parts()  # runs the sampler's and field's start-up checks
        cameras = Cameras()  # and those of the cameras and supervision
        supervision = Supervision(config.spectral_control, ImageBlur(), EdgeWeights())
        model = Model()
        run_checks.check_step_chunks(config, model, cameras, build_objective(config, model),
                                     supervision, 1)
        sampler, field = parts["sampler"], parts["field"]
        if isinstance(field, TensoRFField) and isinstance(sampler, OccupancySampler):
            assert tuple(field.box_min) == tuple(sampler.box_min), "field and sampler boxes differ"
            assert tuple(field.box_max) == tuple(sampler.box_max), "field and sampler boxes differ"
    finally:
        gin.clear_config()


def test_variants_split_files_from_bindings_after_the_base():
    assert configs.variants("base.gin", "a.gin,X.y=1;Z.w='v';b.gin,") == [
        ("base", ["base.gin"], []),
        ("a.gin,X.y=1", ["base.gin", "a.gin"], ["X.y=1"]),
        ("Z.w='v'", ["base.gin"], ["Z.w='v'"]),
        ("b.gin,", ["base.gin", "b.gin"], []),
    ]
