"""The TPU-pod and SLURM launchers, checked through their --dry-run output."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / script), *args, "--dry-run"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": "/tmp"})


def test_tpu_pod_dry_run_creates_installs_and_trains_on_every_worker():
    proc = _dry_run("tpu_pod.sh", "--name=pod", "--zone=europe-west4-a",
                    "--accelerator=v4-16", "--bucket=gs://bkt/x", "--data=gs://bkt/data/lego",
                    "--config=configs/blender.gin", "--run=lego",
                    "--gin_bindings=Config.batch_size=65536")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == ("gcloud compute tpus tpu-vm create pod --zone=europe-west4-a "
                        "--accelerator-type=v4-16 --version=tpu-ubuntu2204-base")
    assert lines[1].startswith("git -C ") and lines[1].endswith(" HEAD")
    assert "tpu-vm scp" in lines[2] and "--worker=all" in lines[2]
    install, train = lines[3], lines[4]
    for line in (install, train):
        assert line.startswith("gcloud compute tpus tpu-vm ssh pod --zone=europe-west4-a "
                               "--worker=all ")
    assert "pip install -q -e ./jaxnerf360" in install and "gcsfuse" in install
    assert "gcloud storage cp -r -n gs://bkt/data/lego" in install
    assert "python -m jaxnerf360.train --gin_configs=configs/blender.gin" in train
    assert "Config.checkpoint_dir='\\''/gcs/bkt/runs/lego'\\''" in train
    assert "Config.data_dir='\\''$HOME/data/lego'\\''" in train
    assert "Config.batch_size=65536" in train and train.endswith("--distributed'")


def test_tpu_pod_with_a_repository_clones_it():
    proc = _dry_run("tpu_pod.sh", "--bucket=gs://b", "--data=gs://b/d",
                    "--repo=https://example.org/jaxnerf360.git")
    assert proc.returncode == 0, proc.stderr
    assert "git clone -q https://example.org/jaxnerf360.git" in proc.stdout
    assert "scp" not in proc.stdout


def test_slurm_dry_run_is_one_srun_of_distributed_training():
    proc = _dry_run("slurm_multinode.sbatch", "--config=configs/360.gin", "--data=/d/garden",
                    "--run=/r/garden")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "srun --kill-on-bad-exit=1 python -m jaxnerf360.train --gin_configs=configs/360.gin "
        "'--gin_bindings=Config.data_dir='\\''/d/garden'\\''' "
        "'--gin_bindings=Config.checkpoint_dir='\\''/r/garden'\\''' --distributed")
    script = (ROOT / "scripts" / "slurm_multinode.sbatch").read_text()
    assert "#SBATCH --signal=TERM@120" in script and "#SBATCH --requeue" in script


def test_launchers_refuse_missing_settings_in_one_line():
    for script, args in (("tpu_pod.sh", ["--data=gs://b/d"]), ("tpu_pod.sh", ["--bucket=b"]),
                         ("slurm_multinode.sbatch", ["--run=/r"]),
                         ("tpu_pod.sh", ["--bucket=gs://b", "--data=gs://b/d", "--what"])):
        proc = _dry_run(script, *args)
        assert proc.returncode == 2 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1
        assert proc.stderr.startswith("error: ")
