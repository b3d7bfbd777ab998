"""Shared fixtures: the real scenes in ../shared/data and a small synthetic scene."""

import os
from pathlib import Path

from tests.cli_env import jax_env

os.environ.update(jax_env())  # before JAX starts

import pytest  # noqa: E402

from jaxnerf360.data import synthetic  # noqa: E402

# Real scenes live beside the repository root, never inside it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The session's synthetic scene: small so that every test that loads it stays fast.
SYNTHETIC_SIZE = 32
SYNTHETIC_TRAIN = 16
SYNTHETIC_TEST = 4


def _shared(*parts: str) -> Path:
    """Path of a scene under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (skips when absent)."""
    return _shared()


@pytest.fixture(scope="session")
def lego_dir() -> Path:
    """The Blender lego scene (skips when absent)."""
    return _shared("nerf_synthetic", "lego")


@pytest.fixture(scope="session")
def fern_dir() -> Path:
    """The LLFF fern scene (skips when absent)."""
    return _shared("nerf_llff_data", "fern")


@pytest.fixture(scope="session")
def bird_dir() -> Path:
    """The COLMAP bird capture (skips when absent)."""
    return _shared("colmap_bird")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A generated synthetic scene in Blender format: 16 train, 4 test views of 32x32."""
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(out, size=SYNTHETIC_SIZE, n_train=SYNTHETIC_TRAIN, n_test=SYNTHETIC_TEST)
    return out
