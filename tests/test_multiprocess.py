"""Several JAX processes on this machine, joined over loopback by scripts/launch_local.py, run
`python -m jaxnerf360.train --distributed` as the hosts of a job would: they train exactly as
one process does, their checkpoints resume on other topologies, a pre-emption notice to one of
them makes all save the same step, and a process that dies stops the others in bounded time."""

import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gin
import jax
import numpy as np
import pytest

from jaxnerf360 import configs, parallel, trained
from jaxnerf360.data.scene import BOUNDED
from jaxnerf360.eval import evaluate
from tests.cli_env import cli_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TINY = ROOT / "tests" / "data" / "tiny_tensorf.gin"
_spec = importlib.util.spec_from_file_location("launch_local",
                                               ROOT / "scripts" / "launch_local.py")
launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _start(run_dir, scene, processes, devices, *bindings, flags=(), log_dir=None):
    """The processes of one training command (started), and their log folder."""
    command = [sys.executable, "-m", "jaxnerf360.train", f"--gin_configs={TINY}",
               f"--gin_bindings=Config.checkpoint_dir='{run_dir}'",
               f"--gin_bindings=Config.data_dir='{scene}'",
               *[f"--gin_bindings={b}" for b in bindings],
               *(["--distributed"] if processes > 1 else []), *flags]
    log_dir = log_dir or f"{run_dir}-logs-{processes}x{devices}-{time.monotonic_ns()}"
    return launch.start(command, processes, devices, log_dir, env=cli_env()), log_dir


def _train(run_dir, scene, processes, devices, *bindings, timeout=300):
    """Trains to the end; the text of process 0's log."""
    procs, _ = _start(run_dir, scene, processes, devices, *bindings)
    codes = launch.wait(procs, timeout)
    logs = [Path(path).read_text() for _, path in procs]
    assert codes == [0] * processes, logs[codes.index(next(c for c in codes if c != 0))][-3000:]
    return logs[0]


def _losses(log: str) -> list:
    return [float(x) for x in re.findall(r"step \d+/\d+  loss ([0-9.]+)", log)]


def _params(run_dir, scene):
    gin.clear_config()
    config = configs.load(checkpoint_dir=str(run_dir),
                          bindings=[f"Config.data_dir = '{scene}'", "Config.mesh_shape = None"])
    _, state = trained.restore_trained(config, BOUNDED, parallel.make_mesh())
    return int(state.step), jax.tree.leaves(jax.device_get(state.params))


def test_two_processes_train_as_one_and_their_checkpoints_resume_anywhere(synthetic_dir,
                                                                          tmp_path):
    mesh = "Config.mesh_shape = (2, 2)"
    two = _train(tmp_path / "two", synthetic_dir, 2, 2, mesh, "Config.max_steps = 4")
    one = _train(tmp_path / "one", synthetic_dir, 1, 4, mesh, "Config.max_steps = 4")
    assert "checkpoint at step 4" in two and len(_losses(two)) == 2
    np.testing.assert_allclose(_losses(two), _losses(one), atol=2e-4)
    (step_two, p_two), (step_one, p_one) = (_params(tmp_path / n, synthetic_dir)
                                            for n in ("two", "one"))
    assert step_two == step_one == 4
    for a, b in zip(p_two, p_one, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Written by 2 processes, resumed by 1 process on 1 device; and the other way. (Other
    # meshes in one process: test_mesh.py.)
    for source, processes, devices, shape in (("two", 1, 1, "None"), ("one", 2, 2, "(2, 2)")):
        run = tmp_path / f"{source}-in-{processes}x{devices}"
        shutil.copytree(tmp_path / source, run)
        log = _train(run, synthetic_dir, processes, devices, f"Config.mesh_shape = {shape}",
                     "Config.max_steps = 5")
        assert "resumed from step 4" in log and "checkpoint at step 5" in log, log[-2000:]
    # Eval and render split the views and frames over the processes; one metrics.json. (One
    # device each: a render sharded over a process's simulated devices takes twice as long.)
    split = ["--gin_bindings=Consistency.eval_frames = 0",
             "--gin_bindings=Config.render_frames = 3"]
    for command in ("eval", "render"):
        procs = launch.start([sys.executable, "-m", f"jaxnerf360.{command}",
                              f"--checkpoint_dir={tmp_path / 'two'}", "--distributed", *split],
                             2, 1, str(tmp_path / f"{command}-logs"), env=cli_env())
        assert launch.wait(procs, 300) == [0, 0], Path(procs[0][1]).read_text()[-3000:]
    with open(tmp_path / "two" / "eval" / "metrics.json", encoding="utf-8") as f:
        together = json.load(f)
    gin.clear_config()
    alone = evaluate(configs.load(checkpoint_dir=str(tmp_path / "two"),
                                  bindings=["Consistency.eval_frames = 0"]))
    assert together["num_images"] == alone["num_images"] == len(together["per_image"]) > 2
    for a, b in zip(together["per_image"], alone["per_image"], strict=True):
        assert a["name"] == b["name"] and abs(a["psnr"] - b["psnr"]) < 1e-4
    rendered = tmp_path / "two" / "render"
    assert sorted(p.name for p in (rendered / "frames").glob("rgb_*.png")) == [
        "rgb_0000.png", "rgb_0001.png", "rgb_0002.png"]
    assert (rendered / "rgb.mp4").is_file() and (rendered / "metrics.json").is_file()
    assert not (rendered / "parts").exists()


def _wait_for(path: str, pattern: str, procs, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, Path(path).read_text()):
        assert time.monotonic() < deadline, f"no {pattern!r} in {path}"
        assert all(p.poll() is None for p, _ in procs), Path(path).read_text()[-3000:]
        time.sleep(0.5)


def test_sigterm_to_one_process_makes_both_save_the_same_step(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    long_run = ("Config.max_steps = 100000", "Config.print_every = 10",
                "Config.checkpoint_every = 100000")
    procs, _ = _start(run, synthetic_dir, 2, 1, *long_run)
    _wait_for(procs[0][1], r"step 20/", procs)
    procs[1][0].send_signal(signal.SIGTERM)
    assert launch.wait(procs, 120) == [0, 0]
    stops = [re.findall(r"stopping at step (\d+)", Path(p).read_text()) for _, p in procs]
    assert stops[0] and stops[0] == stops[1], stops
    step = int(stops[0][0])
    assert (run / "checkpoints" / str(step)).is_dir()
    log = _train(run, synthetic_dir, 2, 1, f"Config.max_steps = {step + 1}")
    assert f"resumed from step {step}" in log


def test_a_killed_process_stops_the_others_in_bounded_time(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    procs, _ = _start(run, synthetic_dir, 2, 1, "Config.max_steps = 100000",
                      "Config.print_every = 10", "Config.checkpoint_every = 10",
                      flags=["--distributed_timeout=10"])
    _wait_for(procs[0][1], r"step 20/", procs)
    procs[1][0].kill()
    started = time.monotonic()
    codes = launch.wait(procs, 90)
    assert codes[0] not in (0, None), "process 0 went on without its peer"
    assert time.monotonic() - started < 60
    assert "another task died" in Path(procs[0][1]).read_text()
    saved = [int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
    log = _train(run, synthetic_dir, 2, 1, f"Config.max_steps = {max(saved) + 1}")
    assert f"resumed from step {max(saved)}" in log


def test_no_coordinator_is_one_clear_line(synthetic_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnerf360.train", f"--gin_configs={TINY}",
         f"--gin_bindings=Config.checkpoint_dir='{tmp_path / 'run'}'",
         f"--gin_bindings=Config.data_dir='{synthetic_dir}'", "--distributed",
         f"--coordinator_address=127.0.0.1:{launch.free_port()}", "--num_processes=2",
         "--process_id=1", "--distributed_timeout=2"],
        capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: --distributed: nothing answers at 127.0.0.1:")
