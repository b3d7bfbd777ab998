"""A 2-D (data, model) mesh: sharded VM planes train exactly as replicated ones, and
checkpoints restore onto another mesh and device count (old ones too)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxnerf360 import parallel
from jaxnerf360.errors import UserError
from tests.cli_env import cli_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(devices: int, scene, *jobs):
    env = cli_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    proc = subprocess.run([sys.executable, "-m", "tests.mesh_worker", str(scene),
                           *[";".join(map(str, j)) for j in jobs]],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _load(out: Path) -> tuple:
    with open(f"{out}.json", encoding="utf-8") as f:
        report = json.load(f)
    return report, dict(np.load(f"{out}.npz"))


def _same_params(a: dict, b: dict, rtol=1e-5, atol=1e-6) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


def test_sharded_training_and_restoring_across_meshes(synthetic_dir, tmp_path):
    t = tmp_path
    _run(1, synthetic_dir, ("train", "(1, 1)", t / "ck11", t / "train11"))
    _run(4, synthetic_dir, ("train", "(4, 1)", t / "ck41", t / "train41"),
         ("train", "(2, 2)", t / "ck22", t / "train22"),
         ("restore", "(2, 2)", t / "ck11", t / "from11"),
         ("legacy", "(2, 2)", ROOT / "tests" / "data" / "legacy" / "tensorf_poses",
          t / "legacy"))
    _run(1, synthetic_dir, ("restore", "(1, 1)", t / "ck22", t / "from22"))
    (r11, p11), (r41, p41), (r22, p22) = (_load(t / n) for n in ("train11", "train41",
                                                                     "train22"))
    # The (2, 2) step equals the all-data step: loss and updated parameters.
    np.testing.assert_allclose(r22["losses"], r41["losses"], rtol=2e-5)
    _same_params(p22, p41)
    assert r22["losses"][-1] < r22["losses"][0]
    # The planes really are split over the model axis (16 grid points -> 8 per device), and
    # whole on the all-data mesh.
    rank = r22["layout"]["global"][0]
    assert r22["layout"]["spec"] == ["None", "model", "None"]
    assert r22["layout"]["shards"] == [[rank, 8, 16]]
    assert r41["layout"]["shards"] == [r41["layout"]["global"]]
    # A (2, 2) checkpoint on 4 devices restores on 1 device, and a 1-device one onto (2, 2).
    f22, q22 = _load(t / "from22")
    assert f22["step"] == r22["step"] == 3 and f22["layout"]["shards"] == [[rank, 16, 16]]
    _same_params(q22, p22, rtol=0, atol=0)
    f11, q11 = _load(t / "from11")
    assert f11["step"] == 3 and f11["layout"]["shards"] == [[rank, 8, 16]]
    _same_params(q11, p11, rtol=0, atol=0)
    _same_params(p11, p41, rtol=1e-4, atol=1e-6)
    # A run saved before meshes had a model axis restores sharded and renders as it did.
    legacy, _ = _load(t / "legacy")
    assert legacy["layout"]["spec"] == ["None", "model", "None"]
    assert legacy["render_error"] < 2e-4


@pytest.mark.parametrize("shape", [(3, 1), (1,), (0, 1), "big"])
def test_a_mesh_that_does_not_fit_the_devices_is_one_clear_line(shape):
    with pytest.raises(UserError, match=r"Config.mesh_shape=.* must be two positive sizes"):
        parallel.make_mesh(shape)


def test_a_plane_splits_along_its_widest_divisible_axis():
    assert parallel.widest_axis_spec((4, 16, 32), (1, 2), 2) == (None, None, "model")
    assert parallel.widest_axis_spec((4, 16, 33), (1, 2), 2) == (None, "model", None)
    assert parallel.widest_axis_spec((4, 15, 33), (1, 2), 2) == ()
