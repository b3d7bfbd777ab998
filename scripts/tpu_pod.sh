#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: creates it (or reuses it), installs the project on every
# worker, and runs the same training command on all of them (`--worker=all`), each process
# joining the others through the pod's own environment (`--distributed` needs no address).
#
#   scripts/tpu_pod.sh --name=nerf-pod --zone=us-central2-b --accelerator=v4-32 \
#       --bucket=gs://my-bucket --config=configs/360.gin --data=gs://my-bucket/data/garden \
#       --run=garden [--repo=GIT_URL] [--gin_bindings=...] [--dry-run]
#
# Settings also come from TPU_NAME, TPU_ZONE, TPU_ACCELERATOR, TPU_RUNTIME, TPU_BUCKET and
# JAXNERF360_REPO. Without --repo, this checkout's HEAD (git archive) is copied to every worker.
#
# The scene is copied from the bucket to each worker's disk (Config.data_dir is that copy).
# Checkpoints, TensorBoard and config.gin go to the bucket, mounted on every worker with
# Cloud Storage FUSE at /gcs/<bucket>, so that all hosts write one run folder (orbax writes
# each host's shards of a sharded array there). Rerunning the same command after a
# pre-emption resumes from the last checkpoint. --dry-run prints every command instead.
set -euo pipefail

NAME="${TPU_NAME:-jaxnerf360-pod}"
ZONE="${TPU_ZONE:-us-central2-b}"
ACCELERATOR="${TPU_ACCELERATOR:-v4-32}"
RUNTIME="${TPU_RUNTIME:-tpu-ubuntu2204-base}"
BUCKET="${TPU_BUCKET:-}"
REPO="${JAXNERF360_REPO:-}"  # empty: copy this checkout's HEAD to the workers
CONFIG="configs/360.gin"
DATA=""
RUN="run"
DRY_RUN=0
EXTRA=()

for arg in "$@"; do
  case "$arg" in
    --name=*) NAME="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --accelerator=*) ACCELERATOR="${arg#*=}" ;;
    --runtime=*) RUNTIME="${arg#*=}" ;;
    --bucket=*) BUCKET="${arg#*=}" ;;
    --repo=*) REPO="${arg#*=}" ;;
    --config=*) CONFIG="${arg#*=}" ;;
    --data=*) DATA="${arg#*=}" ;;
    --run=*) RUN="${arg#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    --gin_bindings=*) EXTRA+=("$arg") ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
if [[ "$BUCKET" != gs://* ]]; then
  echo "error: --bucket=gs://NAME is required (checkpoints and logs go there)" >&2; exit 2
fi
if [[ "$DATA" != gs://* ]]; then
  echo "error: --data=gs://BUCKET/PATH (the scene folder in a bucket) is required" >&2; exit 2
fi

BUCKET_NAME="${BUCKET#gs://}"
BUCKET_NAME="${BUCKET_NAME%%/*}"
MOUNT="/gcs/${BUCKET_NAME}"
LOCAL_DATA="\$HOME/data/$(basename "$DATA")"
CHECKPOINT_DIR="${MOUNT}/runs/${RUN}"

run() {
  if [[ $DRY_RUN == 1 ]]; then
    local out=() arg
    for arg in "$@"; do  # quoted only where the shell needs it, so it reads as typed
      if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@+-]+$ ]]; then out+=("$arg"); else out+=("${arg@Q}"); fi
    done
    echo "${out[*]}"
  else
    "$@"
  fi
}

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"
}

if [[ $DRY_RUN == 1 ]] || ! gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" \
    > /dev/null 2>&1; then
  # A dry run cannot ask whether the slice exists: it shows the creation.
  run gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME"
fi

if [[ -n "$REPO" ]]; then
  FETCH="(git clone -q $REPO jaxnerf360 || git -C jaxnerf360 pull -q)"
else
  ARCHIVE="${TMPDIR:-/tmp}/jaxnerf360-$RUN.tar.gz"
  run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$ARCHIVE" HEAD
  run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$NAME:jaxnerf360.tar.gz" --zone="$ZONE" \
    --worker=all
  FETCH="rm -rf jaxnerf360 && mkdir jaxnerf360 && tar -xzf jaxnerf360.tar.gz -C jaxnerf360"
fi
on_all_workers "set -e; $FETCH; \
pip install -q -e ./jaxnerf360 'jax[tpu]'; \
sudo mkdir -p $MOUNT; mountpoint -q $MOUNT || sudo gcsfuse --implicit-dirs -o allow_other \
$BUCKET_NAME $MOUNT; \
mkdir -p \$HOME/data; gcloud storage cp -r -n $DATA \$HOME/data/"

BINDINGS="--gin_bindings=\"Config.data_dir='${LOCAL_DATA}'\" \
--gin_bindings=\"Config.checkpoint_dir='${CHECKPOINT_DIR}'\""
for binding in "${EXTRA[@]}"; do BINDINGS+=" \"$binding\""; done
on_all_workers "cd jaxnerf360 && python -m jaxnerf360.train --gin_configs=$CONFIG $BINDINGS \
--distributed"
