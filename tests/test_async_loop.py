"""The training loop never waits for the device between prints: the host reads no device
value at the steps in between, so it draws the next batch while the device computes."""

import gin
import pytest
from jax._src import array

from jaxnerf360 import configs, train

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _device_reads(monkeypatch, tmp_path, scene, steps: int) -> int:
    """Device values read on the host while training `steps` steps, printing only at the end."""
    gin.clear_config()
    configs.parse_gin([str(ROOT / "configs" / "debug.gin")], [
        f"Config.data_dir = '{scene}'", f"Config.checkpoint_dir = '{tmp_path / str(steps)}'",
        f"Config.max_steps = {steps}", "Config.print_every = 1000",
        "Config.checkpoint_every = 1000"])
    reads = [0]
    value = array.ArrayImpl._value

    def counted(self):
        reads[0] += 1
        return value.fget(self)

    monkeypatch.setattr(array.ArrayImpl, "_value", property(counted))
    train.train(configs.Config())
    monkeypatch.setattr(array.ArrayImpl, "_value", value)
    return reads[0]


def test_steps_between_prints_read_nothing_from_the_device(monkeypatch, tmp_path,
                                                           synthetic_dir):
    few = _device_reads(monkeypatch, tmp_path, synthetic_dir, 3)
    many = _device_reads(monkeypatch, tmp_path, synthetic_dir, 9)
    assert few > 0  # the print and the checkpoint at the end read the state
    assert many == few, f"{many - few} device reads in 6 more steps"
