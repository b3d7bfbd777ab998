"""Compressed scenes: file tensors, bit-exact decoding, renders, and the CLI round trip."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxnerf360 import codec, compressed
from jaxnerf360.errors import UserError
from jaxnerf360.fields import wavelet
from jaxnerf360.model import Model
from tests.cli_env import cli_env
from tests.test_cli import paths, run_cli
from tests.test_wavelet_field import _random_params
from tests.test_wavelet_field import _wavelet_field as _field

ROOT = Path(__file__).resolve().parents[1]

WAVELET_RUN = [
    "Model.field = @TensoRFField", "Model.sampler = @OccupancySampler",
    "OccupancySampler.grid_resolution = 16", "OccupancySampler.box_min = (-1.5, -1.5, -1.5)",
    "OccupancySampler.box_max = (1.5, 1.5, 1.5)", "OccupancySampler.max_samples = 48",
    "OccupancySampler.update_steps = (20,)",
    "TensoRFField.resolution = (16, 16, 16)", "TensoRFField.density_ranks = (2, 2, 2)",
    "TensoRFField.appearance_ranks = (3, 3, 3)", "TensoRFField.mlp_width = 16",
    "TensoRFField.app_dim = 6", "TensoRFField.density_shift = -2.0",
    "TensoRFField.upsample_steps = (15,)", "TensoRFField.final_resolution = (24, 24, 24)",
    "TensoRFField.plane_coding = 'wavelet'", "TensoRFField.wavelet_levels = 2",
    "TensoRFField.mask_loss_mult = 0.01", "TensoRFField.grid_lr_init = 0.02",
    "TensoRFField.grid_lr_final = 0.02",
    "Config.lr_init = 1e-2", "Config.lr_final = 1e-2", "Config.data_loss_type = 'mse'",
    "Config.interlevel_loss_mult = 0.0", "Config.distortion_loss_mult = 0.0",
    "Config.max_steps = 30", "Config.batch_size = 128", "Config.lpips_net = 'none'",
]


def _params(field, seed=0):
    params, pts, dirs = _random_params(field, seed)
    return {"field": params}, pts, dirs


def _model(field):
    """A model whose field is `field` (the sampler holds no parameters here)."""
    return Model(scene_kind="bounded", field=lambda: field)


def _field_params(tensors, settings):
    """The spatial field parameters that a file's decoded `tensors` give."""
    own = {k[len("field/"):]: v for k, v in tensors.items() if k.startswith("field/")}
    return compressed.unflatten(wavelet.spatial_params(own, settings))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_file_decodes_bit_exactly_and_renders_like_the_quantised_field(tmp_path, dtype):
    field = _field()
    params, pts, dirs = _params(field)
    settings = field.wavelet_settings()
    occupancy = np.random.default_rng(1).uniform(size=(8, 8, 8)) < 0.3
    tensors = compressed.file_tensors(_model(field), params, occupancy, dtype)
    assert isinstance(tensors["field/density_plane_0"], codec.Masked)
    assert tensors["field/density_plane_0"].levels == 2
    assert tensors["field/appearance_line_1"].levels == 0
    assert not any(wavelet.is_mask(k) for k in tensors)
    assert tensors["field/basis/kernel"].dtype == np.dtype(dtype)
    path = tmp_path / "scene.jnrf"
    codec.write_scene(path, tensors, {"config.gin": "", "scene.json": "{}"})
    read, _ = codec.read_scene(path)
    want = compressed.decoded_tensors(tensors)
    assert sorted(read) == sorted(want)
    for name in want:
        assert read[name].dtype == want[name].dtype
        np.testing.assert_array_equal(read[name], want[name], err_msg=name)
    # Rendering from the file equals the in-memory quantised model exactly, and the
    # quantised model is the field trained with quantisation-aware rounding (to float32
    # rounding, and the float16 networks).
    from_file = _field_params(read, settings)
    in_memory = _field_params(want, settings)
    spatial = jax.jit(lambda p: field.clone(plane_coding="spatial").apply({"params": p}, pts,
                                                                          None, dirs))
    out, ref = spatial(from_file), spatial(in_memory)
    np.testing.assert_array_equal(out["rgb"], ref["rgb"])
    np.testing.assert_array_equal(out["density"], ref["density"])
    trained = jax.jit(lambda p: field.apply({"params": p}, pts, None, dirs))(params["field"])
    np.testing.assert_allclose(out["density"], trained["density"], atol=1e-5, rtol=1e-4)
    tol = 2e-3 if dtype == "float16" else 1e-5
    np.testing.assert_allclose(out["rgb"], trained["rgb"], atol=tol)


def test_file_tensors_refuse_other_bit_widths():
    field = _field(quantize_bits=4)
    params, *_ = _params(field)
    with pytest.raises(UserError, match="8-bit"):
        compressed.file_tensors(_model(field), params)


@pytest.fixture(scope="module")
def compressed_run(tmp_path_factory, synthetic_dir):
    """A tiny masked-wavelet run (upsampled once) and its compressed file."""
    tmp = tmp_path_factory.mktemp("wavelet")
    (tmp / "scene").symlink_to(synthetic_dir)
    run_cli("train", *paths(tmp), *WAVELET_RUN)
    out = tmp / "compressed.jnrf"
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnerf360.compress", f"--checkpoint_dir={tmp / 'run'}",
         f"--out={out}"], capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, out, proc.stdout


def test_compress_cli_reports_sizes_and_sparsity(compressed_run):
    _, out, stdout = compressed_run
    size = out.stat().st_size
    assert f"{size:,} bytes" in stdout
    for part in ("grid values", "grid masks", "networks", "occupancy grid", "zero coefficients"):
        assert part in stdout, stdout
    _, text = codec.read_scene(out)
    meta = json.loads(text["scene.json"])
    assert meta["step"] == 30 and meta["wavelet"]["levels"] == 2
    assert "plane_coding = 'wavelet'" in text["config.gin"]
    tensors, _ = codec.read_scene(out)
    assert tensors["field/density_plane_0"].shape == (2, 24, 24)  # upsampled from 16


def _cli(module, *args):
    proc = subprocess.run([sys.executable, "-m", f"jaxnerf360.{module}", *args],
                          capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=300)
    return proc


def test_eval_and_render_accept_the_compressed_file(compressed_run):
    tmp, out, _ = compressed_run
    data = f"--gin_bindings=Config.data_dir='{tmp / 'scene'}'"
    for module, extra in (("eval", []), ("render", ["--frames=2"])):
        proc = _cli(module, f"--compressed={out}", data, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp / "compressed" / "render" / "rgb.mp4").exists()
    from_file = json.loads((tmp / "compressed" / "eval" / "metrics.json").read_text())
    # The run's own checkpoint renders the same views, up to 8-bit codes and float16 networks.
    proc = _cli("eval", f"--checkpoint_dir={tmp / 'run'}", data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from_run = json.loads((tmp / "run" / "eval" / "metrics.json").read_text())
    assert from_file["step"] == from_run["step"] == 30
    assert abs(from_file["psnr"] - from_run["psnr"]) < 0.05, (from_file["psnr"], from_run["psnr"])


def test_compressed_file_errors_are_one_line(compressed_run, tmp_path):
    tmp, out, _ = compressed_run
    bad = tmp_path / "bad.jnrf"
    bad.write_bytes(out.read_bytes()[:-10])
    proc = _cli("eval", f"--compressed={bad}", f"--gin_bindings=Config.data_dir='{tmp}'")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(bad) in last and "Traceback" not in proc.stderr
