"""Runs written by the code before the restructuring still load, render the same, and resume.

`tests/data/legacy/` holds three tiny runs (an MLP with proposal sampling; a VM field with an
occupancy grid that learned its poses and focal length under spectral control; masked wavelet
planes) and a `.jnrf` file compressed from the last one, each written by commit 4b36fe4 on the
synthetic scene of `conftest.synthetic_dir`, with the renders of a few test rays it gave then.
Their saved configs use the old `Config.*` names of settings that have moved since.
"""

import shutil
from pathlib import Path

import gin
import jax
import numpy as np
import pytest

from jaxnerf360 import compressed, configs, parallel, train, trained
from jaxnerf360.data.scene import BOUNDED, Rays
from jaxnerf360.rendering import Renderer

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"
RUNS = ["mlp", "tensorf_poses", "wavelet"]


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _rays(expected: dict) -> Rays:
    return Rays(**{k[len("rays_"):]: v for k, v in expected.items() if k.startswith("rays_")})


def _renders_match(model, state, config, expected) -> None:
    renderer = Renderer(model, parallel.make_mesh(), config.background, 4096)
    out = renderer.rays(state, _rays(expected))
    for name in ("rgb", "acc", "distance_median"):
        np.testing.assert_allclose(out[name], expected[f"out_{name}"], rtol=1e-4, atol=2e-5,
                                   err_msg=name)


@pytest.mark.parametrize("name", RUNS)
def test_old_checkpoint_loads_renders_the_same_and_resumes(name, synthetic_dir, tmp_path):
    run_dir = tmp_path / name
    shutil.copytree(LEGACY / name, run_dir)
    data = [f"Config.data_dir = '{synthetic_dir}'"]
    config = configs.load(checkpoint_dir=str(run_dir), bindings=data)
    expected = dict(np.load(run_dir / "expected.npz"))
    model, state = trained.restore_trained(config, BOUNDED, parallel.make_mesh(), 16)
    assert int(state.step) == int(expected["step"]) == 6
    if "poses_xi" in expected:
        np.testing.assert_array_equal(jax.device_get(state.params["poses"]["xi"]),
                                      expected["poses_xi"])
    _renders_match(model, state, config, expected)
    # Training resumes the old run (its saved config is migrated before it is compared).
    gin.clear_config()
    config = configs.load(checkpoint_dir=str(run_dir), bindings=[*data, "Config.max_steps = 8"])
    resumed = train.train(config)
    assert int(resumed.step) == 8


def test_old_compressed_file_loads_and_renders_the_same(synthetic_dir):
    path = str(LEGACY / "wavelet.jnrf")
    config = configs.load(compressed=path, bindings=[f"Config.data_dir = '{synthetic_dir}'"])
    assert config.checkpoint_dir == str(LEGACY / "wavelet")
    model, state = compressed.restore(path, BOUNDED, parallel.make_mesh())
    expected = dict(np.load(LEGACY / "wavelet" / "expected.npz"))
    expected.update(np.load(LEGACY / "wavelet_jnrf_expected.npz"))
    _renders_match(model, state, config, expected)
