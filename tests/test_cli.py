"""End-to-end: train, resume, eval and render through the command line on the synthetic scene."""

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_env import cli_env

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.gin")


def run_cli(module, *bindings, configs=(DEBUG,), env=None, check=True, timeout=300):
    """Runs `python -m jaxnerf360.<module>` and returns the CompletedProcess."""
    cmd = [sys.executable, "-m", f"jaxnerf360.{module}"]
    cmd += [f"--gin_configs={c}" for c in configs]
    cmd += [f"--gin_bindings={b}" for b in bindings]
    full_env = cli_env(**(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return proc


def losses_from_log(text):
    return [float(m) for m in re.findall(r"step \d+/\d+\s+loss ([0-9.]+)", text)]


def paths(tmp):
    return (f"Config.data_dir='{tmp / 'scene'}'", f"Config.checkpoint_dir='{tmp / 'run'}'")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A debug run trained for 100 steps; shared by the eval/render tests."""
    tmp = tmp_path_factory.mktemp("trained")
    proc = run_cli("train", *paths(tmp), "Config.max_steps=100", "Config.batch_size=256",
                   "Config.lr_init=1e-2", "Config.lr_final=1e-3", "Config.lr_delay_steps=0",
                   "Config.print_every=1")
    return tmp, proc


def test_training_reduces_loss(trained):
    tmp, proc = trained
    losses = losses_from_log(proc.stderr)
    assert len(losses) == 100, proc.stderr[-2000:]
    # Single-batch losses are noisy: compare the means of the first and last 10 steps.
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), losses
    run = tmp / "run"
    assert (run / "config.gin").exists()
    assert (run / "checkpoints" / "100").exists()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_eval_writes_metrics_and_images(trained):
    tmp, _ = trained
    run_cli("eval", *paths(tmp), "Config.eval_max_images=2", "Config.lpips_net='alex'")
    metrics = json.loads((tmp / "run" / "eval" / "metrics.json").read_text())
    assert metrics["step"] == 100 and metrics["num_images"] == 2
    assert len(metrics["per_image"]) == 2
    for key in ("psnr", "ssim", "lpips"):
        assert np.isfinite(metrics[key])
    # RCC over the first 8 frames of the render path (consistency.Consistency.eval_frames).
    rcc = metrics["rcc"]
    assert rcc["frames"] == 8 and 0 < rcc["covisible"] <= 1 and 5 < rcc["rcc"] < 80, rcc
    pngs = sorted((tmp / "run" / "eval").glob("*.png"))
    assert len(pngs) == 4
    img = np.asarray(Image.open(pngs[0]))
    assert img.shape[:2] == (64, 64)


def test_render_writes_videos_and_frames(trained):
    tmp, _ = trained
    # eval/render can also find a run by its directory alone.
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnerf360.render", f"--checkpoint_dir={tmp / 'run'}",
         "--frames=3"], capture_output=True, text=True, cwd=ROOT,
        env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp / "run" / "render"
    for name in ("rgb.mp4", "depth.mp4"):
        assert (out / name).stat().st_size > 1000
    frames = sorted((out / "frames").glob("rgb_*.png"))
    assert len(frames) == 3
    assert np.asarray(Image.open(frames[0])).shape == (16, 16, 3)  # 64 / render_factor 4
    import imageio.v3 as iio

    video = iio.imread(out / "rgb.mp4")
    assert video.shape[0] == 3 and video.shape[1:3] == (16, 16)
    rcc = json.loads((out / "metrics.json").read_text())["rcc"]
    assert rcc["frames"] == 3 and 0 < rcc["covisible"] <= 1 and np.isfinite(rcc["mse"]), rcc


def test_render_follows_a_camera_path_file(trained):
    """nerfstudio's camera-path JSON: its cameras, size and fps make the video."""
    import imageio.v3 as iio

    from jaxnerf360 import camera_path_file
    from jaxnerf360.data import loaders

    tmp, _ = trained
    scene = loaders.load_scene("synthetic", tmp / "scene", "test")
    path = tmp / "path.json"
    camera_path_file.write(str(path), scene.camtoworlds[:2], scene.transform, 24, 20, 40.0,
                           fps=10)
    shutil.copytree(tmp / "run" / "checkpoints", tmp / "path_run" / "checkpoints")
    shutil.copy(tmp / "run" / "config.gin", tmp / "path_run" / "config.gin")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnerf360.render", f"--checkpoint_dir={tmp / 'path_run'}",
         f"--camera_path={path}"], capture_output=True, text=True, cwd=ROOT, env=cli_env(),
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp / "path_run" / "render"
    frames = sorted((out / "frames").glob("rgb_*.png"))
    assert len(frames) == 2 and np.asarray(Image.open(frames[0])).shape == (20, 24, 3)
    assert iio.immeta(out / "rgb.mp4")["fps"] == 10
    bad = tmp / "bad_path.json"
    bad.write_text('{"camera_path": []}')
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnerf360.render", f"--checkpoint_dir={tmp / 'run'}",
         f"--camera_path={bad}"], capture_output=True, text=True, cwd=ROOT, env=cli_env(),
        timeout=300)
    assert proc.returncode == 2 and "missing or empty 'camera_path'" in proc.stderr
    assert "Traceback" not in proc.stderr


def _latest_params(run_dir):
    import orbax.checkpoint as ocp

    ckpt = run_dir / "checkpoints"
    step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    restored = ocp.StandardCheckpointer().restore(ckpt / str(step) / "default")
    return step, restored["params"]


def test_sigterm_saves_and_rerun_resumes_exactly(tmp_path):
    """SIGTERM mid-run saves and exits 0; the same command resumes at that step and ends with
    exactly the parameters of an uninterrupted run."""
    steps = 120
    binds = [f"Config.data_dir='{tmp_path / 'scene'}'", f"Config.max_steps={steps}",
             "Config.checkpoint_every=100000", "Config.print_every=1"]
    interrupted = [*binds, f"Config.checkpoint_dir='{tmp_path / 'interrupted'}'"]
    cmd = [sys.executable, "-m", "jaxnerf360.train", f"--gin_configs={DEBUG}"]
    cmd += [f"--gin_bindings={b}" for b in interrupted]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=cli_env())
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(rf"step 5/{steps}", line):
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    log = "".join(seen) + rest
    assert proc.returncode == 0, log[-3000:]
    stopped = int(re.search(r"stopping at step (\d+)", log).group(1))
    assert 5 <= stopped < steps
    step, _ = _latest_params(tmp_path / "interrupted")
    assert step == stopped

    proc2 = run_cli("train", *interrupted)
    assert f"resumed from step {stopped}" in proc2.stderr
    assert f"step {stopped + 1}/{steps}" in proc2.stderr
    assert f"step {stopped}/{steps}" not in proc2.stderr
    step, resumed = _latest_params(tmp_path / "interrupted")
    assert step == steps

    run_cli("train", *binds, f"Config.checkpoint_dir='{tmp_path / 'straight'}'")
    step, straight = _latest_params(tmp_path / "straight")
    assert step == steps
    import jax

    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
