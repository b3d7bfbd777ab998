"""Bad input through the command line: one clear line on stderr, exit status 2, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_env import cli_env

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.gin")


def fails_cleanly(*bindings, module="train", configs=(DEBUG,), env=None, extra=()):
    cmd = [sys.executable, "-m", f"jaxnerf360.{module}", *[f"--gin_configs={c}" for c in configs]]
    cmd += [f"--gin_bindings={b}" for b in bindings] + list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=cli_env(**(env or {})))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_missing_data_dir(tmp_path):
    line = fails_cleanly("Config.dataset_loader='blender'", f"Config.data_dir='{tmp_path}/nope'",
                         f"Config.checkpoint_dir='{tmp_path}/run'")
    assert "nope" in line


def test_unknown_gin_binding(tmp_path):
    line = fails_cleanly("Config.not_a_field=3", f"Config.checkpoint_dir='{tmp_path}/run'")
    assert "not_a_field" in line


def test_unknown_gin_config_file(tmp_path):
    line = fails_cleanly(configs=(str(tmp_path / "missing.gin"),))
    assert "missing.gin" in line


def test_batch_not_divisible_by_devices(tmp_path):
    line = fails_cleanly(f"Config.data_dir='{tmp_path}/scene'",
                         f"Config.checkpoint_dir='{tmp_path}/run'", "Config.batch_size=130",
                         env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert "130" in line and "4" in line


def test_checkpoint_dir_from_a_different_config(tmp_path):
    common = (f"Config.data_dir='{tmp_path}/scene'", f"Config.checkpoint_dir='{tmp_path}/run'")
    proc = subprocess.run([sys.executable, "-m", "jaxnerf360.train", f"--gin_configs={DEBUG}",
                           *[f"--gin_bindings={b}" for b in common],
                           "--gin_bindings=Config.max_steps=2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=cli_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = fails_cleanly(*common, "MLPField.net_width=48")
    assert "different config" in line and "net_width" in line


def test_eval_without_a_trained_run(tmp_path):
    line = fails_cleanly(module="eval", configs=(), extra=[f"--checkpoint_dir={tmp_path}/none"])
    assert "config.gin" in line


@pytest.mark.parametrize("binding,needle", [("Config.background='green'", "background"),
                                            ("Config.batch_size=0", "batch_size"),
                                            ("Config.dataset_loader='nerfies'", "nerfies"),
                                            ("Model.appearance_chunks=0", "appearance_chunks")])
def test_bad_config_values(tmp_path, binding, needle):
    line = fails_cleanly(binding, f"Config.checkpoint_dir='{tmp_path}/run'")
    assert needle in line


@pytest.mark.parametrize("binding,needle", [
    ("TensoRFField.density_ranks=(16, 16)", "density_ranks"),
    ("TensoRFField.upsample_steps=(300, 200)", "strictly increasing"),
    ("TensoRFField.box_max=(1.5, -1.5, 1.5)", "non-positive size"),
])
def test_bad_tensorf_settings_fail_at_start_up(tmp_path, binding, needle):
    line = fails_cleanly("Model.field=@TensoRFField", binding,
                         f"Config.checkpoint_dir='{tmp_path}/run'")
    assert needle in line


def test_a_compilation_cache_that_cannot_be_made_is_one_warning(tmp_path, caplog):
    """A cache folder that cannot be created turns the cache off with one warning line that
    names it; nothing is raised and JAX's cache setting stays as it was."""
    import jax

    from jaxnerf360 import cli

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    before = jax.config.jax_compilation_cache_dir
    with caplog.at_level("WARNING"):
        cli.enable_compilation_cache(str(blocker / "cache"))
    lines = [r.getMessage() for r in caplog.records if "compilation cache off" in r.getMessage()]
    assert len(lines) == 1 and str(blocker / "cache") in lines[0] and "\n" not in lines[0]
    assert jax.config.jax_compilation_cache_dir == before
