"""When things go wrong: damaged checkpoints, interrupted saves, and bad input at the CLI.

A damaged latest checkpoint is set aside (never deleted) and the run goes on from the newest
intact one; each kind of damage is checked on the restore path that train, eval and render
share, and end to end through the command line for train and eval.
"""

import gc
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gin
import numpy as np
import pytest

from jaxnerf360 import configs, parallel, trained
from jaxnerf360.data.scene import BOUNDED
from jaxnerf360.errors import UserError
from tests.cli_env import cli_env
from tests.test_cli import run_cli
from tests.test_errors import DEBUG, ROOT, fails_cleanly


def _truncate_data(step_dir):
    files = glob.glob(os.path.join(step_dir, "default", "**", "d", "*"), recursive=True)
    biggest = max(files, key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)


def _each_file(step_dir, write):
    for path in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True):
        if os.path.isfile(path):
            size = os.path.getsize(path)
            with open(path, "wb") as f:
                f.write(write(size))


DAMAGE = {
    "array data truncated": _truncate_data,
    "ocdbt.process_0 deleted": lambda d: shutil.rmtree(os.path.join(d, "default",
                                                                    "ocdbt.process_0")),
    "_METADATA deleted": lambda d: os.remove(os.path.join(d, "default", "_METADATA")),
    "default deleted": lambda d: shutil.rmtree(os.path.join(d, "default")),
    "files truncated": lambda d: _each_file(d, lambda n: b""),
    "files zeroed": lambda d: _each_file(d, lambda n: b"\0" * n),
    "empty step folder": lambda d: (shutil.rmtree(d), os.makedirs(d)),
}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A debug run with checkpoints at steps 10 and 20."""
    tmp = tmp_path_factory.mktemp("saved")
    run_cli("train", f"Config.data_dir='{tmp / 'scene'}'", f"Config.checkpoint_dir='{tmp / 'run'}'",
            "Config.max_steps=20", "Config.checkpoint_every=10")
    assert sorted(os.listdir(tmp / "run" / "checkpoints")) == ["10", "20"]
    return tmp


def _damaged_copy(saved_run, tmp_path, kind):
    run = tmp_path / "run"
    shutil.copytree(saved_run / "run", run)
    DAMAGE[kind](str(run / "checkpoints" / "20"))
    return run


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_latest_step_is_set_aside_and_the_previous_one_restored(saved_run, tmp_path,
                                                                          kind, capfd, caplog):
    run = _damaged_copy(saved_run, tmp_path, kind)
    config = configs.load(checkpoint_dir=str(run),
                          bindings=[f"Config.data_dir='{saved_run / 'scene'}'"])
    _, state = trained.restore_trained(config, BOUNDED, parallel.make_mesh())
    assert int(state.step) == 10
    gc.collect()  # orbax's abandoned reads, if any are left, would report themselves now
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.name == "asyncio"]
    assert (run / "checkpoints" / "20.damaged").is_dir()  # kept, not deleted
    assert not (run / "checkpoints" / "20").exists()


def test_train_resumes_from_the_previous_step_and_finishes(saved_run, tmp_path):
    run = _damaged_copy(saved_run, tmp_path, "array data truncated")
    proc = run_cli("train", f"Config.data_dir='{saved_run / 'scene'}'",
                   f"Config.checkpoint_dir='{run}'", "Config.max_steps=25",
                   "Config.checkpoint_every=10")
    assert "checkpoint at step 20 is damaged" in proc.stderr and "20.damaged" in proc.stderr
    assert "resumed from step 10" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(os.listdir(run / "checkpoints")) == ["10", "20", "20.damaged", "25"]


def test_eval_evaluates_the_previous_step_and_says_which(saved_run, tmp_path):
    run = _damaged_copy(saved_run, tmp_path, "_METADATA deleted")
    proc = run_cli("eval", f"Config.data_dir='{saved_run / 'scene'}'",
                   f"Config.checkpoint_dir='{run}'", "Config.eval_max_images=1",
                   "Config.lpips_net='none'")
    assert "checkpoint at step 20 is damaged" in proc.stderr
    assert "restored step 10" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((run / "eval" / "metrics.json").read_text())["step"] == 10


def test_no_intact_step_is_one_clear_error(saved_run, tmp_path):
    run = _damaged_copy(saved_run, tmp_path, "files zeroed")
    DAMAGE["default deleted"](str(run / "checkpoints" / "10"))
    line = fails_cleanly(f"Config.data_dir='{saved_run / 'scene'}'",
                         f"Config.checkpoint_dir='{run}'")
    assert "no intact checkpoint" in line and "10.damaged" in line and "20.damaged" in line


@pytest.mark.parametrize("change", ["MLPField.net_width = 48",  # other shapes
                                    "MLPField.net_depth_viewdirs = 2"])  # another tree
def test_a_checkpoint_of_another_model_is_still_a_mismatch(saved_run, tmp_path, change):
    run = tmp_path / "run"
    shutil.copytree(saved_run / "run", run)
    config = configs.load(checkpoint_dir=str(run),
                          bindings=[f"Config.data_dir='{saved_run / 'scene'}'", change])
    with pytest.raises(UserError, match="does not fit this model"):
        trained.restore_trained(config, BOUNDED, parallel.make_mesh())
    assert sorted(os.listdir(run / "checkpoints")) == ["10", "20"]  # nothing set aside


def test_a_moved_run_resumes_although_gin_wraps_its_longer_path():
    """gin breaks a long path onto a second line; a run copied elsewhere is still the same run."""
    from jaxnerf360.checkpoints import _model_bindings
    before = "Config.checkpoint_dir = '/a/run'\nMLPField.net_width = 64\n"
    after = "Config.checkpoint_dir = \\\n    '/a/much/longer/path/run'\nMLPField.net_width = 64\n"
    assert _model_bindings(before) == _model_bindings(after) == ["MLPField.net_width = 64"]
    wrapped = "MLPField.skips = \\\n    (4,)\n"
    assert _model_bindings(wrapped) == ["MLPField.skips = (4,)"]


def test_the_saved_data_dir_is_read_although_gin_wraps_it(tmp_path):
    from jaxnerf360.checkpoints import saved_data_dir
    (tmp_path / "config.gin").write_text("Config.data_dir = \\\n    '/a/long/path/scene'\n")
    assert saved_data_dir(str(tmp_path)) == "/a/long/path/scene"


def test_kill_during_a_checkpoint_save_then_resume(tmp_path):
    """kill -9 while checkpoints are written at every step: the rerun resumes and finishes."""
    binds = [f"Config.data_dir='{tmp_path / 'scene'}'", f"Config.checkpoint_dir='{tmp_path}/run'",
             "Config.max_steps=200", "Config.checkpoint_every=1", "Config.print_every=1"]
    cmd = [sys.executable, "-m", "jaxnerf360.train", f"--gin_configs={DEBUG}",
           *[f"--gin_bindings={b}" for b in binds]]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=cli_env())
    for line in proc.stderr:
        if "step 8/200" in line:
            break
    time.sleep(0.3)  # mid-way through the saves of the following steps
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    saved = [int(p) for p in os.listdir(tmp_path / "run" / "checkpoints") if p.isdigit()]
    # One save is in flight at a time: by step 8's line, step 6's has finished (7's may not).
    assert saved and max(saved) >= 6
    end = max(saved) + 3  # a few more steps, each saved, are enough to show the run goes on
    done = run_cli("train", *binds[:2], f"Config.max_steps={end}", *binds[3:])
    assert "resumed from step" in done.stderr and f"step {end}/{end}" in done.stderr
    assert "Traceback" not in done.stderr


# --- one clear line for each bad input -----------------------------------------------------


def test_synthetic_loader_refuses_a_folder_it_did_not_write(tmp_path):
    capture = tmp_path / "capture"
    (capture / "sparse" / "0").mkdir(parents=True)
    (capture / "images").mkdir()
    line = fails_cleanly(f"Config.data_dir='{capture}'", f"Config.checkpoint_dir='{tmp_path}/r'")
    assert "did not write" in line and "colmap" in line
    assert sorted(os.listdir(capture)) == ["images", "sparse"]  # nothing written into it


def test_missing_include_names_both_files(tmp_path):
    inner = tmp_path / "inner.gin"
    inner.write_text("include 'nowhere.gin'\n")
    outer = tmp_path / "sub" / "outer.gin"
    outer.parent.mkdir()
    outer.write_text("include '../inner.gin'\nConfig.max_steps = 3\n")
    line = fails_cleanly(configs=(str(outer),))
    assert "inner.gin" in line and "nowhere.gin" in line


def test_includes_resolve_beside_the_including_file_down_a_chain(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "base.gin").write_text(f"include '{DEBUG}'\nConfig.max_steps = 7\n")
    (tmp_path / "a" / "mid.gin").write_text("include 'base.gin'\nConfig.batch_size = 64\n")
    top = tmp_path / "top.gin"
    top.write_text("include 'a/mid.gin'\n")
    gin.clear_config()
    config = configs.load([str(top)], [], check_dirs=False)
    assert config.max_steps == 7 and config.batch_size == 64


@pytest.mark.parametrize("binding,needle", [("Config.lr_init='fast'", "lr_init"),
                                            ("Config.distortion_loss_mult='x'", "distortion")])
def test_a_number_of_the_wrong_type(tmp_path, binding, needle):
    line = fails_cleanly(binding, f"Config.checkpoint_dir='{tmp_path}/run'")
    assert needle in line and "number" in line


def test_train_honours_checkpoint_dir(saved_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(saved_run / "run", run)
    proc = subprocess.run([sys.executable, "-m", "jaxnerf360.train", f"--checkpoint_dir={run}",
                           "--gin_bindings=Config.max_steps=22",
                           f"--gin_bindings=Config.data_dir='{saved_run / 'scene'}'"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=cli_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from step 20" in proc.stderr and (run / "checkpoints" / "22").is_dir()
    line = fails_cleanly(extra=[f"--checkpoint_dir={run}"])  # and --gin_configs too
    assert "--checkpoint_dir" in line and "--gin_configs" in line


def test_eval_on_a_run_whose_saved_config_does_not_parse(saved_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(saved_run / "run", run)
    (run / "config.gin").write_text("Config.max_steps = (\n")
    line = fails_cleanly(module="eval", configs=(), extra=[f"--checkpoint_dir={run}"])
    assert str(run / "config.gin") in line


def test_compress_refuses_a_directory_as_out_and_leaves_nothing(saved_run, tmp_path):
    line = fails_cleanly(module="compress", configs=(),
                         extra=[f"--checkpoint_dir={saved_run / 'run'}", f"--out={tmp_path}"])
    assert "directory" in line and str(tmp_path) in line
    assert list(tmp_path.iterdir()) == []


def test_write_scene_leaves_no_temporary_file_after_a_failure(tmp_path):
    from jaxnerf360 import codec

    with pytest.raises(UserError):
        codec.write_scene(tmp_path / "x.jnrf", {"bad": np.zeros(3, np.int64)}, {})
    (tmp_path / "sub").mkdir()
    with pytest.raises(IsADirectoryError):
        codec.write_scene(tmp_path / "sub", {}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


@pytest.mark.parametrize("frames", ["0", "-3"])
def test_render_frames_are_checked_before_anything_loads(tmp_path, frames):
    line = fails_cleanly(module="render", configs=(),
                         extra=[f"--checkpoint_dir={tmp_path}/none", f"--frames={frames}"])
    assert f"--frames={frames}" in line


def test_poses_bounds_of_random_bytes(tmp_path):
    scene = tmp_path / "fern"
    (scene / "images").mkdir(parents=True)
    (scene / "poses_bounds.npy").write_bytes(np.random.default_rng(0).bytes(500))
    line = fails_cleanly("Config.dataset_loader='llff'", f"Config.data_dir='{scene}'",
                         f"Config.checkpoint_dir='{tmp_path}/run'")
    assert "not a valid NumPy array file" in line and "allow_pickle" not in line


def test_resuming_with_another_data_dir(saved_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(saved_run / "run", run)
    moved = tmp_path / "moved"
    shutil.copytree(saved_run / "scene", moved)
    proc = run_cli("train", f"Config.data_dir='{moved}'", f"Config.checkpoint_dir='{run}'",
                   "Config.max_steps=21")
    assert "Config.data_dir changed" in proc.stderr and "same image count and size" in proc.stderr
    other = tmp_path / "other"
    from jaxnerf360.data import synthetic

    synthetic.generate(other, size=32, n_train=5, n_test=2)
    line = fails_cleanly(f"Config.data_dir='{other}'", f"Config.checkpoint_dir='{run}'",
                         "Config.max_steps=22")
    assert "5 training images of 32x32" in line and "trained on 48 of 64x64" in line


def test_file_system_errors_on_user_paths_are_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "run").write_text("a file where the run folder should be")
    line = fails_cleanly(f"Config.data_dir='{tmp_path}/scene'",
                         f"Config.checkpoint_dir='{locked / 'run'}'")
    assert str(locked / "run") in line and "cannot" in line


def test_describe_os_error_names_the_operation_and_the_path():
    from jaxnerf360 import cli

    assert cli._is_user_path("/data/scene/x.png") and not cli._is_user_path(None)
    assert not cli._is_user_path(os.path.join(sys.prefix, "lib", "x.py"))
    text = cli.describe_os_error(PermissionError(13, "Permission denied", "/data/x"))
    assert text.startswith("cannot access /data/x: Permission denied")
    text = cli.describe_os_error(FileNotFoundError(2, "No such file", "/a", None, "/b"))
    assert "cannot find /a -> /b" in text
    assert Path(cli.__file__).exists()


def test_a_damaged_data_record_is_one_line(tmp_path):
    import types

    from jaxnerf360.checkpoints import check_data
    scene = types.SimpleNamespace(num_images=3, width=4, height=5)
    check_data(str(tmp_path), "/data", None, scene)
    (tmp_path / "data.json").write_text("{not json")
    with pytest.raises(UserError, match="data.json is damaged"):
        check_data(str(tmp_path), "/data", "/data", scene)
